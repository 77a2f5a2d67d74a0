"""Every GluonCV classification model through trace -> prune -> shrink (== masked) -> export, with failures named.

    python bench/zoo_sweep.py [--models a,b] [--out bench/results/zoo_sweep.json]
    python bench/zoo_sweep.py --target macs=0.5 --allocator knapsack --out bench/results/zoo_sweep_knapsack.json

Each model runs in its own process (random init, batch 1, its natural input size): L2 channel pruning (by default
half of every prunable group: uniform allocator, sparsity 0.5; or `--target` with `--allocator`, default selection),
masked vs shrunk outputs compared, then export_symbol with its two re-import checks. Equivalence passes at max |diff|
<= 1e-4 * max(1, max |output|): random-init deep nets can have large logits, so the bound scales with them; the raw
difference is reported too. With a macs or params target, a model whose prunable groups cannot reach it is
'unreachable' (the smallest reachable ratio is named), and the rows' ratios are checked to lie within 0.02 below the
target.
Last line: ratio <models fully passing / models>.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'tools'))
import _bootstrap  # noqa: E402,F401


def sweep_one(name: str, target: str = 'sparsity=0.5', allocator: str = 'uniform') -> dict:
    import mxnet as mx
    import numpy as np

    import mxprune as mp
    from mxprune import flops, zoo
    from mxprune.graph import DependencyGraph
    row = {'model': name, 'status': 'error', 'stage': 'build', 'target': target, 'allocator': allocator}
    tic = time.time()
    try:
        size = zoo.input_size(name)
        shape = (1, 3, size, size)
        mx.random.seed(0)
        net = zoo.get_model(name)
        net.hybridize()
        x = mx.nd.array(np.random.RandomState(0).uniform(-1, 1, shape))
        first = lambda out: (out[0] if isinstance(out, (list, tuple)) else out).asnumpy()  # noqa: E731
        first(net(x))
        row['stage'] = 'trace'
        graph = DependencyGraph.trace(net, shape)
        row.update(groups=len(graph.groups), prunable=len(graph.prunable_groups()),
                   unsupported=sorted({op for op, _ in graph.unsupported}))
        if not row['prunable']:
            row.update(status='unsupported', detail='no prunable group (' + (
                f'unsupported ops: {", ".join(row["unsupported"])}' if row['unsupported'] else
                'every group frozen or grouped') + ')')
            return row
        row['stage'] = 'prune'
        kind, value = target.split('=')
        s = mp.Session(net, shape, 1, [mp.PruningModifier('l2', target={kind: float(value)}, allocator=allocator)])
        tic_prune = time.time()
        try:
            s.prune_now()
        except mp.OverPruneError as e:
            row.update(status='unreachable', detail=str(e))
            return row
        row['prune_seconds'] = round(time.time() - tic_prune, 1)
        masked = first(net(x))
        row['stage'] = 'shrink'
        small, plan = s.finalize()
        shrunk = first(small(x))
        diff = float(np.abs(shrunk - masked).max())
        scale = max(1.0, float(np.abs(masked).max()))
        shrunk_count = flops.dense(DependencyGraph.trace(small, shape))
        row.update(max_abs_diff=diff, output_scale=scale, macs_ratio=shrunk_count.macs / s.dense_count.macs,
                   params_ratio=shrunk_count.params / s.dense_count.params)
        if not diff <= 1e-4 * scale:
            row.update(detail=f'shrunk differs from masked by {diff:.3g} (output scale {scale:.3g})')
            return row
        row['stage'] = 'export'
        with tempfile.TemporaryDirectory() as d:
            files = mp.export_symbol(small, os.path.join(d, 'm'), shape)
            row['export_diff'] = float(files['max_abs_diff'])
        row.update(status='ok', stage='done')
    except Exception as e:  # the sweep reports every failure, whatever its type
        row['detail'] = f'{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ""}'
        row['trace'] = traceback.format_exc()[-1500:]
    finally:
        row['seconds'] = round(time.time() - tic, 1)
    return row


def main() -> None:
    import argparse
    p = argparse.ArgumentParser()
    p.add_argument('--models', help='comma-separated (default: every classification model)')
    p.add_argument('--out', default=os.path.join(HERE, 'results', 'zoo_sweep.json'))
    p.add_argument('--one', help=argparse.SUPPRESS)
    p.add_argument('--timeout', type=int, default=900)
    p.add_argument('--keep-ok', action='store_true', help='reuse the rows of --out that passed; run the rest')
    p.add_argument('--target', default='sparsity=0.5', help='kind=value: sparsity, macs or params (%(default)s)')
    p.add_argument('--allocator', default='uniform', help='uniform, threshold or knapsack (default %(default)s)')
    args = p.parse_args()
    kind, _, value = args.target.partition('=')
    if kind not in ('sparsity', 'macs', 'params') or not value.replace('.', '', 1).isdigit():
        raise SystemExit(f'--target: {args.target!r} is not allowed; expected sparsity=S, macs=M or params=P')
    if args.one:
        print(json.dumps(sweep_one(args.one, args.target, args.allocator)))
        return
    from mxprune import io, zoo
    names = args.models.split(',') if args.models else zoo.classification_models()
    kept = {}
    if args.keep_ok and os.path.exists(args.out):
        with open(args.out, encoding='utf-8') as f:
            kept = {r['model']: r for r in json.load(f) if r['status'] == 'ok' and
                    r.get('target', 'sparsity=0.5') == args.target and r.get('allocator', 'uniform') == args.allocator}
    rows = []
    for name in names:
        if name in kept:
            rows.append(kept[name])
            continue
        try:
            out = subprocess.run([sys.executable, __file__, '--one', name, '--target', args.target, '--allocator',
                                  args.allocator], capture_output=True, text=True, timeout=args.timeout)
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith('{')]
            row = json.loads(lines[-1]) if lines else {'model': name, 'status': 'error', 'stage': 'process',
                                                       'detail': (out.stderr.strip().splitlines() or ['?'])[-1]}
        except subprocess.TimeoutExpired:
            row = {'model': name, 'status': 'error', 'stage': 'timeout', 'detail': f'over {args.timeout} s'}
        rows.append(row)
        extra = row.get('detail', '') if row['status'] != 'ok' else \
            f'groups {row["groups"]} prunable {row["prunable"]} macs {row["macs_ratio"]:.4f} params ' \
            f'{row["params_ratio"]:.4f} diff {row["max_abs_diff"]:.1e}'
        print(f'{name:32s} {row["status"]:12s} {row.get("stage", ""):8s} {extra}', flush=True)
        io.write_json(args.out, rows)
    ok = [r for r in rows if r['status'] == 'ok']
    unsupported = [r for r in rows if r['status'] == 'unsupported']
    unreachable = [r for r in rows if r['status'] == 'unreachable']
    failed = [r for r in rows if r['status'] == 'error']
    print(f'{len(ok)} of {len(rows)} models trace, prune, shrink (== masked) and export; {len(unsupported)} have no '
          f'prunable group; {len(unreachable)} cannot reach {args.target}: '
          f'{", ".join(r["model"] for r in unreachable) or "none"}; {len(failed)} fail: '
          f'{", ".join(r["model"] for r in failed) or "none"}')
    if kind in ('macs', 'params') and ok:
        ratios = [r['macs_ratio'] if kind == 'macs' else r['params_ratio'] for r in ok]
        inside = sum(1 for v in ratios if float(value) - 0.02 <= v <= float(value) + 1e-9)
        print(f'{kind} ratio of the models that pass: {min(ratios):.4f} to {max(ratios):.4f}; {inside} of {len(ok)} '
              f'within [{float(value) - 0.02:.2f}, {float(value):.2f}]')
    print(f'ratio {len(ok) / max(1, len(rows)):.3f}')


if __name__ == '__main__':
    main()
