"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import subprocess
import sys
import tomllib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis
from wq_testkit import REDIS_URL, TEST_PLUGIN, WorkerProcs

if TYPE_CHECKING:
    from workqueue.broker import Broker
    from workqueue.client import Client

# Every skip needs a "not run here: <reason>"; the run lists them (tests/skip_report.py).
pytest_plugins = ["skip_report"]

# ---------------------------------------------------------------------------------------------
# The test plugin distributions (tests/plugin_packages/)
# ---------------------------------------------------------------------------------------------

PLUGIN_PACKAGES = Path(__file__).parent / "plugin_packages"
GOOD_PLUGIN = PLUGIN_PACKAGES / "wq-testplugin-good"


def _pip_install_command(source: Path) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--disable-pip-version-check",
        "-q",
    ]
    if importlib.util.find_spec("hatchling") is not None:
        command.append("--no-build-isolation")
    return [*command, str(source)]


def _installed_copy_is_current(source: Path) -> bool:
    """True when the distribution built from ``source`` is installed at the same version and
    with the same module files (so an edited test plugin is reinstalled)."""
    project = tomllib.loads((source / "pyproject.toml").read_text())["project"]
    try:
        dist = importlib.metadata.distribution(project["name"])
    except importlib.metadata.PackageNotFoundError:
        return False
    if dist.version != project["version"]:
        return False
    installed = {
        str(file): Path(str(dist.locate_file(file)))
        for file in dist.files or ()
        if file.suffix == ".py"
    }
    sources = {
        path.relative_to(source).as_posix(): path
        for path in source.rglob("*.py")
        if "__pycache__" not in path.parts
    }
    return installed.keys() == sources.keys() and all(
        installed[name].is_file() and installed[name].read_bytes() == path.read_bytes()
        for name, path in sources.items()
    )


@pytest.fixture(scope="session")
def installed_test_plugin() -> None:
    """Install ``wq-testplugin-good`` into this interpreter's environment (once per session).

    Its job types (``test_echo``, ``test_sync_add``, ``test_fail``, ``test_permanent``,
    ``test_sleep``, ``test_record``, ``test_kill_self``, ``test_blocking``) are then found through
    the ``workqueue`` entry-point group by this process and by every subprocess it starts. The
    install is skipped when the same version with the same files is already there.
    """
    if _installed_copy_is_current(GOOD_PLUGIN):
        return
    done = subprocess.run(
        _pip_install_command(GOOD_PLUGIN),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"pip could not install {GOOD_PLUGIN.name}:\n{done.stdout}\n{done.stderr}")
    importlib.invalidate_caches()


# ---------------------------------------------------------------------------------------------
# Redis and worker processes
# ---------------------------------------------------------------------------------------------

# Test modules import these from wq_testkit: ``from conftest import`` is ambiguous once
# tests/faults/conftest.py is loaded too (pytest names every conftest module "conftest").


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
def key_prefix() -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards (never FLUSHALL)."""
    prefix = f"wqtest-{uuid.uuid4().hex[:10]}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
async def broker(key_prefix: str) -> AsyncIterator[Broker]:
    from workqueue.broker import Broker, BrokerConfig
    from workqueue.broker.connection import create_redis

    b = Broker(create_redis(REDIS_URL), BrokerConfig(prefix=key_prefix))
    yield b
    await b.redis.aclose()


@pytest.fixture
def client(installed_test_plugin: None, broker: Broker) -> Client:
    from workqueue.client import Client
    from workqueue.registry import build_registry

    return Client(broker, build_registry(only=[TEST_PLUGIN]))


@pytest.fixture
def workers(installed_test_plugin: None, key_prefix: str, tmp_path: Path) -> Iterator[WorkerProcs]:
    procs = WorkerProcs(key_prefix, tmp_path)
    yield procs
    procs.stop_all()
