"""PNG plots for run folders (matplotlib, Agg backend): channels per layer, training curves, accuracy vs MACs."""
import os
from typing import Dict, List, Sequence

from . import io


def pyplot():
    """matplotlib's pyplot on the Agg backend: run folders are written on machines without a display."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: str) -> str:
    """Writes `fig` as a PNG at `path` (atomically) and closes it."""
    io.write_with(path, lambda tmp: fig.savefig(tmp, format='png', dpi=110, bbox_inches='tight'))
    pyplot().close(fig)
    return path


def channels(layers: Sequence[dict], path: str, title: str = '') -> str:
    """Output channels per Conv/Dense layer: dense width and kept width."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.18 * len(layers)), 3.6))
    x = list(range(len(layers)))
    ax.bar(x, [r['out'] for r in layers], color='#c8d3e6', label='dense')
    ax.bar(x, [r['out_kept'] for r in layers], color='#2f5f9e', label='kept')
    ax.set_xlabel('layer (in graph order)')
    ax.set_ylabel('output channels')
    ax.set_title(title or 'channels per layer before / after pruning')
    ax.legend(loc='upper left')
    step = max(1, len(layers) // 25)
    ax.set_xticks(x[::step])
    ax.set_xticklabels([r['layer'] for r in layers][::step], rotation=90, fontsize=6)
    return save_figure(fig, path)


def curves(rows: Sequence[dict], path: str) -> str:
    """Training loss and test top-1 per epoch, phases one after another."""
    plt = pyplot()
    epochs = [r for r in rows if 'phase' in r and 'train_loss' in r]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
    phases: Dict[str, List] = {}
    for i, r in enumerate(epochs):
        phases.setdefault(r['phase'], []).append((i + 1, r))
    for phase, pts in phases.items():
        a.plot([i for i, _ in pts], [r['train_loss'] for _, r in pts], marker='o', label=phase)
        b.plot([i for i, _ in pts], [r.get('test_top1', float('nan')) for _, r in pts], marker='o', label=phase)
    a.set_xlabel('epoch (all phases)')
    a.set_ylabel('training loss')
    b.set_xlabel('epoch (all phases)')
    b.set_ylabel('test top-1')
    a.legend()
    b.legend()
    return save_figure(fig, path)


def accuracy_vs_macs(points: Sequence[dict], path: str, title: str = 'top-1 vs MACs', metric: str = 'top1',
                     label: str = 'test top-1 (%)') -> str:
    """points: {'label', 'macs', metric} (dense baselines with 'dense': True are drawn as stars)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for p in points:
        ax.scatter(p['macs'] / 1e6, p[metric] * 100, marker='*' if p.get('dense') else 'o', s=90 if p.get('dense')
                   else 40)
        ax.annotate(p['label'], (p['macs'] / 1e6, p[metric] * 100), fontsize=7, xytext=(4, 3),
                    textcoords='offset points')
    ax.set_xlabel('MACs (M)')
    ax.set_ylabel(label)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def run_plots(run_dir: str, report: dict) -> Dict[str, str]:
    out = {}
    if report.get('layers'):
        out['channels'] = channels(report['layers'], os.path.join(run_dir, 'channels.png'),
                                   f'{report["model"]}: channels per layer (MACs x{report["ratios"]["macs"]:.2f})')
    rows = io.read_jsonl(os.path.join(run_dir, 'log.jsonl'))
    if any('train_loss' in r for r in rows):
        out['curves'] = curves(rows, os.path.join(run_dir, 'curves.png'))
    return out
