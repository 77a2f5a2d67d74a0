"""Imported first by bench/ scripts, before MXNet: makes the checkout importable, picks threads and the engine
(mxprune.commands.bootstrap says why). The tools themselves pick them after parsing their arguments."""
from _path import ROOT  # noqa: F401  (bench/ scripts read _bootstrap.ROOT)

from mxprune.commands import bootstrap

THREADS_NOTE = bootstrap.start()
