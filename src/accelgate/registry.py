"""One registry per axis (models, backends, prompt sets), all of the same kind.

A registry maps a name to a small frozen entry. Registering a name twice is a bug in the
code that registers; looking up an unknown name is the user's mistake, so its error lists
every known name. It is a read-only `Mapping` for everyone else (`name in MODELS`,
`sorted(BACKENDS)`, `PROMPT_SETS[name]`).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind  # "model", "backend", "prompt set": used in messages
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def get_entry(self, name: str) -> T:
        """The entry, or a KeyError that lists every known name."""
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(sorted(self._entries))}") \
                from None

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def frozen_mapping(value: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    """A read-only copy, so the frozen entries of a registry share no mutable state."""
    return MappingProxyType(dict(value or {}))
