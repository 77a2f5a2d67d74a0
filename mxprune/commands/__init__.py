"""The `mxprune <command>` programs, one module each. A command module imports no MXNet until its arguments are
parsed and mxprune.commands.bootstrap has picked the threads and the engine."""
