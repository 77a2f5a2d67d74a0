import os
import sys

os.environ.setdefault('OMP_NUM_THREADS', '2')  # before mxnet is imported anywhere
os.environ.setdefault('MXNET_ENGINE_TYPE', 'NaiveEngine')  # bit-reproducible CPU runs (see tools/_bootstrap.py)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pytest  # noqa: E402

SHARED = os.path.join(os.path.dirname(ROOT), 'shared', 'datasets')
CIFAR = os.path.join(SHARED, 'cifar10')


def shared_dataset(name: str, required: str) -> str:
    """The folder ../shared/datasets/<name>, if it holds `required` (a file or folder inside it).

    Without it the test is skipped, except under MXPRUNE_REQUIRE_SHARED (set by .ci/run), where it fails: CI must
    not pass by skipping every real-data test. Every fixture that reads shared data goes through here.
    """
    root = os.path.join(SHARED, name)
    if not os.path.exists(os.path.join(root, required)):
        if os.environ.get('MXPRUNE_REQUIRE_SHARED'):
            pytest.fail(f'{os.path.join(root, required)} is missing but MXPRUNE_REQUIRE_SHARED is set')
        pytest.skip(f'real data not found at {os.path.join(root, required)}')
    return root


@pytest.fixture(scope='session')
def cifar_root():
    return shared_dataset('cifar10', 'train.rec')


@pytest.fixture(scope='session')
def raccoon_root():
    return shared_dataset('raccoon', 'Annotations')


def run_tool(args, env=None, timeout=600):
    """Runs a tool script in a subprocess; returns CompletedProcess with text output."""
    import subprocess
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable] + args, cwd=ROOT, env=e, capture_output=True, text=True, timeout=timeout)
