"""Batched augmentation (numpy, uint8 NHWC in, float32 NCHW out): GluonCV's CIFAR transforms and mixup applied to
a whole batch at once."""
from typing import Optional, Sequence, Tuple

import numpy as np

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


def mixup_batch(x: np.ndarray, y: np.ndarray, classes: int, lam: float) -> Tuple[np.ndarray, np.ndarray]:
    """GluonCV's mixup: mix each sample with the batch reversed; soft labels mix the same way."""
    onehot = np.eye(classes, dtype=np.float32)[y]
    lam = np.float32(lam)
    return lam * x + (1 - lam) * x[::-1], lam * onehot + (1 - lam) * onehot[::-1]
