"""The augmentation study: how the fine-tuning data (augmentation, distillation, length) changes what one pruned net
recovers, and (on Imagenette) which criterion's pruned net recovers best.

    python bench/augmentation_study.py --dataset cifar10 [--data-dir ../shared/datasets/cifar10] [--rows a,b]
    python bench/augmentation_study.py --dataset imagenette [--data-dir ../shared/datasets/imagenette]

The pruned net: the dataset's recipe (recipes/cifar_l2.yaml, recipes/imagenette_resnet18.yaml) from its dense
checkpoint (CIFAR-10: the accuracy table's runs/table/dense, 10 epochs; Imagenette: the recipe's own run) with the
recipe's modifier (L2 scores, the knapsack allocator, a measured speed-up target at batch 64: 1.6x and 1.5x), made
one-shot at epoch 0 without fine-tuning: one `tools/prune.py` command per criterion, printed and kept in
commands.log. Every row then loads that pruned net (plan + weights), and fine-tunes it with the recipe's `finetune`
section (CIFAR-10: 3 epochs, lr 0.01 cosine; Imagenette: 4 epochs) under the row's `--set` overrides:

    baseline        the recipe's augmentation (CIFAR-10: pad-4 crop + flip; Imagenette: GluonCV's random-resized
                    crop, flip, colour jitter, lighting)
    cutout          + a 16-pixel cutout square (DeVries & Taylor's CIFAR-10 size)
    random_erasing  + GluonCV's RandomErasing with probability 0.5
    mixup           + mixup, Beta(0.2, 0.2) (GluonCV's ImageNet setting), off in the last epoch as GluonCV does
    distill         + distillation from the dense net (alpha 0.7, temperature 4: the accuracy table's setting)
    distill_best    distillation + whichever of cutout / random erasing / mixup ended highest (chosen when the row
                    starts, from the rows already finished)
    baseline_2x     the baseline with twice the fine-tuning epochs
    taylor, grad    (Imagenette) the baseline fine-tuning of the net pruned with the Taylor or gradient criterion
                    at the same target, scores gathered on 32 training batches of the dense net

Reported per row: top-1 after fine-tuning, the drop from the dense net, the fine-tuning minutes (training only,
summed over epochs; the wall time with evaluation beside it) and the points recovered per fine-tuning minute (top-1
after minus top-1 of the pruned net before fine-tuning). Rows already finished are kept, an interrupted row resumes
from its last epoch. Writes bench/results/augmentation_study_<dataset>.{json,md,png}.
Last line: ratio <top-1 of the best row / top-1 of the baseline row>.
"""
import json
import os
import shlex
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, 'tools'))
import accuracy_speed  # noqa: E402
import accuracy_table as table  # noqa: E402

DISTILL = 'distill={alpha: 0.7, temperature: 4.0}'
AUGMENTS = {'cutout': ['data.augment.cutout=16'], 'random_erasing': ['data.augment.random_erasing=0.5'],
            'mixup': ['data.augment.mixup=0.2', 'data.augment.mixup_off_epochs=1']}
DATASETS = {
    'cifar10': {'recipe': 'recipes/cifar_l2.yaml', 'dense': 'runs/table/dense/dense.params',
                'dense_command': 'python bench/accuracy_table.py --rows l2',
                'rows': ['baseline', 'cutout', 'random_erasing', 'mixup', 'distill', 'distill_best', 'baseline_2x']},
    'imagenette': {'recipe': 'recipes/imagenette_resnet18.yaml', 'dense': 'runs/imagenette_resnet18/dense.params',
                   'dense_command': 'python tools/prune.py --recipe recipes/imagenette_resnet18.yaml',
                   'rows': ['baseline', 'mixup', 'distill', 'taylor', 'grad']},
}


def row_sets(name: str, rec, finished: dict) -> tuple:
    """(criterion of the pruned net, the row's --set overrides of the recipe)."""
    if name in ('taylor', 'grad'):
        return name, []
    if name == 'baseline':
        return 'l2', []
    if name == 'baseline_2x':
        return 'l2', [f'finetune.epochs={2 * rec.finetune.epochs}']
    if name == 'distill':
        return 'l2', [DISTILL]
    if name == 'distill_best':
        done = {k: finished[k]['top1'] for k in AUGMENTS if k in finished}
        if not done:
            raise SystemExit('distill_best: no augmentation row has finished yet; run cutout, random_erasing or mixup '
                             'first')
        return 'l2', [DISTILL] + AUGMENTS[max(done, key=done.get)]
    return 'l2', AUGMENTS[name]


def prune_base(ds: dict, criterion: str, data_dir: str, out: str, log, limits: list) -> dict:
    """The one-shot pruned net of the recipe's modifier with `criterion` (no fine-tuning); returns its report."""
    cmd = [sys.executable, 'tools/prune.py', '--recipe', ds['recipe'], '--data-dir', data_dir, '--out', out,
           '--quiet']
    for s in limits + [f'model.pretrained={ds["dense"]}', 'train.epochs=0', f'pruning.0.criterion={criterion}',
              'pruning.0.schedule={kind: oneshot, epoch: 0}', 'finetune.epochs=0', 'export.enabled=false']:
        cmd += ['--set', s]
    table.run(cmd, out, log)
    with open(os.path.join(out, 'report.json'), encoding='utf-8') as f:
        report = json.load(f)
    report['command'] = ' '.join(shlex.quote(c) for c in ['python'] + cmd[1:])
    return report


def finetune(base_dir: str, recipe_path: str, sets: list, data_dir: str, out: str) -> dict:
    """Fine-tunes the pruned net of `base_dir` under the recipe with `sets`; resumes from out/ckpt."""
    import mxnet as mx
    from mxprune import data as data_mod, pipeline, recipe as recipe_mod, train as train_mod
    rec = recipe_mod.load(recipe_path, sets)
    ctx = train_mod.parse_ctx(rec.train.ctx)
    _, dense, net, _ = pipeline.load_run(base_dir, ctx)
    root, source = data_mod.root_source(rec.data.dataset, rec.data.root, data_dir)
    train_loader, test_loader, classes = data_mod.build_loaders(
        rec.data, root, seed=rec.train.seed, input_size=rec.model.input_size, classes=rec.model.classes,
        source=source)
    extra_loss, ce_weight = (pipeline.distiller(dense, rec.distill.alpha, rec.distill.temperature)
                             if rec.distill.alpha > 0 else (None, 1.0))
    net.hybridize(static_alloc=True, static_shape=True)
    cfg = train_mod.FitConfig(rec.finetune, ctx, classes, phase='finetune', progress=False,
                              mixup_off_epochs=rec.data.augment.mixup_off_epochs, extra_loss=extra_loss,
                              ce_weight=ce_weight)
    tic = time.time()
    history = train_mod.fit(net, lambda: train_mod.make_trainer(net, rec.finetune, ctx), (train_loader, test_loader),
                            cfg, [train_mod.Checkpoints(out, 'finetune')])
    mx.nd.waitall()
    return {'top1': history[-1]['test_top1'], 'top5': history[-1]['test_top5'], 'epochs': len(history),
            'top1_per_epoch': [h['test_top1'] for h in history],
            'train_minutes': sum(h['epoch_time_s'] for h in history) / 60, 'wall_minutes': (time.time() - tic) / 60}


def plot(result: dict, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    dense = 100 * result['dense_top1']
    ax.axhline(dense, color='black', lw=1, ls='--', label=f'dense {dense:.2f} %')
    for r in result['rows']:
        kind = 'criterion' if r['name'] in ('taylor', 'grad') else 'distill' if 'distill' in r['name'] else 'aug'
        ax.scatter([r['train_minutes']], [100 * r['top1']], s=50,
                   color={'aug': 'tab:blue', 'distill': 'tab:orange', 'criterion': 'tab:green'}[kind])
        ax.annotate(r['name'], (r['train_minutes'], 100 * r['top1']), textcoords='offset points', xytext=(5, 4),
                    fontsize=8)
    ax.set_xlabel('fine-tuning minutes (training only, 2 CPU cores)')
    ax.set_ylabel(f'{result["dataset"]} top-1 after fine-tuning (%)')
    ax.set_title(f'{result["model"]}: one pruned net ({result["speedup_b64"]:.2f}x at batch 64), '
                 f'fine-tuned under each row', fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc='lower right')
    fig.tight_layout()
    tmp = path + '.tmp.png'
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)


def write_markdown(result: dict, path: str) -> None:
    from mxprune import io
    cpu = result['cpu']
    lines = [f'{result["model"]} on {result["dataset"]}, {result["date"]}, CPU {cpu["model"]} ({cpu["isa"]}, '
             f'{cpu["cores"]} cores). Dense {100 * result["dense_top1"]:.2f} % top-1; the l2 pruned net: '
             f'{result["macs_ratio"]:.3f}x MACs, {result["speedup_b64"]:.2f}x faster at batch 64 (timed beside the '
             f'dense net when it was pruned), {100 * result["pruned_top1"]:.2f} % before fine-tuning.', '',
             '| row | fine-tuning | top-1 (%) | drop (points) | fine-tuning min (wall) | recovered points per min |',
             '|---|---|---|---|---|---|']
    for r in result['rows']:
        lines.append(f'| {r["name"]} | {r["what"]} | {100 * r["top1"]:.2f} | {r["drop"]:.2f} | '
                     f'{r["train_minutes"]:.1f} ({r["wall_minutes"]:.1f}) | {r["recovered_per_min"]:.2f} |')
    lines += ['', 'Pruned nets (one-shot, no fine-tuning):', '']
    for c, b in result['bases'].items():
        lines.append(f'- {c}: {100 * b["top1"]:.2f} % top-1, {b["macs_ratio"]:.3f}x MACs, {b["speedup_b64"]:.2f}x '
                     f'at batch 64: `{b["command"]}`')
    lines += ['', 'Rows (each loads its pruned net and fine-tunes it with the recipe plus these settings):', '']
    lines += [f'- {r["name"]}: `{r["command"]}` (settings: {", ".join(r["sets"]) or "the recipe as is"})'
              for r in result['rows']]
    io.write_text(path, '\n'.join(lines) + '\n')


def describe(sets: list, rec) -> str:
    if not sets:
        return f'recipe ({rec.finetune.epochs} epochs)'
    return ' + '.join(s.replace('data.augment.', '').replace('finetune.', '') for s in sets)


def main() -> None:
    import argparse
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--dataset', choices=list(DATASETS), default='cifar10')
    p.add_argument('--data-dir', default=None, help='default: ../shared/datasets/<dataset> beside the checkout')
    default_out = os.path.join(ROOT, 'runs', 'augstudy')
    p.add_argument('--out', default=default_out)
    p.add_argument('--rows', default=None, help='comma-separated; default: all of the dataset')
    p.add_argument('--limit', type=int, default=None,
                   help='a quick check: the first N training and test images, 1 fine-tuning epoch (2 for '
                        'baseline_2x); results go to the --out folder, not bench/results')
    args = p.parse_args()
    ds = DATASETS[args.dataset]
    names = args.rows.split(',') if args.rows else ds['rows']
    unknown = [n for n in names if n not in ds['rows']]
    if unknown:
        raise SystemExit(f'--rows: unknown {", ".join(unknown)} for {args.dataset}; choose from '
                         f'{", ".join(ds["rows"])}')
    data_dir = os.path.relpath(os.path.abspath(args.data_dir or os.path.join(ROOT, '..', 'shared', 'datasets',
                                                                              args.dataset)), ROOT)
    out = os.path.relpath(os.path.abspath(os.path.join(args.out, args.dataset)), ROOT)
    os.chdir(ROOT)
    if not os.path.isfile(ds['dense']):
        raise SystemExit(f'{ds["dense"]}: the dense checkpoint is missing; it is written by {ds["dense_command"]}')
    os.makedirs(out, exist_ok=True)
    import _bootstrap  # noqa: F401  (threads and engine, before MXNet)
    from mxprune import io, recipe as recipe_mod
    limits = ([f'data.train_limit={args.limit}', f'data.test_limit={args.limit}', 'finetune.epochs=1']
              if args.limit else [])
    rec = recipe_mod.load(ds['recipe'], limits)
    results = out if args.limit else os.path.join(HERE, 'results')
    json_path = os.path.join(results, f'augmentation_study_{args.dataset}.json')
    finished = {}
    if os.path.exists(json_path):
        with open(json_path, encoding='utf-8') as f:
            finished = {r['name']: r for r in json.load(f)['rows']}
    bases = {}
    with open(os.path.join(out, 'commands.log'), 'a', encoding='utf-8') as log:
        for name in names:
            criterion, sets = row_sets(name, rec, finished)
            if criterion not in bases:
                bases[criterion] = prune_base(ds, criterion, data_dir, os.path.join(out, f'pruned_{criterion}'), log,
                                              limits)
            row_dir = os.path.join(out, name)
            done = os.path.join(row_dir, 'row.json')
            if os.path.exists(done):
                with open(done, encoding='utf-8') as f:
                    finished[name] = json.load(f)
                continue
            command = (f'python bench/augmentation_study.py --dataset {args.dataset} --data-dir {data_dir} '
                       f'--rows {name}' + (f' --limit {args.limit}' if args.limit else '')
                       + ('' if os.path.abspath(args.out) == default_out else f' --out {args.out}'))
            print(f'$ {command}  # {", ".join(sets) or "the recipe as is"}', flush=True)
            log.write(f'$ {command}  # {sets}\n')
            log.flush()
            r = finetune(os.path.join(out, f'pruned_{criterion}'), ds['recipe'], limits + sets, data_dir, row_dir)
            r.update(name=name, criterion=criterion, sets=sets, what=describe(sets, rec), command=command)
            io.write_json(done, r)
            finished[name] = r
            print(f'{name}: top-1 {100 * r["top1"]:.2f} % after {r["epochs"]} epochs, {r["train_minutes"]:.1f} min '
                  f'training', flush=True)
        for r in [{'criterion': 'l2'}, *finished.values()]:  # the reference net, and those of earlier rows
            if r['criterion'] not in bases:
                bases[r['criterion']] = prune_base(ds, r['criterion'], data_dir,
                                                   os.path.join(out, f'pruned_{r["criterion"]}'), log, limits)
    base = bases['l2']
    dense_top1 = base['dense']['top1']
    rows = []
    for name in ds['rows']:
        if name not in finished:
            continue
        r = dict(finished[name])
        before = bases[r['criterion']]['pruned']['top1']
        r['drop'] = 100 * (dense_top1 - r['top1'])
        r['recovered_per_min'] = 100 * (r['top1'] - before) / r['train_minutes']
        rows.append(r)
    speed = {c: b.get('speed', {}).get('batches', {}).get('64', {}).get('speedup') for c, b in bases.items()}
    result = {'dataset': args.dataset, 'model': rec.model.name, 'recipe': ds['recipe'],
              'date': time.strftime('%Y-%m-%d'),
              'cpu': accuracy_speed.cpu_line(), 'dense_top1': dense_top1, 'pruned_top1': base['pruned']['top1'],
              'macs_ratio': base['ratios']['macs'], 'speedup_b64': speed['l2'],
              'bases': {c: {'top1': b['pruned']['top1'], 'macs_ratio': b['ratios']['macs'], 'speedup_b64': speed[c],
                            'command': b['command']} for c, b in bases.items()},
              'rows': rows}
    io.write_json(json_path, result)
    write_markdown(result, json_path[:-5] + '.md')
    plot(result, json_path[:-5] + '.png')
    print(open(json_path[:-5] + '.md', encoding='utf-8').read())
    best = max(rows, key=lambda r: r['top1'])
    fastest = max(rows, key=lambda r: r['recovered_per_min'])
    print(f'best top-1: {best["name"]}; most points recovered per fine-tuning minute: {fastest["name"]}')
    baseline = next((r for r in rows if r['name'] == 'baseline'), None)
    print(f'ratio {best["top1"] / baseline["top1"]:.4f}' if baseline else 'ratio nan (the baseline row has not run)')


if __name__ == '__main__':
    main()
