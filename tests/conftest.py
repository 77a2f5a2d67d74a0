import os
import sys

os.environ.setdefault('OMP_NUM_THREADS', '2')  # before mxnet is imported anywhere
os.environ.setdefault('MXNET_ENGINE_TYPE', 'NaiveEngine')  # bit-reproducible CPU runs (see tools/_bootstrap.py)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pytest  # noqa: E402

SHARED = os.path.join(os.path.dirname(ROOT), 'shared', 'datasets')
CIFAR = os.path.join(SHARED, 'cifar10')


@pytest.fixture(scope='session')
def cifar_root():
    if not os.path.exists(os.path.join(CIFAR, 'train.rec')):
        if os.environ.get('MXPRUNE_REQUIRE_SHARED'):
            pytest.fail(f'{CIFAR} is missing but MXPRUNE_REQUIRE_SHARED is set')
        pytest.skip(f'real data not found at {CIFAR}')
    return CIFAR


def run_tool(args, env=None, timeout=600):
    """Runs a tool script in a subprocess; returns CompletedProcess with text output."""
    import subprocess
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable] + args, cwd=ROOT, env=e, capture_output=True, text=True, timeout=timeout)
