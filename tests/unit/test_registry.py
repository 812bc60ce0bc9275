"""Plugin loading (workqueue.plugins) and the job-type registry (workqueue.registry).

Plugins are given as objects through ``extra=``, or as small fake distributions (a package and a
``.dist-info`` folder with ``entry_points.txt``) on a temporary ``sys.path`` entry, which
``importlib.metadata`` discovers exactly as it does installed ones.
"""

from __future__ import annotations

import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pluggy
import pytest

from workqueue import JobContext, JobType, PayloadValidationError, UnknownJobTypeError, hookimpl
from workqueue.errors import DuplicateJobTypeError, PluginLoadError
from workqueue.plugins import PLUGINS_ENV_VAR, load_plugins, reset_plugins, selected_plugins
from workqueue.registry import Registry, build_registry


@pytest.fixture(autouse=True)
def _isolated_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No installed entry point loads unless a test asks, and no manager outlives a test."""
    monkeypatch.setenv(PLUGINS_ENV_VAR, "")
    reset_plugins()
    yield
    reset_plugins()


async def _handler(payload: Any, ctx: JobContext) -> Any:
    return payload


class Plugin:
    """A plugin object whose ``workqueue_job_types`` returns whatever it was given."""

    def __init__(self, *returned: Any) -> None:
        self.returned = list(returned)

    @hookimpl
    def workqueue_job_types(self) -> list[Any]:
        return self.returned


class OtherPlugin(Plugin):
    """The same, under another class name (so messages can tell the two apart)."""


def _module_plugin(name: str, *job_types: JobType) -> types.ModuleType:
    module = types.ModuleType(name)

    @hookimpl
    def workqueue_job_types() -> list[JobType]:
        return list(job_types)

    module.workqueue_job_types = workqueue_job_types  # type: ignore[attr-defined]
    return module


class AddPayload(msgspec.Struct):
    a: int
    b: int


# ---------------------------------------------------------------------------------------------
# Registration through extra=
# ---------------------------------------------------------------------------------------------


def test_registers_job_types_from_an_object_and_a_module() -> None:
    # Given a class-instance plugin and a module plugin
    module = _module_plugin("my_module_plugin", JobType(name="b_type", handler=_handler))
    instance = Plugin(JobType(name="a_type", handler=_handler, payload_schema=AddPayload))

    # When the registry is built from them
    registry = build_registry(extra=[instance, module])

    # Then both plugins' types are there, sorted, with their owners
    assert registry.names() == ["a_type", "b_type"]
    assert "a_type" in registry
    assert "nope" not in registry
    assert len(registry) == 2
    job_type = registry.get("a_type")
    assert job_type is not None
    assert job_type.payload_schema is AddPayload
    assert registry.get("nope") is None
    assert registry.plugin_for("b_type") == "my_module_plugin"
    assert registry.plugin_for("a_type") == f"{__name__}.Plugin"
    infos = {info.name: info for info in registry.plugins}
    assert infos["my_module_plugin"].job_types == ("b_type",)
    assert infos["my_module_plugin"].hooks == ("workqueue_job_types",)
    assert infos["my_module_plugin"].distribution is None
    assert infos["my_module_plugin"].version is None


def test_a_plugin_with_only_other_hooks_is_listed_without_job_types() -> None:
    class Observer:
        @hookimpl
        def workqueue_job_event(self, event: Any) -> None:
            pass

    registry = build_registry(extra=[Observer()])

    assert registry.names() == []
    [info] = registry.plugins
    assert info.job_types == ()
    assert info.hooks == ("workqueue_job_event",)


def test_two_plugins_claiming_one_name_raise_an_error_naming_both() -> None:
    first = Plugin(JobType(name="same", handler=_handler))
    second = OtherPlugin(JobType(name="same", handler=_handler))

    with pytest.raises(DuplicateJobTypeError) as caught:
        build_registry(extra=[first, second])

    assert caught.value.job_type == "same"
    assert caught.value.plugins == (f"{__name__}.Plugin", f"{__name__}.OtherPlugin")
    assert f"{__name__}.Plugin" in str(caught.value)
    assert f"{__name__}.OtherPlugin" in str(caught.value)


def test_two_instances_of_one_plugin_class_get_distinct_names() -> None:
    with pytest.raises(DuplicateJobTypeError) as caught:
        build_registry(
            extra=[
                Plugin(JobType(name="same", handler=_handler)),
                Plugin(JobType(name="same", handler=_handler)),
            ]
        )
    assert caught.value.plugins == (f"{__name__}.Plugin", f"{__name__}.Plugin#2")


def test_one_plugin_returning_a_name_twice_is_a_load_error() -> None:
    plugin = Plugin(
        JobType(name="twice", handler=_handler), JobType(name="twice", handler=_handler)
    )

    with pytest.raises(PluginLoadError, match="returns job type 'twice' twice"):
        build_registry(extra=[plugin])


@pytest.mark.parametrize(
    ("returned", "match"),
    [
        ([{"name": "x"}], "returned a dict at index 0, expected workqueue.JobType"),
        (None, "must return a list of JobType, not NoneType"),
        (JobType(name="bare", handler=_handler), "must return a list of JobType, not JobType"),
    ],
)
def test_a_hook_returning_something_else_than_job_types_names_the_plugin(
    returned: Any, match: str
) -> None:
    class Bad:
        @hookimpl
        def workqueue_job_types(self) -> Any:
            return returned

    with pytest.raises(PluginLoadError, match=match) as caught:
        build_registry(extra=[Bad()])

    assert "Bad" in caught.value.plugin


def test_a_hook_that_raises_names_the_plugin_and_the_error() -> None:
    class Raising:
        @hookimpl
        def workqueue_job_types(self) -> list[JobType]:
            raise RuntimeError("cannot read config\nsecond line")

    with pytest.raises(PluginLoadError) as caught:
        build_registry(extra=[Raising()])

    assert "Raising" in caught.value.plugin
    assert caught.value.reason == "workqueue_job_types() raised RuntimeError: cannot read config"


@pytest.mark.parametrize("bad_schema", [int, dict, object, "AddPayload"])
def test_an_unsupported_payload_schema_is_a_load_error(bad_schema: Any) -> None:
    plugin = Plugin(JobType(name="typed", handler=_handler, payload_schema=bad_schema))

    with pytest.raises(PluginLoadError, match="job type 'typed': payload_schema must be"):
        build_registry(extra=[plugin])


def test_a_schema_msgspec_cannot_decode_is_a_load_error() -> None:
    class Opaque:
        pass

    class Holder(msgspec.Struct):
        thing: Opaque

    plugin = Plugin(JobType(name="typed", handler=_handler, payload_schema=Holder))

    with pytest.raises(PluginLoadError, match=r"job type 'typed': payload_schema .* is not usable"):
        build_registry(extra=[plugin])


def test_a_misspelt_hook_fails_check_pending_naming_the_plugin() -> None:
    class Misspelt:
        @hookimpl
        def workqueue_job_type(self) -> list[JobType]:  # missing "s"
            return []

    with pytest.raises(PluginLoadError, match="unknown hook 'workqueue_job_type'") as caught:
        build_registry(extra=[Misspelt()])

    assert "Misspelt" in caught.value.plugin


def test_a_hookimpl_with_an_unknown_argument_names_the_plugin() -> None:
    class WrongArgs:
        @hookimpl
        def workqueue_job_event(self, evnt: Any) -> None:
            pass

    with pytest.raises(PluginLoadError, match="evnt") as caught:
        build_registry(extra=[WrongArgs()])

    assert "WrongArgs" in caught.value.plugin


def test_a_plugin_without_hookimpl_markers_is_a_load_error() -> None:
    class Unmarked:
        def workqueue_job_types(self) -> list[JobType]:
            return [JobType(name="lost", handler=_handler)]

    with pytest.raises(PluginLoadError, match="implements no workqueue hook"):
        build_registry(extra=[Unmarked()])


def test_the_same_object_twice_is_a_load_error() -> None:
    plugin = Plugin()

    with pytest.raises(PluginLoadError, match="already registered"):
        build_registry(extra=[plugin, plugin])


# ---------------------------------------------------------------------------------------------
# Queries
# ---------------------------------------------------------------------------------------------


def test_validate_payload_returns_the_typed_object() -> None:
    registry = Registry.from_job_types(
        [
            JobType(name="add", handler=_handler, payload_schema=AddPayload),
            JobType(name="free", handler=_handler),
        ]
    )

    assert registry.validate_payload("add", {"a": 1, "b": 2}) == AddPayload(a=1, b=2)
    payload = {"anything": [1, 2]}
    assert registry.validate_payload("free", payload) is payload
    with pytest.raises(PayloadValidationError) as caught:
        registry.validate_payload("add", {"a": 1})
    assert (caught.value.field, caught.value.problem) == ("payload.b", "missing required field")


def test_unknown_type_raises_unknown_job_type_error_listing_known_ones() -> None:
    registry = Registry.from_job_types([JobType(name="known", handler=_handler)], plugin="p")

    for call in (registry.require, registry.plugin_for):
        with pytest.raises(UnknownJobTypeError) as caught:
            call("os.system")
        assert caught.value.known == ["known"]
    with pytest.raises(UnknownJobTypeError):
        registry.validate_payload("os.system", {})
    assert registry.plugin_for("known") == "p"
    assert registry.job_types()[0].name == "known"


def test_from_job_types_rejects_duplicates_and_non_job_types() -> None:
    with pytest.raises(PluginLoadError, match="twice"):
        Registry.from_job_types([JobType(name="x", handler=_handler)] * 2)
    with pytest.raises(PluginLoadError, match=r"expected workqueue\.JobType"):
        Registry.from_job_types(["x"])  # type: ignore[list-item]


def test_a_plain_plugin_manager_works_too() -> None:
    from workqueue import hookspecs

    pm = pluggy.PluginManager("workqueue")
    pm.add_hookspecs(hookspecs)
    pm.register(Plugin(JobType(name="x", handler=_handler)), name="handmade")

    registry = Registry.from_plugin_manager(pm)

    assert registry.plugin_for("x") == "handmade"
    assert registry.plugins[0].distribution is None


# ---------------------------------------------------------------------------------------------
# load_plugins: caching
# ---------------------------------------------------------------------------------------------


def test_load_plugins_is_idempotent_until_reset() -> None:
    plugin = Plugin()
    first = load_plugins(extra=[plugin])

    assert load_plugins(extra=[plugin]) is first
    assert load_plugins() is not first  # another selection builds another manager
    reset_plugins()
    assert load_plugins(extra=[plugin]) is not first


@pytest.mark.parametrize(
    ("only", "env", "expected"),
    [
        (None, None, None),
        (None, "", frozenset()),
        (None, " a_b , C.D,, ", frozenset({"a-b", "c-d"})),
        (["x"], "a", frozenset({"x"})),
        ("x,y", None, frozenset({"x", "y"})),
        ((), "a", frozenset()),
    ],
)
def test_selected_plugins_reads_only_or_the_env_var(
    monkeypatch: pytest.MonkeyPatch, only: Any, env: str | None, expected: frozenset[str] | None
) -> None:
    if env is None:
        monkeypatch.delenv(PLUGINS_ENV_VAR)
    else:
        monkeypatch.setenv(PLUGINS_ENV_VAR, env)
    assert selected_plugins(only) == expected


# ---------------------------------------------------------------------------------------------
# Entry-point discovery with fake distributions on sys.path
# ---------------------------------------------------------------------------------------------

FakeDist = Callable[..., None]


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDist]:
    """``fake_dist(dist, module, source, entry_point=module, version="1.0")`` makes a
    distribution ``dist`` with a package ``module`` and one ``workqueue`` entry point."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    created: list[str] = []

    def make(
        dist: str, module: str, source: str, entry_point: str | None = None, version: str = "1.0"
    ) -> None:
        package = site / module
        package.mkdir()
        (package / "__init__.py").write_text(textwrap.dedent(source))
        info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[workqueue]\n{entry_point or module} = {module}\n")
        created.append(module)

    yield make
    for module in created:
        sys.modules.pop(module, None)


PLUGIN_SOURCE = """
    from workqueue import JobContext, JobType, hookimpl

    async def handler(payload, ctx):
        return payload

    @hookimpl
    def workqueue_job_types():
        return [JobType(name={name!r}, handler=handler)]
"""


def test_entry_points_are_discovered_with_distribution_and_version(
    fake_dist: FakeDist, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dist(
        "wq-unit-alpha", "wq_unit_alpha", PLUGIN_SOURCE.format(name="alpha"), entry_point="alpha"
    )
    monkeypatch.setenv(PLUGINS_ENV_VAR, "wq-unit-alpha")

    registry = build_registry()

    [info] = registry.plugins
    assert (info.name, info.distribution, info.version) == ("alpha", "wq-unit-alpha", "1.0")
    assert info.job_types == ("alpha",)
    assert registry.plugin_for("alpha") == "alpha"


def test_workqueue_plugins_restricts_by_entry_point_or_distribution_name(
    fake_dist: FakeDist, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given three plugins, one of which cannot even be imported
    fake_dist("wq-unit-one", "wq_unit_one", PLUGIN_SOURCE.format(name="one"))
    fake_dist("wq-unit-two", "wq_unit_two", PLUGIN_SOURCE.format(name="two"), entry_point="deux")
    fake_dist("wq-unit-bad", "wq_unit_bad", "raise ImportError('no')")

    # When WORKQUEUE_PLUGINS names one by distribution and one by entry point
    monkeypatch.setenv(PLUGINS_ENV_VAR, "wq_unit_one, deux")
    registry = build_registry()

    # Then only those load, and the broken one is never imported
    assert registry.names() == ["one", "two"]
    assert "wq_unit_bad" not in sys.modules

    # And only= wins over the env var
    assert build_registry(only=["wq-unit-two"]).names() == ["two"]
    # And an empty selection loads no entry point at all
    assert build_registry(only=[]).names() == []


def test_a_selected_name_that_is_not_installed_is_an_error(
    fake_dist: FakeDist, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dist("wq-unit-one", "wq_unit_one", PLUGIN_SOURCE.format(name="one"))
    monkeypatch.setenv(PLUGINS_ENV_VAR, "wq-unit-one,wq-unit-typo")

    with pytest.raises(PluginLoadError, match="WORKQUEUE_PLUGINS names it") as caught:
        load_plugins()

    assert caught.value.plugin == "wq-unit-typo"
    assert "wq-unit-one" in caught.value.reason


def test_an_entry_point_that_fails_to_import_names_distribution_and_entry_point(
    fake_dist: FakeDist, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dist(
        "wq-unit-bad",
        "wq_unit_bad",
        "raise ImportError('needs libfoo\\nmore detail')",
        entry_point="bad",
    )
    monkeypatch.setenv(PLUGINS_ENV_VAR, "wq-unit-bad")

    with pytest.raises(PluginLoadError) as caught:
        load_plugins()

    assert caught.value.plugin == "wq-unit-bad (entry point bad)"
    assert caught.value.reason == (
        "entry point bad = wq_unit_bad failed to import: ImportError: needs libfoo"
    )


def test_two_distributions_claiming_one_type_are_both_named(
    fake_dist: FakeDist, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dist("wq-unit-one", "wq_unit_one", PLUGIN_SOURCE.format(name="shared"))
    fake_dist("wq-unit-two", "wq_unit_two", PLUGIN_SOURCE.format(name="shared"))
    monkeypatch.setenv(PLUGINS_ENV_VAR, "wq-unit-one,wq-unit-two")

    with pytest.raises(DuplicateJobTypeError) as caught:
        build_registry()

    assert sorted(caught.value.plugins) == ["wq-unit-one", "wq-unit-two"]


def test_two_distributions_with_one_entry_point_name_are_both_named(
    fake_dist: FakeDist, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dist("wq-unit-one", "wq_unit_one", PLUGIN_SOURCE.format(name="one"), entry_point="same")
    fake_dist("wq-unit-two", "wq_unit_two", PLUGIN_SOURCE.format(name="two"), entry_point="same")
    monkeypatch.setenv(PLUGINS_ENV_VAR, "same")

    with pytest.raises(PluginLoadError, match="plugin name 'same' is already used by") as caught:
        load_plugins()

    assert "wq-unit-one" in str(caught.value)
    assert "wq-unit-two" in str(caught.value)
