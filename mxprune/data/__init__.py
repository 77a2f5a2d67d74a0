"""Image classification data: CIFAR-10/100 decoded once into memory with batched augmentation, ImageNet via RecordIO.

ImageNet and Imagenette (a 10-class preset of it) are read by mx.io.ImageRecordIter (records.py).

Sources for CIFAR, tried in this order when `format` is `auto`:
  rec     train.rec/.idx + test.rec/.idx (MXNet RecordIO, as im2rec writes; JPEG or PNG records)
  bin     the official binary layout: data_batch_1..5.bin + test_batch.bin (CIFAR-10), train.bin + test.bin
          (CIFAR-100), directly in the root or in cifar-10-batches-bin/ / cifar-100-binary/
  folder  train/<class>/*.png|jpg and test/<class>/*.png|jpg, classes in sorted order
  download  gluon's own CIFAR downloader into the root (needs internet)

Augmentation follows GluonCV's CIFAR training transforms (RandomCrop with zero padding, RandomFlipLeftRight,
ToTensor, Normalize; RandomErasing; mixup as in GluonCV's train_mixup_cifar10.py) but runs on a whole uint8
batch with numpy in a background thread; tests check it against GluonCV's per-image result.

The package keeps these names importable as `mxprune.data.<name>`: sources.py (datasets, data folders, readers),
augment.py (batched augmentation), records.py (RecordIO through ImageRecordIter), loaders.py (loaders and
build_loaders).
"""
from .augment import ERASE_FILL, BatchAugment, crop_flip, cutout_boxes, erase, erasing_boxes, mixup_batch
from .loaders import ArrayLoader, build_loaders, prefetched
from .records import RecordIterLoader, check_records, copy_first, read_offsets
from .sources import (CACHE, CIFAR_MEAN, CIFAR_STD, DATASETS, ENV_DATA, IMAGE_EXT, IMAGENET_MEAN, IMAGENET_STD,
                      SHARED, SHARED_DATA, DatasetInfo, ImageSet, dataset_info, default_root, load_cifar,
                      may_download, read_bin, read_folder, read_rec, record_count, resolve_root, root_source,
                      shared_root)

__all__ = ['ERASE_FILL', 'BatchAugment', 'crop_flip', 'cutout_boxes', 'erase', 'erasing_boxes', 'mixup_batch',
           'ArrayLoader', 'RecordIterLoader', 'build_loaders', 'check_records', 'copy_first', 'prefetched',
           'read_offsets', 'SHARED', 'SHARED_DATA', 'shared_root',
           'CACHE', 'CIFAR_MEAN', 'CIFAR_STD', 'DATASETS', 'ENV_DATA', 'IMAGE_EXT', 'IMAGENET_MEAN', 'IMAGENET_STD',
           'DatasetInfo', 'ImageSet', 'dataset_info', 'default_root', 'load_cifar', 'may_download', 'read_bin',
           'read_folder', 'read_rec', 'record_count', 'resolve_root', 'root_source']
