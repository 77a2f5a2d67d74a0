"""Export a pruned model for deployment: -symbol.json + .params (+ ONNX), re-imported and compared first.

    mxprune export --run runs/quickstart
    mxprune export --run runs/quickstart --onnx --out out/quickstart
    mxprune export --model cifar_resnet56_v1 --classes 10 --params r56.params --plan r56.plan.json \\
        --input-size 32 --out out/r56

The files load with mx.gluon.SymbolBlock.imports(prefix + '-symbol.json', ['data'], prefix + '-0000.params') or
mx.mod.Module in a process that never imports mxprune; <prefix>.sha256.json lists their SHA-256.
"""
import argparse
import os
from typing import List, Optional

from mxprune import cli
from mxprune.commands import bootstrap
from mxprune.errors import RecipeError


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--run', help='a run folder of mxprune prune (exports its pruned model, else its dense one)')
    p.add_argument('--model', help='a GluonCV model name (with --params)')
    p.add_argument('--params', help='weights of --model (a pruned model needs its plan: --plan or <params>.plan.json)')
    p.add_argument('--plan', help='the pruning plan (default: beside --params)')
    p.add_argument('--classes', type=int, help='classes of --model')
    p.add_argument('--input-size', type=int, default=32, help='square input side of --model')
    p.add_argument('--batch', type=int, default=1, help='batch size baked into the export check')
    p.add_argument('--out', help='output prefix (default <run>/export/model, or <params without .params>-export)')
    p.add_argument('--onnx', action='store_true', help='also write <prefix>.onnx (needs the onnx extra)')


def main(argv: Optional[List[str]] = None) -> int:
    args = cli.parse_command('export', __doc__, arguments, argv)
    bootstrap.start()
    from mxprune import export, pipeline, shrink, zoo

    if bool(args.run) == bool(args.model):
        raise RecipeError('give either --run DIR or --model NAME --params FILE')
    if args.run:
        rec, dense, pruned, _ = pipeline.load_run(args.run)
        net = pruned if pruned is not None else dense
        shape = pipeline.input_shape_of(rec, args.batch)
        out = args.out or os.path.join(args.run, 'export', 'model')
    else:
        if not args.params:
            raise RecipeError('--model needs --params')
        net = zoo.get_model(args.model, classes=args.classes)
        shape = (args.batch, 3, args.input_size, args.input_size)
        import mxnet as mx
        net(mx.nd.zeros(shape))
        plan = args.plan or (args.params[:-len('.params')] + '.plan.json' if args.params.endswith('.params') else '')
        if plan and os.path.isfile(plan):
            shrink.load_pruned(net, args.params, plan_path=plan)
        else:
            zoo.load_params(net, args.params, [mx.cpu()])
        out = args.out or os.path.splitext(args.params)[0] + '-export'
    files = export.export_symbol(net, out, shape)
    print(f'{files["symbol"]}\n{files["params"]}\n{files["manifest"]}\nreloaded with SymbolBlock.imports and '
          f'mx.mod.Module: max abs diff {float(files["max_abs_diff"]):.2e}')
    if args.onnx:
        path, diff = export.export_onnx(out, shape)
        print(f'{path}: onnx.checker passed; ' + (f'onnxruntime max abs diff {diff:.2e}' if diff is not None else
                                                  'onnxruntime not installed (see README), runtime check skipped'))
    return 0
