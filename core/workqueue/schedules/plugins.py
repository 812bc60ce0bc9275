"""The schedules the loaded plugins declare with the ``workqueue_schedules()`` hook."""

from __future__ import annotations

from typing import Any

import pluggy

from workqueue.errors import PluginLoadError
from workqueue.plugins import plugin_label
from workqueue.schedules.model import Schedule

__all__ = ["plugin_schedules"]

_HOOK = "workqueue_schedules"


def plugin_schedules(pm: pluggy.PluginManager | None) -> list[Schedule]:
    """Every plugin's schedules, by name. Raises :class:`PluginLoadError` naming the plugin
    whose hook raises or returns something other than a list of :class:`Schedule`, and naming
    both plugins when two declare one schedule name."""
    if pm is None:
        return []
    found: dict[str, tuple[Schedule, str]] = {}
    for impl in pm.hook.workqueue_schedules.get_hookimpls():
        label = plugin_label(pm, impl.plugin)
        for schedule in _call(impl.function, label):
            if schedule.name in found:
                other = found[schedule.name][1]
                raise PluginLoadError(
                    label,
                    f"schedule {schedule.name!r} is also declared by {other}"
                    if other != label
                    else f"returns schedule {schedule.name!r} twice",
                )
            found[schedule.name] = (schedule, label)
    return [found[name][0] for name in sorted(found)]


def _call(function: Any, label: str) -> list[Schedule]:
    try:
        returned = function()
    except Exception as exc:
        raise PluginLoadError(label, f"{_HOOK}() raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(returned, list | tuple):
        raise PluginLoadError(
            label, f"{_HOOK}() must return a list of Schedule, not {type(returned).__name__}"
        )
    for index, item in enumerate(returned):
        if not isinstance(item, Schedule):
            raise PluginLoadError(
                label,
                f"{_HOOK}() returned a {type(item).__name__} at index {index}, "
                "expected workqueue.Schedule",
            )
    return list(returned)
