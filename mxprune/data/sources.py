"""Image classification data: CIFAR-10/100 decoded once into memory with batched augmentation, ImageNet via RecordIO.

Sources for CIFAR, tried in this order when `format` is `auto`:
  rec     train.rec/.idx + test.rec/.idx (MXNet RecordIO, as im2rec writes; JPEG or PNG records)
  bin     the official binary layout: data_batch_1..5.bin + test_batch.bin (CIFAR-10), train.bin + test.bin
          (CIFAR-100), directly in the root or in cifar-10-batches-bin/ / cifar-100-binary/
  folder  train/<class>/*.png|jpg and test/<class>/*.png|jpg, classes in sorted order
  download  gluon's own CIFAR downloader into the root (needs internet)

Augmentation follows GluonCV's CIFAR training transforms (RandomCrop with zero padding, RandomFlipLeftRight,
ToTensor, Normalize; RandomErasing; mixup as in GluonCV's train_mixup_cifar10.py) but runs on a whole uint8
batch with numpy in a background thread; tests check it against GluonCV's per-image result.
"""
import dataclasses
import glob
import os
import queue
import threading
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .errors import DataError, reason

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


DATASETS = {
    'cifar10': DatasetInfo('cifar10', 10, (32, 32, 3), CIFAR_MEAN, CIFAR_STD, 50000, 10000,
                           'download https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz and extract it there, '
                           'or point --data-dir at a folder with train.rec/train.idx/test.rec/test.idx'),
    'cifar100': DatasetInfo('cifar100', 100, (32, 32, 3), CIFAR_MEAN, CIFAR_STD, 50000, 10000,
                            'download https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz and extract it '
                            'there, or point --data-dir at a folder with train.rec/.idx and test.rec/.idx'),
    'imagenet': DatasetInfo('imagenet', 1000, (0, 0, 3), IMAGENET_MEAN, IMAGENET_STD, None, None,
                            'pack ImageNet with MXNet\'s im2rec into train.rec/train.idx and val.rec/val.idx '
                            '(see GluonCV\'s "Prepare the ImageNet dataset" tutorial)'),
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


def root_source(dataset: str, recipe_root: Optional[str] = None, cli_root: Optional[str] = None) -> Tuple[str, str]:
    """(data folder, where it came from): --data-dir wins over the recipe's data.root, which wins over
    $MXPRUNE_DATA (a setting written in the file is not silently replaced by the environment); else MXNet's cache
    (`CACHE`), the only folder a missing dataset is downloaded into unless the recipe says `format: download`."""
    env = os.environ.get(ENV_DATA)
    for root, where in ((cli_root, '--data-dir'), (recipe_root, 'data.root'), (env, '$' + ENV_DATA)):
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
    import cv2  # OpenCV decodes about 9x faster than mx.image.imdecode on small JPEGs
    img = cv2.imdecode(np.frombuffer(buf, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f'{where}: not a decodable image')
    return img[:, :, ::-1]  # BGR -> RGB


def _read_idx(path: str) -> int:
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
    expected = _read_idx(idx_path) if os.path.exists(idx_path) else None
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

    from .layers import gluon_compat as gc
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


# ----------------------------------------------------------------------------------------------------------------
# Batched augmentation (numpy, uint8 in, float32 NCHW out)


def crop_flip(batch: np.ndarray, pad: int, ys: np.ndarray, xs: np.ndarray, flips: np.ndarray) -> np.ndarray:
    """Zero-pads each NHWC image by `pad`, crops back to HxW at (ys, xs), then mirrors where `flips`."""
    n, h, w, c = batch.shape
    if pad:
        padded = np.zeros((n, h + 2 * pad, w + 2 * pad, c), dtype=batch.dtype)
        padded[:, pad:pad + h, pad:pad + w] = batch
    else:
        padded = batch
    rows = ys[:, None] + np.arange(h)[None, :]
    cols = xs[:, None] + np.arange(w)[None, :]
    cols = np.where(flips[:, None], cols[:, ::-1], cols)
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def erase(batch: np.ndarray, boxes: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Fills boxes (y0, y1, x0, x1) per image with `value` (per channel); rows with y0 == y1 are untouched."""
    n, h, w, _ = batch.shape
    yy = np.arange(h)[None, :, None]
    xx = np.arange(w)[None, None, :]
    inside = ((yy >= boxes[:, 0, None, None]) & (yy < boxes[:, 1, None, None]) &
              (xx >= boxes[:, 2, None, None]) & (xx < boxes[:, 3, None, None]))
    return np.where(inside[..., None], value.astype(batch.dtype), batch)


class BatchAugment:
    """Random crop (zero padding), flip, cutout, random erasing on uint8 NHWC batches, then ToTensor+Normalize."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], crop_pad: int = 0, flip: bool = False,
                 cutout: int = 0, random_erasing: float = 0.0):
        self.mean = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
        self.crop_pad, self.flip, self.cutout, self.random_erasing = crop_pad, flip, cutout, random_erasing

    @property
    def is_identity(self) -> bool:
        return not (self.crop_pad or self.flip or self.cutout or self.random_erasing)

    def geometry(self, batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n, h, w, _ = batch.shape
        if self.crop_pad or self.flip:
            ys = rng.integers(0, 2 * self.crop_pad + 1, n)
            xs = rng.integers(0, 2 * self.crop_pad + 1, n)
            flips = rng.random(n) < 0.5 if self.flip else np.zeros(n, bool)
            batch = crop_flip(batch, self.crop_pad, ys, xs, flips)
        if self.random_erasing:
            batch = erase(batch, erasing_boxes(rng, n, h, w, self.random_erasing), np.array(ERASE_FILL))
        if self.cutout:
            batch = erase(batch, cutout_boxes(rng, n, h, w, self.cutout), np.zeros(3))
        return batch

    def normalize(self, batch: np.ndarray) -> np.ndarray:
        """uint8 NHWC -> float32 NCHW, (x/255 - mean)/std, as gluon's ToTensor + Normalize."""
        x = batch.transpose(0, 3, 1, 2).astype(np.float32)
        x *= np.float32(1.0 / 255.0)
        x -= self.mean
        x /= self.std
        return x

    def __call__(self, batch: np.ndarray, rng: Optional[np.random.Generator] = None) -> np.ndarray:
        if rng is not None and not self.is_identity:
            batch = self.geometry(batch, rng)
        return self.normalize(batch)


ERASE_FILL = (125.31, 122.96, 113.86)  # GluonCV RandomErasing's default mean (in pixels)


def erasing_boxes(rng: np.random.Generator, n: int, h: int, w: int, probability: float, s_min: float = 0.02,
                  s_max: float = 0.4, ratio: float = 0.3) -> np.ndarray:
    """Boxes as GluonCV's RandomErasing draws them (its first axis is called width but indexes rows)."""
    boxes = np.zeros((n, 4), dtype=np.int64)
    hit = rng.random(n) <= probability
    area = h * w * rng.uniform(s_min, s_max, n)
    aspect = rng.uniform(ratio, 1.0 / ratio, n)
    bh = np.round(np.sqrt(area * aspect)).astype(np.int64)  # GluonCV's "w": along rows
    bw = np.round(np.sqrt(area / aspect)).astype(np.int64)
    ok = hit & (bh < h) & (bw < w)
    y0 = (rng.random(n) * (h - bh + 1)).astype(np.int64)
    x0 = (rng.random(n) * (w - bw + 1)).astype(np.int64)
    boxes[ok] = np.stack([y0, y0 + bh, x0, x0 + bw], axis=1)[ok]
    return boxes


def cutout_boxes(rng: np.random.Generator, n: int, h: int, w: int, size: int) -> np.ndarray:
    """Cutout (DeVries & Taylor 2017): a size x size square centred anywhere in the image, clipped at the edges."""
    cy = rng.integers(0, h, n)
    cx = rng.integers(0, w, n)
    half = size // 2
    return np.stack([np.clip(cy - half, 0, h), np.clip(cy - half + size, 0, h),
                     np.clip(cx - half, 0, w), np.clip(cx - half + size, 0, w)], axis=1)


# ----------------------------------------------------------------------------------------------------------------
# Loaders


class ArrayLoader:
    """Batches of an in-memory ImageSet, augmented in a background thread.

    Every epoch's order and augmentation are a pure function of (seed, epoch, part_index), so a run resumed at an
    epoch boundary sees exactly the data an uninterrupted run would. With `num_parts` > 1 each part gets the same
    number of batches (distributed workers must take equal steps).
    """

    def __init__(self, data: ImageSet, batch_size: int, augment: BatchAugment, *, train: bool, classes: int,
                 seed: int = 0, mixup: float = 0.0, num_parts: int = 1, part_index: int = 0, prefetch: int = 4):
        if batch_size > len(data) // num_parts and train:
            raise DataError(f'{data.source}: {len(data)} images cannot fill one batch of {batch_size} per worker '
                            f'for {num_parts} worker(s)')
        self.data, self.batch_size, self.augment = data, batch_size, augment
        self.train, self.classes, self.seed, self.mixup = train, classes, seed, mixup
        self.num_parts, self.part_index, self.prefetch = num_parts, part_index, prefetch
        per_part = len(data) // num_parts
        self.num_batches = per_part // batch_size if train else -(-_part_size(len(data), num_parts, part_index)
                                                                  // batch_size)

    def __len__(self) -> int:
        return self.num_batches

    @property
    def num_samples(self) -> int:
        return self.num_batches * self.batch_size if self.train else _part_size(len(self.data), self.num_parts,
                                                                                self.part_index)

    def _indices(self, epoch: int) -> np.ndarray:
        n = len(self.data)
        if self.train:
            order = np.random.default_rng([self.seed, epoch]).permutation(n)
            per_part = n // self.num_parts
            return order[self.part_index * per_part:(self.part_index + 1) * per_part]
        return np.arange(n)[self.part_index::self.num_parts]

    def batches(self, epoch: int, mixup: bool = True) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """Yields (float32 NCHW data, labels) as numpy: int labels, or soft (N, classes) float32 with mixup."""
        idx = self._indices(epoch)
        rng = np.random.default_rng([self.seed, epoch, self.part_index, 1]) if self.train else None
        for b in range(self.num_batches):
            sel = idx[b * self.batch_size:(b + 1) * self.batch_size]
            x = self.augment(self.data.images[sel], rng)
            y = self.data.labels[sel]
            if self.train and self.mixup and mixup:
                x, y = mixup_batch(x, y, self.classes, rng.beta(self.mixup, self.mixup))
            yield x, y

    def epoch(self, epoch: int, mixup: bool = True) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """batches() prepared `prefetch` ahead in a thread (numpy releases the GIL for the heavy parts)."""
        return _prefetch(self.batches(epoch, mixup), self.prefetch)


def _part_size(n: int, parts: int, index: int) -> int:
    return len(range(index, n, parts))


def mixup_batch(x: np.ndarray, y: np.ndarray, classes: int, lam: float) -> Tuple[np.ndarray, np.ndarray]:
    """GluonCV's mixup: mix each sample with the batch reversed; soft labels mix the same way."""
    onehot = np.eye(classes, dtype=np.float32)[y]
    lam = np.float32(lam)
    return lam * x + (1 - lam) * x[::-1], lam * onehot + (1 - lam) * onehot[::-1]


_DONE = object()


def _prefetch(it: Iterator, depth: int) -> Iterator:
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work():
        try:
            for item in it:
                if stop.is_set():
                    return
                q.put(item)
        except BaseException as e:  # handed to the consumer, raised there
            q.put(e)
            return
        q.put(_DONE)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while t.is_alive():  # drain so the worker can see `stop`
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass


class RecordIterLoader:
    """ImageNet-size data through mx.io.ImageRecordIter, with GluonCV's train_imagenet.py augmentation."""

    def __init__(self, rec: str, batch_size: int, input_size: int, *, train: bool, classes: int, seed: int = 0,
                 num_parts: int = 1, part_index: int = 0, threads: int = 2, crop_ratio: float = 0.875):
        idx = os.path.splitext(rec)[0] + '.idx'
        for p in (rec, idx):
            if not os.path.isfile(p):
                raise DataError(f'{p}: not found; {DATASETS["imagenet"].how_to_get}')
        self.count = _read_idx(idx)
        self.train, self.classes, self.batch_size = train, classes, batch_size
        mean = [255 * m for m in IMAGENET_MEAN]
        std = [255 * s for s in IMAGENET_STD]
        common = dict(path_imgrec=rec, path_imgidx=idx, batch_size=batch_size, data_shape=(3, input_size, input_size),
                      mean_r=mean[0], mean_g=mean[1], mean_b=mean[2], std_r=std[0], std_g=std[1], std_b=std[2],
                      preprocess_threads=threads, num_parts=num_parts, part_index=part_index, seed=seed,
                      round_batch=True)  # round_batch=False leaves garbage labels with pad=0 in 1.9.1
        if train:
            self.kwargs = dict(shuffle=True, rand_mirror=True, random_resized_crop=True, max_aspect_ratio=4. / 3.,
                               min_aspect_ratio=3. / 4., max_random_area=1, min_random_area=0.08, brightness=0.4,
                               saturation=0.4, contrast=0.4, pca_noise=0.1, **common)
        else:
            self.kwargs = dict(shuffle=False, resize=int(np.ceil(input_size / crop_ratio)), **common)
        self.num_batches = self.count // num_parts // batch_size if train else \
            -(-_part_size(self.count, num_parts, part_index) // batch_size)

    def __len__(self) -> int:
        return self.num_batches

    @property
    def num_samples(self) -> int:
        return self.num_batches * self.batch_size

    def epoch(self, epoch: int, mixup: bool = True) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        import mxnet as mx
        # A new iterator per epoch: after a wrapped last batch, reset() starts the next epoch part-way through.
        it = mx.io.ImageRecordIter(**{**self.kwargs, 'seed': self.kwargs['seed'] + epoch})
        for b, batch in enumerate(it):
            if b >= self.num_batches:
                break
            n = batch.data[0].shape[0] - batch.pad
            yield batch.data[0][:n], batch.label[0][:n].astype('int32')


def build_loaders(cfg, root: str, *, seed: int = 0, num_parts: int = 1, part_index: int = 0,
                  input_size: int = 32, classes: Optional[int] = None, source: str = CACHE):
    """Train and test loaders for a recipe's `data` section (see mxprune.recipe.DataConfig).

    Returns:
        (train_loader, test_loader, classes)
    """
    info = dataset_info(cfg.dataset)
    classes = classes or info.classes
    if cfg.dataset == 'imagenet':
        rec = {s: os.path.join(root, f'{s}.rec') for s in ('train', 'val')}
        return (RecordIterLoader(rec['train'], cfg.batch_size, input_size, train=True, classes=classes, seed=seed,
                                 num_parts=num_parts, part_index=part_index),
                RecordIterLoader(rec['val'], cfg.test_batch_size, input_size, train=False, classes=classes,
                                 num_parts=num_parts, part_index=part_index), classes)
    # a folder the user named holds the data or the run stops here: no folder created, no download attempted
    if not os.path.isdir(root) and not may_download(cfg.format, source):
        raise DataError(f'data folder {root} ({source}) does not exist; {info.how_to_get}')
    train = load_cifar(cfg.dataset, root, True, cfg.format, cfg.train_limit, source)
    test = load_cifar(cfg.dataset, root, False, cfg.format, cfg.test_limit, source)
    a = cfg.augment
    aug = BatchAugment(info.mean, info.std, a.crop_pad, a.flip, a.cutout, a.random_erasing)
    plain = BatchAugment(info.mean, info.std)
    return (ArrayLoader(train, cfg.batch_size, aug, train=True, classes=classes, seed=seed, mixup=a.mixup,
                        num_parts=num_parts, part_index=part_index, prefetch=cfg.prefetch),
            ArrayLoader(test, cfg.test_batch_size, plain, train=False, classes=classes, num_parts=num_parts,
                        part_index=part_index, prefetch=cfg.prefetch), classes)
