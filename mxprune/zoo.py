"""GluonCV model-zoo access: names checked with suggestions, local or downloaded pretrained weights."""
import difflib
import os
import re
from typing import List, Optional

import mxnet as mx

from .errors import ModelError, reason


def model_names() -> List[str]:
    from gluoncv.model_zoo import get_model_list
    return sorted(get_model_list())


_NOT_CLASSIFIERS = re.compile(
    r'(coco|voc|citys|ade|kinetics|hmdb|ucf|sthsth|custom|int8|pose|monodepth|siamrpn|rcnn|^ssd_|^yolo|center_net|'
    r'deeplab|^fcn_|^psp_|danet|icnet|fastscnn|^c3d|^i3d|^p3d|r2plus1d|slowfast|_s$|_mhpv1)')


def classification_models() -> List[str]:
    """The GluonCV ImageNet/CIFAR classifiers (detection, segmentation, pose and video models left out)."""
    return [n for n in model_names() if not _NOT_CLASSIFIERS.search(n)]


def input_size(name: str) -> int:
    """The input side a zoo classifier expects."""
    if name.startswith('cifar_'):
        return 32
    if name.startswith(('inceptionv3', 'nasnet_5', 'xception')):
        return 299 if not name.startswith('nasnet') else 331
    if name.startswith('nasnet_6') or name.startswith('nasnet_7'):
        return 331
    return 224


def check_name(name: str) -> str:
    names = model_names()
    if name.lower() in names:
        return name.lower()
    close = difflib.get_close_matches(name.lower(), names, n=5, cutoff=0.5)
    hint = f'did you mean {", ".join(close)}?' if close else 'see gluoncv.model_zoo.get_model_list()'
    raise ModelError(f'model.name: {name!r} is not a GluonCV model ({len(names)} known); {hint}')


def get_model(name: str, classes: Optional[int] = None, pretrained: Optional[str] = None,
              ctx: Optional[list] = None, **kwargs) -> mx.gluon.HybridBlock:
    """Builds a zoo model, initialised (Xavier, as GluonCV's CIFAR scripts) or loaded from weights.

    Args:
        name: a GluonCV model name.
        classes: output classes (the zoo default when None).
        pretrained: None, a local .params path, or 'zoo' for GluonCV's published weights (needs internet).
        ctx: contexts to place the parameters on.
    """
    from gluoncv.model_zoo import get_model as gcv_get_model
    name = check_name(name)
    ctx = ctx or [mx.cpu()]
    if classes is not None:
        kwargs['classes'] = classes
    if pretrained == 'zoo':
        try:
            net = gcv_get_model(name, pretrained=True, **kwargs)
        except Exception as e:  # download and hash failures come in many types
            raise ModelError(f'model.pretrained: downloading GluonCV weights for {name} failed '
                             f'({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}); when offline, '
                             f'download them elsewhere and set model.pretrained to the local .params path') from None
        net.collect_params().reset_ctx(ctx)
        return net
    net = gcv_get_model(name, pretrained=False, **kwargs)
    if pretrained:
        load_params(net, pretrained, ctx)
    else:
        net.initialize(mx.init.Xavier(), ctx=ctx)
    return net


def load_params(net: mx.gluon.Block, path: str, ctx: list, allow_missing: bool = False) -> None:
    """Loads a .params file, turning MXNet's shape/name errors into one line that names the file."""
    if not os.path.isfile(path):
        raise ModelError(f'{path}: parameter file not found')
    try:
        net.load_parameters(path, ctx=ctx, allow_missing=allow_missing, ignore_extra=False)
    except (AssertionError, mx.base.MXNetError, ValueError, RuntimeError) as e:
        raise ModelError(f'{path}: does not fit this model ({reason(e)}); was it saved from another model, class '
                         f'count or pruning plan?') from None
