"""The run folder and the phases the tools chain: dense training, then pruning with fine-tuning, measuring, export.

    folder.py   RunFolder (recipe.yaml, log.jsonl, weights, report.json) and State (state.json; phase times)
    context.py  Setup: what every phase needs, checked before the run folder is created; the recipe's model
    phases.py   dense, sparsity, prune + fine-tune (shrunk after the last structured update), measure
    report.py   the classification run end to end, its report.json and summary table

A detection run (mxprune.detection.task) goes through the same run folder, state and shrink epoch, with its own
loss, loop and metric (mAP).
"""
from .context import (Setup, build_net, classes_of, fresh_model, input_shape_of, load_run, reducer, setup,
                      worker_data, worker_hooks, writer)
from .folder import RunFolder, State
from .phases import distiller, measure, prune_phase, shrink_epoch, sparsity_phase, train_dense
from .report import finish_dense, robustness_report, run_prune, summary_table

__all__ = ['RunFolder', 'Setup', 'State', 'build_net', 'classes_of', 'distiller', 'finish_dense', 'fresh_model',
           'input_shape_of', 'load_run', 'measure', 'prune_phase', 'reducer', 'robustness_report', 'run_prune',
           'setup', 'shrink_epoch', 'sparsity_phase', 'summary_table', 'train_dense', 'worker_data', 'worker_hooks',
           'writer']
