"""Data-parallel training across processes and machines: MXNet's ps-lite KVStore (or Horovod), masks kept in sync.

Every worker runs the same program on its shard of the data (`kv.rank` picks the shard) and takes the same number
of steps. Gradients are summed by MXNet's parameter servers (`dist_sync`, `dist_device_sync` on GPU hosts) and
applied on every worker by its own optimizer (`update_on_kvstore=False`), so the workers' weights stay
bit-identical; mxprune adds what pruning needs on top (docs/distributed.md):

- one KVStore per process (a second one hangs the job); each Trainer gets a fresh *key space* on it
  (`make_trainer`), which is how the Trainer is rebuilt after shrinking: the old keys are never reused with new
  shapes, and rank 0's weights are broadcast again;
- data-dependent pruning scores (grad, Taylor) are summed over the workers before any decision
  (`sum_arrays`, on spare keys), then the masks are verified equal on every worker (`check_masks`, a digest summed
  over workers) and re-applied (`weight *= mask`) after each step;
- BatchNorm running statistics are per worker; at every epoch end (before evaluation, checkpoint and export) they
  are averaged over the workers (`bn: average`) or replaced by rank 0's (`bn: rank0`), and all parameters are then
  verified identical;
- only rank 0 writes the run folder; the others write into a private scratch folder removed at exit.

`from_env()` returns None in a single process, so callers branch on `workers is None` and nothing changes there.
Start the processes with tools/launch.py (scheduler, servers, workers) or `horovodrun`.
"""
import atexit
import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
import traceback
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import mxnet as mx
import numpy as np

from . import masks as masks_mod
from .errors import MxPruneError
from .layers import gluon_compat as gc

HOROVOD_INSTALL = ('HOROVOD_WITH_MXNET=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 '
                   'pip install --no-build-isolation horovod==0.28.1')
KEY_STRIDE = 1 << 20      # keys of one Trainer generation (one per trained parameter)
SPARE_KEYS = 1 << 30      # first key of the sums mxprune makes itself (scores, BN statistics, digests, metrics)
DIGEST_BYTES = 8          # bytes of a SHA-256 digest compared across workers
HOROVOD_ENV = ('HOROVOD_RANK', 'OMPI_COMM_WORLD_RANK', 'PMI_RANK')


class DistributedError(MxPruneError):
    """Workers disagree (masks, parameters), or the distributed set-up is missing or unsupported."""


class KeySpace(mx.kvstore.KVStoreBase):
    """One Trainer's view of the process's KVStore: its keys shifted into a range no other Trainer uses.

    Gluon's Trainer numbers its keys 0..n-1; a second Trainer on the same KVStore (after shrinking: new shapes)
    would re-initialise keys the servers already hold, which hangs a dist_sync job. Initial values are copied to
    the default layout first: after an inference forward pass oneDNN may hold weights in its own layout, and
    pushing those fails (measured: "We can't generate TBlob for MKLDNN data" and a crashed server).
    """

    def __init__(self, kv: mx.kvstore.KVStore, offset: int):
        self._kv, self._offset = kv, offset

    def broadcast(self, key, value, out, priority=0):
        k = self._offset + key
        self._kv.init(k, mx.nd.array(value.asnumpy(), ctx=mx.cpu(), dtype=value.dtype))
        self._kv.pull(k, out=out, priority=priority)

    def pushpull(self, key, value, out=None, priority=0):
        self._kv.pushpull(self._offset + key, value, out=out, priority=priority)

    @staticmethod
    def is_capable(capability):
        return False  # no optimizer on the servers: every worker updates its own copy (update_on_kvstore=False)

    @property
    def type(self):
        return self._kv.type

    @property
    def rank(self):
        return self._kv.rank

    @property
    def num_workers(self):
        return self._kv.num_workers

    def set_optimizer(self, optimizer):
        raise DistributedError('the KVStore keeps no optimizer here: build the Trainer with update_on_kvstore=False')

    def save_optimizer_states(self, fname, dump_optimizer=False):
        raise DistributedError('optimizer states live on the workers: save them with mxprune.train.optimizer_states')

    def load_optimizer_states(self, fname):
        raise DistributedError('optimizer states live on the workers: load them with '
                               'mxprune.train.load_optimizer_states')


class Workers:
    """This process's place in a data-parallel job and the collective operations mxprune needs.

    Every method that talks to the other workers is collective: all workers must call it at the same point, in
    the same order, with arrays of the same shapes (a missing call hangs the others until the launcher's deadline).
    """
    kind = ''

    def __init__(self, rank: int, num_workers: int, bn: str = 'average'):
        if bn not in BN_POLICIES:
            raise DistributedError(f'distributed.bn: {bn!r} is not allowed; expected one of {", ".join(BN_POLICIES)}')
        self.rank, self.num_workers, self.bn = rank, num_workers, bn
        self._scratch: Optional[str] = None

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.kind}, rank {self.rank} of {self.num_workers})'

    @property
    def is_writer(self) -> bool:
        """Rank 0 writes checkpoints, logs, reports and exports; the others only compute."""
        return self.rank == 0

    # --- the backend's primitives
    def make_trainer(self, params: Dict[str, mx.gluon.Parameter], optimizer: mx.optimizer.Optimizer
                     ) -> mx.gluon.Trainer:
        """A Trainer whose step() averages gradients over all workers' batches; rank 0's weights are broadcast."""
        raise NotImplementedError

    def _sum(self, flat: mx.nd.NDArray) -> mx.nd.NDArray:
        """Element-wise sum of a 1-D float64 array over the workers (collective)."""
        raise NotImplementedError

    # --- sums
    def sum_numpy(self, values: np.ndarray) -> np.ndarray:
        """The element-wise sum of `values` over the workers (float64)."""
        flat = np.ascontiguousarray(values, dtype=np.float64).ravel()
        if flat.size == 0:
            return flat.reshape(np.shape(values))
        return self._sum(mx.nd.array(flat, dtype='float64')).asnumpy().reshape(np.shape(values))

    def sum_arrays(self, arrays: Dict[str, mx.nd.NDArray]) -> None:
        """Replaces each array by its sum over the workers, in one exchange (arrays sorted by name).

        Used by Session before every pruning decision on criterion accumulators (grad, Taylor), which each worker
        gathered on its own shard.
        """
        names = sorted(arrays)
        if not names:
            return
        flat = np.concatenate([arrays[k].asnumpy().astype(np.float64).ravel() for k in names])
        total = self.sum_numpy(flat)
        at = 0
        for k in names:
            a = arrays[k]
            arrays[k] = mx.nd.array(total[at:at + a.size].reshape(a.shape), ctx=a.context, dtype=a.dtype)
            at += a.size

    # --- agreement
    def check_equal(self, what: str, payload: bytes) -> None:
        """Raises DistributedError on every worker unless `payload` is the same bytes on all of them.

        Sums each digest byte and its square over the workers: both equal N times this worker's only when every
        worker holds the same digest (zero variance), so all workers see a mismatch, not just some.
        """
        digest = hashlib.sha256(payload).digest()[:DIGEST_BYTES]
        v = np.frombuffer(digest, np.uint8).astype(np.float64)
        total = self.sum_numpy(np.concatenate([v, v * v]))
        n = self.num_workers
        if not (np.array_equal(total[:DIGEST_BYTES], n * v) and np.array_equal(total[DIGEST_BYTES:], n * v * v)):
            raise DistributedError(f'{what} differ between the {n} workers (rank {self.rank} holds digest '
                                   f'{digest.hex()}); the workers must run the same program on the same step count')

    def check_masks(self, session) -> None:
        """Verifies that every worker holds the same masks (after each pruning decision)."""
        payload = b''.join(masks_mod.mask_of(layer.block).tobytes() for layer in session.masked)
        self.check_equal(f'pruning masks at step {session.step}', payload)

    def check_params(self, net: mx.gluon.Block, what: str = 'parameters') -> None:
        """Verifies that every parameter (weights, masks, BN statistics) is bit-identical on every worker."""
        payload = b''.join(p.data(p.list_ctx()[0]).asnumpy().tobytes() + repr(p.shape).encode()
                           for p in net.collect_params().values() if gc.has_data(p))
        self.check_equal(what, payload)

    # --- BatchNorm statistics
    def sync_aux(self, net: mx.gluon.Block) -> int:
        """Makes the parameters no optimizer updates (BN running mean/var) equal on every worker, by `self.bn`.

        Masks are excluded (they are decided identically and verified). Returns the number of values exchanged.
        """
        params = [p for p in net.collect_params().values()
                  if p.grad_req == 'null' and not p.name.endswith(masks_mod.MASK) and gc.has_data(p)]
        if not params:
            return 0
        local = np.concatenate([p.data(p.list_ctx()[0]).asnumpy().astype(np.float64).ravel() for p in params])
        merged = BN_POLICIES[self.bn](self, local)
        at = 0
        for p in params:
            size = int(np.prod(p.shape))
            p.set_data(mx.nd.array(merged[at:at + size].reshape(p.shape), dtype=p.dtype))
            at += size
        return at

    # --- files
    def run_dir(self, out: str) -> str:
        """`out` on rank 0; a private scratch folder (removed at exit) on the other ranks."""
        if self.is_writer:
            return out
        if self._scratch is None:
            self._scratch = tempfile.mkdtemp(prefix=f'mxprune-rank{self.rank}-')
            atexit.register(shutil.rmtree, self._scratch, True)
        return self._scratch

    def hooks(self, net: mx.gluon.Block, session=None) -> 'WorkerHooks':
        return WorkerHooks(self, net, session)

    @contextlib.contextmanager
    def failing_fast(self) -> Iterator[None]:
        """A worker that fails leaves at once, with a one-line error for MxPruneError (exit code 2).

        At a normal interpreter exit ps-lite waits for every other node (a barrier in its finalisation), so a
        failed worker would never end and the launcher could not see the failure; os._exit skips that wait.
        """
        try:
            yield
        except SystemExit as e:
            if e.code in (None, 0):
                raise
            _leave(e.code if isinstance(e.code, int) else 1, None if isinstance(e.code, int) else str(e.code))
        except MxPruneError as e:
            _leave(2, f'error: rank {self.rank}: {e}')
        except KeyboardInterrupt:
            _leave(130, 'interrupted')
        except BaseException:
            traceback.print_exc()
            _leave(1, None)


def _leave(code: int, message: Optional[str]) -> None:
    if message:
        sys.stderr.write(message + '\n')
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _bn_average(workers: Workers, local: np.ndarray) -> np.ndarray:
    return workers.sum_numpy(local) / workers.num_workers


def _bn_rank0(workers: Workers, local: np.ndarray) -> np.ndarray:
    return workers.sum_numpy(local if workers.rank == 0 else np.zeros_like(local))


# How BN running statistics become equal on every worker (recipe `distributed.bn`). Averaging over workers that each
# saw an equal share of the batches gives the mean over all of them; rank0 keeps one worker's estimate as it is.
BN_POLICIES: Dict[str, Callable[[Workers, np.ndarray], np.ndarray]] = {'average': _bn_average, 'rank0': _bn_rank0}


class WorkerHooks:
    """The training-loop hooks (mxprune.train.Hooks) a worker adds after the pruning Session's."""

    def __init__(self, workers: Workers, net: mx.gluon.Block, session=None):
        self.workers, self.net, self.session = workers, net, session

    def on_epoch_start(self, epoch: int) -> None:
        """Nothing to do."""

    def before_update(self, batch_size: int) -> None:
        """Nothing to do: the Session sums scores itself (Session.sync) when it decides."""

    def after_update(self) -> None:
        """weight *= mask: pruned weights stay exactly zero whatever the optimizer did."""
        if self.session is not None and self.session.masked:
            self.session.reapply_masks()

    def on_epoch_end(self, epoch: int) -> None:
        """BN statistics made equal, then every parameter verified identical (before evaluation and checkpoint);
        gradient scores gathered since the last decision are folded into rank 0."""
        self.workers.sync_aux(self.net)
        self.workers.check_params(self.net, f'parameters at the end of epoch {epoch}')
        if self.session is not None:
            self.fold_scores()

    def fold_scores(self) -> None:
        """Rank 0 holds the workers' summed score accumulators, the others zeros: the sum the next decision takes
        is unchanged, and the checkpoint rank 0 writes holds all of it, so a resumed job (whose other ranks start
        from zeros, Session.load_state) decides as the uninterrupted one."""
        for mod in self.session.modifiers:
            acc = mod.criterion.acc
            if not (mod.criterion.needs_grad and acc):
                continue
            self.workers.sum_arrays(acc)
            if not self.workers.is_writer:
                for k in acc:
                    acc[k] = acc[k].zeros_like()

    def reduce(self, totals: np.ndarray) -> np.ndarray:
        """Evaluation counts summed over the workers (each evaluates its shard of the test set)."""
        return self.workers.sum_numpy(totals)


class PSLite(Workers):
    """MXNet's parameter-server KVStore; needs the DMLC_* environment that tools/launch.py sets."""

    def __init__(self, kind: str = 'dist_sync', bn: str = 'average'):
        if os.environ.get('DMLC_ROLE') != 'worker':
            raise DistributedError(f'distributed.backend: {kind} needs the DMLC_* environment of a worker '
                                   f'(DMLC_ROLE=worker is {os.environ.get("DMLC_ROLE")!r}); start the job with '
                                   f'tools/launch.py -n WORKERS -- python tools/prune.py ...')
        self.kind = kind
        self.kv = mx.kv.create(kind)
        super().__init__(self.kv.rank, self.kv.num_workers, bn)
        self._generation = 0
        self._spare: Dict[tuple, int] = {}
        atexit.register(self.close)  # runs before MXNet's own exit handler (atexit is last-in, first-out)

    def close(self) -> None:
        """Leaves the job: ps-lite's finalisation waits for every other node, then the scheduler lets all go.

        It must happen before MXNet shuts its engine down at exit; freed later, while Python tears modules down,
        the KVStore aborted the process ("terminate called without an active exception").
        """
        kv, self.kv = self.kv, None
        if kv is not None:
            gc.free_kvstore(kv)

    def key_space(self) -> KeySpace:
        """A fresh range of keys for one Trainer (every worker must ask in the same order)."""
        self._generation += 1
        offset = self._generation * KEY_STRIDE
        if offset + KEY_STRIDE > SPARE_KEYS:
            raise DistributedError(f'{self._generation} Trainers were built on one KVStore; at most '
                                   f'{SPARE_KEYS // KEY_STRIDE - 1} fit its key range')
        return KeySpace(self.kv, offset)

    def make_trainer(self, params, optimizer):
        # The servers sum the workers' gradients and Trainer.step divides by the local batch only: the recipe's
        # batch is the global one, split over the workers, so 1/N more gives the gradient of the global mean.
        optimizer.rescale_grad = optimizer.rescale_grad / self.num_workers
        trainer = mx.gluon.Trainer(params, optimizer, kvstore=self.key_space(), update_on_kvstore=False)
        deferred = [p.name for p in gc.trainer_params(trainer) if gc.is_deferred(p)]
        if deferred:
            raise DistributedError(f'parameter {deferred[0]} is not initialised yet; run one forward pass before '
                                   f'building a data-parallel Trainer (its weights are broadcast at once)')
        # Set up now, before the first backward: left to the first step() the workers diverged in 2 of 10 runs.
        gc.init_trainer_kvstore(trainer, with_params=True)
        return trainer

    def _sum(self, flat):
        key = self._spare.get((flat.size, str(flat.dtype)))
        if key is None:
            key = SPARE_KEYS + len(self._spare)
            self._spare[(flat.size, str(flat.dtype))] = key
            self.kv.init(key, mx.nd.zeros(flat.shape, dtype=flat.dtype))
        out = mx.nd.zeros(flat.shape, dtype=flat.dtype)
        self.kv.pushpull(key, flat, out=out)
        return out


class Horovod(Workers):
    """horovod.mxnet (an optional extra); the job is started by horovodrun."""
    kind = 'horovod'

    def __init__(self, bn: str = 'average'):
        try:
            import horovod.mxnet as hvd
        except ImportError:
            raise DistributedError(f'distributed.backend: horovod is not installed; install it with: '
                                   f'{HOROVOD_INSTALL}') from None
        hvd.init()
        self.hvd = hvd
        self._calls = 0
        super().__init__(hvd.rank(), hvd.size(), bn)

    def make_trainer(self, params, optimizer):
        self.hvd.broadcast_parameters(params, root_rank=0)
        return self.hvd.DistributedTrainer(params, optimizer)  # averages gradients over the workers itself

    def _sum(self, flat):
        self._calls += 1
        return self.hvd.allreduce(flat, average=False, name=f'mxprune.sum.{self._calls}')


# recipe `distributed.backend` -> how the workers are created ('auto' and 'none' are resolved by from_env)
BACKENDS: Dict[str, Callable[..., Workers]] = {
    'dist_sync': lambda bn: PSLite('dist_sync', bn),
    'dist_device_sync': lambda bn: PSLite('dist_device_sync', bn),
    'horovod': lambda bn: Horovod(bn),
}
CHOICES = ('auto', 'none', *BACKENDS)
_CURRENT: List[Workers] = []  # one per process: a second dist KVStore in one process hangs the job


def detect(ctx: Sequence[mx.Context] = ()) -> str:
    """The backend the environment asks for: ps-lite under DMLC_ROLE=worker, Horovod under horovodrun, else none."""
    if os.environ.get('DMLC_ROLE') == 'worker':
        return 'dist_device_sync' if any(c.device_type == 'gpu' for c in ctx) else 'dist_sync'
    if any(os.environ.get(k) for k in HOROVOD_ENV):
        return 'horovod'
    return 'none'


def from_env(backend: str = 'auto', bn: str = 'average', ctx: Sequence[mx.Context] = ()) -> Optional[Workers]:
    """This process's Workers (created once, then reused), or None when it runs alone.

    Args:
        backend: 'auto' (from the environment, see detect), 'none', 'dist_sync', 'dist_device_sync' or 'horovod'.
        bn: how BatchNorm statistics are made equal: 'average' or 'rank0'.
        ctx: the worker's contexts ('auto' picks dist_device_sync on GPUs).
    """
    if backend not in CHOICES:
        raise DistributedError(f'distributed.backend: {backend!r} is not allowed; expected one of '
                               f'{", ".join(CHOICES)}')
    kind = detect(ctx) if backend == 'auto' else backend
    if kind == 'none':
        return None
    if _CURRENT:
        if _CURRENT[0].kind != kind:
            raise DistributedError(f'distributed.backend: this process already runs {_CURRENT[0].kind}; one '
                                   f'backend per process')
        _CURRENT[0].bn = bn if bn in BN_POLICIES else _CURRENT[0].bn
        return _CURRENT[0]
    _CURRENT.append(BACKENDS[kind](bn))
    return _CURRENT[0]
