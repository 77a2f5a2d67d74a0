"""Imported first by every tool, before MXNet: makes the checkout importable, picks threads and the engine.

MXNet 1.9.1 reads OMP_NUM_THREADS once, at import. Left unset it trained 1.65x slower on a 2-core machine; several
processes on one host must split the cores (oversubscribed threads ran 7-16x slower). See MXNET_NOTES.md.

On a machine without a GPU the tools also pick MXNet's NaiveEngine: measured here it trained cifar_resnet20_v1
about 8 % faster than the threaded engine (interleaved runs: 660 vs 600 images/s), and it makes CPU training
bit-reproducible (the threaded engine let two identical 3-epoch runs differ by up to 4e-5), which is what lets a
resumed run end bit-identical to an uninterrupted one. With a GPU the threaded engine stays: it overlaps Python with
the device. Set MXNET_ENGINE_TYPE yourself to override either choice.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _pick_threads() -> str:
    if 'mxnet' in sys.modules:
        return f'OMP_NUM_THREADS={os.environ.get("OMP_NUM_THREADS", "unset")} (mxnet was imported first)'
    if os.environ.get('OMP_NUM_THREADS'):
        return f'OMP_NUM_THREADS={os.environ["OMP_NUM_THREADS"]} (from the environment)'
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    local = max(1, int(os.environ.get('MXPRUNE_LOCAL_PROCS', '1') or 1))
    threads = max(1, cores // local)
    os.environ['OMP_NUM_THREADS'] = str(threads)
    return f'OMP_NUM_THREADS={threads} (chosen: {cores} cores / {local} process(es) on this host)'


def _has_gpu() -> bool:
    if os.environ.get('CUDA_VISIBLE_DEVICES', None) not in (None, '', '-1'):
        return True
    return os.path.isdir('/proc/driver/nvidia/gpus') and bool(os.listdir('/proc/driver/nvidia/gpus'))


def _start_engine_quietly() -> None:
    """MXNet logs 'MXNet start using engine' to stderr when it creates a non-default engine (at its first op);
    create it now with stderr muted so that a tool's error stays the single line on stderr."""
    import mxnet as mx
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, 'w') as null:
            os.dup2(null.fileno(), 2)
            mx.nd.zeros(1).wait_to_read()
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _pick_engine() -> str:
    if os.environ.get('MXNET_ENGINE_TYPE'):
        return f'MXNET_ENGINE_TYPE={os.environ["MXNET_ENGINE_TYPE"]} (from the environment)'
    if 'mxnet' in sys.modules or _has_gpu():
        return 'threaded engine (GPU present)' if _has_gpu() else 'threaded engine (mxnet was imported first)'
    os.environ['MXNET_ENGINE_TYPE'] = 'NaiveEngine'
    return 'MXNET_ENGINE_TYPE=NaiveEngine (chosen: no GPU; faster and bit-reproducible on CPU)'


THREADS_NOTE = _pick_threads() + '; ' + _pick_engine()
if os.environ.get('MXNET_ENGINE_TYPE') and 'mxnet' not in sys.modules:
    _start_engine_quietly()
