"""Object detection: GluonCV SSD / YOLOv3 detectors made prunable, a VOC-layout reader, training, VOC mAP, speed.

    native.py  SymbolBlock -> Gluon layers, so a detector's backbone can be masked, cut and exported
    model.py   building a detector (seeded, native), its backbone globs, MACs by part, raw outputs
    voc.py     the Pascal VOC folder reader and VOC mAP
    train.py   GluonCV's loaders, targets and losses in mxprune's loop (optimizer, schedule, hooks)
    speed.py   dense vs pruned latency of the detector and of the network alone
    task.py    the detection task of mxprune.pipeline (`mxprune detect`): its phases, metric and report

Data, training and evaluation follow GluonCV's `train_ssd.py` / `train_yolo3.py`.
"""
from .model import (BACKBONES, VECTOR_INITS, backbone_of, backbone_selection, build_detector, family, initialize,
                    load_params, macs_by_part, parts_of, raw_outputs, train_outputs)
from .native import CONV_CLASSES, NATIVE_LAYERS, SymbolGraph, native, to_native
from .speed import speedup
# `detection.train` names the training function (as before the package), not its module
from .train import LOADERS, MEAN, STD, STEPS, build_loaders, train
from .voc import METRICS, VOCFolder, VOCItem, evaluate

__all__ = ['BACKBONES', 'CONV_CLASSES', 'LOADERS', 'MEAN', 'METRICS', 'NATIVE_LAYERS', 'STD', 'STEPS',
           'VECTOR_INITS', 'SymbolGraph', 'VOCFolder', 'VOCItem', 'backbone_of', 'backbone_selection',
           'build_detector', 'build_loaders', 'evaluate', 'family', 'initialize', 'load_params', 'macs_by_part',
           'native', 'parts_of', 'raw_outputs', 'speedup', 'to_native', 'train', 'train_outputs']
