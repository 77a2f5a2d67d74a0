"""mxprune: pruning for Apache MXNet Gluon. The public surface only; `import mxprune` never imports GluonCV."""
from . import allocation, criteria, export, flops, latency, masks, schedules
from .errors import (DataError, ModelError, MxPruneError, NumericsError, OverPruneError, RecipeError,
                     UnsupportedOpError)
from .export import export_onnx, export_symbol, load_exported, verify_manifest
from .graph import DependencyGraph, Group, Selection
from .modifiers import PruningConfig, PruningModifier, Regularizer, RegularizerConfig
from .session import Session
from .shrink import Plan, apply_plan, load_pruned, save_pruned
from .version import __version__

__all__ = ['__version__', 'Session', 'PruningModifier', 'PruningConfig', 'Regularizer', 'RegularizerConfig',
           'DependencyGraph', 'Group', 'Selection', 'Plan', 'apply_plan', 'save_pruned', 'load_pruned',
           'export_symbol', 'export_onnx', 'load_exported', 'verify_manifest', 'criteria', 'schedules', 'allocation',
           'latency', 'masks',
           'export', 'flops', 'MxPruneError', 'RecipeError', 'DataError', 'ModelError', 'UnsupportedOpError',
           'OverPruneError', 'NumericsError']
