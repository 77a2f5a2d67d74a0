"""Sensitivity analysis of a trained model: prune each coupled group alone at several ratios; CSV + PNG, and
optionally per-group ratios that meet a MACs target with the least predicted loss, written as a recipe.

    mxprune sensitivity --run runs/quickstart --data-dir ../shared/datasets/cifar10
    mxprune sensitivity --run runs/quickstart --ratios 0.25,0.5,0.75 --criterion l1 --test-limit 500
    mxprune sensitivity --run runs/quickstart --target-macs 0.5 --write-recipe recipes/derived.yaml
"""
import argparse
import os
from typing import List, Optional

from mxprune import cli
from mxprune.commands import bootstrap
from mxprune.errors import RecipeError


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--run', required=True, help='a run folder (its dense.params and recipe are used)')
    p.add_argument('--data-dir', help='data folder (default: as the run found it)')
    p.add_argument('--ratios', default='0.1,0.3,0.5,0.7,0.9', help='comma-separated fractions of a group pruned')
    p.add_argument('--criterion', default='l2', help='channel score: a mxprune.criteria name')
    p.add_argument('--test-limit', type=int, default=2000, help='test images per evaluation')
    p.add_argument('--out', help='output folder (default <run>/sensitivity)')
    p.add_argument('--target-macs', type=float, help='derive per-group ratios keeping this fraction of the MACs')
    p.add_argument('--write-recipe', help='write the derived ratios as a recipe (needs --target-macs)')
    p.add_argument('--quiet', action='store_true', help='no progress bars')


def main(argv: Optional[List[str]] = None) -> int:
    args = cli.parse_command('sensitivity', __doc__, arguments, argv)
    bootstrap.start()
    import numpy as np

    from mxprune import config, data as data_mod, flops, pipeline, sensitivity, train, zoo
    from mxprune.graph import DependencyGraph, Selection

    try:
        ratios = [float(r) for r in args.ratios.split(',')]
    except ValueError:
        raise RecipeError(f'--ratios {args.ratios!r}: expected comma-separated numbers, e.g. 0.1,0.5,0.9') from None
    if any(not 0 < r < 1 for r in ratios):
        raise RecipeError(f'--ratios {args.ratios!r}: each ratio must be in (0, 1)')
    if args.write_recipe and args.target_macs is None:
        raise RecipeError('--write-recipe needs --target-macs')
    if args.target_macs is not None and not 0 < args.target_macs < 1:
        raise RecipeError(f'--target-macs {args.target_macs}: expected a fraction in (0, 1)')
    rec, dense, _, _ = pipeline.load_run(args.run)
    rec.data.test_limit = args.test_limit
    root, source = data_mod.root_source(rec.data.dataset, rec.data.root, args.data_dir)
    _, test_loader, _ = data_mod.build_loaders(rec.data, root, source=source, input_size=rec.model.input_size,
                                               classes=rec.model.classes)
    out = args.out or os.path.join(args.run, 'sensitivity')
    ctx = train.parse_ctx(rec.train.ctx)
    dense.hybridize(static_alloc=True, static_shape=True)
    shape = pipeline.input_shape_of(rec)
    selection = Selection(*(rec.pruning[0].include, rec.pruning[0].exclude, rec.pruning[0].skip_first,
                            rec.pruning[0].skip_last)) if rec.pruning else Selection()
    result = sensitivity.analyze(dense, shape, test_loader, ctx, ratios, args.criterion, selection,
                                 progress=not args.quiet)
    csv_path = sensitivity.write_csv(result, os.path.join(out, 'sensitivity.csv'))
    png_path = sensitivity.plot(result, os.path.join(out, 'sensitivity.png'),
                                f'{rec.model.name}: each group pruned alone ({args.criterion}, '
                                f'{test_loader.num_samples} test images)')
    print(f'dense top-1 {result.base_top1:.4f} on {test_loader.num_samples} test images; {len(result.rows)} '
          f'measurements\n{csv_path}\n{png_path}')
    worst = sorted({r['group']: r for r in result.rows if r['ratio'] == max(ratios)}.values(),
                   key=lambda r: -r['top1_drop'])
    for r in worst[:5]:
        print(f'  most sensitive at {r["ratio"]:.0%}: {r["group"]} ({r["size"]} ch) top-1 drop {r["top1_drop"]:+.4f}')
    if args.target_macs is not None:
        graph = DependencyGraph.trace(zoo.get_model(rec.model.name, classes=pipeline.classes_of(rec)), shape)
        by_name = {g.name: g for g in graph.groups}
        dense_macs = flops.dense(graph).macs

        def macs_of(chosen):
            keep = {}
            for name, r in chosen.items():
                g = by_name[name]
                n = max(1, g.size - int(np.floor(r * g.size + 1e-9)))
                keep[g.index] = flops.group_keep_from_counts(g, -(-n // g.blocks) * g.blocks)  # whole blocks
            return flops.structured(graph, keep).macs / dense_macs
        chosen = sensitivity.derive_ratios(result, macs_of, args.target_macs)
        got = macs_of(chosen)
        print(f'derived ratios for MACs <= {args.target_macs}: {got:.3f} of dense, predicted top-1 drop '
              f'{sum(max(r["top1_drop"], 0) for r in result.rows if chosen.get(r["group"]) == r["ratio"]):.4f} '
              f'(summed per group)')
        for name, r in sorted(chosen.items()):
            print(f'  {name}: {r:.2f}')
        if args.write_recipe:
            header = (f'# Purpose: layer-wise ratios derived by tools/sensitivity.py from {args.run} to keep '
                      f'{args.target_macs} of the MACs\n#          with the least predicted top-1 loss.\n'
                      f'# Command: python tools/prune.py --recipe {args.write_recipe}\n'
                      f'# Result:  predicted MACs {got:.3f} of dense; not yet measured here.\n')
            raw = config.to_dict(rec)
            raw['data']['test_limit'] = None
            from mxprune import io
            io.write_text(args.write_recipe, sensitivity.ratios_recipe(raw, chosen, args.criterion, header))
            print(f'recipe {args.write_recipe}')
    return 0
