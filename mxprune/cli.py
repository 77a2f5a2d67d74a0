"""What every tool shares: a user error is one line on stderr and exit code 2, never a traceback."""
import argparse
import sys
from typing import Callable, List, Optional

from .errors import MxPruneError


class ArgumentParser(argparse.ArgumentParser):
    """argparse with exit code 2 and a one-line message (argparse's own usage dump is noise in logs)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f'{self.prog}: error: {message}\n')
        raise SystemExit(2)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps a command's docstring as written (its example lines) and shows each option's default, unless it has
    none worth showing (None, False, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.default == []:
            return action.help or ''
        return super()._get_help_string(action)


def command_parser(name: str, doc: str, **kwargs) -> ArgumentParser:
    """The parser of `mxprune <name>`; its help is the command module's docstring, examples included."""
    return ArgumentParser(prog=f'mxprune {name}', description=doc, formatter_class=HelpFormatter, **kwargs)


def parse_command(name: str, doc: str, arguments: Callable[[argparse.ArgumentParser], None],
                  argv: Optional[List[str]], **kwargs) -> argparse.Namespace:
    """The arguments of `mxprune <name>`, parsed by `command_parser` with the options `arguments` adds."""
    p = command_parser(name, doc, **kwargs)
    arguments(p)
    return p.parse_args(argv)


def run(main: Callable[[Optional[List[str]]], int], argv: Optional[List[str]] = None) -> None:
    """Runs a tool's main; MxPruneError -> 'error: ...' and exit 2; Ctrl-C -> exit 130."""
    try:
        code = main(argv)
    except MxPruneError as e:
        sys.stderr.write(f'error: {e}\n')
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        sys.stderr.write('interrupted; resume with --resume\n')
        raise SystemExit(130) from None
    raise SystemExit(code or 0)
