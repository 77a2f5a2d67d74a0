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
