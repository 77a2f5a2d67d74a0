"""Where classification data comes from: the datasets mxprune knows, the data folder a run reads, and the readers
that decode CIFAR (RecordIO, the binary batches, an image folder, or gluon's downloader) into memory once."""
import dataclasses
import glob
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import DataError, reason

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # GluonCV train_cifar10.py
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ENV_DATA = 'MXPRUNE_DATA'
IMAGE_EXT = ('.png', '.jpg', '.jpeg', '.bmp')


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    classes: int
    image_shape: Tuple[int, int, int]  # H, W, C of the stored images (None sides: any)
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    train_count: Optional[int]
    test_count: Optional[int]
    how_to_get: str
    reader: str = 'memory'  # memory: decoded once into RAM (CIFAR); record: mx.io.ImageRecordIter over train/val.rec
    shared: Optional[str] = None  # the folder under ../shared/datasets read when no other folder is named


DATASETS = {
    'cifar10': DatasetInfo('cifar10', 10, (32, 32, 3), CIFAR_MEAN, CIFAR_STD, 50000, 10000,
                           'download https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz and extract it there, '
                           'or point --data-dir at a folder with train.rec/train.idx/test.rec/test.idx'),
    'cifar100': DatasetInfo('cifar100', 100, (32, 32, 3), CIFAR_MEAN, CIFAR_STD, 50000, 10000,
                            'download https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz and extract it '
                            'there, or point --data-dir at a folder with train.rec/.idx and test.rec/.idx'),
    'imagenet': DatasetInfo('imagenet', 1000, (0, 0, 3), IMAGENET_MEAN, IMAGENET_STD, None, None,
                            'pack ImageNet with MXNet\'s im2rec into train.rec/train.idx and val.rec/val.idx '
                            '(see GluonCV\'s "Prepare the ImageNet dataset" tutorial)', reader='record'),
    # ImageNet's reader and augmentation with 10 classes; the shared copy's README says how it was packed
    'imagenette': DatasetInfo('imagenette', 10, (0, 0, 3), IMAGENET_MEAN, IMAGENET_STD, 9469, 3925,
                              'download imagenette2-160 (https://github.com/fastai/imagenette) and pack its train/ and '
                              'val/ folders with MXNet\'s im2rec into train.rec/train.idx and val.rec/val.idx, labels '
                              'the wnids in sorted order', reader='record', shared='imagenette'),
}


def dataset_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f'unknown dataset {name!r}; choose one of: {", ".join(DATASETS)}') from None


def default_root(dataset: str) -> str:
    """MXNet's cache folder for the dataset ($MXNET_HOME/datasets/<name>, ~/.mxnet/datasets/<name>)."""
    home = os.environ.get('MXNET_HOME', os.path.join('~', '.mxnet'))
    return os.path.expanduser(os.path.join(home, 'datasets', dataset))


CACHE = 'MXNet cache'
SHARED = 'shared copy'
# the project's read-only data beside the checkout (../shared/datasets); absent in an installed copy
SHARED_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))), 'shared', 'datasets')


def shared_root(dataset: str) -> Optional[str]:
    """The dataset's folder under SHARED_DATA when it holds a train.rec, else None."""
    name = DATASETS[dataset].shared if dataset in DATASETS else None
    folder = os.path.join(SHARED_DATA, name) if name else None
    return folder if folder and os.path.isfile(os.path.join(folder, 'train.rec')) else None


def root_source(dataset: str, recipe_root: Optional[str] = None, cli_root: Optional[str] = None) -> Tuple[str, str]:
    """(data folder, where it came from): --data-dir wins over the recipe's data.root, which wins over
    $MXPRUNE_DATA (a setting written in the file is not silently replaced by the environment); else MXNet's cache
    (`CACHE`), the only folder a missing dataset is downloaded into unless the recipe says `format: download`.
    A dataset with a shared copy (`shared_root`) reads it before MXNet's cache."""
    env = os.environ.get(ENV_DATA)
    for root, where in ((cli_root, '--data-dir'), (recipe_root, 'data.root'), (env, '$' + ENV_DATA),
                        (shared_root(dataset), SHARED)):
        if root:
            return os.path.abspath(os.path.expanduser(root)), where
    return default_root(dataset), CACHE


def resolve_root(dataset: str, recipe_root: Optional[str] = None, cli_root: Optional[str] = None) -> str:
    """The data folder (`root_source` without the reason)."""
    return root_source(dataset, recipe_root, cli_root)[0]


def may_download(fmt: str, source: str = '') -> bool:
    """Whether a missing dataset is downloaded: `format: download`, or `auto` into a folder the user did not name
    (MXNet's cache; '' = not said). A folder named by --data-dir, data.root or $MXPRUNE_DATA must hold the data."""
    return fmt == 'download' or (fmt == 'auto' and source in ('', CACHE))


# ----------------------------------------------------------------------------------------------------------------
# Reading CIFAR into memory


@dataclasses.dataclass
class ImageSet:
    """Decoded images in memory: uint8 NHWC, int32 labels."""
    images: np.ndarray
    labels: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, n: Optional[int]) -> 'ImageSet':
        if n is None or n >= len(self):
            return self
        return ImageSet(self.images[:n], self.labels[:n], f'{self.source} (first {n})')


def _decode(buf: bytes, where: str) -> np.ndarray:
    import cv2  # OpenCV decodes small JPEGs several times faster than mx.image.imdecode
    img = cv2.imdecode(np.frombuffer(buf, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f'{where}: not a decodable image')
    return img[:, :, ::-1]  # BGR -> RGB


def record_count(path: str) -> int:
    """The number of records a RecordIO .idx file lists (refuses a corrupt file)."""
    count = 0
    with open(path, encoding='utf-8', errors='replace') as f:
        for n, line in enumerate(f, 1):
            parts = line.split('\t')
            if not line.strip():
                continue
            if len(parts) != 2 or not parts[0].strip().isdigit() or not parts[1].strip().isdigit():
                raise DataError(f'{path}: line {n} is not "<index>\\t<offset>"; the .idx file is corrupt '
                                f'(rebuild it with im2rec or mxnet.recordio.MXIndexedRecordIO)')
            count += 1
    return count


def read_rec(rec_path: str, limit: Optional[int] = None, expect_shape: Optional[tuple] = None) -> ImageSet:
    """Reads (the first `limit`) records of an MXNet RecordIO file, decoding each image once."""
    from mxnet import recordio
    idx_path = os.path.splitext(rec_path)[0] + '.idx'
    expected = record_count(idx_path) if os.path.exists(idx_path) else None
    if expected == 0:
        raise DataError(f'{idx_path}: empty index; the data set has no records')
    reader = recordio.MXRecordIO(rec_path, 'r')
    images: List[np.ndarray] = []
    labels: List[int] = []
    try:
        while limit is None or len(images) < limit:
            try:
                item = reader.read()
            except Exception as e:  # MXNetError on a broken record framing
                raise DataError(f'{rec_path}: record {len(images)} cannot be read ({reason(e)}); '
                                f'the file is truncated or corrupt') from None
            if item is None:
                break
            try:
                header, buf = recordio.unpack(item)
            except Exception:
                raise DataError(f'{rec_path}: record {len(images)} has no valid IRHeader; the file is corrupt') \
                    from None
            img = _decode(buf, f'{rec_path}: record {len(images)}')
            if expect_shape and img.shape != expect_shape:
                raise DataError(f'{rec_path}: record {len(images)} is a {img.shape[1]}x{img.shape[0]} image with '
                                f'{img.shape[2]} channels; expected {expect_shape[1]}x{expect_shape[0]}x'
                                f'{expect_shape[2]}')
            label = header.label if np.isscalar(header.label) else header.label[0]
            images.append(img)
            labels.append(int(label))
    finally:
        reader.close()
    if not images:
        raise DataError(f'{rec_path}: no records')
    if limit is None and expected is not None and expected != len(images):
        raise DataError(f'{rec_path}: holds {len(images)} records but {idx_path} lists {expected}; one of them is '
                        f'truncated or corrupt')
    return ImageSet(np.stack(images), np.asarray(labels, dtype=np.int32), rec_path)


def _bin_files(root: str, dataset: str, train: bool) -> Optional[List[str]]:
    if dataset == 'cifar10':
        names = [f'data_batch_{i}.bin' for i in range(1, 6)] if train else ['test_batch.bin']
        subdirs = ('', 'cifar-10-batches-bin')
    else:
        names = ['train.bin'] if train else ['test.bin']
        subdirs = ('', 'cifar-100-binary')
    for sub in subdirs:
        paths = [os.path.join(root, sub, n) for n in names]
        if all(os.path.isfile(p) for p in paths):
            return paths
    return None


def read_bin(paths: Sequence[str], dataset: str, limit: Optional[int] = None) -> ImageSet:
    """Reads the official CIFAR binary batches (label byte(s) + 3072 bytes CHW per image)."""
    label_bytes = 1 if dataset == 'cifar10' else 2  # CIFAR-100: coarse, fine
    rec = label_bytes + 3072
    images, labels = [], []
    for p in paths:
        raw = np.fromfile(p, dtype=np.uint8)
        if raw.size == 0 or raw.size % rec:
            raise DataError(f'{p}: {raw.size} bytes is not a whole number of {rec}-byte {dataset} records; '
                            f'the file is truncated or is not the {dataset} binary version')
        raw = raw.reshape(-1, rec)
        labels.append(raw[:, label_bytes - 1].astype(np.int32))
        images.append(raw[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return ImageSet(np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels),
                    os.path.dirname(paths[0])).head(limit)


def read_folder(folder: str, limit: Optional[int] = None, expect_shape: Optional[tuple] = None,
                classes: Optional[int] = None) -> ImageSet:
    """Reads <folder>/<class>/<image> with classes in sorted order (as gluon's ImageFolderDataset)."""
    class_dirs = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    if not class_dirs:
        raise DataError(f'{folder}: no class folders; expected {folder}/<class>/<image>.png')
    if classes is not None and len(class_dirs) != classes:
        raise DataError(f'{folder}: {len(class_dirs)} class folders; the dataset has {classes} classes')
    files = []
    for label, d in enumerate(class_dirs):
        for p in sorted(glob.glob(os.path.join(folder, d, '*'))):
            if p.lower().endswith(IMAGE_EXT):
                files.append((p, label))
    if not files:
        raise DataError(f'{folder}: no images ({", ".join(IMAGE_EXT)}) in its class folders')
    # A fixed shuffle so that `limit` takes a sample of every class, as the shuffled .rec files do.
    order = np.random.RandomState(0).permutation(len(files))
    files = [files[i] for i in order][:limit]
    images = []
    for p, _ in files:
        with open(p, 'rb') as f:
            img = _decode(f.read(), p)
        if expect_shape and img.shape != expect_shape:
            raise DataError(f'{p}: a {img.shape[1]}x{img.shape[0]} image; expected {expect_shape[1]}x'
                            f'{expect_shape[0]}')
        images.append(img)
    return ImageSet(np.stack(images), np.asarray([lab for _, lab in files], dtype=np.int32), folder)


def _download(root: str, dataset: str, train: bool) -> ImageSet:
    from mxnet import gluon

    from ..layers import gluon_compat as gc
    cls = gluon.data.vision.CIFAR10 if dataset == 'cifar10' else gluon.data.vision.CIFAR100
    kwargs = {} if dataset == 'cifar10' else {'fine_label': True}
    try:
        ds = cls(root=root, train=train, **kwargs)
    except Exception as e:  # network errors come in many types (requests, URLError, OSError)
        why = str(e).splitlines()[0][:160] if str(e) else ''
        raise DataError(f'no {dataset} data in {root} and the download failed ({type(e).__name__}: {why}); '
                        f'{DATASETS[dataset].how_to_get}') from None
    images, labels = gc.dataset_arrays(ds)
    return ImageSet(images.asnumpy(), np.asarray(labels, dtype=np.int32), root)


def load_cifar(dataset: str, root: str, train: bool, fmt: str = 'auto', limit: Optional[int] = None,
               source: str = '') -> ImageSet:
    """Loads a CIFAR split into memory from whatever layout the root holds.

    Args:
        dataset: cifar10 or cifar100.
        root: the data folder.
        train: the training split (else the test split).
        fmt: auto, rec, bin, folder or download.
        limit: keep only the first N images.
        source: where the folder came from (`root_source`): for messages, and no download into a named folder.
    """
    info = dataset_info(dataset)
    split = 'train' if train else 'test'
    looked = []
    if fmt in ('auto', 'rec'):
        rec = os.path.join(root, f'{split}.rec')
        looked.append(rec)
        if os.path.isfile(rec):
            out = read_rec(rec, limit, info.image_shape)
            return _checked(out, info)
    if fmt in ('auto', 'bin'):
        files = _bin_files(root, dataset, train)
        looked.append(os.path.join(root, '[cifar-*-bin*/]' + ('data_batch_*.bin' if dataset == 'cifar10' and train
                                                              else ('test_batch.bin' if dataset == 'cifar10'
                                                                    else f'{split}.bin'))))
        if files:
            return _checked(read_bin(files, dataset, limit), info)
    if fmt in ('auto', 'folder'):
        folder = os.path.join(root, split)
        looked.append(os.path.join(folder, '<class>', '*.png|jpg'))
        if os.path.isdir(folder):
            return _checked(read_folder(folder, limit, info.image_shape, info.classes), info)
    if may_download(fmt, source):
        return _checked(_download(root, dataset, train).head(limit), info)
    given = f' in the data folder {root} ({source})' if source else ''
    raise DataError(f'no {dataset} {split} data found{given}; looked for {" | ".join(looked)}; {info.how_to_get}')


def _checked(s: ImageSet, info: DatasetInfo) -> ImageSet:
    bad = (s.labels < 0) | (s.labels >= info.classes)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f'{s.source}: image {i} has label {int(s.labels[i])}; {info.name} labels are 0..'
                        f'{info.classes - 1} (wrong dataset or class count?)')
    return s
