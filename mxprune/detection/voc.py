"""Pascal VOC: a VOC-layout folder as a Dataset (as GluonCV's VOCDetection reads it) and VOC mAP (GluonCV's metric,
as its train_ssd.py validates)."""
import dataclasses
import os
import xml.etree.ElementTree as ET
from typing import Dict, List, Sequence

import mxnet as mx
import numpy as np
from mxnet import gluon

from .. import progress
from ..errors import DataError


@dataclasses.dataclass
class VOCItem:
    image: str
    label: np.ndarray  # (boxes, 6): xmin, ymin, xmax, ymax, class, difficult (pixels, 0-based)


class VOCFolder(gluon.data.Dataset):
    """A Pascal VOC layout folder (JPEGImages/, Annotations/, ImageSets/Main/<split>.txt) as GluonCV's
    VOCDetection returns it: (image as uint8 HWC NDArray, label (boxes, 6) float32)."""

    def __init__(self, root: str, split: str, classes: Sequence[str], *, skip_empty: bool = False,
                 cache: bool = True):
        """
        Args:
            root: the folder.
            split: the image-id list ImageSets/Main/<split>.txt.
            classes: class names in label order; objects of other classes are left out.
            skip_empty: leave out images with no object of `classes` (training: the SSD crops need a box).
            cache: decode every image once and keep it in memory.
        """
        self.root, self.split, self.classes = os.path.abspath(root), split, tuple(classes)
        ids_file = os.path.join(self.root, 'ImageSets', 'Main', f'{split}.txt')
        if not os.path.isdir(self.root):
            raise DataError(f'VOC folder {self.root} does not exist; give it with --data-dir or data.root')
        if not os.path.isfile(ids_file):
            raise DataError(f'{ids_file}: image list of split {split!r} not found (expected a Pascal VOC layout: '
                            f'JPEGImages/, Annotations/, ImageSets/Main/<split>.txt)')
        with open(ids_file, encoding='utf-8') as f:
            ids = [line.split()[0] for line in f if line.strip()]
        if not ids:
            raise DataError(f'{ids_file}: lists no image')
        self.items: List[VOCItem] = []
        self.skipped = 0
        for i in ids:
            item = self._read(i)
            if skip_empty and not len(item.label):
                self.skipped += 1
                continue
            self.items.append(item)
        if not self.items:
            raise DataError(f'{ids_file}: no image holds an object of the classes {list(self.classes)}')
        self._cache: Dict[int, mx.nd.NDArray] = {} if cache else None

    def _read(self, image_id: str) -> VOCItem:
        xml_path = os.path.join(self.root, 'Annotations', f'{image_id}.xml')
        img_path = os.path.join(self.root, 'JPEGImages', f'{image_id}.jpg')
        for path in (xml_path, img_path):
            if not os.path.isfile(path):
                raise DataError(f'{path}: listed in ImageSets/Main/{self.split}.txt but missing')
        try:
            root = ET.parse(xml_path).getroot()
            width, height = float(root.find('size/width').text), float(root.find('size/height').text)
            rows = []
            for obj in root.iter('object'):
                name = obj.find('name').text.strip()
                if name not in self.classes:
                    continue
                diff = obj.find('difficult')
                box = obj.find('bndbox')
                # VOC pixel coordinates are 1-based; GluonCV's VOCDetection subtracts 1 and clips to the image
                xmin, ymin, xmax, ymax = (float(box.find(k).text) - 1 for k in ('xmin', 'ymin', 'xmax', 'ymax'))
                xmin, xmax = np.clip([xmin, xmax], 0, width - 1)
                ymin, ymax = np.clip([ymin, ymax], 0, height - 1)
                if not (xmax > xmin and ymax > ymin):
                    raise DataError(f'{xml_path}: object {name!r} has an empty box ({xmin}, {ymin}, {xmax}, '
                                    f'{ymax})')
                rows.append([xmin, ymin, xmax, ymax, self.classes.index(name),
                             int(diff.text) if diff is not None and diff.text else 0])
        except (ET.ParseError, AttributeError, TypeError, ValueError) as e:
            raise DataError(f'{xml_path}: not a Pascal VOC annotation ({type(e).__name__}: {e})') from None
        return VOCItem(img_path, np.array(rows, np.float32).reshape(-1, 6))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int):
        item = self.items[idx]
        img = self._cache.get(idx) if self._cache is not None else None
        if img is None:
            img = mx.image.imread(item.image)
            if self._cache is not None:
                self._cache[idx] = img
        return img, item.label.copy()

    def num_boxes(self) -> int:
        return int(sum(len(item.label) for item in self.items))



def evaluate(net, loader, ctx: Sequence[mx.Context], classes: Sequence[str], *, metric: str = 'voc07',
             iou_thresh: float = 0.5, nms_thresh: float = 0.45, nms_topk: int = 400, post_nms: int = 100) -> dict:
    """VOC mAP (GluonCV's VOC07MApMetric: 11-point, or VOCMApMetric: area) at `iou_thresh`, as train_ssd.py's
    validate(): NMS on, boxes clipped to the input, difficult objects ignored. Returns the mAP, per class AP and
    the number of images."""
    from gluoncv.utils.metrics.voc_detection import VOC07MApMetric, VOCMApMetric
    m = METRICS[metric](VOC07MApMetric, VOCMApMetric)(iou_thresh=iou_thresh, class_names=list(classes))
    old = (net.nms_thresh, net.nms_topk, net.post_nms) if hasattr(net, 'set_nms') else None
    if old:  # a reloaded export (SymbolBlock) keeps the NMS settings it was exported with
        net.set_nms(nms_thresh=nms_thresh, nms_topk=nms_topk, post_nms=post_nms)
    n = 0
    try:
        for batch in progress.bar(loader, desc='mAP', total=len(loader)):
            xs = gluon.utils.split_and_load(batch[0], ctx, even_split=False)
            ys = gluon.utils.split_and_load(batch[1], ctx, even_split=False)
            det_b, det_i, det_s, gt_b, gt_i, gt_d = [], [], [], [], [], []
            for x, y in zip(xs, ys):
                ids, scores, bboxes = net(x)
                det_i.append(ids)
                det_s.append(scores)
                det_b.append(bboxes.clip(0, batch[0].shape[2]))
                gt_i.append(y.slice_axis(axis=-1, begin=4, end=5))
                gt_b.append(y.slice_axis(axis=-1, begin=0, end=4))
                gt_d.append(y.slice_axis(axis=-1, begin=5, end=6) if y.shape[-1] > 5 else None)
            m.update(det_b, det_i, det_s, gt_b, gt_i, gt_d)
            n += batch[0].shape[0]
    finally:
        if old:
            net.set_nms(nms_thresh=old[0], nms_topk=old[1], post_nms=old[2])
    names, values = m.get()
    names, values = (names, values) if isinstance(names, list) else ([names], [values])
    per_class = {k: float(v) for k, v in zip(names, values) if k != 'mAP'}
    return {'map': float(values[names.index('mAP')]), 'per_class': per_class, 'images': n, 'metric': metric,
            'iou_thresh': iou_thresh}


METRICS = {'voc07': lambda v07, v: v07, 'voc': lambda v07, v: v}
