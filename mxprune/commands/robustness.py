"""FGSM and PGD (L-infinity) top-1 of two saved models on a CIFAR test slice: how pruning changed robustness.

    mxprune robustness --run runs/quickstart --data-dir ../shared/datasets/cifar10
    mxprune robustness --model cifar_resnet20_v1 --a dense.params --b pruned.params --data-dir D
    mxprune robustness --a runs/r1/export/model --b runs/r2/export/model --data-dir D   # exported files

A model is a run folder (its pruned model; RUN:dense for its dense one), an export prefix (<prefix>-symbol.json,
checked against its SHA-256 manifest), or a .params file of --model (cut to the plan beside it if there is one).
"""
import argparse
import os
from typing import List, Optional

from mxprune import cli
from mxprune.commands import bootstrap
from mxprune.errors import ModelError, RecipeError


def load_model(spec: str, model: str, classes: int, size: int):
    """A model spec (see above) -> (net, the dataset its run names, or None)."""
    import mxnet as mx

    from mxprune import export, pipeline, shrink, zoo

    run, _, which = spec.partition(':')
    if os.path.isfile(os.path.join(run, 'recipe.yaml')):
        rec, dense, pruned, _ = pipeline.load_run(run)
        if which not in ('', 'dense', 'pruned'):
            raise RecipeError(f'{spec}: expected RUN, RUN:dense or RUN:pruned')
        net = dense if which == 'dense' or pruned is None else pruned
        return net, rec.data.dataset
    if os.path.isfile(spec + '-symbol.json'):
        return export.load_exported(spec), None
    if spec.endswith('.params'):
        if not model:
            raise RecipeError(f'{spec}: a .params file needs --model NAME')
        net = zoo.get_model(model, classes=classes)
        net(mx.nd.zeros((1, 3, size, size)))
        plan = spec[:-len('.params')] + '.plan.json'
        if os.path.isfile(plan):
            shrink.load_pruned(net, spec)
        else:
            zoo.load_params(net, spec, [mx.cpu()])
        return net, None
    raise ModelError(f'{spec}: not a run folder, an export prefix (<prefix>-symbol.json) or a .params file')


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--run', help='compare a run folder\'s dense and pruned models')
    p.add_argument('--a', help='first model (see above)')
    p.add_argument('--b', help='second model')
    p.add_argument('--model', help='GluonCV model name for .params files')
    p.add_argument('--classes', type=int, default=10, help='classes of --model')
    p.add_argument('--input-size', type=int, default=32, help='square input side of --model')
    p.add_argument('--dataset', default=None, choices=('cifar10', 'cifar100'),
                   help='test set (default: the run\'s, else cifar10)')
    p.add_argument('--data-dir', help='data folder (default as the recipe/environment says)')
    p.add_argument('--images', type=int, default=500, help='test images attacked')
    p.add_argument('--eps', default='2,8', help='epsilons in 1/255 units, comma-separated')
    p.add_argument('--pgd-steps', type=int, default=7, help='PGD iterations')
    p.add_argument('--json', help='also write the result to this JSON file')
    p.add_argument('--quiet', action='store_true', help='no progress bar')


def main(argv: Optional[List[str]] = None) -> int:
    args = cli.parse_command('robustness', __doc__, arguments, argv)
    bootstrap.start()
    from mxprune import data as data_mod, robustness

    if args.run:
        if args.a or args.b:
            raise RecipeError('give --run, or --a and --b, not both')
        args.a, args.b = f'{args.run}:dense', f'{args.run}:pruned'
    if not (args.a and args.b):
        raise RecipeError('give --run DIR, or --a MODEL --b MODEL')
    try:
        eps = [float(e) / 255 for e in args.eps.split(',')]
    except ValueError:
        raise RecipeError(f'--eps {args.eps!r}: expected numbers in 1/255 units, e.g. 2,8') from None
    if any(not 0 < e <= 1 for e in eps) or args.images < 1 or args.pgd_steps < 1:
        raise RecipeError('--eps must be in (0, 255], --images and --pgd-steps >= 1')
    net_a, ds_a = load_model(args.a, args.model, args.classes, args.input_size)
    net_b, ds_b = load_model(args.b, args.model, args.classes, args.input_size)
    dataset = args.dataset or ds_a or ds_b or 'cifar10'
    info = data_mod.dataset_info(dataset)
    root, source = data_mod.root_source(dataset, None, args.data_dir)
    test = data_mod.load_cifar(dataset, root, False, limit=args.images, source=source)
    names = {'a': args.a, 'b': args.b}
    result = robustness.evaluate({'a': net_a, 'b': net_b}, test.images, test.labels, info.mean, info.std, eps,
                                 args.pgd_steps, progress=not args.quiet)
    print(f'a = {names["a"]}\nb = {names["b"]}\n{len(test)} test images of {dataset}; PGD {args.pgd_steps} steps')
    print(robustness.table(result))
    if args.json:
        from mxprune import io
        io.write_json(args.json, {'models': names, 'images': len(test), 'result': result})
    return 0
