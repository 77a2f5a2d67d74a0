"""The Session: the one object that counts steps, fires the modifiers and keeps masks, weights and momentum in step.

In an ordinary Gluon loop:

    session = mp.Session(net, (1, 3, 32, 32), steps_per_epoch=len(loader), modifiers=[...], trainer=trainer)
    for x, y in loader:
        with autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        session.before_update(x.shape[0])   # regularisers, gradient statistics, scheduled pruning
        trainer.step(x.shape[0])
        session.after_update()
    small, plan = session.finalize()          # shrink; then build a new Trainer for `small`

Pruning decisions happen in before_update, when `step` optimizer steps are done: the masks change, the masked
weights, their momentum and their gradients are zeroed, so the step that follows keeps them at exactly zero.
"""
import json
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np

from . import flops as flops_mod
from . import masks as masks_mod
from .errors import MxPruneError
from .graph import DependencyGraph, Layer
from .graph.core import finish_init
from .layers import gluon_compat as gc
from .modifiers import PruningModifier, Regularizer


class Session:
    """Attaches masks to a net and drives pruning modifiers and regularisers through training."""

    def __init__(self, net: mx.gluon.HybridBlock, input_shape: Tuple[int, ...], steps_per_epoch: int,
                 modifiers: Sequence[PruningModifier] = (), regularizers: Sequence[Regularizer] = (),
                 trainer: Optional[mx.gluon.Trainer] = None):
        """
        Args:
            net: an initialised HybridBlock (deferred shapes are completed with one forward pass).
            input_shape: the input shape to trace, e.g. (1, 3, 32, 32).
            steps_per_epoch: optimizer steps per epoch (schedules are given in epochs).
            modifiers: PruningModifier objects (or their configs' .build()).
            regularizers: Regularizer objects.
            trainer: the Gluon Trainer, so pruned weights' momentum is zeroed (or call bind_trainer later).
        """
        if steps_per_epoch < 1:
            raise MxPruneError(f'steps_per_epoch {steps_per_epoch} must be >= 1')
        self.net, self.input_shape, self.steps_per_epoch = net, tuple(input_shape), steps_per_epoch
        self.modifiers, self.regularizers = list(modifiers), list(regularizers)
        self.trainer = trainer
        finish_init(net, self.input_shape)
        self.graph = DependencyGraph.trace(net, self.input_shape)
        self.dense_count = flops_mod.dense(self.graph)
        gpu = any(c.device_type == 'gpu' for p in net.collect_params().values() for c in p.list_ctx())
        for m in self.modifiers:
            m.bind(self.graph, gpu)
        for r in self.regularizers:
            r.bind(self.graph)
        self.groups_by_index = {g.index: g for g in self.graph.groups}
        self.group_size = {g.index: g.size for g in self.graph.groups}
        self.group_keep: Dict[int, np.ndarray] = {g.index: np.ones(g.size, bool) for g in self.graph.groups}
        self.weight_keep: Dict[str, np.ndarray] = {}
        self.step = 0
        self.history: List[dict] = []
        self._weight_members = self._index_weight_members()
        self.masked: List[Layer] = self._layers_to_mask()
        for layer in self.masked:
            masks_mod.attach(layer.block)
        masks_mod.clear_cached(net)
        self.needs_new_trainer = False
        # Data-parallel workers (mxprune.distributed.Workers): when set, gradient scores are summed over the workers
        # before each decision and the masks are verified equal on every worker after it.
        self.sync = None
        # called with the session after every pruning update (e.g. to evaluate the net between gradual steps)
        self.after_prune: List = []

    # --- set-up helpers
    def _index_weight_members(self) -> Dict[str, list]:
        out: Dict[str, list] = {}
        for g in self.graph.groups:
            for m in g.members:
                if m.attr == 'weight' and m.layer.weighted:
                    out.setdefault(m.layer.path, []).append((g.index, m))
        return out

    def _layers_to_mask(self) -> List[Layer]:
        wanted = set()
        for mod in self.modifiers:
            if mod.structured:
                for g in mod.groups:
                    wanted.update(m.layer.path for m in g.members if m.layer.weighted)
            else:
                wanted.update(layer.path for layer in mod.layers)
        return [layer for layer in self.graph.weighted_layers() if layer.path in wanted]

    def bind_trainer(self, trainer: mx.gluon.Trainer) -> None:
        self.trainer = trainer

    @property
    def epoch(self) -> float:
        return self.step / self.steps_per_epoch

    # --- the loop hooks (mxprune.train.Hooks)
    def on_trainer(self, trainer: mx.gluon.Trainer) -> None:
        """The Trainer fit built: pruned weights' momentum is zeroed in it."""
        self.bind_trainer(trainer)

    def on_epoch_start(self, epoch: int) -> None:
        """Nothing to do: the Session counts steps itself."""

    def on_epoch_end(self, epoch: int) -> None:
        """Nothing to do: the Session counts steps itself."""

    def before_update(self, batch_size: int) -> None:
        """After backward, before trainer.step: regularisers, gradient statistics, scheduled pruning."""
        for r in self.regularizers:
            if r.active(self.step, self.steps_per_epoch):
                r.apply(batch_size)
        for mod in self.modifiers:
            if mod.criterion.needs_grad and self.step <= mod.schedule.last_update(self.steps_per_epoch):
                mod.criterion.accumulate(self._grad_layers(mod))
        due = [m for m in self.modifiers if m.schedule.is_update(self.step, self.steps_per_epoch)]
        if due:
            self._update(due, zero_grads=True)

    def after_update(self) -> None:
        self.step += 1

    def catch_up(self) -> None:
        """Applies updates due at the current step when no further step will come (end of training)."""
        due = [m for m in self.modifiers if m.schedule.is_update(self.step, self.steps_per_epoch)]
        if due:
            self._update(due)

    # --- pruning
    def _grad_layers(self, mod: PruningModifier) -> List[Layer]:
        if mod.structured:
            return [layer for layer in {id(m.layer): m.layer for g in mod.groups for m in g.members
                                        if m.layer.weighted}.values()]
        return mod.layers

    def _update(self, due: Iterable[PruningModifier], zero_grads: bool = False,
                fraction: Optional[float] = None) -> None:
        for mod in due:
            if self.sync is not None and mod.criterion.needs_grad:
                self.sync.sum_arrays(mod.criterion.acc)  # each worker saw its own shard: decide on all of them
            f = mod.schedule.fraction(self.step, self.steps_per_epoch) if fraction is None else fraction
            if mod.structured:
                for gi, keep in mod.decide_groups(self, f).items():
                    self.group_keep[gi] &= keep
            else:
                for path, keep in mod.decide_weights(self, f).items():
                    old = self.weight_keep.get(path)
                    self.weight_keep[path] = keep if old is None else keep & old
            mod.last_fraction = f
            if mod.reset_scores:
                mod.criterion.reset()
        self.apply_masks(zero_grads=zero_grads)
        if self.sync is not None:
            self.sync.check_masks(self)
        self.history.append({'step': self.step, **self.sparsity(),
                             'widths': {self.groups_by_index[gi].name: int(k.sum())
                                        for gi, k in self.group_keep.items() if not k.all()}})
        for fn in self.after_prune:
            fn(self)

    def prune_now(self, fraction: float = 1.0) -> None:
        """Applies every modifier at `fraction` of its target right now (one-shot pruning outside a loop)."""
        self._update(self.modifiers, fraction=fraction)

    def accumulate(self, batches: Iterable, loss_fn, ctx: Sequence[mx.Context]) -> int:
        """Runs forward/backward over `batches` of (data, label) to gather gradient statistics without updating.

        For gradient-based criteria (grad, taylor) before a one-shot prune. Returns the number of batches.
        """
        from mxnet import autograd, gluon
        n = 0
        grad_mods = [m for m in self.modifiers if m.criterion.needs_grad]
        for x, y in batches:
            xs = gluon.utils.split_and_load(x, ctx, even_split=False)
            ys = gluon.utils.split_and_load(y, ctx, even_split=False)
            with autograd.record():
                losses = [loss_fn(self.net(xi), yi) for xi, yi in zip(xs, ys)]
            autograd.backward(losses)
            for mod in grad_mods:
                mod.criterion.accumulate(self._grad_layers(mod))
            n += 1
        return n

    def recalibrate(self, batches: Iterable, ctx: Sequence[mx.Context]) -> int:
        """Refreshes the BatchNorm running statistics of the pruned net: forward and backward passes in training
        mode over `batches` of (data, label), no update (MXNet updates the statistics in the backward pass).

        Right after a pruning step the statistics still describe the wider net, and a net evaluated at once can lose
        tens of points that a few dozen batches of recalibration give back. Returns the number of batches.
        """
        from mxnet import autograd, gluon
        # called between a training step's backward and its optimizer step: the gradients must come back as they were
        params = [p for p in self.net.collect_params().values() if p.grad_req != 'null']
        saved = [[g.copy() for g in p.list_grad()] for p in params]
        n = 0
        for x, _ in batches:
            xs = gluon.utils.split_and_load(x, ctx, even_split=False)
            with autograd.record():
                outs = [self.net(xi).sum() for xi in xs]
            autograd.backward(outs)
            n += 1
        for p, grads in zip(params, saved):
            for g, old in zip(p.list_grad(), grads):
                old.copyto(g)
        mx.nd.waitall()
        return n

    def layer_mask(self, layer: Layer) -> np.ndarray:
        shape = layer.params['weight'].shape
        mask = np.ones(shape, np.float32)
        for gi, m in self._weight_members.get(layer.path, []):
            dropped = ~self.group_keep[gi][m.channels]
            if dropped.any():  # a grouped conv's input channel: its column in its block's rows (Member.index)
                mask[m.index(dropped)] = 0.0
        keep = self.weight_keep.get(layer.path)
        if keep is not None:
            mask *= keep
        return mask

    def apply_masks(self, zero_grads: bool = False, zero_weights: bool = True) -> None:
        """Writes every layer's mask; zeroes masked weights, their momentum (and gradients).

        zero_weights=False only masks (the raw weights stay, so masks can be lifted again: sensitivity analysis).
        """
        for layer in self.masked:
            mask = self.layer_mask(layer)
            current = masks_mod.mask_of(layer.block)
            if np.array_equal(current, mask):
                continue
            masks_mod.set_mask(layer.block, mask, zero_weights=zero_weights)
            if not zero_weights:
                continue
            self._zero_optimizer_state(layer, mask)
            if zero_grads:
                p = layer.params['weight']
                if p.grad_req != 'null':
                    for ctx in p.list_ctx():
                        g = p.grad(ctx)
                        g *= mx.nd.array(mask, ctx=ctx)

    def _zero_optimizer_state(self, layer: Layer, mask: np.ndarray) -> None:
        if self.trainer is None:
            return
        p = layer.params['weight']
        idx = gc.trainer_param_index(self.trainer, p.name)
        if idx is None:
            return
        for updater in gc.trainer_updaters(self.trainer):
            state = updater.states.get(idx)
            for s in (state if isinstance(state, (tuple, list)) else [state]):
                if isinstance(s, mx.nd.NDArray) and s.shape == mask.shape:
                    s *= mx.nd.array(mask, ctx=s.context)

    def reapply_masks(self) -> None:
        """weight *= mask on every masked layer (for dist training, where the server copy can drift)."""
        for layer in self.masked:
            masks_mod.fold(layer.block)

    def effective_params(self) -> Dict[str, np.ndarray]:
        """Parameter name -> numpy data, with masks applied to masked weights."""
        out = {}
        for layer in self.graph.layers:
            for attr, p in layer.params.items():
                data = p.data(p.list_ctx()[0]).asnumpy()
                if attr == 'weight' and masks_mod.is_masked(layer.block):
                    data = data * masks_mod.mask_of(layer.block)
                out[p.name] = data
        return out

    # --- reporting
    def sparsity(self) -> dict:
        eff = flops_mod.effective(self.graph)
        shr = flops_mod.structured(self.graph, self.group_keep)
        total = sum(int(np.prod(layer.params['weight'].shape)) for layer in self.masked) or 1
        zeros = sum(int((masks_mod.mask_of(layer.block) == 0).sum()) for layer in self.masked)
        return {'macs': eff.macs, 'params': eff.params, 'macs_ratio': eff.macs / self.dense_count.macs,
                'params_ratio': eff.params / self.dense_count.params, 'shrunk_macs': shr.macs,
                'shrunk_params': shr.params, 'masked_weight_sparsity': zeros / total}

    def layer_report(self) -> List[dict]:
        """Per Conv/Dense layer: channels in/out kept of dense, and the fraction of zero weights."""
        rows = []
        for layer in self.graph.weighted_layers():
            w = layer.params['weight'].shape
            mask = masks_mod.mask_of(layer.block) if masks_mod.is_masked(layer.block) else np.ones(w, np.float32)
            alive0 = np.any(mask.reshape(mask.shape[0], -1) != 0, axis=1) if len(w) > 1 else mask != 0
            g, in_kept = layer.groups, 1
            if len(w) > 1:  # a grouped conv's input channel j*a + c is column c of the rows of block j
                per_in = mask.reshape((g, w[0] // g) + tuple(w[1:])).swapaxes(0, 1).reshape(w[0] // g, g * w[1], -1)
                in_kept = int(np.any(per_in != 0, axis=(0, 2)).sum())
            rows.append({'layer': layer.path, 'kind': layer.kind, 'out': int(w[0]), 'out_kept': int(alive0.sum()),
                         'in': int(w[1]) * g if len(w) > 1 else 1, 'in_kept': in_kept,
                         'sparsity': float((mask == 0).mean())})
        return rows

    # --- resume
    def state_dict(self) -> dict:
        return {'step': self.step,
                'groups': {self.groups_by_index[gi].name: np.flatnonzero(k).tolist()
                           for gi, k in self.group_keep.items() if not k.all()},
                'history': self.history,
                # what the scores are averaged over and the last measured/predicted latency: a resumed run
                # decides the next update as the uninterrupted one would
                'modifiers': [{'batches': m.criterion.batches, 'correction': m.correction}
                              for m in self.modifiers]}

    def load_state_dict(self, state: dict) -> None:
        """Restores the step and group masks; unstructured masks come back with the mask parameters."""
        self.step = int(state['step'])
        for mod in self.modifiers:  # what the updates before the checkpoint reached (the 'plan' path needs it)
            mod.last_fraction = mod.schedule.fraction(self.step - 1, self.steps_per_epoch) if self.step else 0.0
        by_name = {g.name: g for g in self.graph.groups}
        for name, kept in state.get('groups', {}).items():
            if name not in by_name:
                raise MxPruneError(f'saved pruning state names group {name!r}, which this net does not have')
            g = by_name[name]
            keep = np.zeros(g.size, bool)
            keep[kept] = True
            problem = g.keep_error(keep)
            if problem:
                raise MxPruneError(f'saved pruning state: {problem}')
            self.group_keep[g.index] = keep
        for layer in self.masked:
            m = masks_mod.mask_of(layer.block)
            if not m.all():
                self.weight_keep[layer.path] = m != 0
        self.history = list(state.get('history', []))
        for mod, saved in zip(self.modifiers, state.get('modifiers', [])):
            mod.criterion.batches = int(saved['batches'])
            mod.correction = float(saved['correction'])

    def save_state(self, folder: str) -> None:
        with open(os.path.join(folder, 'session.json'), 'w', encoding='utf-8') as f:
            json.dump(self.state_dict(), f)
        accs = {f'{i}:{k}': v for i, m in enumerate(self.modifiers) for k, v in m.criterion.acc.items()}
        if accs:
            mx.nd.save(os.path.join(folder, 'criteria.nd'), accs)

    def load_state(self, folder: str) -> None:
        with open(os.path.join(folder, 'session.json'), encoding='utf-8') as f:
            self.load_state_dict(json.load(f))
        path = os.path.join(folder, 'criteria.nd')
        if os.path.exists(path):
            # a data-parallel checkpoint holds the scores summed over all workers, in rank 0's share (WorkerHooks
            # folds them at every epoch end): the other ranks continue from zeros so that the sum counts them once
            writer = self.sync is None or self.sync.is_writer
            for key, arr in mx.nd.load(path).items():
                i, name = key.split(':', 1)
                self.modifiers[int(i)].criterion.acc[name] = arr if writer else arr.zeros_like()

    # --- the end
    def finalize(self, shrink: bool = True):
        """Ends pruning: with shrink, physically removes pruned channels (see mxprune.shrink); else folds masks.

        Returns:
            (net, plan): the same Python object, edited in place; plan is None without shrink.
        """
        if shrink:
            from .shrink import shrink_session  # the shrink layer sits beside the session
            return shrink_session(self)
        for layer in self.masked:
            masks_mod.remove(layer.block, fold_first=True)
        masks_mod.clear_cached(self.net)
        self.masked = []
        return self.net, None
