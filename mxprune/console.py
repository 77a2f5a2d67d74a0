"""The `mxprune` command: `mxprune <command> [options]` runs mxprune.commands.<command>.

The command list below is a static table, so that `mxprune --help` imports no command module, and a command's
--help is answered before it imports MXNet."""
import importlib
import sys
from typing import List, Optional

from . import cli
from .version import __version__

COMMANDS = {
    'prune': 'train (or load) a recipe\'s dense model, prune it with fine-tuning, shrink, measure and export it',
    'train': 'train a dense classifier from a recipe',
    'detect': 'the prune job for SSD / YOLOv3 detectors on a Pascal VOC layout folder',
    'export': 'export a (pruned) model as -symbol.json + .params (+ ONNX), re-imported and compared',
    'benchmark': 'dense vs pruned inference speed of a run, beside its MACs ratio',
    'sensitivity': 'prune each channel group alone at several ratios; derive per-group ratios for a MACs target',
    'compare': 'a table and a top-1 vs MACs plot of finished runs',
    'recipe': 'every recipe key (--schema); validate (--check) or resolve (--resolve) a recipe file',
    'robustness': 'FGSM and PGD top-1 of two models: how pruning changed robustness',
    'launch': 'run a command as a data-parallel job on MXNet\'s parameter-server KVStore',
}

HELP = '\n'.join([
    'usage: mxprune <command> [options]',
    '',
    'Structured and unstructured pruning for Apache MXNet Gluon / GluonCV models, driven by YAML recipes.',
    '',
    'commands:',
    *(f'  {name:<12} {what}' for name, what in COMMANDS.items()),
    '',
    'options:',
    '  -h, --help   show this help and exit',
    '  --version    show the version and exit',
    '',
    'Run `mxprune <command> --help` for a command\'s options and examples, e.g. mxprune prune --help.',
])


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ('-h', '--help'):
        print(HELP)
        return 0
    if argv[0] == '--version':
        print(f'mxprune {__version__}')
        return 0
    name = argv[0]
    if name not in COMMANDS:
        what = 'option' if name.startswith('-') else 'command'
        sys.stderr.write(f'mxprune: error: unknown {what} {name!r}; expected one of {", ".join(COMMANDS)} '
                         f'(or --help, --version)\n')
        return 2
    command = importlib.import_module(f'{__package__}.commands.{name}')
    cli.run(command.main, argv[1:])
    return 0  # not reached: cli.run exits with the command's code


if __name__ == '__main__':
    sys.exit(main())
