"""The dependency graph: which channels of which layers must be cut together.

`DependencyGraph.trace(net, input_shape)` runs the net on a Symbol, walks the JSON graph in topological order, and
gives every tensor a channel *space*: a list of segments of atoms (an atom is a run of channels created by one
operator, e.g. a convolution's outputs). Operator rules (RULES, a lookup table) say how spaces flow: identity through
BatchNorm/ReLU/pooling, union of atoms at residual adds and broadcast multiplies (squeeze-excitation), concatenation
of segments at Concat (DenseNet), repeat factors at Flatten -> Dense. Union-find over atoms gives the coupled
groups. An operator without a rule freezes the channels it touches and is listed in `graph.unsupported`: such
channels are never cut, so a wrong cut cannot happen silently.
"""
from .core import DependencyGraph
from .groups import Group, Layer, Member, Selection, Space, match

__all__ = ["DependencyGraph", "Group", "Layer", "Member", "Selection", "Space", "match"]
