"""Progress bars on stderr, one switch for the whole run: the commands turn it off with --quiet."""
from typing import Iterable, Optional

ENABLED = True


def bar(iterable: Optional[Iterable] = None, *, desc: str, total: Optional[int] = None, unit: str = 'it',
        enabled: Optional[bool] = None):
    """A tqdm bar that leaves no line behind and redraws at most once a second; `enabled` overrides the switch."""
    from tqdm import tqdm
    on = ENABLED if enabled is None else enabled
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=not on, leave=False, mininterval=1.0)
