"""Every GluonCV classification model through trace -> prune -> shrink (== masked) -> export, with failures named.

    python bench/zoo_sweep.py [--models a,b] [--out bench/results/zoo_sweep.json]

Each model runs in its own process (random init, batch 1, its natural input size): L2 channel pruning of half of
every prunable group (local scope, default selection), masked vs shrunk outputs compared, then export_symbol with
its two re-import checks. Equivalence passes at max |diff| <= 1e-4 * max(1, max |output|): random-init deep nets
can have large logits, so the bound scales with them; the raw difference is reported too.
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


def sweep_one(name: str) -> dict:
    import mxnet as mx
    import numpy as np

    import mxprune as mp
    from mxprune import flops, zoo
    from mxprune.graph import DependencyGraph
    row = {'model': name, 'status': 'error', 'stage': 'build'}
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
        s = mp.Session(net, shape, 1, [mp.PruningModifier('l2', target=0.5)])
        s.prune_now()
        masked = first(net(x))
        row['stage'] = 'shrink'
        small, plan = s.finalize()
        shrunk = first(small(x))
        diff = float(np.abs(shrunk - masked).max())
        scale = max(1.0, float(np.abs(masked).max()))
        row.update(max_abs_diff=diff, output_scale=scale,
                   macs_ratio=flops.dense(DependencyGraph.trace(small, shape)).macs / s.dense_count.macs)
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
    args = p.parse_args()
    if args.one:
        print(json.dumps(sweep_one(args.one)))
        return
    from mxprune import io, zoo
    names = args.models.split(',') if args.models else zoo.classification_models()
    kept = {}
    if args.keep_ok and os.path.exists(args.out):
        with open(args.out, encoding='utf-8') as f:
            kept = {r['model']: r for r in json.load(f) if r['status'] == 'ok'}
    rows = []
    for name in names:
        if name in kept:
            rows.append(kept[name])
            continue
        try:
            out = subprocess.run([sys.executable, __file__, '--one', name], capture_output=True, text=True,
                                 timeout=args.timeout)
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith('{')]
            row = json.loads(lines[-1]) if lines else {'model': name, 'status': 'error', 'stage': 'process',
                                                       'detail': (out.stderr.strip().splitlines() or ['?'])[-1]}
        except subprocess.TimeoutExpired:
            row = {'model': name, 'status': 'error', 'stage': 'timeout', 'detail': f'over {args.timeout} s'}
        rows.append(row)
        extra = row.get('detail', '') if row['status'] != 'ok' else \
            f'groups {row["groups"]} prunable {row["prunable"]} macs {row["macs_ratio"]:.2f} diff ' \
            f'{row["max_abs_diff"]:.1e}'
        print(f'{name:32s} {row["status"]:12s} {row.get("stage", ""):8s} {extra}', flush=True)
        io.write_json(args.out, rows)
    ok = [r for r in rows if r['status'] == 'ok']
    unsupported = [r for r in rows if r['status'] == 'unsupported']
    failed = [r for r in rows if r['status'] == 'error']
    print(f'{len(ok)} of {len(rows)} models trace, prune, shrink (== masked) and export; {len(unsupported)} have no '
          f'prunable group; {len(failed)} fail: {", ".join(r["model"] for r in failed) or "none"}')
    print(f'ratio {len(ok) / max(1, len(rows)):.3f}')


if __name__ == '__main__':
    main()
