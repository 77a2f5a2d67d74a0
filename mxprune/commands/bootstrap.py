"""Picks OMP threads and MXNet's engine for a command, after its arguments are parsed and before MXNet loads.

MXNet 1.9.1 reads OMP_NUM_THREADS once, at import. Left unset it starts more threads than a small machine has cores
and trains markedly slower; several processes on one host must split the cores (oversubscribed threads run several
times slower).

On a machine without a GPU the commands also pick MXNet's NaiveEngine: on CPU it trains at least as fast as the
threaded engine, and it makes CPU training bit-reproducible (the threaded engine lets two identical runs differ in
the last digits), which is what lets a resumed run end bit-identical to an uninterrupted one. With a GPU the
threaded engine stays: it overlaps Python with the device. Set MXNET_ENGINE_TYPE yourself to override either choice.
"""
import os
import sys
from typing import Optional

_NOTE: Optional[str] = None


def start() -> str:
    """Picks threads and the engine (the first call only) and returns what was picked, for logs and reports."""
    global _NOTE
    if _NOTE is None:
        _NOTE = _pick_threads() + '; ' + _pick_engine()
        if os.environ.get('MXNET_ENGINE_TYPE') and 'mxnet' not in sys.modules:
            _start_engine_quietly()
    return _NOTE


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
    create it now with stderr muted so that a command's error stays the single line on stderr."""
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
