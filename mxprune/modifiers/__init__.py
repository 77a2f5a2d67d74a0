"""Modifiers: pruning (`pruning.py`), sparsity regularisers (`regularizers.py`) and their recipe items with the
rules they obey (`configs.py`)."""
from .configs import (TARGET_KINDS, LatencySpec, PruningConfig, RegularizerConfig, ScheduleConfig, TargetConfig,
                      as_target, check_pruning, resolve_allocator)
from .pruning import PruningModifier
from .regularizers import REGULARIZERS, Regularizer

__all__ = ['TARGET_KINDS', 'LatencySpec', 'PruningConfig', 'RegularizerConfig', 'ScheduleConfig', 'TargetConfig',
           'as_target', 'check_pruning', 'resolve_allocator', 'PruningModifier', 'REGULARIZERS', 'Regularizer']
