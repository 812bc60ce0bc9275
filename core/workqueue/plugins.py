"""Plugin discovery: the one pluggy ``PluginManager`` of the process.

Plugins are found through the ``workqueue`` entry-point group. :func:`load_plugins` imports each
entry point, registers it with the manager and checks that every ``@hookimpl`` matches a hook we
know; it does so once per process (call :func:`reset_plugins` to start over in tests).

Which entry points load
    ``WORKQUEUE_PLUGINS`` (or the ``only=`` argument, which wins) is a comma-separated list of
    entry-point or distribution names. Unset: every installed plugin loads. Set but empty: none
    does. A listed name that matches no installed plugin is an error, so a typo cannot silently
    leave a job type out. Objects passed in ``extra=`` always load.

Failures
    A plugin that fails to import, registers badly, or implements a hook that does not exist
    raises :class:`~workqueue.errors.PluginLoadError` naming its distribution and entry point.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType

import pluggy

from workqueue import hookspecs
from workqueue.errors import PluginLoadError

__all__ = [
    "ENTRY_POINT_GROUP",
    "PLUGINS_ENV_VAR",
    "PluginInfo",
    "PluginOrigin",
    "WorkQueuePluginManager",
    "load_plugins",
    "plugin_label",
    "plugin_origin",
    "reset_plugins",
    "selected_plugins",
]

ENTRY_POINT_GROUP = "workqueue"
PLUGINS_ENV_VAR = "WORKQUEUE_PLUGINS"


@dataclass(frozen=True, slots=True)
class PluginOrigin:
    """Where a registered plugin came from: its entry point and distribution, when known."""

    name: str
    distribution: str | None = None
    version: str | None = None
    entry_point: str | None = None  # "name = module:attr", for entry-point plugins


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """One loaded plugin as ``workqueue plugins`` lists it."""

    name: str
    distribution: str | None
    version: str | None
    job_types: tuple[str, ...]
    hooks: tuple[str, ...]


class WorkQueuePluginManager(pluggy.PluginManager):
    """A ``PluginManager`` that remembers each plugin's distribution and version."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.origins: dict[str, PluginOrigin] = {}


_lock = threading.Lock()
_cached: tuple[object, WorkQueuePluginManager] | None = None


def load_plugins(
    *, only: Iterable[str] | None = None, extra: Sequence[object] = ()
) -> WorkQueuePluginManager:
    """Discover, import and register the plugins; return the process's plugin manager.

    Idempotent: a second call with the same selection returns the same manager. A call with a
    different selection (other ``only``, ``WORKQUEUE_PLUGINS`` or ``extra``) builds a new
    manager that replaces the cached one.
    """
    global _cached
    selection = selected_plugins(only)
    key = (selection, tuple(id(obj) for obj in extra))
    with _lock:
        if _cached is not None and _cached[0] == key:
            return _cached[1]
        pm = _build(selection, extra)
        _cached = (key, pm)
        return pm


def reset_plugins() -> None:
    """Forget the cached plugin manager, so the next :func:`load_plugins` discovers anew."""
    global _cached
    with _lock:
        _cached = None


def selected_plugins(only: Iterable[str] | None = None) -> frozenset[str] | None:
    """The normalised names that restrict loading, from ``only`` or ``WORKQUEUE_PLUGINS``.

    ``None`` means "load every installed plugin".
    """
    if only is None:
        raw = os.environ.get(PLUGINS_ENV_VAR)
        if raw is None:
            return None
        only = raw.split(",")
    elif isinstance(only, str):
        only = only.split(",")
    return frozenset(_normalise(name) for name in only if name.strip())


def plugin_origin(pm: pluggy.PluginManager, plugin: object) -> PluginOrigin:
    """Where ``plugin`` came from (its name alone for managers not built here)."""
    name = pm.get_name(plugin) or repr(plugin)
    origins = getattr(pm, "origins", None)
    if isinstance(origins, dict):
        origin = origins.get(name)
        if isinstance(origin, PluginOrigin):
            return origin
    return PluginOrigin(name=name)


def plugin_label(pm: pluggy.PluginManager, plugin: object) -> str:
    """A human name for ``plugin`` in error messages: its distribution and entry point."""
    return _label(plugin_origin(pm, plugin))


# ---------------------------------------------------------------------------------------------
# Building the manager
# ---------------------------------------------------------------------------------------------


def _build(selection: frozenset[str] | None, extra: Sequence[object]) -> WorkQueuePluginManager:
    pm = WorkQueuePluginManager()
    unmatched = set(selection) if selection is not None else set()
    available: list[str] = []
    for ep in _entry_points():
        dist_name = ep.dist.name if ep.dist is not None else None
        available.append(dist_name or ep.name)
        names = {_normalise(ep.name)} | ({_normalise(dist_name)} if dist_name else set())
        if selection is not None:
            if not names & selection:
                continue
            unmatched -= names
        _register_entry_point(pm, ep)
    if unmatched:
        missing = ", ".join(sorted(unmatched))
        installed = ", ".join(sorted(set(available))) or "none"
        raise PluginLoadError(
            missing,
            f"{PLUGINS_ENV_VAR} names it but no installed distribution has an entry point of that "
            f"name in the {ENTRY_POINT_GROUP!r} group (installed: {installed})",
        )
    for obj in extra:
        _register_object(pm, obj)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginLoadError(plugin_label(pm, exc.plugin), _all_lines(exc)) from exc
    return pm


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def _register_entry_point(pm: WorkQueuePluginManager, ep: importlib.metadata.EntryPoint) -> None:
    dist = ep.dist
    origin = PluginOrigin(
        name=ep.name,
        distribution=dist.name if dist is not None else None,
        version=dist.version if dist is not None else None,
        entry_point=f"{ep.name} = {ep.value}",
    )
    label = _label(origin)
    try:
        obj = ep.load()
    except Exception as exc:
        raise PluginLoadError(
            label, f"entry point {origin.entry_point} failed to import: {_one_line(exc)}"
        ) from exc
    _register(pm, obj, origin, label)


def _register_object(pm: WorkQueuePluginManager, obj: object) -> None:
    base = _object_name(obj)
    name = base
    suffix = 2
    while pm.has_plugin(name) or name in pm.origins:
        name = f"{base}#{suffix}"
        suffix += 1
    distribution, version = _distribution_of(obj)
    origin = PluginOrigin(name=name, distribution=distribution, version=version)
    _register(pm, obj, origin, _label(origin))


def _register(pm: WorkQueuePluginManager, obj: object, origin: PluginOrigin, label: str) -> None:
    clash = pm.get_plugin(origin.name)
    if clash is not None:
        raise PluginLoadError(
            label,
            f"plugin name {origin.name!r} is already used by {plugin_label(pm, clash)}",
        )
    try:
        pm.register(obj, name=origin.name)
    except pluggy.PluginValidationError as exc:
        raise PluginLoadError(label, _all_lines(exc)) from exc
    except ValueError as exc:  # the same object registered twice, under two names
        raise PluginLoadError(label, _one_line(exc)) from exc
    pm.origins[origin.name] = origin
    if not pm.get_hookcallers(obj):
        raise PluginLoadError(
            label,
            "implements no workqueue hook (mark hook functions with @hookimpl from workqueue)",
        )


# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------


def _normalise(name: str) -> str:
    """PEP 503 normalisation, so ``wq_testplugin_good`` matches ``wq-testplugin-good``."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def _label(origin: PluginOrigin) -> str:
    if origin.distribution is None:
        return origin.name
    if _normalise(origin.distribution) == _normalise(origin.name):
        return origin.distribution
    return f"{origin.distribution} (entry point {origin.name})"


def _object_name(obj: object) -> str:
    if isinstance(obj, ModuleType):
        return obj.__name__
    if isinstance(obj, type):
        return f"{obj.__module__}.{obj.__qualname__}"
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _distribution_of(obj: object) -> tuple[str | None, str | None]:
    """The installed distribution that provides ``obj``'s top-level package, if any."""
    module = obj.__name__ if isinstance(obj, ModuleType) else getattr(obj, "__module__", None)
    if not isinstance(module, str):
        return None, None
    top = module.partition(".")[0]
    dists = importlib.metadata.packages_distributions().get(top, [])
    if len(dists) != 1:
        return None, None
    try:
        return dists[0], importlib.metadata.version(dists[0])
    except importlib.metadata.PackageNotFoundError:
        return None, None


def _one_line(exc: BaseException) -> str:
    """``ExcType: first line of the message``."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _all_lines(exc: BaseException) -> str:
    """pluggy's validation messages put the useful part on later lines: keep them, on one."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines) or type(exc).__name__
