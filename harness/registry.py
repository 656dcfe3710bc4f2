"""One generic registry for faults, backends, engines, detectors and baselines.

Entries are either objects or lazy ``"module:attr"`` strings, so listing a registry
imports nothing heavy. Duplicates raise; unknown names raise with suggestions.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from chaosbench.errors import InputInvalid, PluginInvalid

T = TypeVar("T")


def import_ref(ref: str) -> object:
    """Import ``"package.module:attr.sub"`` and return the attribute."""
    module_name, sep, attr_path = ref.partition(":")
    if not sep or not module_name or not attr_path:
        raise PluginInvalid(f"{ref!r}: expected 'module:attribute'")
    try:
        obj: object = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is a plugin problem
        raise PluginInvalid(f"{ref}: cannot import {module_name}: {type(exc).__name__}: {exc}") from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise PluginInvalid(f"{ref}: {module_name} has no attribute {attr_path!r}") from exc
    return obj


def installed_plugins(group: str) -> Iterator[tuple[str, str, object]]:
    """(entry point name, where it came from in words, loaded object) for every entry point of ``group``; one that
    cannot be imported raises PluginInvalid naming it."""
    for ep in entry_points(group=group):
        ref = f"{ep.value} (entry point {ep.name!r} in {group})"
        try:
            loaded = ep.load()
        except Exception as exc:  # noqa: BLE001 - any import failure is a plugin problem
            raise PluginInvalid(f"{ref}: cannot import: {type(exc).__name__}: {exc}") from exc
        yield ep.name, ref, loaded


def did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T | str] = {}
        self._frozen = False

    def register(self, name: str, entry: T | str) -> None:
        if self._frozen:
            raise RuntimeError(f"{self.kind} registry is frozen; cannot add {name!r}")
        if name in self._entries:
            raise ValueError(f"duplicate {self.kind} {name!r}")
        self._entries[name] = entry

    def decorator(self, name: str):
        def wrap(obj: T) -> T:
            self.register(name, obj)
            return obj

        return wrap

    def get(self, name: str) -> T:
        if name not in self._entries:
            known = sorted(self._entries)
            raise InputInvalid(
                f"unknown {self.kind} {name!r}{did_you_mean(name, known)}; known: {', '.join(known)}"
            )
        entry = self._entries[name]
        if isinstance(entry, str):
            entry = import_ref(entry)  # type: ignore[assignment]
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def freeze(self) -> None:
        self._frozen = True

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
