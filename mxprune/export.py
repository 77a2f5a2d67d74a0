"""Deployment export: `-symbol.json` + `.params` (and ONNX), re-imported and compared before they are published.

`export_symbol` folds and removes masks, hybridizes, runs one forward, exports to a temporary prefix, reloads the
files with `gluon.SymbolBlock.imports` and with `mx.mod.Module`, compares their outputs to the live net's, writes a
SHA-256 manifest and only then moves the files into place. The files need nothing but MXNet to load.
"""
import contextlib
import json
import os
import tempfile
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np

from . import io
from . import masks as masks_mod
from .errors import ModelError, MxPruneError
from .graph.attrs import flat

TOLERANCE = 1e-4


@contextlib.contextmanager
def _env(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _outputs(out) -> List[np.ndarray]:
    """Every output of a forward pass (detectors return several, possibly nested) as numpy arrays."""
    return [o.asnumpy() for o in flat(out)]


@contextlib.contextmanager
def _staged(net: mx.gluon.HybridBlock, prefix: str):
    """Exports `net` into a scratch folder beside `prefix` and yields its (symbol, params) files; what is not
    published by the end is removed, so a failed check leaves nothing half-written."""
    folder = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(folder, exist_ok=True)
    tmpdir = tempfile.mkdtemp(prefix='.export-', dir=folder)
    try:
        tmp_prefix = os.path.join(tmpdir, 'model')
        net.export(tmp_prefix, epoch=0)
        yield tmp_prefix + '-symbol.json', tmp_prefix + '-0000.params'
    finally:
        for f in os.listdir(tmpdir):
            os.remove(os.path.join(tmpdir, f))
        os.rmdir(tmpdir)


def _publish(prefix: str, tmp_sym: str, tmp_params: str, **manifest) -> Dict[str, str]:
    """Moves checked files to their final names and writes their SHA-256 manifest (with `manifest`'s entries)."""
    final_sym, final_params = prefix + '-symbol.json', prefix + '-0000.params'
    digests = {os.path.basename(final_sym): io.sha256_file(tmp_sym),
               os.path.basename(final_params): io.sha256_file(tmp_params)}
    os.replace(tmp_sym, final_sym)
    os.replace(tmp_params, final_params)
    io.write_json(prefix + '.sha256.json', {'files': digests, **manifest})
    return {'symbol': final_sym, 'params': final_params, 'manifest': prefix + '.sha256.json'}


def max_abs_diff(got: List[np.ndarray], expected: List[np.ndarray]) -> float:
    """The largest absolute difference over all outputs (inf if their number or shapes differ)."""
    if len(got) != len(expected) or any(a.shape != b.shape for a, b in zip(got, expected)):
        return float('inf')
    worst = 0.0
    for a, b in zip(got, expected):
        with np.errstate(invalid='ignore', over='ignore'):  # equal infinities and NaNs match; any other NaN fails
            d = np.where((a == b) | (np.isnan(a) & np.isnan(b)), 0.0, np.abs(a - b))
        if d.size:
            worst = max(worst, float(np.nan_to_num(d, nan=np.inf).max()))
    return worst


def reload_symbolblock(symbol: str, params: str, x: mx.nd.NDArray) -> List[np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        block = mx.gluon.SymbolBlock.imports(symbol, ['data'], params, ctx=x.context)
    return _outputs(block(x))


def reload_module(symbol: str, params: str, x: mx.nd.NDArray) -> List[np.ndarray]:
    sym = mx.sym.load(symbol)
    saved = mx.nd.load(params)
    arg = {k[4:]: v for k, v in saved.items() if k.startswith('arg:')}
    aux = {k[4:]: v for k, v in saved.items() if k.startswith('aux:')}
    mod = mx.mod.Module(symbol=sym, data_names=['data'], label_names=None, context=x.context)
    mod.bind(data_shapes=[('data', x.shape)], for_training=False)
    mod.set_params(arg, aux, allow_missing=False)
    mod.forward(mx.io.DataBatch([x]), is_train=False)
    return _outputs(mod.get_outputs())


def export_symbol(net: mx.gluon.HybridBlock, prefix: str, input_shape: Sequence[int], *, check: bool = True,
                  ctx: Optional[mx.Context] = None, seed: int = 0) -> Dict[str, str]:
    """Exports `net` to <prefix>-symbol.json and <prefix>-0000.params (+ <prefix>.sha256.json).

    Masks are folded into the weights and removed first (the net is edited in place). With `check`, both re-import
    paths must reproduce every output of the net within 1e-4 on a random input, or nothing is written.

    Returns:
        {'symbol': path, 'params': path, 'manifest': path, 'max_abs_diff': str}
    """
    ctx = ctx or mx.cpu()
    for block in list(masks_mod.masked_blocks(net)):
        masks_mod.remove(block, fold_first=True)
    masks_mod.clear_cached(net)
    net.hybridize(static_alloc=True, static_shape=True)
    x = mx.nd.array(np.random.RandomState(seed).uniform(-1, 1, size=tuple(input_shape)), ctx=ctx)
    expected = _outputs(net(x))
    with _staged(net, prefix) as (tmp_sym, tmp_params):
        worst = 0.0
        module_env = {}
        if check:
            for how, fn in (('gluon.SymbolBlock.imports', reload_symbolblock), ('mx.mod.Module', reload_module)):
                diff = max_abs_diff(fn(tmp_sym, tmp_params, x), expected)
                if not diff <= TOLERANCE and fn is reload_module:
                    # MXNet 1.9.1's executor fuses with oneDNN subgraphs by default, and that fusion computes
                    # pre-activation nets (cifar_resnet*_v2) wrongly even unpruned; without it the files are right.
                    with _env(MXNET_SUBGRAPH_BACKEND='NONE'):
                        plain = max_abs_diff(fn(tmp_sym, tmp_params, x), expected)
                    if plain <= TOLERANCE:
                        module_env = {'MXNET_SUBGRAPH_BACKEND': 'NONE'}
                        warnings.warn(f'mx.mod.Module with MXNet\'s default oneDNN subgraph fusion reloads {prefix} '
                                      f'with max abs diff {diff:.3g} (an MXNet 1.9 fusion bug, also without '
                                      f'pruning); set MXNET_SUBGRAPH_BACKEND=NONE on the server (recorded in the '
                                      f'manifest)', stacklevel=2)
                        diff = plain
                worst = max(worst, diff)
                if not diff <= TOLERANCE:
                    raise MxPruneError(f'export check failed: {how} reloads {prefix} with max abs diff {diff:.3g} '
                                       f'(> {TOLERANCE}); nothing was written')
        files = _publish(prefix, tmp_sym, tmp_params, input_shape=list(input_shape), max_abs_diff=worst,
                         module_env=module_env)
    return {**files, 'max_abs_diff': str(worst), 'module_env': module_env}


def export_fused(net: mx.gluon.HybridBlock, prefix: str, input_shape: Sequence[int],
                 ctx: Optional[mx.Context] = None, seed: int = 0) -> Dict[str, str]:
    """Exports the graph fused by MXNet's oneDNN backend (conv + BN + ReLU + add as one operator) for CPU servers.

    The fused files need an MXNet build with MKLDNN to load. Their output on a random input is checked against the
    plain graph (<= 1e-4) after reloading with SymbolBlock.imports, and they get a SHA-256 manifest like
    export_symbol's. Call export_symbol first (it removes masks); this leaves `net` optimised for the fused backend.
    """
    from .benchmark import fused_backend_available
    if not fused_backend_available():
        raise MxPruneError('this MXNet build has no MKLDNN backend; export the plain graph (export_symbol)')
    ctx = ctx or mx.cpu()
    x = mx.nd.array(np.random.RandomState(seed).uniform(-1, 1, size=tuple(input_shape)), ctx=ctx)
    net.hybridize(static_alloc=True, static_shape=True)
    expected = _outputs(net(x))
    net.optimize_for(x, backend='MKLDNN', static_alloc=True, static_shape=True)
    with _staged(net, prefix) as (tmp_sym, tmp_params):
        diff = max_abs_diff(reload_symbolblock(tmp_sym, tmp_params, x), expected)
        if not diff <= TOLERANCE:
            raise MxPruneError(f'fused export check failed: max abs diff {diff:.3g} against the plain graph')
        files = _publish(prefix, tmp_sym, tmp_params, input_shape=list(input_shape), max_abs_diff=diff,
                         needs='an MXNet build with MKLDNN')
    return {**files, 'max_abs_diff': str(diff)}


def verify_manifest(prefix: str) -> None:
    """Checks the exported files against their SHA-256 manifest; raises ModelError on any mismatch."""
    manifest = prefix + '.sha256.json'
    if not os.path.isfile(manifest):
        raise ModelError(f'{manifest}: no manifest beside the exported files')
    with open(manifest, encoding='utf-8') as f:
        files = json.load(f).get('files', {})
    folder = os.path.dirname(os.path.abspath(prefix))
    for name, digest in files.items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise ModelError(f'{path}: listed in {manifest} but missing')
        if io.sha256_file(path) != digest:
            raise ModelError(f'{path}: SHA-256 does not match {manifest}; the file was changed or corrupted')


def load_exported(prefix: str, ctx: Optional[mx.Context] = None, verify: bool = True) -> mx.gluon.SymbolBlock:
    """Loads an export (after checking its manifest) as a SymbolBlock."""
    if verify:
        verify_manifest(prefix)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return mx.gluon.SymbolBlock.imports(prefix + '-symbol.json', ['data'], prefix + '-0000.params',
                                            ctx=ctx or mx.cpu())


def export_onnx(prefix: str, input_shape: Sequence[int], path: Optional[str] = None,
                check_runtime: bool = True) -> Tuple[str, Optional[float]]:
    """Converts an export to ONNX with mx.onnx; checks it with onnx.checker and, when installed, onnxruntime.

    Returns:
        (onnx path, max abs diff against MXNet or None when onnxruntime is not installed)
    """
    try:
        import onnx
    except ImportError:
        raise MxPruneError('ONNX export needs the onnx extra: pip install -e ".[onnx]"') from None
    sym, params = prefix + '-symbol.json', prefix + '-0000.params'
    path = path or prefix + '.onnx'
    with io.atomic_path(path) as tmp:
        mx.onnx.export_model(sym, params, [tuple(input_shape)], [np.float32], tmp)
        onnx.checker.check_model(onnx.load(tmp))
        diff = None
        if check_runtime:
            try:
                import onnxruntime as ort
            except ImportError:
                ort = None
            if ort is not None:
                x = mx.nd.array(np.random.RandomState(0).uniform(-1, 1, size=tuple(input_shape)))
                opts = ort.SessionOptions()
                opts.log_severity_level = 3
                sess = ort.InferenceSession(tmp, opts, providers=['CPUExecutionProvider'])
                got = sess.run(None, {sess.get_inputs()[0].name: x.asnumpy()})
                diff = max_abs_diff(list(got), reload_symbolblock(sym, params, x))
                if not diff <= TOLERANCE:
                    raise MxPruneError(f'ONNX check failed: onnxruntime differs from MXNet by {diff:.3g}')
    return path, diff
