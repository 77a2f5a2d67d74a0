"""ImageNet-style data (ImageNet, Imagenette) read from RecordIO by mx.io.ImageRecordIter.

The augmentation is GluonCV's own rec path (`get_data_rec` in scripts/classification/imagenet/train_imagenet.py):
ImageRecordIter's options for random-resized crop (area 0.08-1, or data.augment.min_crop_area-1; aspect 3/4-4/3),
mirror, colour jitter 0.4 and PCA lighting 0.1 when training; resize of the shorter side to size / 0.875 and a center
crop when evaluating. The C++ iterator decodes and augments in its own threads, outside the GIL, where gluon's
per-image Python transforms (the same operations, checked against it in tests/test_imagenette.py) would compete with
training for the cores.

Before any C++ thread reads them, the .rec file is checked against its .idx (each record's magic, length, label
and image): a truncated or foreign file fails inside MXNet's decoder threads otherwise, with a C++ traceback or a
SIGFPE that ends the process.
With a limit the first N records are copied into a temporary pair of files, so that every epoch shuffles exactly
those N (as the CIFAR path keeps its first N images).
"""
import os
import shutil
import struct
import tempfile
import weakref
from typing import Iterator, List, Optional, Tuple

import numpy as np

from ..errors import DataError, reason
from .sources import IMAGENET_MEAN, IMAGENET_STD

MAGIC = 0xced7230a  # dmlc RecordIO: every record starts with this word, then (cflag << 29 | length)
LENGTH_BITS = (1 << 29) - 1
HEADER = struct.Struct('<IfQQ')  # IRHeader: flag, label, id, id2 (mx.recordio.pack)
CROP_RATIO = 0.875  # GluonCV's evaluation crop: resize to size / 0.875, center crop to size
MIN_CROP_AREA = 0.08  # GluonCV's (and torchvision's) smallest random-resized crop, as a fraction of the image


def read_offsets(idx: str) -> List[int]:
    """The record offsets an .idx file lists, in file order (refuses a malformed line)."""
    offsets = []
    with open(idx, encoding='utf-8', errors='replace') as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split('\t')
            if len(parts) != 2 or not parts[0].strip().isdigit() or not parts[1].strip().isdigit():
                raise DataError(f'{idx}: line {n} is not "<index>\\t<offset>"; the .idx file is corrupt (rebuild '
                                f'it with im2rec or mxnet.recordio.MXIndexedRecordIO)')
            offsets.append(int(parts[1]))
    if not offsets:
        raise DataError(f'{idx}: empty index; expected one "<index>\\t<offset>" line per record')
    return sorted(offsets)


def check_records(rec: str, idx: str, classes: int, limit: Optional[int] = None) -> List[int]:
    """Checks that every record `idx` lists (the first `limit`: those a run reads) is a whole RecordIO record in
    `rec` with a label below `classes` and an image OpenCV can decode (MXNet's decoder threads die with SIGFPE on
    one they cannot).

    Returns:
        the record offsets in file order
    """
    import cv2
    offsets = read_offsets(idx)
    size = os.path.getsize(rec)
    ends = offsets[1:] + [size]
    rebuild = f'expected the RecordIO file that {os.path.basename(idx)} indexes (rebuild both with im2rec)'
    with open(rec, 'rb') as f:
        for i, (off, end) in enumerate(zip(offsets[:limit], ends)):
            f.seek(off)
            item = f.read(end - off)
            if len(item) < 8 + HEADER.size:
                raise DataError(f'{rec}: record {i} at byte {off} lies past the end of the file ({size} bytes); '
                                f'the file is truncated; {rebuild}')
            magic, lrec = struct.unpack('<II', item[:8])
            if magic != MAGIC:
                raise DataError(f'{rec}: no RecordIO record at byte {off} (record {i}); the file is corrupt or '
                                f'not the one indexed; {rebuild}')
            length = lrec & LENGTH_BITS
            if off + 8 + length > size:
                raise DataError(f'{rec}: record {i} ends past the end of the file ({size} bytes); the file is '
                                f'truncated; {rebuild}')
            flag, label = HEADER.unpack(item[8:8 + HEADER.size])[:2]
            if flag == 0 and not 0 <= label < classes:
                raise DataError(f'{rec}: record {i} has label {label:g}; expected 0..{classes - 1} (wrong dataset '
                                f'or model.classes?)')
            if lrec >> 29:  # a record split around a magic word in its bytes: left to the reader
                continue
            # an eighth-size greyscale decode still parses every JPEG marker, at a fraction of the full cost
            image = np.frombuffer(item, np.uint8, length - HEADER.size - 4 * flag, 8 + HEADER.size + 4 * flag)
            if image.size == 0 or cv2.imdecode(image, cv2.IMREAD_REDUCED_GRAYSCALE_8) is None:
                raise DataError(f'{rec}: record {i} holds no decodable image; the file is corrupt; {rebuild}')
    return offsets


def copy_first(rec: str, offsets: List[int], n: int, folder: str) -> Tuple[str, str]:
    """Copies the first `n` records (raw bytes, in file order) into folder/first.rec and its .idx."""
    ends = offsets[1:] + [os.path.getsize(rec)]
    out_rec, out_idx = os.path.join(folder, 'first.rec'), os.path.join(folder, 'first.idx')
    with open(rec, 'rb') as src, open(out_rec, 'wb') as dst, open(out_idx, 'w') as index:
        for i in range(n):
            index.write(f'{i}\t{dst.tell()}\n')
            src.seek(offsets[i])
            dst.write(src.read(ends[i] - offsets[i]))
    return out_rec, out_idx


def _part_size(n: int, parts: int, index: int) -> int:
    return len(range(index, n, parts))


class RecordIterLoader:
    """Batches of a RecordIO file through mx.io.ImageRecordIter with GluonCV's ImageNet augmentation.

    Args:
        rec: the .rec file (its .idx beside it).
        limit: read only the first N records (None: all).
        flip: random horizontal mirror when training.
        mixup: GluonCV's mixup Beta(alpha, alpha) on each training batch (0 = off).
    """

    def __init__(self, rec: str, batch_size: int, input_size: int, *, train: bool, classes: int, seed: int = 0,
                 num_parts: int = 1, part_index: int = 0, threads: int = 2, crop_ratio: float = CROP_RATIO,
                 limit: Optional[int] = None, flip: bool = True, mixup: float = 0.0,
                 min_crop_area: float = MIN_CROP_AREA, how_to_get: str = ''):
        idx = os.path.splitext(rec)[0] + '.idx'
        for p in (rec, idx):
            if not os.path.isfile(p):
                raise DataError(f'{p}: not found; expected {os.path.basename(rec)} with {os.path.basename(idx)} '
                                f'beside it{"; " + how_to_get if how_to_get else ""}')
        offsets = check_records(rec, idx, classes, limit)
        self.source = rec
        if limit is not None and limit < len(offsets):
            folder = tempfile.mkdtemp(prefix='mxprune-first-')
            weakref.finalize(self, shutil.rmtree, folder, True)
            rec, idx = copy_first(rec, offsets, limit, folder)
            offsets = offsets[:limit]
        self.count = len(offsets)
        self.train, self.classes, self.batch_size = train, classes, batch_size
        self.seed, self.part_index, self.mixup = seed, part_index, mixup
        if train and batch_size > self.count // num_parts:
            raise DataError(f'{self.source}: {self.count} images cannot fill one batch of {batch_size} per worker '
                            f'for {num_parts} worker(s)')
        mean = [255 * m for m in IMAGENET_MEAN]
        std = [255 * s for s in IMAGENET_STD]
        common = dict(path_imgrec=rec, path_imgidx=idx, batch_size=batch_size, data_shape=(3, input_size, input_size),
                      mean_r=mean[0], mean_g=mean[1], mean_b=mean[2], std_r=std[0], std_g=std[1], std_b=std[2],
                      preprocess_threads=threads, num_parts=num_parts, part_index=part_index, seed=seed,
                      round_batch=True)  # round_batch=False leaves garbage labels with pad=0 in 1.9.1
        if train:
            self.kwargs = dict(shuffle=True, rand_mirror=flip, random_resized_crop=True, max_aspect_ratio=4. / 3.,
                               min_aspect_ratio=3. / 4., max_random_area=1, min_random_area=min_crop_area,
                               brightness=0.4, saturation=0.4, contrast=0.4, pca_noise=0.1, **common)
        else:
            self.kwargs = dict(shuffle=False, resize=int(np.ceil(input_size / crop_ratio)), **common)
        self.num_batches = self.count // num_parts // batch_size if train else \
            -(-_part_size(self.count, num_parts, part_index) // batch_size)

    def __len__(self) -> int:
        return self.num_batches

    @property
    def num_samples(self) -> int:
        return self.num_batches * self.batch_size if self.train else min(self.count, self.num_batches *
                                                                         self.batch_size)

    def epoch(self, epoch: int, mixup: bool = True) -> Iterator[Tuple]:
        """Yields (float32 NCHW data, labels) as NDArrays: int32 labels, or soft (N, classes) labels with mixup."""
        import mxnet as mx
        rng = np.random.default_rng([self.seed, epoch, self.part_index, 1])
        try:
            # A new iterator per epoch: after a wrapped last batch, reset() starts the next epoch part-way through.
            it = mx.io.ImageRecordIter(**{**self.kwargs, 'seed': self.kwargs['seed'] + epoch})
            for b, batch in enumerate(it):
                if b >= self.num_batches:
                    break
                n = batch.data[0].shape[0] - batch.pad
                x, y = batch.data[0][:n], batch.label[0][:n].astype('int32')
                if self.train and self.mixup and mixup:
                    x, y = _mixup(x, y, self.classes, rng.beta(self.mixup, self.mixup))
                yield x, y
        except mx.base.MXNetError as e:
            raise DataError(f'{self.source}: {reason(e)}; the file could not be read to the end') from None


def _mixup(x, y, classes: int, lam: float):
    """GluonCV's mixup (as mxprune.data.augment.mixup_batch): each sample mixed with the batch reversed."""
    import mxnet as mx
    onehot = mx.nd.one_hot(y, classes)
    return (lam * x + (1 - lam) * mx.nd.reverse(x, axis=0),
            lam * onehot + (1 - lam) * mx.nd.reverse(onehot, axis=0))
