"""Reading a traced Symbol: operator attributes arrive as strings ('(3, 3)', 'True', 'None') and a net's outputs
may nest (detectors return lists of lists). One parser for every reader of the JSON graph."""
from typing import Any, Optional, Tuple

_ABSENT = (None, 'None', '()', '')


def ints(text: Any, n: int = 0, default: int = 0) -> Tuple[Optional[int], ...]:
    """'(3, 3)' -> (3, 3); absent or 'None' -> (default,) * n; an item 'None' stays None (a reshape's '(None, 2)')."""
    if text in _ABSENT:
        return (default,) * n
    items = (v.strip() for v in str(text).strip('()[] ').split(','))
    return tuple(None if v == 'None' else int(v) for v in items if v)


def flag(text: Any, default: bool) -> bool:
    """An attribute 'True' / 'true' / '1' as a bool; absent -> default."""
    return default if text is None else str(text) in ('True', 'true', '1')


def flat(out: Any) -> list:
    """Nested lists of outputs (Symbols or NDArrays) as one flat list."""
    if isinstance(out, (list, tuple)):
        return [s for o in out for s in flat(o)]
    return [out]
