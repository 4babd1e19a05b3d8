"""A small name -> object registry, one per extensible kind (models, datasets, ...)."""

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from bitscout._core.validate import unknown
from bitscout.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to builders; filled with the `register` decorator."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str, key: str | None = None) -> T:
        """Look `name` up; an unknown name is a ConfigError listing the known ones."""
        if name not in self._items:
            raise ConfigError(key or self.kind, unknown(self.kind, name, self.names()), name)
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
