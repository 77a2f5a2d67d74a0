"""Tiny Gluon nets covering the couplings the graph must get right (seconds to run)."""
import mxnet as mx
import numpy as np
from mxnet import gluon
from mxnet.gluon import nn


def conv_bn(channels, kernel=3, stride=1, groups=1):
    out = nn.HybridSequential()
    out.add(nn.Conv2D(channels, kernel, stride, kernel // 2, groups=groups, use_bias=False), nn.BatchNorm(),
            nn.Activation('relu'))
    return out


class Residual(gluon.HybridBlock):
    """Two conv-BN blocks with identity shortcuts: the stem and both block outputs are one coupled group."""

    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.stem = conv_bn(8)
            self.b1 = nn.HybridSequential()
            self.b1.add(conv_bn(6), nn.Conv2D(8, 3, padding=1, use_bias=False), nn.BatchNorm())
            self.b2 = nn.HybridSequential()
            self.b2.add(conv_bn(6), nn.Conv2D(8, 3, padding=1, use_bias=False), nn.BatchNorm())
            self.down = conv_bn(16, stride=2)
            self.pool = nn.GlobalAvgPool2D()
            self.fc = nn.Dense(4)

    def hybrid_forward(self, F, x):
        x = self.stem(x)
        x = F.relu(self.b1(x) + x)
        x = F.relu(self.b2(x) + x)
        return self.fc(self.pool(self.down(x)))


class Concat(gluon.HybridBlock):
    """DenseNet-style: each layer's output is concatenated to its input."""

    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.stem = conv_bn(8)
            self.l1 = conv_bn(4)
            self.bn1 = nn.BatchNorm()
            self.l2 = conv_bn(6)
            self.bn2 = nn.BatchNorm()
            self.trans = conv_bn(10, kernel=1)
            self.fc = nn.Dense(4)

    def hybrid_forward(self, F, x):
        x = self.stem(x)
        x = F.relu(self.bn1(F.concat(x, self.l1(x), dim=1)))
        x = F.relu(self.bn2(F.concat(x, self.l2(x), dim=1)))
        x = self.trans(x)
        return self.fc(F.contrib.AdaptiveAvgPooling2D(x, output_size=1))


class Depthwise(gluon.HybridBlock):
    """MobileNetV2-style inverted residual: pointwise expand, depthwise, pointwise project, shortcut."""

    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.stem = conv_bn(8)
            self.expand = conv_bn(16, kernel=1)
            self.dw = conv_bn(16, groups=16)
            self.project = nn.HybridSequential()
            self.project.add(nn.Conv2D(8, 1, use_bias=False), nn.BatchNorm())
            self.head = conv_bn(12, kernel=1)
            self.fc = nn.Dense(4)

    def hybrid_forward(self, F, x):
        x = self.stem(x)
        x = x + self.project(self.dw(self.expand(x)))
        return self.fc(F.mean(self.head(x), axis=(2, 3)))


class FlattenDense(gluon.HybridBlock):
    """Conv features flattened into a Dense layer (channel c covers H*W inputs), then Dense -> Dense."""

    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.stem = conv_bn(8)
            self.conv = conv_bn(6, stride=2)
            self.fc1 = nn.Dense(12, activation='relu')
            self.drop = nn.Dropout(0.0)
            self.fc2 = nn.Dense(4)

    def hybrid_forward(self, F, x):
        return self.fc2(self.drop(self.fc1(F.Pooling(self.conv(self.stem(x)), kernel=(2, 2), stride=(2, 2),
                                                            pool_type='max'))))


class SqueezeExcite(gluon.HybridBlock):
    """Squeeze-and-excitation: the gate's channels multiply the trunk's (broadcast_mul couples them)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.stem = conv_bn(8)
            self.conv = conv_bn(10)
            self.se_down = nn.Conv2D(4, 1)
            self.se_up = nn.Conv2D(10, 1)
            self.tail = conv_bn(6)
            self.fc = nn.Dense(4)

    def hybrid_forward(self, F, x):
        x = self.conv(self.stem(x))
        w = F.sigmoid(self.se_up(F.relu(self.se_down(F.contrib.AdaptiveAvgPooling2D(x, output_size=1)))))
        x = F.broadcast_mul(x, w)
        return self.fc(F.mean(self.tail(x), axis=(2, 3), keepdims=True))


class Unknown(gluon.HybridBlock):
    """Uses an operator with no channel rule (reverse along the channels: cutting through it would silently mix
    channels up) and one with a freezing rule (softmax over the channels)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.a = conv_bn(8)
            self.b = conv_bn(8)
            self.c = conv_bn(6)
            self.fc = nn.Dense(4)

    def hybrid_forward(self, F, x):
        x = self.b(F.reverse(self.a(x), axis=1))
        return self.fc(F.mean(self.c(F.softmax(x, axis=1)), axis=(2, 3)))


class SharedPool(gluon.HybridBlock):
    """DLA-style head: one pooling block called on several levels (duplicate node names in the Symbol), the pooled
    features flattened and concatenated into one Dense layer."""

    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.l1 = conv_bn(6)
            self.l2 = conv_bn(10, stride=2)
            self.pool = nn.GlobalAvgPool2D()
            self.fc = nn.Dense(4)

    def hybrid_forward(self, F, x):
        a = self.l1(x)
        b = self.l2(a)
        return self.fc(F.concat(F.flatten(self.pool(a)), F.flatten(self.pool(b)), dim=1))


class ResNeXt(gluon.HybridBlock):
    """A ResNeXt bottleneck: 1x1 reduce, grouped 3x3 (4 groups; 16 -> 24 channels, so weight (24, 4, 3, 3)), 1x1
    expand, identity shortcut, classifier. The grouped conv has a bias, so that its cut covers one."""

    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.stem = conv_bn(8)
            self.reduce = conv_bn(16, kernel=1)
            self.grouped = nn.HybridSequential()
            self.grouped.add(nn.Conv2D(24, 3, padding=1, groups=4), nn.BatchNorm(), nn.Activation('relu'))
            self.expand = nn.HybridSequential()
            self.expand.add(nn.Conv2D(8, 1, use_bias=False), nn.BatchNorm())
            self.fc = nn.Dense(4)

    def hybrid_forward(self, F, x):
        x = self.stem(x)
        x = F.relu(x + self.expand(self.grouped(self.reduce(x))))
        return self.fc(F.mean(x, axis=(2, 3)))


class GroupedMix(gluon.HybridBlock):
    """Grouped convs that meet: two (2 and 3 groups) read one tensor (its blocks: lcm 6); their outputs are
    concatenated into a third (frozen: its groups would span both); a depthwise conv with multiplier 2 (one input
    channel per group: frozen), a depthwise conv with a bias, and a grouped conv with one output channel per group
    (C_out == groups != C_in)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.stem = conv_bn(12)
            self.a = conv_bn(8, groups=2)
            self.b = conv_bn(12, groups=3)
            self.mixed = conv_bn(6, kernel=1, groups=2)
            self.up = conv_bn(12, groups=6)
            self.dw = nn.Conv2D(12, 3, padding=1, groups=12)
            self.squeeze = conv_bn(6, kernel=1, groups=6)
            self.fc = nn.Dense(4)

    def hybrid_forward(self, F, x):
        x = self.stem(x)
        x = self.squeeze(self.dw(self.up(self.mixed(F.concat(self.a(x), self.b(x), dim=1)))))
        return self.fc(F.mean(x, axis=(2, 3)))


class Split(gluon.HybridBlock):
    """The stem's channels split in halves (F.split, which divides whatever width it gets), one conv on each."""

    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.stem = conv_bn(8)
            self.left = conv_bn(6)
            self.right = conv_bn(6)
            self.fc = nn.Dense(4)

    def halves(self, F, x):
        return F.split(x, num_outputs=2, axis=1)

    def hybrid_forward(self, F, x):
        a, b = self.halves(F, self.stem(x))
        return self.fc(F.concat(self.left(a), self.right(b), dim=1))


class Slice(Split):
    """As Split, with slice_axis at fixed offsets."""

    def halves(self, F, x):
        return F.slice_axis(x, axis=1, begin=0, end=4), F.slice_axis(x, axis=1, begin=4, end=8)


ALL = {'residual': Residual, 'shared_pool': SharedPool, 'concat': Concat, 'depthwise': Depthwise,
       'flatten': FlattenDense, 'se': SqueezeExcite, 'unknown': Unknown, 'resnext': ResNeXt,
       'grouped_mix': GroupedMix, 'split': Split, 'slice': Slice}
SHAPE = (2, 3, 16, 16)


def build(name, seed=0, hybridize=True):
    """An initialised net with non-trivial BatchNorm statistics, so that equivalence checks mean something."""
    mx.random.seed(seed)
    net = ALL[name]()
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros(SHAPE))
    rng = np.random.RandomState(seed)
    for k, p in net.collect_params().items():
        if k.endswith(('running_mean', 'beta')):
            p.set_data(mx.nd.array(rng.normal(0, 0.2, p.shape)))
        elif k.endswith(('running_var', 'gamma')):
            p.set_data(mx.nd.array(rng.uniform(0.5, 1.5, p.shape)))
    if hybridize:
        net.hybridize()
    return net


def data(seed=1, shape=SHAPE):
    return mx.nd.array(np.random.RandomState(seed).uniform(-1, 1, shape))
