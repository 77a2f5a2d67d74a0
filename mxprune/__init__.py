"""mxprune: pruning for Apache MXNet Gluon. The public surface only; `import mxprune` never imports GluonCV.

Names load on first use (PEP 562), so that `import mxprune` stays light and the `mxprune` command answers --help
without loading MXNet."""
import importlib

from .version import __version__

_FROM = {
    'Session': 'session', 'PruningModifier': 'modifiers', 'PruningConfig': 'modifiers', 'Regularizer': 'modifiers',
    'RegularizerConfig': 'modifiers', 'DependencyGraph': 'graph', 'Group': 'graph', 'Selection': 'graph',
    'Plan': 'shrink', 'apply_plan': 'shrink', 'save_pruned': 'shrink', 'load_pruned': 'shrink',
    'export_symbol': 'export', 'export_onnx': 'export', 'load_exported': 'export', 'verify_manifest': 'export',
    'MxPruneError': 'errors', 'RecipeError': 'errors', 'DataError': 'errors', 'ModelError': 'errors',
    'UnsupportedOpError': 'errors', 'OverPruneError': 'errors', 'NumericsError': 'errors',
}
_MODULES = {'allocation', 'criteria', 'export', 'flops', 'latency', 'masks', 'schedules'}

__all__ = ['__version__', *_FROM, *sorted(_MODULES)]


def __getattr__(name: str):
    if name in _FROM:
        value = getattr(importlib.import_module(f'.{_FROM[name]}', __name__), name)
    elif name in _MODULES:
        value = importlib.import_module(f'.{name}', __name__)
    else:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
