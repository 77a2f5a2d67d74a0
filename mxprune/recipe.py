"""YAML recipes: loading (safe), `--set` overrides, validation into dataclasses, and saving.

A recipe is the record of a run: `model`, `data`, `train` (and the pruning sections that build on them).
Unknown keys and bad values stop the load with one line that names the file, the key path, the value and what is
allowed.
"""
import dataclasses
import os
from typing import Any, Dict, List, Optional

import yaml

from .config import from_dict, spec, to_dict
from .errors import RecipeError
from .modifiers import PruningConfig, RegularizerConfig

RECIPE_VERSION = 1


@dataclasses.dataclass
class ModelConfig:
    name: str = spec(help='a GluonCV model-zoo name, e.g. cifar_resnet20_v1')
    classes: Optional[int] = spec(None, lo=1, help='number of classes (default: the dataset\'s)')
    pretrained: Optional[str] = spec(None, help='a local .params file, or "zoo" for GluonCV\'s download')
    input_size: int = spec(32, lo=8, hi=4096, help='square input side in pixels')


@dataclasses.dataclass
class AugmentConfig:
    crop_pad: int = spec(4, lo=0, hi=64, help='zero padding before the random crop (0 = no crop)')
    flip: bool = spec(True, help='random horizontal flip')
    cutout: int = spec(0, lo=0, hi=64, help='side of the cutout square (0 = off)')
    random_erasing: float = spec(0.0, lo=0.0, hi=1.0, help='GluonCV RandomErasing probability (0 = off)')
    mixup: float = spec(0.0, lo=0.0, help='mixup Beta(alpha, alpha) (0 = off)')
    mixup_off_epochs: int = spec(0, lo=0, help='last epochs trained without mixup, as GluonCV does')
    min_crop_area: Optional[float] = spec(None, lo=0.0, lo_open=True, hi=1.0,
                                          help='smallest image fraction the random-resized crop keeps (imagenet and '
                                               'imagenette only; default GluonCV\'s 0.08)')


@dataclasses.dataclass
class DataConfig:
    dataset: str = spec('cifar10', choices=('cifar10', 'cifar100', 'imagenet', 'imagenette', 'voc'),
                        help='imagenette: the imagenet reader with 10 classes (docs/data.md); voc: a Pascal VOC '
                             'layout folder, for tools/detect.py with a detection section')
    root: Optional[str] = spec(None, help='data folder; --data-dir overrides it, and it overrides $MXPRUNE_DATA')
    format: str = spec('auto', choices=('auto', 'rec', 'bin', 'folder', 'download'))
    batch_size: int = spec(128, lo=1, hi=65536, help='per step, over all contexts')
    test_batch_size: int = spec(256, lo=1, hi=65536)
    train_limit: Optional[int] = spec(None, lo=1, help='use only the first N training images')
    test_limit: Optional[int] = spec(None, lo=1, help='use only the first N test images')
    augment: AugmentConfig = spec(factory=AugmentConfig)
    prefetch: int = spec(4, lo=1, hi=64, help='batches prepared ahead in a background thread')


@dataclasses.dataclass
class TrainConfig:
    epochs: int = spec(3, lo=0, hi=100000)
    optimizer: str = spec('nag', choices=('sgd', 'nag'))
    lr: float = spec(0.1, lo=0.0, lo_open=True, hi=100.0)
    momentum: float = spec(0.9, lo=0.0, hi=1.0, hi_open=True)
    wd: float = spec(5e-4, lo=0.0, hi=1.0)
    no_wd: bool = spec(False, help='no weight decay on BatchNorm and bias parameters')
    lr_schedule: str = spec('cosine', choices=('cosine', 'step', 'constant'))
    warmup_epochs: float = spec(0.0, lo=0.0)
    lr_steps: List[float] = spec(factory=list, help='epochs where the step schedule multiplies lr by lr_factor')
    lr_factor: float = spec(0.1, lo=0.0, lo_open=True, hi=1.0)
    final_lr: float = spec(0.0, lo=0.0)
    label_smoothing: float = spec(0.0, lo=0.0, hi=1.0, hi_open=True)
    seed: int = spec(0, lo=0, hi=2 ** 31 - 1)
    ctx: str = spec('cpu', help='cpu, cpu:0,1, gpu:0 or gpu:0,1,...')
    log_interval: int = spec(20, lo=1, help='steps between progress-bar refreshes (each one syncs)')
    hybridize: bool = spec(True)

    def check(self, where: str, path: str) -> None:
        if self.lr_schedule == 'step' and not self.lr_steps:
            raise RecipeError(f'{where}: {path}.lr_steps: [] is not allowed; expected a non-empty list of epochs '
                              f'when lr_schedule is step')
        if self.warmup_epochs > self.epochs > 0:
            raise RecipeError(f'{where}: {path}.warmup_epochs: {self.warmup_epochs!r} is not allowed; expected a '
                              f'value <= epochs ({self.epochs})')


def _finetune_defaults() -> TrainConfig:
    return TrainConfig(epochs=2, lr=0.01, warmup_epochs=0.0)


def _sparsity_defaults() -> TrainConfig:
    return TrainConfig(epochs=0, lr=0.01, warmup_epochs=0.0)


@dataclasses.dataclass
class DistillConfig:
    alpha: float = spec(0.0, lo=0.0, hi=1.0, help='weight of the distillation loss (0 = off); CE gets 1 - alpha')
    temperature: float = spec(4.0, lo=0.0, lo_open=True, hi=100.0)


@dataclasses.dataclass
class ExportConfig:
    enabled: bool = spec(True, help='write -symbol.json + .params, re-imported and compared')
    onnx: bool = spec(False, help='also write ONNX (needs the onnx extra)')
    fused: bool = spec(False, help='also write the oneDNN-fused graph (export/model-fused-*; MKLDNN builds only)')
    batch: int = spec(1, lo=1, hi=4096, help='batch size of the export check')


@dataclasses.dataclass
class BenchmarkConfig:
    enabled: bool = spec(True, help='measure dense vs pruned inference speed')
    batches: List[int] = spec(factory=lambda: [1, 64])
    repeats: int = spec(5, lo=1, hi=1000)
    backend: str = spec('auto', choices=('auto', 'plain'), help='auto: fused oneDNN graph when available')

    def check(self, where: str, path: str) -> None:
        if not self.batches or any(b < 1 for b in self.batches):
            raise RecipeError(f'{where}: {path}.batches: {self.batches!r} is not allowed; expected positive '
                              f'batch sizes')


@dataclasses.dataclass
class RobustnessConfig:
    enabled: bool = spec(False, help='FGSM and PGD top-1 of the dense and the pruned model in report.json')
    eps: List[float] = spec(factory=lambda: [2.0, 8.0], help='L-infinity epsilons in 1/255 units')
    pgd_steps: int = spec(7, lo=1, hi=1000)
    images: int = spec(500, lo=1, help='test images attacked')

    def check(self, where: str, path: str) -> None:
        if not self.eps or any(not 0 < e <= 255 for e in self.eps):
            raise RecipeError(f'{where}: {path}.eps: {self.eps!r} is not allowed; expected values in (0, 255]')


@dataclasses.dataclass
class DetectionConfig:
    """Object detection (tools/detect.py): the VOC classes and splits, the backbone, mAP and NMS settings.

    data.batch_size / test_batch_size apply; data.augment does not (GluonCV's SSD / YOLOv3 transforms do that).
    """
    classes: List[str] = spec(factory=list, help='class names in label order, as in the VOC <name> tags')
    train_split: str = spec('train', help='ImageSets/Main/<name>.txt listing the training images')
    test_split: str = spec('test', help='ImageSets/Main/<name>.txt listing the evaluation images')
    backbone: Optional[List[str]] = spec(None, help='layer-path globs of the backbone (default: features.* for SSD, '
                                                    'stages.* for YOLOv3)')
    macs_of: str = spec('backbone', choices=('backbone', 'net'), help='what pruning[].target.macs is a fraction of')
    metric: str = spec('voc07', choices=('voc07', 'voc'), help='voc07: 11-point VOC2007 mAP; voc: area under PR')
    iou_thresh: float = spec(0.5, lo=0.0, lo_open=True, hi=1.0, hi_open=True)
    nms_thresh: float = spec(0.45, lo=0.0, lo_open=True, hi=1.0, hi_open=True)
    nms_topk: int = spec(400, lo=1)
    post_nms: int = spec(100, lo=1)
    eval_every: int = spec(5, lo=0, help='epochs between mAP evaluations during training (0: only at the end)')
    workers: int = spec(1, lo=0, hi=64, help='threads preparing augmented batches')

    def check(self, where: str, path: str) -> None:
        bad = [c for c in self.classes if not c.strip()]
        if not self.classes or bad or len(set(self.classes)) != len(self.classes):
            raise RecipeError(f'{where}: {path}.classes: {self.classes!r} is not allowed; expected a non-empty list '
                              f'of distinct class names')


@dataclasses.dataclass
class DistributedConfig:
    """Data-parallel runs (tools/launch.py or horovodrun; see mxprune.distributed). data.batch_size stays the global
    batch: each of N workers takes batch_size / N per step."""
    backend: str = spec('auto', choices=('auto', 'none', 'dist_sync', 'dist_device_sync', 'horovod'),
                        help='auto: dist_sync (dist_device_sync on GPUs) under tools/launch.py, horovod under '
                             'horovodrun, else one process')
    bn: str = spec('average', choices=('average', 'rank0'),
                   help='BatchNorm running statistics at each epoch end: averaged over workers, or rank 0\'s')


@dataclasses.dataclass
class Recipe:
    version: int = spec(choices=(RECIPE_VERSION,))
    model: ModelConfig = spec(help='what to prune')
    data: DataConfig = spec(factory=DataConfig)
    train: TrainConfig = spec(factory=TrainConfig, help='dense training (0 epochs: use model.pretrained as is)')
    regularizers: List[RegularizerConfig] = spec(factory=list, help='sparsity training, in the sparsity phase')
    sparsity: TrainConfig = spec(factory=_sparsity_defaults, help='training with the regularizers, after dense')
    pruning: List[PruningConfig] = spec(factory=list, help='modifiers; their epochs count from the fine-tuning start')
    finetune: TrainConfig = spec(factory=_finetune_defaults, help='training while and after pruning')
    distill: DistillConfig = spec(factory=DistillConfig, help='knowledge distillation from the dense model')
    export: ExportConfig = spec(factory=ExportConfig)
    benchmark: BenchmarkConfig = spec(factory=BenchmarkConfig)
    robustness: RobustnessConfig = spec(factory=RobustnessConfig)
    detection: Optional[DetectionConfig] = spec(None, help='object detection (tools/detect.py); needs data.dataset voc')
    distributed: DistributedConfig = spec(factory=DistributedConfig, help='several processes or machines')

    def check(self, where: str, path: str) -> None:
        if self.detection is None and self.data.dataset == 'voc':
            raise RecipeError(f'{where}: detection: None is not allowed with data.dataset voc; expected a detection '
                              f'section with the classes')
        if self.detection is not None and self.data.dataset != 'voc':
            raise RecipeError(f'{where}: data.dataset: {self.data.dataset!r} is not allowed with a detection section; '
                              f'expected voc')
        if self.train.epochs == 0 and not self.model.pretrained:
            raise RecipeError(f'{where}: train.epochs: 0 is not allowed without model.pretrained; expected a number '
                              f'of dense epochs or a pretrained model')
        if self.regularizers and self.sparsity.epochs == 0:
            raise RecipeError(f'{where}: sparsity.epochs: 0 is not allowed with regularizers; expected the number '
                              f'of sparsity-training epochs')
        for i, m in enumerate(self.pruning):
            last = m.schedule.epoch if m.schedule.kind == 'oneshot' else m.schedule.end_epoch
            if last > self.finetune.epochs:
                raise RecipeError(f'{where}: pruning[{i}].schedule: ends at epoch {last} but finetune.epochs is '
                                  f'{self.finetune.epochs}; expected the schedule to end within fine-tuning')


def parse_override(text: str) -> tuple:
    """'a.b=c' -> (['a', 'b'], parsed c). The value is read as YAML (safely): 0.1, true, [1, 2], null."""
    key, sep, raw = text.partition('=')
    if not sep or not key.strip() or any(not p for p in key.strip().split('.')):
        raise RecipeError(f'--set {text!r}: expected key.path=value, e.g. train.lr=0.05')
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise RecipeError(f'--set {text!r}: the value is not valid YAML ({str(e).splitlines()[0]})') from None
    return key.strip().split('.'), value


def apply_overrides(raw: Dict[str, Any], overrides: List[str]) -> Dict[str, Any]:
    """Applies --set overrides to the raw recipe mapping; list items are addressed by index (pruning.0.ratio)."""
    for text in overrides:
        keys, value = parse_override(text)
        node: Any = raw
        for i, k in enumerate(keys):
            last = i == len(keys) - 1
            where = '.'.join(keys[:i + 1])
            if isinstance(node, list):
                if not k.isdigit() or int(k) >= len(node):
                    raise RecipeError(f'--set {text!r}: {where}: no list item {k!r} (the list has {len(node)})')
                k = int(k)
            elif not isinstance(node, dict):
                raise RecipeError(f'--set {text!r}: {".".join(keys[:i])} is {node!r}, not a mapping')
            if last:
                node[k] = value
            else:
                if isinstance(node, dict) and node.get(k) is None:
                    node[k] = {}
                node = node[k]
    return raw


def load_yaml(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise RecipeError(f'{path}: recipe file not found')
    try:
        with open(path, encoding='utf-8') as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, 'problem_mark', None)
        at = f' at line {mark.line + 1}' if mark is not None else ''
        raise RecipeError(f'{path}: not valid YAML{at}: {getattr(e, "problem", None) or e}') from None
    except UnicodeDecodeError:
        raise RecipeError(f'{path}: not a UTF-8 text file') from None
    if not isinstance(raw, dict):
        raise RecipeError(f'{path}: top level: {raw!r} is not allowed; expected a mapping with keys version, model, '
                          f'data, train, ...')
    return raw


def from_mapping(raw: Dict[str, Any], where: str = 'recipe') -> Recipe:
    return from_dict(Recipe, raw, where)


def load(path: str, overrides: Optional[List[str]] = None) -> Recipe:
    """Loads and validates a recipe file, with `--set` style overrides applied first."""
    raw = apply_overrides(load_yaml(path), list(overrides or []))
    return from_mapping(raw, path)


def require_classification(recipe: Recipe, path: str) -> Recipe:
    """Refuses a detection recipe in the classification tools (tools/prune.py, tools/train.py), naming the right one."""
    if recipe.detection is not None:
        raise RecipeError(f'{path}: detection: a detection recipe (data.dataset {recipe.data.dataset!r}) is not '
                          f'allowed here; run it with python tools/detect.py --recipe {path}')
    return recipe


def dump(recipe: Recipe) -> str:
    return yaml.safe_dump(to_dict(recipe), sort_keys=False, default_flow_style=None)
