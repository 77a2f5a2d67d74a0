"""Typed errors. Tools turn any MxPruneError into one line on stderr and exit code 2."""


class MxPruneError(Exception):
    """Base class: a problem the user can fix (bad input, missing data, impossible request)."""


class RecipeError(MxPruneError):
    """A recipe or override names an unknown key or carries a value outside what is allowed."""


class DataError(MxPruneError):
    """Data is missing, malformed, or does not match what the recipe says."""


class ModelError(MxPruneError):
    """A model name, pretrained file or checkpoint does not match."""


class UnsupportedOpError(MxPruneError):
    """The dependency graph met an operator it has no channel rule for, where it had to cut through it."""


class OverPruneError(MxPruneError):
    """A request would empty a layer or a channel group, or cannot be met within the limits."""


class NumericsError(MxPruneError):
    """NaN or inf appeared in the loss or the weights."""


def reason(e: BaseException) -> str:
    """The informative line of an exception; MXNetError texts start with a C++ traceback header."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in reversed(lines):
        if not ln.startswith(('Traceback', 'File ', '[bt]', 'Stack trace')):
            return ln.replace('MXNetError: ', '')[:240]
    return type(e).__name__
