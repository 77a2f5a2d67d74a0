"""Imported first by the scripts in tools/ and bench/: makes the checkout importable when mxprune is not installed."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
