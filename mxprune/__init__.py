"""mxprune: pruning for Apache MXNet Gluon. The public surface only; `import mxprune` never imports GluonCV."""
from .errors import (DataError, ModelError, MxPruneError, NumericsError, OverPruneError, RecipeError,
                     UnsupportedOpError)
from .version import __version__

__all__ = ['__version__', 'MxPruneError', 'RecipeError', 'DataError', 'ModelError', 'UnsupportedOpError',
           'OverPruneError', 'NumericsError']
