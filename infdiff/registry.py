"""Named constructors: one small registry per kind of thing (architectures, processes, priors, ...).

A config section names what it builds (``arch``, ``name``) and holds exactly that constructor's
keyword arguments; the registry of its kind turns the name into the constructor.  New entries
are added where they are defined, with :meth:`Registry.register`, so adding a sampler or a prior
touches no list elsewhere (command-line ``choices`` read :meth:`Registry.names`).
"""

from __future__ import annotations

import difflib
from typing import Callable, Dict, Iterator, List, Optional, TypeVar

T = TypeVar("T")


class RegistryError(ValueError):
    """An unknown or duplicate name; the message lists the known names."""


class Registry:
    """Names → objects (usually constructors) of one ``kind``, e.g. ``Registry("sampler")``."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, object] = {}

    def register(self, name: str, entry: Optional[T] = None):
        """Add ``entry`` under ``name``; without ``entry``, a decorator that adds what it decorates."""

        def add(obj: T) -> T:
            if name in self._entries:
                raise RegistryError(f"a {self.kind} named {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return add if entry is None else add(entry)

    def __getitem__(self, name: str):
        if name not in self._entries:
            close = difflib.get_close_matches(str(name), self._entries, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise RegistryError(f"unknown {self.kind} {name!r}; expected one of {self.names()}{hint}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> List[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def unregister(self, name: str) -> Callable:
        """Remove and return the entry ``name`` (for tests and plug-ins that replace an entry)."""
        self[name]
        return self._entries.pop(name)
