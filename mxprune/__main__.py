"""`python -m mxprune <command>`: the same as the `mxprune` command."""
import sys

from .console import main

sys.exit(main())
