"""The job-type registry: every job type the loaded plugins provide, and who provides it.

Built once from the plugin manager (:meth:`Registry.from_plugin_manager`, or
:func:`build_registry` which also loads the plugins). Each plugin's ``workqueue_job_types``
hook is called on its own, so whatever goes wrong is reported with the plugin's name: a hook
that raises or returns something other than a list of :class:`~workqueue.jobtypes.JobType`
(:class:`~workqueue.errors.PluginLoadError`), or two plugins claiming one name
(:class:`~workqueue.errors.DuplicateJobTypeError`, naming both).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pluggy

from workqueue import schema
from workqueue.errors import DuplicateJobTypeError, PluginLoadError, UnknownJobTypeError
from workqueue.jobtypes import JobType
from workqueue.plugins import PluginInfo, load_plugins, plugin_label, plugin_origin

__all__ = ["Registry", "build_registry"]

_JOB_TYPES_HOOK = "workqueue_job_types"


class Registry:
    """Job types by name, with the plugin that registered each."""

    def __init__(self) -> None:
        self._types: dict[str, JobType] = {}
        self._owners: dict[str, str] = {}  # job type name -> plugin name
        self._labels: dict[str, str] = {}  # job type name -> plugin label, for messages
        self._plugins: list[PluginInfo] = []

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_plugin_manager(cls, pm: pluggy.PluginManager) -> Registry:
        """Collect the job types of every plugin registered with ``pm``.

        Raises :class:`PluginLoadError` naming a plugin whose hook fails or returns bad data,
        and :class:`DuplicateJobTypeError` naming both plugins when two claim one name.
        """
        registry = cls()
        by_plugin: dict[str, list[str]] = {}
        for impl in pm.hook.workqueue_job_types.get_hookimpls():
            name = pm.get_name(impl.plugin) or impl.plugin_name
            label = plugin_label(pm, impl.plugin)
            types = _call_job_types_hook(impl.function, label)
            by_plugin[name] = registry._add_all(types, owner=name, label=label)
        for name, plugin in pm.list_name_plugin():
            origin = plugin_origin(pm, plugin)
            registry._plugins.append(
                PluginInfo(
                    name=name,
                    distribution=origin.distribution,
                    version=origin.version,
                    job_types=tuple(sorted(by_plugin.get(name, ()))),
                    hooks=tuple(sorted(caller.name for caller in pm.get_hookcallers(plugin) or ())),
                )
            )
        return registry

    @classmethod
    def from_job_types(cls, job_types: Iterable[JobType], *, plugin: str = "local") -> Registry:
        """A registry of the given job types, as if one plugin named ``plugin`` returned them."""
        registry = cls()
        names = registry._add_all(
            _checked_job_types(list(job_types), plugin), owner=plugin, label=plugin
        )
        registry._plugins.append(
            PluginInfo(
                name=plugin,
                distribution=None,
                version=None,
                job_types=tuple(sorted(names)),
                hooks=(_JOB_TYPES_HOOK,),
            )
        )
        return registry

    def _add_all(self, types: Sequence[JobType], *, owner: str, label: str) -> list[str]:
        names: list[str] = []
        for job_type in types:
            if job_type.name in names:
                raise PluginLoadError(label, f"returns job type {job_type.name!r} twice")
            if job_type.name in self._types:
                raise DuplicateJobTypeError(job_type.name, self._labels[job_type.name], label)
            self._types[job_type.name] = job_type
            self._owners[job_type.name] = owner
            self._labels[job_type.name] = label
            names.append(job_type.name)
        return names

    # -- queries ------------------------------------------------------------------------------

    def get(self, name: str) -> JobType | None:
        """The job type called ``name``, or ``None``."""
        return self._types.get(name)

    def require(self, name: str) -> JobType:
        """The job type called ``name``; :class:`UnknownJobTypeError` if there is none."""
        job_type = self._types.get(name)
        if job_type is None:
            raise UnknownJobTypeError(name, self._types)
        return job_type

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __len__(self) -> int:
        return len(self._types)

    def __repr__(self) -> str:
        return f"<Registry {', '.join(self.names()) or 'empty'}>"

    def names(self) -> list[str]:
        """The names of all registered job types, sorted."""
        return sorted(self._types)

    def job_types(self) -> list[JobType]:
        """All registered job types, sorted by name."""
        return [self._types[name] for name in self.names()]

    @property
    def plugins(self) -> list[PluginInfo]:
        """Every loaded plugin (also those that register no job type), in load order."""
        return list(self._plugins)

    def plugin_for(self, name: str) -> str:
        """The name of the plugin that registered job type ``name``.

        Raises :class:`UnknownJobTypeError` if no plugin did.
        """
        self.require(name)
        return self._owners[name]

    def validate_payload(self, name: str, payload: Any) -> Any:
        """Check ``payload`` against job type ``name``'s schema and return the typed object.

        Raises :class:`UnknownJobTypeError` for an unknown type and
        :class:`~workqueue.errors.PayloadValidationError` (with the field path) for a payload
        that does not fit; see :mod:`workqueue.schema`.
        """
        return schema.validate_payload(self.require(name).payload_schema, payload)


def build_registry(*, only: Iterable[str] | None = None, extra: Sequence[object] = ()) -> Registry:
    """Load the plugins (see :func:`~workqueue.plugins.load_plugins`) and build their registry."""
    return Registry.from_plugin_manager(load_plugins(only=only, extra=extra))


def _call_job_types_hook(function: Any, label: str) -> list[JobType]:
    try:
        returned = function()
    except Exception as exc:
        raise PluginLoadError(label, f"{_JOB_TYPES_HOOK}() raised {_one_line(exc)}") from exc
    if not isinstance(returned, list | tuple):
        raise PluginLoadError(
            label,
            f"{_JOB_TYPES_HOOK}() must return a list of JobType, not {type(returned).__name__}",
        )
    return _checked_job_types(list(returned), label)


def _checked_job_types(items: list[Any], label: str) -> list[JobType]:
    for index, item in enumerate(items):
        if not isinstance(item, JobType):
            raise PluginLoadError(
                label,
                f"{_JOB_TYPES_HOOK}() returned a {type(item).__name__} at index {index}, "
                "expected workqueue.JobType",
            )
        try:
            schema.check_schema(item.payload_schema)
        except TypeError as exc:
            raise PluginLoadError(label, f"job type {item.name!r}: {exc}") from exc
    return items


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
