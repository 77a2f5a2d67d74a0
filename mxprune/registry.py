"""Name -> class registries for pluggable parts (criteria, schedules, modifiers...)."""
from typing import Any, Callable, Dict, Generic, Iterator, TypeVar

from .errors import MxPruneError

T = TypeVar('T')


class Registry(Generic[T]):
    """A named table of factories; refuses duplicates and lists the choices for unknown names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: Dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def deco(obj: Callable[..., T]) -> Callable[..., T]:
            if name in self._items:
                raise ValueError(f'{self.kind} {name!r} is registered twice')
            self._items[name] = obj
            obj.registry_name = name  # type: ignore[attr-defined]
            return obj
        return deco

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._items[name]
        except KeyError:
            raise MxPruneError(f'unknown {self.kind} {name!r}; choose one of: {", ".join(sorted(self._items))}') \
                from None

    def create(self, spec: Any, **kwargs: Any) -> T:
        """Builds from a name (with kwargs), or returns an object that is already built."""
        if isinstance(spec, str):
            return self.get(spec)(**kwargs)
        if kwargs:
            raise MxPruneError(f'{self.kind} {spec!r} is already built; options {sorted(kwargs)} cannot apply')
        return spec

    def names(self) -> list:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
