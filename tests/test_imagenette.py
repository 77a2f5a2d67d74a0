"""Imagenette through the ImageNet RecordIO path, on small slices of the shared copy (../shared/datasets/imagenette):
the reader against the .lst files, the transforms against gluon's own (as GluonCV's train_imagenet.py composes
them), the limits, the folder it reads, and broken files stopped with one line before MXNet's threads see them."""
import json
import os

import mxnet as mx
import numpy as np
import pytest
from conftest import run_tool, shared_dataset

from mxprune import data as D
from mxprune.errors import DataError
from mxprune.recipe import AugmentConfig, DataConfig

MEAN, STD = D.IMAGENET_MEAN, D.IMAGENET_STD
RECIPE = 'recipes/imagenette_resnet18.yaml'


@pytest.fixture(scope='module')
def imagenette():
    return shared_dataset('imagenette', 'val.rec')


def lst_labels(root: str, split: str, n: int) -> list:
    with open(os.path.join(root, f'{split}.lst')) as f:
        return [int(line.split('\t')[1]) for line in f.read().splitlines()[:n]]


def first_records(root: str, split: str, n: int, folder) -> str:
    """A data folder whose <split>.rec/.idx hold the first n records of the shared copy."""
    rec, idx = D.copy_first(os.path.join(root, f'{split}.rec'), D.read_offsets(os.path.join(root, f'{split}.idx')),
                            n, str(folder))
    os.replace(rec, folder / f'{split}.rec')
    os.replace(idx, folder / f'{split}.idx')
    return str(folder / f'{split}.rec')


def test_reader_labels_and_shapes_follow_the_lst_files(imagenette):
    val = D.RecordIterLoader(os.path.join(imagenette, 'val.rec'), 16, 64, train=False, classes=10, limit=40)
    batches = list(val.epoch(0))
    assert (len(val), val.num_samples) == (3, 40)
    assert [x.shape for x, _ in batches] == [(16, 3, 64, 64), (16, 3, 64, 64), (8, 3, 64, 64)]
    assert np.concatenate([y.asnumpy() for _, y in batches]).tolist() == lst_labels(imagenette, 'val', 40)
    train = D.RecordIterLoader(os.path.join(imagenette, 'train.rec'), 16, 64, train=True, classes=10, limit=48)
    labels = np.concatenate([y.asnumpy() for _, y in train.epoch(0)])
    # shuffled, but exactly the first 48 records: the limit takes a prefix of the file as the CIFAR path does
    assert (len(train), train.num_samples) == (3, 48)
    assert sorted(labels.tolist()) == sorted(lst_labels(imagenette, 'train', 48))


def test_eval_transform_is_gluoncvs_resize_and_center_crop(imagenette):
    from mxnet.gluon.data.vision import transforms as T
    size = 96
    # GluonCV train_imagenet.py's evaluation transform for the same input size
    gluon_eval = T.Compose([T.Resize(int(np.ceil(size / 0.875)), keep_ratio=True), T.CenterCrop(size), T.ToTensor(),
                            T.Normalize(MEAN, STD)])
    ds = mx.gluon.data.vision.ImageRecordDataset(os.path.join(imagenette, 'val.rec'))
    x, _ = next(iter(D.RecordIterLoader(os.path.join(imagenette, 'val.rec'), 12, size, train=False, classes=10,
                                        limit=12).epoch(0)))
    want = np.stack([gluon_eval(ds[i][0]).asnumpy() for i in range(12)])
    np.testing.assert_allclose(x.asnumpy(), want, atol=1e-5)


def test_train_augmentation_is_in_gluoncvs_range_and_a_function_of_seed_and_epoch(imagenette):
    from mxnet.gluon.data.vision import transforms as T
    size, n = 64, 64
    rec = os.path.join(imagenette, 'train.rec')

    def epoch(seed, e):
        loader = D.RecordIterLoader(rec, 32, size, train=True, classes=10, limit=n, seed=seed)
        return np.concatenate([x.asnumpy() for x, _ in loader.epoch(e)])

    ours = epoch(0, 0)
    np.testing.assert_array_equal(ours, epoch(0, 0))
    assert not np.array_equal(ours, epoch(0, 1)) and not np.array_equal(ours, epoch(1, 0))
    gluon_train = T.Compose([T.RandomResizedCrop(size), T.RandomFlipLeftRight(),
                             T.RandomColorJitter(brightness=0.4, contrast=0.4, saturation=0.4), T.RandomLighting(0.1),
                             T.ToTensor(), T.Normalize(MEAN, STD)])
    mx.random.seed(0)
    ds = mx.gluon.data.vision.ImageRecordDataset(rec)
    theirs = np.stack([gluon_train(ds[i][0]).asnumpy() for i in range(n)])
    assert ours.shape == theirs.shape == (n, 3, size, size) and ours.dtype == np.float32
    lo = (0 - np.array(MEAN)) / np.array(STD)
    hi = (1 - np.array(MEAN)) / np.array(STD)
    for x in (ours, theirs):  # both clip to pixels in 0..255 after jitter and lighting
        assert (x.min(axis=(0, 2, 3)) >= lo - 1e-4).all() and (x.max(axis=(0, 2, 3)) <= hi + 1e-4).all()
    # same operations and strengths: per-channel spread within a fifth of each other on 64 images
    np.testing.assert_allclose(ours.std(axis=(0, 2, 3)), theirs.std(axis=(0, 2, 3)), rtol=0.2)


def test_the_limits_set_the_steps_per_epoch(imagenette):
    cfg = DataConfig(dataset='imagenette', batch_size=32, test_batch_size=64, train_limit=256, test_limit=100,
                     augment=AugmentConfig(crop_pad=0))
    train, test, classes = D.build_loaders(cfg, imagenette, input_size=32, source='--data-dir')
    assert (classes, len(train), train.num_samples, len(test), test.num_samples) == (10, 8, 256, 2, 100)
    assert sum(1 for _ in train.epoch(0)) == 8 and sum(len(y) for _, y in test.epoch(0)) == 100


def test_the_shared_copy_is_the_default_folder_after_the_named_ones(imagenette, monkeypatch):
    monkeypatch.delenv(D.ENV_DATA, raising=False)
    assert D.root_source('imagenette') == (imagenette, D.SHARED)
    assert D.root_source('imagenet')[1] == D.CACHE  # only a dataset with a shared copy
    monkeypatch.setenv(D.ENV_DATA, '/env/dir')
    assert D.root_source('imagenette') == ('/env/dir', '$' + D.ENV_DATA)
    assert D.root_source('imagenette', 'recipe_dir', '/cli') == ('/cli', '--data-dir')
    assert D.dataset_info('imagenette').classes == 10


def test_augmentations_imagerecorditer_cannot_do_are_refused(imagenette):
    cfg = DataConfig(dataset='imagenette', augment=AugmentConfig(cutout=8))
    with pytest.raises(DataError, match=r'data.augment.cutout: 8 is not supported for imagenette'):
        D.build_loaders(cfg, imagenette)


def test_min_crop_area_sets_how_much_of_each_photo_the_random_crop_keeps(imagenette, tmp_path):
    size, n = 32, 64
    rec = first_records(imagenette, 'train', n, tmp_path)
    ds = mx.gluon.data.vision.ImageRecordDataset(rec)
    whole = np.stack([mx.image.imresize(ds[i][0], size, size).asnumpy().mean(axis=2).ravel() for i in range(n)])

    def likeness(**kw):  # mean correlation of each crop with its whole photo, in file order
        loader = D.RecordIterLoader(rec, 32, size, train=True, classes=10, flip=False, **kw)
        loader.kwargs['shuffle'] = False
        x = np.concatenate([x.asnumpy().mean(axis=1).reshape(len(x), -1) for x, _ in loader.epoch(0)])
        return float(np.mean([np.corrcoef(x[k], whole[k])[0, 1] for k in range(n)]))

    assert likeness() == likeness(min_crop_area=0.08)  # GluonCV's default
    # at 0.7 every aspect ratio in 3/4..4/3 still fits in a square photo; nearer 1 ImageRecordIter's tries fail
    assert likeness(min_crop_area=0.7) > likeness(min_crop_area=0.35) > likeness(min_crop_area=0.08) + 0.05
    cfg = DataConfig(dataset='imagenette', augment=AugmentConfig(crop_pad=0, min_crop_area=0.35), batch_size=32,
                     train_limit=64, test_limit=32)
    assert D.build_loaders(cfg, imagenette, input_size=size)[0].kwargs['min_random_area'] == 0.35
    cifar = DataConfig(dataset='cifar10', augment=AugmentConfig(min_crop_area=0.35))
    with pytest.raises(DataError, match=r'data.augment.min_crop_area: 0.35 is not supported for cifar10'):
        D.build_loaders(cifar, str(tmp_path))


def test_mixup_gives_soft_labels(imagenette):
    loader = D.RecordIterLoader(os.path.join(imagenette, 'train.rec'), 16, 32, train=True, classes=10, limit=16,
                                mixup=0.2)
    _, y = next(iter(loader.epoch(0)))
    assert y.shape == (16, 10) and np.allclose(y.sum(axis=1).asnumpy(), 1)


BREAKS = {
    'truncated': (lambda b, offs: b[:offs[5] + 100], r'record 5 ends past the end of the file'),
    'foreign': (lambda b, offs: b'\x00' * len(b), r'no RecordIO record at byte 0 \(record 0\)'),
    'undecodable image': (lambda b, offs: b[:offs[3] + 34] + b'\x00' * 400 + b[offs[3] + 434:],
                          r'record 3 holds no decodable image'),
}


@pytest.mark.parametrize('kind', BREAKS)
def test_broken_rec_files_stop_with_one_line_before_mxnet_reads_them(imagenette, tmp_path, kind):
    rec = first_records(imagenette, 'val', 20, tmp_path)
    offs = D.read_offsets(str(tmp_path / 'val.idx'))
    with open(rec, 'rb') as f:
        blob = f.read()
    with open(rec, 'wb') as f:
        f.write(BREAKS[kind][0](blob, offs))
    with pytest.raises(DataError, match=BREAKS[kind][1]) as e:
        D.RecordIterLoader(rec, 8, 32, train=False, classes=10)
    assert '\n' not in str(e.value) and 'val.rec' in str(e.value)


def test_wrong_labels_and_missing_files_are_named(imagenette, tmp_path):
    rec = first_records(imagenette, 'val', 20, tmp_path)
    with pytest.raises(DataError, match=r'record \d+ has label [4-9]; expected 0..3'):
        D.RecordIterLoader(rec, 8, 32, train=False, classes=4)
    os.remove(tmp_path / 'val.idx')
    with pytest.raises(DataError, match=r'val.idx: not found; expected val.rec with val.idx beside it'):
        D.RecordIterLoader(rec, 8, 32, train=False, classes=10)


def _data_dir(imagenette: str, folder, val_bytes=None):
    """train.rec/.idx linked from the shared copy; val.rec a copy of its first 64 records, or `val_bytes` of it."""
    for name in ('train.rec', 'train.idx'):
        os.symlink(os.path.join(imagenette, name), folder / name)
    rec = first_records(imagenette, 'val', 64, folder)
    if val_bytes is not None:
        with open(rec, 'rb') as f:
            blob = f.read()
        with open(rec, 'wb') as f:
            f.write(blob[:val_bytes])
    return str(folder)


@pytest.mark.e2e
def test_two_training_steps_through_the_tool(imagenette, tmp_path):
    (tmp_path / 'data').mkdir()
    data = _data_dir(imagenette, tmp_path / 'data')
    out = tmp_path / 'run'
    r = run_tool(['tools/train.py', '--recipe', RECIPE, '--data-dir', data, '--out', str(out), '--quiet',
                  '--set', 'data.train_limit=64', '--set', 'data.batch_size=32', '--set', 'model.input_size=64',
                  '--set', 'train.epochs=1', '--set', 'train.warmup_epochs=0'])
    assert r.returncode == 0, r.stderr[-2000:]
    assert f'data {data} (from --data-dir)' in r.stdout
    with open(out / 'log.jsonl') as f:
        rows = [json.loads(line) for line in f]
    start = next(row for row in rows if row.get('event') == 'start')
    assert (start['train_images'], start['test_images']) == (64, 64)
    assert [row['epoch'] for row in rows if row.get('phase') == 'dense'] == [0]
    assert os.path.isfile(out / 'dense.params')


@pytest.mark.e2e
@pytest.mark.parametrize('val', ['truncated', 'missing'])
def test_a_broken_val_rec_is_one_line_and_exit_2_through_the_tool(imagenette, tmp_path, val):
    (tmp_path / 'data').mkdir()
    data = _data_dir(imagenette, tmp_path / 'data', val_bytes=5000)
    if val == 'missing':
        os.remove(os.path.join(data, 'val.rec'))
    r = run_tool(['tools/train.py', '--recipe', RECIPE, '--data-dir', data, '--out', str(tmp_path / 'run')])
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    want = {'truncated': 'ends past the end of the file', 'missing': 'val.rec: not found'}[val]
    assert len(lines) == 1 and lines[0].startswith('error: ') and want in lines[0] and 'Traceback' not in r.stderr
    assert os.path.join(data, 'val.rec') in lines[0]
    assert not (tmp_path / 'run').exists()
