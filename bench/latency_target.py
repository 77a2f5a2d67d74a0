"""FLOPs target vs latency target on cifar_resnet56_v1: same speed-up, how many MACs kept, and which trains better.

    python bench/latency_target.py --data-dir ../shared/datasets/cifar10 [--out runs/latency]

1. a dense cifar_resnet56_v1 trained 2 epochs (the quickstart protocol);
2. from it, global L2 pruning to 50 % of the MACs and 2 fine-tuning epochs, twice: with any width (round_to 1, as a
   FLOPs-minded user would; on this oneDNN build that net runs slower than the dense one) and with widths in
   multiples of 16 (mxprune's advice); the latter's speed-up S at batch 64 is measured (dense and pruned interleaved);
3. from the same dense model and the same L2 scores, a speedup target of S (mxprune's measured latency table,
   NetAdapt-style greedy, widths in steps of 8; each chosen net is built and timed, and its measured/predicted ratio
   corrects the next pass until a measured net meets S) and the same 2 fine-tuning epochs.
Prints the three nets' MACs, measured speed-ups (each run's own benchmark, and all nets timed together in one set of
interleaved rounds) and predicted speed-up (the latency model's prediction for each).
Last line: ratio <MACs kept by the latency net / MACs kept by the widths-x16 FLOPs net>.
"""
import json
import os
import shlex
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, 'tools'))


def prune(out, sets, data_dir, log):
    cmd = [sys.executable, 'tools/prune.py', '--recipe', 'recipes/cifar_dense_r56.yaml', '--data-dir', data_dir,
           '--out', out, '--quiet'] + [a for s in sets for a in ('--set', s)]
    if os.path.exists(os.path.join(out, 'report.json')):
        return json.load(open(os.path.join(out, 'report.json'), encoding='utf-8'))
    if os.path.exists(os.path.join(out, 'recipe.yaml')):
        cmd.append('--resume')
    print('$ ' + ' '.join(shlex.quote(c) for c in ['python'] + cmd[1:]), flush=True)
    if subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
        raise SystemExit(f'{out} failed; see {log.name}')
    return json.load(open(os.path.join(out, 'report.json'), encoding='utf-8'))


def side_by_side(runs, batch: int = 64):
    """The latency model's prediction for each run's pruned net, and the nets measured together: one latency model on
    the dense net, every pruned net shrunk from it and timed with the dense net in the same interleaved rounds
    (medians), in the milliseconds of the model's dense measurement.

    Returns:
        ([(predicted ms, measured ms, measured speed-up) per run], dense measured ms)
    """
    import _bootstrap  # noqa: F401
    from mxprune import allocation, benchmark, pipeline
    from mxprune.graph import DependencyGraph
    from mxprune.shrink import Plan
    rec, dense, _, _ = pipeline.load_run(runs[0])
    shape = pipeline.input_shape_of(rec)
    graph = DependencyGraph.trace(dense, shape)
    model = allocation.LatencyModel(dense, graph, shape, batch, 8)
    keeps = [Plan.load(os.path.join(run, 'pruned.plan.json')).keep_masks(graph) for run in runs]
    nets = {i: allocation.shrunk_twin(dense, graph, k, shape, batch) for i, k in enumerate(keeps)}
    nets['dense'] = model.dense_net
    t = benchmark.compare(nets, (batch,) + tuple(shape[1:]), repeats=15)
    return [(model.predict(k), t[i]['ms'] * model.dense_ms / t['dense']['ms'], t['dense']['ms'] / t[i]['ms'])
            for i, k in enumerate(keeps)], model.dense_ms


def main() -> None:
    import argparse
    p = argparse.ArgumentParser()
    p.add_argument('--data-dir', default=os.path.join(ROOT, '..', 'shared', 'datasets', 'cifar10'))
    p.add_argument('--out', default=os.path.join(ROOT, 'runs', 'latency'))
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    common = ['finetune={epochs: 2, optimizer: nag, lr: 0.02, wd: 5e-4, lr_schedule: cosine}',
              'benchmark={enabled: true, batches: [64], repeats: 7}', 'export.enabled=false']
    with open(os.path.join(args.out, 'log.txt'), 'a', encoding='utf-8') as log:
        dense = prune(os.path.join(args.out, 'dense'), ['train.epochs=2', 'train.warmup_epochs=0.5'], args.data_dir,
                      log)
        pretrained = os.path.join(args.out, 'dense', 'dense.params')
        base = [f'model.pretrained={pretrained}', 'train.epochs=0'] + common
        # a FLOPs-minded user's cut (any width): on oneDNN odd widths can make the net slower than the dense one
        odd_run = os.path.join(args.out, 'flops50')
        odd = prune(odd_run, base + ['pruning=[{criterion: l2, scope: global, target: {macs: 0.5}, round_to: 1}]'],
                    args.data_dir, log)
        # mxprune's default cut for a FLOPs target: widths in multiples of 16 (oneDNN's block)
        flops_run = os.path.join(args.out, 'flops50_r16')
        f = prune(flops_run, base + ['pruning=[{criterion: l2, scope: global, target: {macs: 0.5}, round_to: 16}]'],
                  args.data_dir, log)
        s = f['speed']['batches']['64']['speedup']
        if s <= 1.0:
            raise SystemExit(f'the FLOPs-target net measured {s:.2f}x at batch 64: no speed-up to match')
        lat_run = os.path.join(args.out, 'latency')
        lat = prune(lat_run, base + [f'pruning=[{{criterion: l2, scope: global, target: {{speedup: {s:.3f}, '
                                      f'batch: 64}}, round_to: 8}}]'], args.data_dir, log)
    named = (('FLOPs 0.5, any width', odd_run, odd), ('FLOPs 0.5, widths x16', flops_run, f),
             (f'speedup target {s:.2f}', lat_run, lat))
    timed, dense_ms = side_by_side([run for _, run, _ in named])
    print(f'dense cifar_resnet56_v1: top-1 {dense["test_top1"]:.4f} after 2 epochs, {dense_ms:.2f} ms at batch 64')
    print('speed-ups at batch 64: "own run" = the benchmark of each run (dense and pruned interleaved); '
          '"together" = the three nets and the dense net timed in the same rounds, with the prediction for each')
    print(f'{"net":22s} {"MACs":>6} {"own run":>8} {"together":>9} {"predicted":>10} {"pred ms":>8} {"meas ms":>8} '
          f'{"err":>7} {"top-1":>7}')
    for (name, _, r), (pred_ms, meas_ms, together) in zip(named, timed):
        print(f'{name:22s} {r["ratios"]["macs"]:6.3f} {r["speed"]["batches"]["64"]["speedup"]:7.2f}x '
              f'{together:8.2f}x {dense_ms / pred_ms:9.2f}x {pred_ms:8.2f} {meas_ms:8.2f} '
              f'{100 * (pred_ms / meas_ms - 1):+6.1f}% {r["pruned"]["top1"]:7.4f}')
    for found in lat.get('latency_model') or []:
        print(f'speed-up target search: {found["target_ms"]:.2f} ms needed (dense {found["dense_ms"]:.2f} ms); '
              + '; '.join(f'pass {i + 1} aimed at {r["goal_ms"]:.2f} ms predicted, chose a net predicted '
                          f'{r["predicted_ms"]:.2f} ms, measured {r["measured_ms"]:.2f} ms'
                          for i, r in enumerate(found.get('rounds', []))))
    print(f'ratio {lat["ratios"]["macs"] / f["ratios"]["macs"]:.3f}')


if __name__ == '__main__':
    main()
