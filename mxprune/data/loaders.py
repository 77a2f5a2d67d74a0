"""Loaders: batches of an in-memory ImageSet (augmented in a background thread), ImageNet-style RecordIO through
mx.io.ImageRecordIter (records.py), and the pair a recipe's `data` section asks for."""
import os
import queue
import threading
from typing import Iterator, Optional, Tuple

import numpy as np

from ..errors import DataError
from .augment import BatchAugment, mixup_batch
from .records import MIN_CROP_AREA, RecordIterLoader
from .sources import CACHE, DatasetInfo, ImageSet, dataset_info, load_cifar, may_download

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
        return prefetched(self.batches(epoch, mixup), self.prefetch)


def _part_size(n: int, parts: int, index: int) -> int:
    return len(range(index, n, parts))


_DONE = object()


def prefetched(it: Iterator, depth: int) -> Iterator:
    """The items of `it`, produced up to `depth` ahead by a background thread (its errors re-raised here)."""
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


# ImageRecordIter has no box erasing; its crop is the random-resized one, so crop_pad has no meaning there
RECORD_UNSUPPORTED = ('cutout', 'random_erasing')
MEMORY_UNSUPPORTED = ('min_crop_area',)  # the in-memory path crops by padding (crop_pad), not random-resized


def _refuse_augment(cfg, info: DatasetInfo, keys, why: str, expected: str) -> None:
    """One line naming the first of `keys` set in data.augment that this dataset's reader cannot do."""
    for key in keys:
        if getattr(cfg.augment, key):
            raise DataError(f'data.augment.{key}: {getattr(cfg.augment, key)!r} is not supported for {info.name} '
                            f'({why}); expected {expected}')


def _memory_loaders(cfg, info: DatasetInfo, root: str, source: str, classes: int, seed: int, num_parts: int,
                    part_index: int, input_size: int):
    _refuse_augment(cfg, info, MEMORY_UNSUPPORTED, 'its crop is crop_pad\'s padded one', 'it left out')
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
                        part_index=part_index, prefetch=cfg.prefetch))


def _record_loaders(cfg, info: DatasetInfo, root: str, source: str, classes: int, seed: int, num_parts: int,
                    part_index: int, input_size: int):
    _refuse_augment(cfg, info, RECORD_UNSUPPORTED, 'mx.io.ImageRecordIter', '0 (flip and mixup are)')
    if not os.path.isdir(root):
        raise DataError(f'data folder {root} ({source}) does not exist; {info.how_to_get}')
    a = cfg.augment
    common = dict(classes=classes, num_parts=num_parts, part_index=part_index, how_to_get=info.how_to_get)
    return (RecordIterLoader(os.path.join(root, 'train.rec'), cfg.batch_size, input_size, train=True, seed=seed,
                             limit=cfg.train_limit, flip=a.flip, mixup=a.mixup,
                             min_crop_area=a.min_crop_area or MIN_CROP_AREA, **common),
            RecordIterLoader(os.path.join(root, 'val.rec'), cfg.test_batch_size, input_size, train=False,
                             limit=cfg.test_limit, **common))


BUILDERS = {'memory': _memory_loaders, 'record': _record_loaders}  # by DatasetInfo.reader


def build_loaders(cfg, root: str, *, seed: int = 0, num_parts: int = 1, part_index: int = 0,
                  input_size: int = 32, classes: Optional[int] = None, source: str = CACHE):
    """Train and test loaders for a recipe's `data` section (see mxprune.recipe.DataConfig).

    Returns:
        (train_loader, test_loader, classes)
    """
    info = dataset_info(cfg.dataset)
    classes = classes or info.classes
    train, test = BUILDERS[info.reader](cfg, info, root, source, classes, seed, num_parts, part_index, input_size)
    return train, test, classes
