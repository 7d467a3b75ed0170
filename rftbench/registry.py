"""One small registry pattern for models, datasets, schedules, objectives and attacks.

A :class:`Registry` maps names to factories (functions or classes). Look-ups by an unknown
name fail with the list of known names and the closest match. Third-party plugins come in
through Python entry points (group ``rftbench.<kind>s``) or through files loaded with
:func:`load_plugin_file`.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import pkgutil
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

    def __init__(self, kind: str, entry_point_group: str | None = None,
                 check: Callable[[str, T, str], None] | None = None):
        """``check(name, obj, source)``, if given, vets every object before it is registered
        (e.g. that a schedule is a well-formed Schedule subclass) and raises RftbenchError."""
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._check = check
        self._entries: dict[str, Entry[T]] = {}
        self._entry_points_loaded = entry_point_group is None
        self._loaders: list[Callable[[], None]] = []
        self._loading = False

    def register(self, name: str, *, source: str | None = None) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")`` on a factory or class."""

        def deco(obj: T) -> T:
            self.add(name, obj, source=source)
            return obj

        return deco

    def add(self, name: str, obj: T, *, source: str | None = None) -> None:
        src = source or _source_of(obj)
        if self._check is not None:
            self._check(name, obj, src)
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

    def unregister(self, name: str) -> Entry[T]:
        """Remove ``name`` (e.g. a plugin registered by a test) and return its entry."""
        self._ensure_loaded()
        try:
            return self._entries.pop(name)
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def _ensure_loaded(self) -> None:
        # A loader that fails (e.g. a plugin took a built-in's name) stays queued, so every
        # later look-up raises the same error instead of working on a half-loaded registry.
        # Look-ups made while loading (a plugin module that asks for a built-in) see what
        # is registered so far instead of recursing.
        if self._loading:
            return
        self._loading = True
        try:
            while self._loaders:
                self._loaders[0]()
                self._loaders.pop(0)
            if not self._entry_points_loaded:
                self.load_entry_points()
                self._entry_points_loaded = True
        finally:
            self._loading = False

    def load_entry_points(self) -> None:
        """Register every object advertised in the entry-point group of this registry."""
        if self.entry_point_group is None:
            return
        for ep in importlib.metadata.entry_points(group=self.entry_point_group):
            dist = getattr(ep, "dist", None)
            where = f"entry point {ep.name} = {ep.value}" + (
                f" (distribution {dist.name} {dist.version})" if dist is not None else "")
            try:
                obj = ep.load()
            except RftbenchError as exc:  # e.g. its module registered a name that is taken
                raise type(exc)(f"{where}, group {self.entry_point_group!r}: {exc}") from exc
            except Exception as exc:
                raise RftbenchError(
                    f"{where}, group {self.entry_point_group!r}, failed to load: "
                    f"{type(exc).__name__}: {exc}. Fix or uninstall that package."
                ) from exc
            old = self._entries.get(ep.name)
            if old is not None and old.obj is obj:
                # its module registered itself on import: record that it came in as an entry point
                if not old.source.startswith("entry point"):
                    self._entries[ep.name] = Entry(ep.name, obj, f"{where}; {old.source}")
                continue
            self.add(ep.name, obj, source=where)

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


def import_plugin_package(package: str, kind: str, error: type[RftbenchError] = RftbenchError) -> None:
    """Import every module of the built-in plugin package ``package`` (one file per plugin, each
    registering itself); a module that fails to import raises ``error`` naming its file."""
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        module = f"{pkg.__name__}.{info.name}"
        try:
            importlib.import_module(module)
        except RftbenchError:
            raise
        except Exception as exc:
            raise error(f"built-in {kind} module {module} ({Path(pkg.__path__[0]) / info.name}.py) failed to "
                        f"import: {type(exc).__name__}: {exc}") from exc


def check_declared_class(name: str, obj: object, source: str, base: type, kind: str,
                         error: type[RftbenchError] = RftbenchError) -> str:
    """Registry check shared by plugin kinds that declare ``params``: ``obj`` must be a subclass
    of ``base`` with a well-formed declaration; sets ``obj.name``. Returns the ``where`` text
    (kind, name, source) for the kind's own further checks."""
    from .params import declaration_problems

    where = f"{kind} {name!r} ({source})"
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise error(f"{where} must be a subclass of {base.__module__}.{base.__name__}, got {obj!r}.")
    problems = declaration_problems(obj.params)  # type: ignore[attr-defined]
    if problems:
        raise error(f"{where} declares bad parameters: " + "; ".join(problems) + ".")
    obj.name = name  # type: ignore[attr-defined]
    return where
