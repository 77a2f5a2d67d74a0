import os
import random
import shutil

import mxnet as mx
import numpy as np
import pytest

from mxprune import data as D
from mxprune.errors import DataError


@pytest.fixture(scope='module')
def slice64(cifar_root):
    return D.load_cifar('cifar10', cifar_root, True, 'rec', limit=64)


def test_rec_slice_matches_gluon_dataset(cifar_root, slice64):
    assert slice64.images.shape == (64, 32, 32, 3) and slice64.images.dtype == np.uint8
    ds = mx.gluon.data.vision.ImageRecordDataset(os.path.join(cifar_root, 'train.rec'))
    for i in (0, 17, 63):
        img, label = ds[i]
        assert int(label) == slice64.labels[i]
        # both decode the same JPEG with OpenCV (ours directly, gluon's through libmxnet): RGB, near-identical
        assert np.abs(img.asnumpy().astype(int) - slice64.images[i].astype(int)).mean() < 1.0


def test_binary_layout_round_trip(tmp_path, slice64):
    sub = tmp_path / 'cifar-10-batches-bin'
    sub.mkdir()
    rec = np.concatenate([slice64.labels[:, None].astype(np.uint8),
                          slice64.images.transpose(0, 3, 1, 2).reshape(64, -1)], axis=1)
    for i in range(1, 6):
        rec[(i - 1) * 12:i * 12].tofile(sub / f'data_batch_{i}.bin')
    rec[60:].tofile(sub / 'test_batch.bin')
    train = D.load_cifar('cifar10', str(tmp_path), True)
    assert np.array_equal(train.images, slice64.images[:60]) and np.array_equal(train.labels, slice64.labels[:60])
    test = D.load_cifar('cifar10', str(tmp_path), False, 'bin')
    assert np.array_equal(test.images, slice64.images[60:])
    (sub / 'test_batch.bin').write_bytes(b'\0' * 100)
    with pytest.raises(DataError, match='not a whole number of 3073-byte cifar10 records'):
        D.load_cifar('cifar10', str(tmp_path), False)


def test_cifar100_binary_uses_fine_labels(tmp_path, slice64):
    rec = np.concatenate([np.full((64, 1), 3, np.uint8), (slice64.labels[:, None] * 7).astype(np.uint8),
                          slice64.images.transpose(0, 3, 1, 2).reshape(64, -1)], axis=1)
    rec.tofile(tmp_path / 'train.bin')
    s = D.load_cifar('cifar100', str(tmp_path), True)
    assert np.array_equal(s.labels, slice64.labels * 7)


def test_image_folder_layout(tmp_path, slice64):
    import cv2
    def write(labels):
        for i, (img, lab) in enumerate(zip(slice64.images, slice64.labels)):
            if lab in labels:
                d = tmp_path / 'train' / f'class{lab}'
                d.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(d / f'{i:03d}.png'), img[:, :, ::-1])
    write(set(range(9)))
    with pytest.raises(DataError, match='9 class folders; the dataset has 10 classes'):
        D.load_cifar('cifar10', str(tmp_path), True, 'folder')
    write({9})
    s = D.read_folder(str(tmp_path / 'train'), classes=10)
    # PNG is lossless: every image comes back, with its label
    got = {s.images[i].tobytes(): s.labels[i] for i in range(len(s))}
    assert len(got) == 64
    for img, lab in zip(slice64.images, slice64.labels):
        assert got[img.tobytes()] == lab


def test_missing_and_corrupt_data_errors(tmp_path, cifar_root):
    with pytest.raises(DataError) as e:
        D.load_cifar('cifar10', str(tmp_path), True, 'rec')
    assert 'looked for' in str(e.value) and str(tmp_path) in str(e.value) and 'cifar-10-binary' in str(e.value)
    shutil.copy(os.path.join(cifar_root, 'test.idx'), tmp_path / 'train.idx')
    with open(os.path.join(cifar_root, 'train.rec'), 'rb') as f:
        head = f.read(200000)
    (tmp_path / 'train.rec').write_bytes(head[:1000] + b'\xde\xad' * 100 + head[1200:])
    with pytest.raises(DataError, match='train.rec: record'):
        D.load_cifar('cifar10', str(tmp_path), True)
    (tmp_path / 'train.rec').write_bytes(head)
    with pytest.raises(DataError, match='truncated or corrupt'):
        D.load_cifar('cifar10', str(tmp_path), True)
    (tmp_path / 'train.idx').write_text('0\t0\nnot an index\n')
    with pytest.raises(DataError, match=r'train.idx: line 2 is not'):
        D.load_cifar('cifar10', str(tmp_path), True)


def test_wrong_image_size_and_labels_are_refused(tmp_path):
    from mxnet import recordio
    w = recordio.MXIndexedRecordIO(str(tmp_path / 'train.idx'), str(tmp_path / 'train.rec'), 'w')
    img = np.zeros((28, 28, 3), np.uint8)
    w.write_idx(0, recordio.pack_img(recordio.IRHeader(0, 1.0, 0, 0), img, img_fmt='.png'))
    w.close()
    with pytest.raises(DataError, match='28x28 image with 3 channels; expected 32x32x3'):
        D.load_cifar('cifar10', str(tmp_path), True)
    w = recordio.MXIndexedRecordIO(str(tmp_path / 'test.idx'), str(tmp_path / 'test.rec'), 'w')
    w.write_idx(0, recordio.pack_img(recordio.IRHeader(0, 42.0, 0, 0), np.zeros((32, 32, 3), np.uint8),
                                     img_fmt='.png'))
    w.close()
    with pytest.raises(DataError, match='has label 42; cifar10 labels are 0..9'):
        D.load_cifar('cifar10', str(tmp_path), False)


def test_crop_and_flip_match_gluoncv_per_image(slice64, monkeypatch):
    from gluoncv.data.transforms.block import RandomCrop
    rng = np.random.default_rng(0)
    n = 16
    ys, xs = rng.integers(0, 9, n), rng.integers(0, 9, n)
    flips = rng.random(n) < 0.5
    ours = D.crop_flip(slice64.images[:n], 4, ys, xs, flips)
    crop = RandomCrop(32, pad=4)
    for i in range(n):
        seq = iter([xs[i], ys[i]])  # mx.image.random_crop draws x0 then y0 with random.randint
        monkeypatch.setattr(random, 'randint', lambda a, b, seq=seq: int(next(seq)))
        ref = crop(mx.nd.array(slice64.images[i], dtype='uint8'))
        if flips[i]:
            ref = mx.nd.image.flip_left_right(ref)
        assert np.array_equal(ref.asnumpy(), ours[i]), i


def test_random_erasing_matches_gluoncv(slice64, monkeypatch):
    from gluoncv.data.transforms.block import RandomErasing
    n = 8
    rng = np.random.default_rng(1)
    boxes = D.erasing_boxes(rng, n, 32, 32, probability=1.0)
    ours = D.erase(slice64.images[:n], boxes, np.array(D.ERASE_FILL))
    er = RandomErasing(probability=1.0)
    for i in range(n):
        y0, y1, x0, x1 = boxes[i]
        if y1 == y0:
            continue
        # replay the box through GluonCV's own draws: area and aspect that give these sides, then the corner
        area, aspect = (y1 - y0) * (x1 - x0), (y1 - y0) / (x1 - x0)
        uniforms = iter([0.0, area / 1024.0, aspect])
        corner = iter([int(y0), int(x0)])
        monkeypatch.setattr(random, 'uniform', lambda a, b, u=uniforms: next(u))
        monkeypatch.setattr(random, 'randint', lambda a, b, c=corner: next(c))
        ref = er(mx.nd.array(slice64.images[i], dtype='uint8')).asnumpy()
        assert np.array_equal(ref, ours[i]), i
    assert (boxes[:, 1] > boxes[:, 0]).any()


def test_normalize_matches_gluon_to_tensor_normalize(slice64):
    from mxnet.gluon.data.vision import transforms as T
    t = T.Compose([T.ToTensor(), T.Normalize(D.CIFAR_MEAN, D.CIFAR_STD)])
    aug = D.BatchAugment(D.CIFAR_MEAN, D.CIFAR_STD)
    ours = aug(slice64.images[:4])
    for i in range(4):
        ref = t(mx.nd.array(slice64.images[i], dtype='uint8')).asnumpy()
        np.testing.assert_allclose(ours[i], ref, rtol=1e-5, atol=1e-5)


def test_cutout_boxes_are_squares_clipped_inside():
    b = D.cutout_boxes(np.random.default_rng(0), 500, 32, 32, 8)
    assert (b[:, 0] >= 0).all() and (b[:, 1] <= 32).all() and (b[:, 1] - b[:, 0] <= 8).all()
    assert ((b[:, 1] - b[:, 0]) == 8).mean() > 0.5


def test_loader_is_deterministic_sharded_and_mixup_is_soft(slice64):
    aug = D.BatchAugment(D.CIFAR_MEAN, D.CIFAR_STD, crop_pad=4, flip=True, cutout=8)
    a = D.ArrayLoader(slice64, 8, aug, train=True, classes=10, seed=3)
    first = list(a.epoch(2))
    again = list(a.epoch(2))
    other = list(a.epoch(3))
    assert len(first) == 8 and all(np.array_equal(x, y) for (x, _), (y, _) in zip(first, again))
    assert not np.array_equal(first[0][0], other[0][0])
    parts = [D.ArrayLoader(slice64.head(63), 8, aug, train=True, classes=10, seed=3, num_parts=2, part_index=i)
             for i in range(2)]
    assert len(parts[0]) == len(parts[1]) == 3
    idx = [set(p._indices(0).tolist()) for p in parts]
    assert not idx[0] & idx[1]
    m = D.ArrayLoader(slice64, 8, aug, train=True, classes=10, mixup=0.2)
    x, y = next(iter(m.epoch(0)))
    assert y.shape == (8, 10) and np.allclose(y.sum(1), 1.0)
    ev = D.ArrayLoader(slice64.head(20), 8, aug, train=False, classes=10)
    assert [len(y) for _, y in ev.epoch(0)] == [8, 8, 4]


def test_loader_errors_travel_to_the_consumer(slice64):
    def boom():
        yield 1
        raise ValueError('inside the worker')
    it = D.prefetched(boom(), 2)
    assert next(it) == 1
    with pytest.raises(ValueError, match='inside the worker'):
        next(it)


def test_data_root_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv(D.ENV_DATA, raising=False)
    monkeypatch.setenv('MXNET_HOME', str(tmp_path))
    assert D.resolve_root('cifar10') == str(tmp_path / 'datasets' / 'cifar10')
    assert D.resolve_root('cifar10', 'recipe_dir') == os.path.abspath('recipe_dir')
    monkeypatch.setenv(D.ENV_DATA, '/env/dir')
    # the recipe's own setting is not replaced by the environment; the flag wins over both
    assert D.root_source('cifar10', 'recipe_dir') == (os.path.abspath('recipe_dir'), 'data.root')
    assert D.root_source('cifar10') == ('/env/dir', '$MXPRUNE_DATA')
    assert D.root_source('cifar10', 'recipe_dir', '/cli') == ('/cli', '--data-dir')
    monkeypatch.delenv(D.ENV_DATA)
    assert D.root_source('cifar10')[1] == D.CACHE


def test_a_data_folder_that_was_named_must_hold_the_data_nothing_is_created_or_downloaded(tmp_path):
    from mxprune.recipe import DataConfig
    with pytest.raises(DataError, match=r'data folder .*none \(--data-dir\) does not exist'):
        D.build_loaders(DataConfig(), str(tmp_path / 'none'), source='--data-dir')
    assert not (tmp_path / 'none').exists()
    (tmp_path / 'empty').mkdir()
    with pytest.raises(DataError, match=r'no cifar10 train data found in the data folder .*empty \(data.root\)'):
        D.build_loaders(DataConfig(), str(tmp_path / 'empty'), source='data.root')
    assert os.listdir(tmp_path / 'empty') == []


def test_imagenet_record_iter(tmp_path):
    from mxnet import recordio
    w = recordio.MXIndexedRecordIO(str(tmp_path / 'val.idx'), str(tmp_path / 'val.rec'), 'w')
    rng = np.random.default_rng(0)
    for i in range(10):
        img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        w.write_idx(i, recordio.pack_img(recordio.IRHeader(0, float(i % 3), i, 0), img, img_fmt='.jpg'))
    w.close()
    it = D.RecordIterLoader(str(tmp_path / 'val.rec'), 4, 32, train=False, classes=3)
    batches = list(it.epoch(0))
    assert len(it) == 3 and [b[0].shape for b in batches] == [(4, 3, 32, 32)] * 2 + [(2, 3, 32, 32)]
    assert batches[0][1].asnumpy().tolist() == [0, 1, 2, 0]
    with pytest.raises(DataError, match='train.rec: not found'):
        D.RecordIterLoader(str(tmp_path / 'train.rec'), 4, 32, train=True, classes=3)
