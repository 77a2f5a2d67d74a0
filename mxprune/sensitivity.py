"""Sensitivity analysis: prune each coupled group alone at several ratios and measure what it costs.

Answers "which layers can I prune, and by how much?" (Li et al. 2017 section 4.1; Distiller's --sense). Each group
is masked alone (the raw weights stay, masks are lifted after each measurement), the net is evaluated on a test
slice, and the top-1 and MACs of every (group, ratio) are recorded. `derive_ratios` then picks per-group ratios that
meet a MACs target with the least predicted loss (greedy on accuracy lost per MAC saved), and `ratios_recipe`
writes them as a recipe's layer-wise `ratios`.
"""
import csv
import dataclasses
from typing import Dict, List, Optional, Sequence

import mxnet as mx
import numpy as np
import yaml

from . import flops as flops_mod
from . import io
from . import masks as masks_mod
from .graph import Selection
from .modifiers import PruningModifier
from .session import Session
from .train import evaluate


@dataclasses.dataclass
class Result:
    base_top1: float
    dense_macs: int
    rows: List[dict]


def analyze(net: mx.gluon.HybridBlock, input_shape, loader, ctx: Sequence[mx.Context],
            ratios: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9), criterion: str = 'l2',
            selection: Optional[Selection] = None, progress: bool = True) -> Result:
    """Per group and ratio: top-1 and MACs ratio with only that group pruned (by `criterion`)."""
    from tqdm import tqdm
    session = Session(net, input_shape, 1, [PruningModifier(criterion, target=0.5, selection=selection)])
    mod = session.modifiers[0]
    base = evaluate(net, loader, ctx)
    params = session.effective_params()
    dense_macs = session.dense_count.macs
    rows = []
    with tqdm(total=len(mod.groups) * len(ratios), desc='sensitivity', disable=not progress) as bar:
        for g in mod.groups:
            scores = mod.criterion.group_scores(g, params)
            for r in ratios:
                n_keep = max(1, g.size - int(np.floor(r * g.size + 1e-9)))
                n_keep = -(-n_keep // g.blocks) * g.blocks  # grouped convolutions: the same number in each block
                keep = flops_mod.keep_top(scores, np.ones(g.size, bool), n_keep, g.blocks)
                session.group_keep[g.index] = keep
                session.apply_masks(zero_weights=False)
                ev = evaluate(net, loader, ctx)
                macs = flops_mod.structured(session.graph, {g.index: keep}).macs
                rows.append({'group': g.name, 'producers': ';'.join(m.layer.path for m in g.producers),
                             'size': g.size, 'ratio': r, 'kept': n_keep, 'top1': ev['top1'],
                             'top1_drop': base['top1'] - ev['top1'], 'loss': ev['loss'],
                             'macs_ratio': macs / dense_macs})
                bar.update(1)
            session.group_keep[g.index] = np.ones(g.size, bool)
            session.apply_masks(zero_weights=False)
    for layer in session.masked:  # all masks are ones again: removing them leaves the net as it was
        masks_mod.remove(layer.block, fold_first=False)
    masks_mod.clear_cached(net)
    return Result(base['top1'], dense_macs, rows)


def derive_ratios(result: Result, graph_session_macs, target_macs: float) -> Dict[str, float]:
    """Per-group ratios meeting `target_macs` (fraction of dense) with the least summed top-1 drop.

    Args:
        result: from analyze().
        graph_session_macs: f({group name: ratio}) -> MACs ratio of pruning all those groups together.
        target_macs: fraction of the dense MACs to keep.
    """
    by_group: Dict[str, List[dict]] = {}
    for row in result.rows:
        by_group.setdefault(row['group'], []).append(row)
    for rows in by_group.values():
        rows.sort(key=lambda r: r['ratio'])
    chosen = {g: 0.0 for g in by_group}
    drop = {g: 0.0 for g in by_group}
    current = graph_session_macs(chosen)
    while current > target_macs:
        best, best_gain = None, -1.0
        for g, rows in by_group.items():
            nxt = next((r for r in rows if r['ratio'] > chosen[g]), None)
            if nxt is None:
                continue
            trial = dict(chosen)
            trial[g] = nxt['ratio']
            saved = current - graph_session_macs(trial)
            cost = max(nxt['top1_drop'], 0.0) - drop[g] + 1e-4
            gain = saved / max(cost, 1e-4)
            if saved > 0 and gain > best_gain:
                best, best_gain = (g, nxt), gain
        if best is None:
            break
        g, nxt = best
        chosen[g], drop[g] = nxt['ratio'], max(nxt['top1_drop'], 0.0)
        current = graph_session_macs(chosen)
    return {g: r for g, r in chosen.items() if r > 0}


def write_csv(result: Result, path: str) -> str:
    def writer(tmp):
        with open(tmp, 'w', newline='', encoding='utf-8') as f:
            w = csv.DictWriter(f, fieldnames=list(result.rows[0]))
            w.writeheader()
            w.writerows(result.rows)
    io.write_with(path, writer)
    return path


def plot(result: Result, path: str, title: str = '') -> str:
    from .plots import pyplot, save_figure
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    groups: Dict[str, List[dict]] = {}
    for r in result.rows:
        groups.setdefault(r['group'], []).append(r)
    cmap = plt.get_cmap('viridis')
    for i, (g, rows) in enumerate(groups.items()):
        ax.plot([r['ratio'] for r in rows], [r['top1'] * 100 for r in rows], marker='o', markersize=3,
                color=cmap(i / max(1, len(groups) - 1)), label=f'{g} ({rows[0]["size"]})')
    ax.axhline(result.base_top1 * 100, color='k', linestyle='--', linewidth=1, label='dense')
    ax.set_xlabel('fraction of the group\'s channels removed')
    ax.set_ylabel('test top-1 (%)')
    ax.set_title(title or 'sensitivity: each coupled group pruned alone')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2, loc='lower left')
    return save_figure(fig, path)


def ratios_recipe(recipe_raw: dict, ratios: Dict[str, float], criterion: str, header: str) -> str:
    """The recipe with one local, layer-wise pruning modifier carrying `ratios` (keyed by producer paths)."""
    raw = dict(recipe_raw)
    patterns = {name.split(':')[0]: round(float(r), 4) for name, r in ratios.items()}
    raw['pruning'] = [{'criterion': criterion, 'granularity': 'channel', 'scope': 'local',
                       'target': {'sparsity': 0.0}, 'ratios': patterns,
                       'schedule': {'kind': 'oneshot', 'epoch': 0.0}}]
    return header + yaml.safe_dump(raw, sort_keys=False, default_flow_style=None)
