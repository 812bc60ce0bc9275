"""Real entry-point discovery: plugin distributions built by pip, loaded in a fresh interpreter.

``wq-testplugin-good`` is installed into the test environment (the ``installed_test_plugin``
fixture). ``wq-testplugin-dup`` and ``wq-testplugin-broken`` would break every other test there,
so they are pip-installed into a temporary ``--target`` folder instead and only the subprocesses
that need them get it on ``PYTHONPATH``: the shared environment never holds them, not even for
the duration of a test (other test runs may use it at the same time).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import inspect
import json
import os
import signal
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from workqueue import PermanentError
from workqueue.plugins import PLUGINS_ENV_VAR, reset_plugins
from workqueue.registry import Registry, build_registry

PLUGIN_PACKAGES = Path(__file__).parents[1] / "plugin_packages"
GOOD_TYPES = [
    "test_attempt_sleep",
    "test_block_loop",
    "test_blocking",
    "test_echo",
    "test_fail",
    "test_hang",
    "test_isolated_add",
    "test_isolated_fail",
    "test_kill_self",
    "test_limited_conc",
    "test_limited_open",
    "test_limited_rate",
    "test_permanent",
    "test_poll_cancel",
    "test_progress_loop",
    "test_record",
    "test_sleep",
    "test_spin",
    "test_sync_add",
]

# Builds the registry in a fresh interpreter and prints what it found, or the loading error.
DISCOVER = """
import dataclasses, json, sys
from workqueue.errors import PluginError
from workqueue.registry import build_registry
try:
    registry = build_registry()
except PluginError as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
    sys.exit(3)
print(json.dumps({
    "names": registry.names(),
    "plugins": [dataclasses.asdict(info) for info in registry.plugins],
    "owner": {name: registry.plugin_for(name) for name in registry.names()},
}))
"""


@pytest.fixture(scope="module")
def side_plugins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding pip installs of wq-testplugin-dup and wq-testplugin-broken."""
    target = tmp_path_factory.mktemp("side-plugins")
    for name in ("wq-testplugin-dup", "wq-testplugin-broken"):
        command = [sys.executable, "-m", "pip", "install", "--no-deps", "-q"]
        command += ["--disable-pip-version-check", "--target", str(target)]
        if importlib.util.find_spec("hatchling") is not None:
            command.append("--no-build-isolation")
        done = subprocess.run(
            [*command, str(PLUGIN_PACKAGES / name)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, f"pip could not install {name}:\n{done.stderr}"
    return target


def discover(
    tmp_path: Path, selection: str, extra_path: Path | None = None
) -> tuple[int, dict[str, Any]]:
    """Run :data:`DISCOVER` with ``WORKQUEUE_PLUGINS=selection``; return exit code and output."""
    env = dict(os.environ)
    env[PLUGINS_ENV_VAR] = selection
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(extra_path), env.get("PYTHONPATH")) if p
        )
    done = subprocess.run(
        [sys.executable, "-c", DISCOVER],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


@pytest.fixture
def good_registry(installed_test_plugin: None) -> Iterator[Registry]:
    reset_plugins()
    yield build_registry(only=["wq-testplugin-good"])
    reset_plugins()


def test_an_installed_plugin_is_discovered_with_its_version(
    installed_test_plugin: None, tmp_path: Path
) -> None:
    code, found = discover(tmp_path, "wq-testplugin-good")

    assert code == 0
    assert found["names"] == GOOD_TYPES
    assert found["plugins"] == [
        {
            "name": "wq_testplugin_good",
            "distribution": "wq-testplugin-good",
            "version": "0.2.0",
            "job_types": GOOD_TYPES,
            "hooks": ["workqueue_job_types"],
        }
    ]
    assert set(found["owner"].values()) == {"wq_testplugin_good"}


def test_two_installed_plugins_claiming_one_type_stop_loading_naming_both(
    installed_test_plugin: None, side_plugins: Path, tmp_path: Path
) -> None:
    code, found = discover(tmp_path, "wq-testplugin-good,wq-testplugin-dup", side_plugins)

    assert code == 3
    assert found["error"] == "DuplicateJobTypeError"
    assert "'test_echo'" in found["message"]
    assert "wq-testplugin-good" in found["message"]
    assert "wq-testplugin-dup" in found["message"]


def test_an_installed_plugin_that_fails_to_import_stops_loading_naming_it(
    side_plugins: Path, tmp_path: Path
) -> None:
    code, found = discover(tmp_path, "wq-testplugin-broken", side_plugins)

    assert code == 3
    assert found["error"] == "PluginLoadError"
    assert found["message"] == (
        "plugin 'wq-testplugin-broken' failed to load: entry point wq_testplugin_broken = "
        "wq_testplugin_broken failed to import: ImportError: wq_testplugin_broken needs a "
        "module that is not installed"
    )


def test_workqueue_plugins_keeps_broken_and_duplicate_plugins_out(
    installed_test_plugin: None, side_plugins: Path, tmp_path: Path
) -> None:
    code, found = discover(tmp_path, "wq_testplugin_good", side_plugins)

    assert code == 0
    assert found["names"] == GOOD_TYPES


def test_the_shared_environment_never_holds_the_failing_plugins() -> None:
    for name in ("wq-testplugin-dup", "wq-testplugin-broken"):
        with pytest.raises(importlib.metadata.PackageNotFoundError):
            importlib.metadata.distribution(name)


# ---------------------------------------------------------------------------------------------
# The good plugin's job types do what the worker tests rely on
# ---------------------------------------------------------------------------------------------


def _ctx(job_id: str = "job-1", attempt: int = 1) -> Any:
    return types.SimpleNamespace(job_id=job_id, attempt=attempt)


def test_good_plugin_handlers_behave_as_documented(good_registry: Registry, tmp_path: Path) -> None:
    def handler(name: str) -> Any:
        job_type = good_registry.get(name)
        assert job_type is not None
        return job_type.handler

    payload = {"x": [1, 2]}
    assert asyncio.run(handler("test_echo")(payload, _ctx())) == payload

    typed = good_registry.validate_payload("test_sync_add", {"a": 2, "b": 3})
    assert handler("test_sync_add")(typed, _ctx()) == 5
    assert not inspect.iscoroutinefunction(handler("test_sync_add"))

    with pytest.raises(ValueError, match="always fails"):
        asyncio.run(handler("test_fail")({}, _ctx()))
    with pytest.raises(PermanentError):
        asyncio.run(handler("test_permanent")({}, _ctx()))
    assert asyncio.run(handler("test_sleep")({"seconds": 0}, _ctx())) is None
    assert not inspect.iscoroutinefunction(handler("test_blocking"))
    assert handler("test_blocking")({"seconds": 0}, _ctx()) is None

    ledger = tmp_path / "ledger.jsonl"
    for attempt in (1, 2):
        result = asyncio.run(handler("test_record")({"ledger": str(ledger)}, _ctx("j", attempt)))
        assert result == "ok"
    lines = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert lines == [
        {"job_id": "j", "attempt": 1, "pid": os.getpid()},
        {"job_id": "j", "attempt": 2, "pid": os.getpid()},
    ]


def test_good_plugin_kill_self_kills_its_process(
    installed_test_plugin: None, tmp_path: Path
) -> None:
    script = (
        "import asyncio, types\n"
        "from workqueue.registry import build_registry\n"
        "handler = build_registry(only=['wq-testplugin-good']).get('test_kill_self').handler\n"
        "asyncio.run(handler({}, types.SimpleNamespace(job_id='j', attempt=1)))\n"
        "print('survived')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == -signal.SIGKILL, done.stderr
    assert "survived" not in done.stdout


@pytest.mark.parametrize(
    ("selection", "named"),
    [
        ("wq_testplugin_good,wq_testplugin_dup", ["wq-testplugin-good", "wq-testplugin-dup"]),
        ("wq_testplugin_good,wq_testplugin_broken", ["wq-testplugin-broken"]),
    ],
)
def test_the_worker_refuses_to_start_with_a_bad_plugin_set(
    installed_test_plugin: None,
    side_plugins: Path,
    tmp_path: Path,
    selection: str,
    named: list[str],
) -> None:
    env = dict(os.environ)
    env[PLUGINS_ENV_VAR] = selection
    env["PYTHONPATH"] = str(side_plugins)
    env["WORKQUEUE_LOG_FILE"] = str(tmp_path / "log.txt")
    done = subprocess.run(
        [sys.executable, "-m", "workqueue", "worker"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    assert "Traceback" not in done.stderr
    for plugin in named:
        assert plugin in last
