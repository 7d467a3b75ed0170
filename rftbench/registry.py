"""One small registry pattern for models, datasets, schedules, objectives and attacks.

A :class:`Registry` maps names to factories (functions or classes). Look-ups by an unknown
name fail with the list of known names and the closest match. Third-party plugins come in
through Python entry points (group ``rftbench.<kind>s``) or through files loaded with
:func:`load_plugin_file`.
"""
from __future__ import annotations

import difflib
import importlib.metadata
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generic, Iterator, TypeVar

from .errors import DuplicateNameError, RftbenchError, UnknownNameError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered object and where it came from (a file path or an entry point)."""

    name: str
    obj: T
    source: str


def _source_of(obj: object) -> str:
    try:
        return inspect.getsourcefile(obj) or getattr(obj, "__module__", "?")  # type: ignore[arg-type]
    except TypeError:
        return getattr(obj, "__module__", "?")


class Registry(Generic[T]):
    """A named collection of factories of one kind (``"schedule"``, ``"dataset"``, ...)."""

    def __init__(self, kind: str, entry_point_group: str | None = None):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, Entry[T]] = {}
        self._entry_points_loaded = entry_point_group is None
        self._loaders: list[Callable[[], None]] = []

    def register(self, name: str, *, source: str | None = None) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")`` on a factory or class."""

        def deco(obj: T) -> T:
            self.add(name, obj, source=source)
            return obj

        return deco

    def add(self, name: str, obj: T, *, source: str | None = None) -> None:
        src = source or _source_of(obj)
        old = self._entries.get(name)
        if old is not None:
            if old.obj is obj or (old.source == src and getattr(old.obj, "__qualname__", None)
                                  == getattr(obj, "__qualname__", 1)):
                # the same definition imported again (e.g. a module reloaded): keep the newest
                self._entries[name] = Entry(name, obj, src)
                return
            raise DuplicateNameError(
                f"{self.kind} {name!r} is registered twice: in {old.source} and in {src}. "
                f"Rename one of them."
            )
        self._entries[name] = Entry(name, obj, src)

    def add_loader(self, loader: Callable[[], None]) -> None:
        """A function that registers built-ins lazily, run on the first look-up."""
        self._loaders.append(loader)

    def _ensure_loaded(self) -> None:
        while self._loaders:
            self._loaders.pop(0)()
        if not self._entry_points_loaded:
            self._entry_points_loaded = True
            self.load_entry_points()

    def load_entry_points(self) -> None:
        """Register every object advertised in the entry-point group of this registry."""
        if self.entry_point_group is None:
            return
        for ep in importlib.metadata.entry_points(group=self.entry_point_group):
            try:
                obj = ep.load()
            except Exception as exc:  # a broken third-party plugin must not hide the others
                raise RftbenchError(
                    f"entry point {ep.name!r} in group {self.entry_point_group!r} "
                    f"({ep.value}) failed to load: {exc}"
                ) from exc
            if ep.name in self._entries and self._entries[ep.name].obj is obj:
                continue
            self.add(ep.name, obj, source=f"entry point {ep.value}")

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def entry(self, name: str) -> Entry[T]:
        self._ensure_loaded()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        known = sorted(self._entries)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Known {self.kind}s: {', '.join(known) or '(none)'}."

    def __contains__(self, name: str) -> bool:
        self._ensure_loaded()
        return name in self._entries

    def names(self) -> list[str]:
        self._ensure_loaded()
        return sorted(self._entries)

    def entries(self) -> Iterator[Entry[T]]:
        self._ensure_loaded()
        for name in sorted(self._entries):
            yield self._entries[name]


def load_plugin_file(path: str | Path) -> None:
    """Import a user's Python file so that its ``@register`` decorators run.

    Raises :class:`RftbenchError` if the file is missing or fails to import.
    """
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise RftbenchError(f"plugin file {str(path)!r} does not exist (looked at {p}).")
    mod_name = f"rftbench_plugin_{p.stem}_{abs(hash(str(p))) & 0xFFFFFF:x}"
    if mod_name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(mod_name, p)
    if spec is None or spec.loader is None:
        raise RftbenchError(f"plugin file {p} is not a Python module.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except RftbenchError:
        del sys.modules[mod_name]
        raise
    except Exception as exc:
        del sys.modules[mod_name]
        raise RftbenchError(f"plugin file {p} failed to import: {type(exc).__name__}: {exc}") from exc
