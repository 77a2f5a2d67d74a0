"""The accuracy-versus-MACs table on the full shared CIFAR-10: one dense checkpoint, every criterion from it.

    python bench/accuracy_table.py --data-dir ../shared/datasets/cifar10 [--out runs/table]

Protocol (recipes/table_r20.yaml): cifar_resnet20_v1 trained dense for 10 epochs; then, from that same checkpoint,
for each of l1, l2, taylor, fpgm, bn_gamma (network slimming: 1 epoch of L1-on-gamma sparsity training first) and
random, structured pruning of the coupled groups to <= 50 % of the dense MACs (global, round_to 16) and 3
fine-tuning epochs (lr 0.01 cosine); plus unstructured AGP to 90 % weight sparsity (global L1, 2 epochs of AGP, then
1 more epoch). Every row is one `tools/prune.py` command (printed, and written beside the table), so each can be
rerun alone. Rows already finished are kept; an interrupted row is resumed. Writes bench/results/accuracy_table.md
and .json. Takes about an hour on 2 CPU cores.
"""
import json
import os
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RECIPE = 'recipes/table_r20.yaml'

# the l2 criterion with per-stage widths read off the measured latency table (python bench/layer_widths.py, README):
# stage 1 at 8 channels in and out (the only narrower width oneDNN runs faster there), stage 2's block-internal
# channels halved, stage 3's cut by a quarter; the residual widths of stages 2 and 3 kept. 0.487x MACs.
LAYERWISE = ('pruning.0={criterion: l2, scope: local, target: {sparsity: 0.0}, round_to: 8, skip_first: false, '
             'ratios: {"features.2.*": 0.5, "features.3.*.body.0": 0.5, "features.4.*.body.0": 0.25}}')
ROWS = {
    'l1': ['pruning.0.criterion=l1'],
    'l2': ['pruning.0.criterion=l2'],
    'taylor': ['pruning.0.criterion=taylor', 'pruning.0.score_batches=64'],
    'fpgm': ['pruning.0.criterion=fpgm'],
    'bn_gamma': ['pruning.0.criterion=bn_gamma', 'pruning.0.normalizer=null',
                 'regularizers=[{kind: bn_l1, strength: 1e-4}]',
                 'sparsity={epochs: 1, optimizer: nag, lr: 0.01, wd: 5e-4, lr_schedule: constant}'],
    'random': ['pruning.0.criterion=random'],
    # two variants of the l2 row beyond the protocol: widths in steps of 8 (a more even cut, slower on oneDNN) and
    # knowledge distillation from the dense model during fine-tuning
    'l2_round_to_8': ['pruning.0.criterion=l2', 'pruning.0.round_to=8'],
    'l2_distill': ['pruning.0.criterion=l2', 'distill={alpha: 0.7, temperature: 4.0}'],
    'l2_layerwise': [LAYERWISE],
    'l2_layerwise_distill': [LAYERWISE, 'distill={alpha: 0.7, temperature: 4.0}'],
    'agp_unstructured_90': ['pruning.0={criterion: l1, granularity: weight, scope: global, target: {sparsity: 0.9}, '
                            'max_ratio: 0.98, schedule: {kind: agp, start_epoch: 0, end_epoch: 2, frequency: 100}}'],
}


def command(out: str, sets, data_dir: str) -> list:
    cmd = [sys.executable, 'tools/prune.py', '--recipe', RECIPE, '--data-dir', data_dir, '--out', out, '--quiet']
    for s in sets:
        cmd += ['--set', s]
    return cmd


def run(cmd: list, out: str, log) -> float:
    if os.path.exists(os.path.join(out, 'report.json')):
        return 0.0
    if os.path.exists(os.path.join(out, 'recipe.yaml')):
        cmd = cmd + ['--resume']
    printable = ' '.join(shlex.quote(c) for c in (['python'] + cmd[1:]))
    print(f'$ {printable}', flush=True)
    log.write(f'$ {printable}\n')
    log.flush()
    tic = time.time()
    res = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if res.returncode != 0:
        raise SystemExit(f'row failed (exit {res.returncode}); see the log')
    return time.time() - tic


def parse_args(p, rows: dict):
    """--data-dir, --out and --rows, with paths made relative to the checkout's root (the printed commands run from
    there, so they can be pasted anywhere); changes to the root. Returns (args, the bench/results folder)."""
    p.add_argument('--data-dir', default=os.path.join(ROOT, '..', 'shared', 'datasets', 'cifar10'))
    p.add_argument('--out', default=os.path.join(ROOT, 'runs', 'table'))
    p.add_argument('--rows', default=','.join(rows))
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    args.out = os.path.relpath(os.path.abspath(args.out), ROOT)
    args.data_dir = os.path.relpath(os.path.abspath(args.data_dir), ROOT)
    os.chdir(ROOT)
    results = os.path.join(HERE, 'results')
    os.makedirs(results, exist_ok=True)
    return args, results


def main() -> None:
    import argparse
    args, results = parse_args(argparse.ArgumentParser(), ROWS)
    with open(os.path.join(args.out, 'commands.log'), 'a', encoding='utf-8') as log:
        dense_dir = os.path.join(args.out, 'dense')
        run(command(dense_dir, ['pruning=[]'], args.data_dir), dense_dir, log)
        with open(os.path.join(dense_dir, 'report.json'), encoding='utf-8') as f:
            dense = json.load(f)
        # rows not rerun now keep their committed numbers (runs/ is not committed; a new machine reruns some rows)
        table = []
        committed = os.path.join(results, 'accuracy_table.json')
        if os.path.exists(committed):
            with open(committed, encoding='utf-8') as f:
                table = [t for t in json.load(f)['rows'] if t['row'] in ROWS]
        base = [f'model.pretrained={os.path.join(dense_dir, "dense.params")}', 'train.epochs=0']
        for name in args.rows.split(','):
            out = os.path.join(args.out, name)
            cmd = command(out, base + ROWS[name], args.data_dir)
            run(cmd, out, log)
            with open(os.path.join(out, 'report.json'), encoding='utf-8') as f:
                r = json.load(f)
            speed = r.get('speed', {}).get('batches', {})
            table = [t for t in table if t['row'] != name]
            table.append({'row': name, 'command': ' '.join(shlex.quote(c) for c in ['python'] + cmd[1:]),
                          'dense_top1': dense['test_top1'], 'pruned_top1_at_pruning': (r.get('at_pruning') or {}).get(
                              'top1'), 'at_pruning_epoch': (r.get('at_pruning') or {}).get('epoch'),
                          'pruned_top1': r['pruned']['top1'], 'macs_ratio': r['ratios']['macs'],
                          'params_ratio': r['ratios']['params'],
                          'effective_macs_ratio': r['ratios'].get('effective_macs'),
                          'weight_sparsity': r['pruned'].get('masked_weight_sparsity'),
                          'speedup_b64': speed.get('64', {}).get('speedup'),
                          'speedup_b128': speed.get('128', {}).get('speedup'),
                          'wall_time_s': round(sum(r.get('seconds', {}).values()), 1)})
            table.sort(key=lambda t: list(ROWS).index(t['row']))
            write(table, dense, results)
    print(open(os.path.join(results, 'accuracy_table.md'), encoding='utf-8').read())
    ok = next((t for t in table if t['row'] == 'l2'), None)
    if ok:
        print(f'l2: {100 * (ok["dense_top1"] - ok["pruned_top1"]):.2f} points below dense at {ok["macs_ratio"]:.3f}x '
              f'MACs, {ok["speedup_b64"]:.2f}x faster at batch 64')


def write(table, dense, results) -> None:
    sys.path.insert(0, ROOT)
    from mxprune import io
    io.write_json(os.path.join(results, 'accuracy_table.json'), {'dense': dense, 'rows': table})

    def pct(v):
        return '-' if v is None else f'{100 * v:.2f}'

    def x(v):
        return '-' if v is None else f'{v:.2f}x'
    lines = [f'cifar_resnet20_v1 on the shared CIFAR-10 (JPEG copy); dense {pct(dense["test_top1"])} % top-1 after '
             f'{dense["epochs"]} epochs ({dense["wall_time_s"]:.0f} s).', '',
             '| row | top-1 at pruning (%) | top-1 after fine-tuning (%) | drop (points) | MACs | params | speed-up '
             'b64 | speed-up b128 | wall time (s) |', '|---|---|---|---|---|---|---|---|---|']
    for t in table:
        at = pct(t['pruned_top1_at_pruning'])
        if t['at_pruning_epoch']:
            at += f' (epoch {t["at_pruning_epoch"]})'
        macs = f'{t["macs_ratio"]:.3f}' if t['weight_sparsity'] is None or t['macs_ratio'] < 0.999 else \
            f'1.000 ({t["effective_macs_ratio"]:.3f} nonzero)'
        lines.append(f'| {t["row"]} | {at} | {pct(t["pruned_top1"])} | {100 * (t["dense_top1"] - t["pruned_top1"]):.2f}'
                     f' | {macs} | {t["params_ratio"]:.3f} | {x(t["speedup_b64"])} | {x(t["speedup_b128"])} | '
                     f'{t["wall_time_s"]:.0f} |')
    lines += ['', 'Commands:', ''] + [f'- {t["row"]}: `{t["command"]}`' for t in table]
    from mxprune import io as _io
    _io.write_text(os.path.join(results, 'accuracy_table.md'), '\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
