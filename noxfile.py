"""Automation. ``nox`` (what CI runs) runs the tiers in order: tests (unit, integration and the
plugins' suites, the fast tier), lint, typecheck, schemathesis, faults (tests/faults) and acl
(the fault suite again as a restricted Redis user). ``nox -s tests`` or ``nox -s faults`` runs
one tier; ``nox -s bench`` runs the benchmark and ``nox -s soak`` the long load tests.
The integration essentials run on one Redis and on a private Redis Cluster (3 masters, one
replica each: tests/integration/test_topologies.py, in the ``tests`` tier); ``nox -s cluster``
runs the cluster tier alone.

Every pytest run loads tests/skip_report.py: a test may be skipped only with a reason starting
``not run here:``, each run prints a ``NOT RUN: N tests`` section, and under ``CI=true`` any
other skip fails the run."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "schemathesis", "faults", "acl", "browser"]
nox.options.reuse_existing_virtualenvs = True
# A session whose interpreter is missing fails instead of being skipped.
nox.options.error_on_missing_interpreters = True

PLUGINS = ["plugins/send_email", "plugins/http_webhook", "plugins/examples/workqueue-example-greet"]
TESTS_DIR = Path(__file__).resolve().parent / "tests"

# What the fault suite runs besides Python: command -> Debian package. redis-server for the
# private servers the tests start, faketime (libfaketime) for test_clocks.py, ip (iproute2)
# for test_netns_partition.py. Where one cannot be installed its tests are reported NOT RUN.
FAULT_TOOLS = {
    "redis-server": "redis-server",
    "redis-cli": "redis-tools",  # `redis-cli --cluster create` (the cluster stack)
    "faketime": "faketime",
    "ip": "iproute2",
}
FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


def _missing_fault_packages() -> list[str]:
    missing = [package for command, package in FAULT_TOOLS.items() if shutil.which(command) is None]
    if "faketime" not in missing and not FAKETIME_LIB.exists():
        missing.append("libfaketime")
    return missing


def _install_fault_tools(session: nox.Session) -> None:
    """apt-get install what the fault suite needs and is missing (as root, or with sudo -n)."""
    missing = _missing_fault_packages()
    if not missing:
        return
    if shutil.which("apt-get") is None or (os.geteuid() != 0 and shutil.which("sudo") is None):
        session.warn(f"cannot install {' '.join(missing)}: no apt-get, or not root and no sudo")
        return
    apt = ["apt-get"] if os.geteuid() == 0 else ["sudo", "-n", "apt-get"]
    # Exit 100: the package index is missing or stale; 1: sudo wants a password.
    session.run(*apt, "install", "-y", "-q", *missing, external=True, success_codes=[0, 1, 100])
    if _missing_fault_packages():
        session.run(*apt, "update", "-q", external=True, success_codes=[0, 1, 100])
        missing = _missing_fault_packages()
        session.run(*apt, "install", "-y", "-q", *missing, external=True, success_codes=[0, 1, 100])
    if missing := _missing_fault_packages():
        session.warn(f"still missing: {' '.join(missing)}; the tests needing them are NOT RUN")


def _install_for_faults(session: nox.Session) -> None:
    """The product, the test plugin and the built-in plugins (test_secrets runs send_email
    and http_webhook in real workers)."""
    session.install("-e", ".[test,speed]", "-e", "tests/plugin_packages/wq-testplugin-good")
    for plugin in PLUGINS:
        session.install("-e", f"{plugin}[test]")


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """The fast tier: tests/unit and tests/integration against the Redis at 127.0.0.1:6379,
    then each plugin's own suite (with tests/skip_report.py loaded). Posargs go to the core
    pytest run. Under 8 minutes; the fault suite is the ``faults`` session."""
    session.install("-e", ".[test,speed]")
    for plugin in PLUGINS:
        session.install("-e", f"{plugin}[test]")
    session.run("pytest", "tests/unit", "tests/integration", "--durations=10", *session.posargs)
    for plugin in PLUGINS:
        with session.chdir(plugin):
            session.run("pytest", "-p", "skip_report", "tests", env={"PYTHONPATH": str(TESTS_DIR)})


@nox.session(python="3.11")
def cluster(session: nox.Session) -> None:
    """The cluster tier alone: the integration essentials on a private Redis Cluster (started
    from redis-server, joined by ``redis-cli --cluster create``) and the cluster fault tests."""
    _install_fault_tools(session)
    session.install("-e", ".[test,speed]", "-e", "tests/plugin_packages/wq-testplugin-good")
    cluster_faults = sorted(str(p) for p in (TESTS_DIR / "faults").glob("test_cluster*.py"))
    session.run(
        "pytest", "tests/integration/test_topologies.py", *cluster_faults, "-k", "cluster",
        *session.posargs,
    )  # fmt: skip


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole tree."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the core and the built-in plugins."""
    session.install("mypy", "-e", ".[test]")
    for plugin in PLUGINS:
        session.install("-e", plugin)
    session.run("mypy")
    session.run("mypy", "--strict", "plugins/send_email/workqueue_send_email")
    session.run("mypy", "--strict", "plugins/http_webhook/workqueue_http_webhook")


@nox.session(python="3.11")
def schemathesis(session: nox.Session) -> None:
    """Fuzz a live producer's OpenAPI document with ``schemathesis run --checks all``.

    tests/schemathesis_run.py starts the producer (test plugin, free port, unique key prefix),
    waits for /health, runs schemathesis (100 examples per operation unless posargs say
    otherwise), stops the producer and deletes the prefix's keys; any failure fails the session.
    """
    session.install("-e", ".", "-e", "tests/plugin_packages/wq-testplugin-good", "schemathesis")
    session.run("python", "tests/schemathesis_run.py", *session.posargs)


@nox.session(python="3.11")
def faults(session: nox.Session) -> None:
    """The fault suite: ``pytest tests/faults -m "not soak"`` (docs/reliability.md).

    Installs what those tests need besides Python when missing (redis-server, faketime,
    iproute2; apt-get as root or through ``sudo -n``). Tests that still cannot run (no root
    for network namespaces, say) are listed under NOT RUN with their reason.
    """
    _install_fault_tools(session)
    _install_for_faults(session)
    session.run("pytest", "tests/faults", "-m", "not soak", "--durations=10", *session.posargs)


@nox.session(python="3.11")
def acl(session: nox.Session) -> None:
    """The fault suite as a restricted Redis user (T30).

    tests/acl_run.py starts a private redis-server whose default user is off and whose test
    user has ``~wqtest-* &* +@all -@dangerous -@admin`` (no KEYS, FLUSH*, CONFIG, DEBUG,
    INFO...), runs ``pytest tests/faults -m "not soak"`` as that user and fails if any
    command was refused. Takes about as long as the ``faults`` session.
    """
    _install_fault_tools(session)
    _install_for_faults(session)
    session.run("python", "tests/acl_run.py", *session.posargs)


@nox.session(python="3.11")
def browser(session: nox.Session) -> None:
    """The dashboard (/ui) in a real headless Chromium: Debian's ``chromium`` (apt-get as root
    when missing) driven by Playwright's Python API; ``playwright install`` is never run."""
    if shutil.which("chromium") is None and shutil.which("apt-get") and os.geteuid() == 0:
        install = ["apt-get", "install", "-y", "-q", "chromium"]
        session.run(*install, external=True, success_codes=[0, 100])
        if shutil.which("chromium") is None:  # a stale package index
            session.run("apt-get", "update", "-q", external=True, success_codes=[0, 100])
            session.run(*install, external=True, success_codes=[0, 100])
    session.install("-e", ".[test]", "-e", "tests/plugin_packages/wq-testplugin-good", "playwright")
    session.run("pytest", "tests/browser", *session.posargs)


@nox.session(python="3.11")
def soak(session: nox.Session) -> None:
    """Long load tests (a million jobs; memory must come back): ``pytest -m soak tests/faults``.

    Not in the default sessions; takes tens of minutes. ``WQ_SOAK_JOBS`` shrinks the run.
    """
    session.install("-e", ".[test,speed]", "-e", "tests/plugin_packages/wq-testplugin-good")
    session.run("pytest", "-m", "soak", "-s", "tests/faults", *session.posargs)


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """The benchmark of benchmarks/harness.py: WorkQueue, the raw-Redis floor and the peers.

    Installs the product from this checkout (``.[speed]``) and the bench plugin here, the
    pinned peers of benchmarks/requirements-peers.txt in their own virtualenv
    (.nox/bench-peers, rebuilt when that file changes) and ``wrk`` (Debian package) if it is
    missing, then runs the harness. Posargs go to the harness: ``--quick`` (smoke test),
    ``--only wq,floor,dramatiq``, ``--runs 5``, ``--n 50000``, ``--no-write``.
    """
    session.install("-e", ".[speed]", "-e", "benchmarks/wq_bench_plugin")
    if shutil.which("wrk") is None:
        apt = ["apt-get"] if os.geteuid() == 0 else ["sudo", "apt-get"]
        session.run(*apt, "install", "-y", "-q", "wrk", external=True, success_codes=[0, 100])
        if shutil.which("wrk") is None:
            session.run(*apt, "update", "-q", external=True)
            session.run(*apt, "install", "-y", "-q", "wrk", external=True)
    requirements = Path("benchmarks/requirements-peers.txt")
    peers = Path(".nox/bench-peers")
    stamp = peers / "requirements.sha256"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text().strip() != digest:
        shutil.rmtree(peers, ignore_errors=True)
        session.run("python", "-m", "venv", str(peers))
        pip = str(peers / "bin" / "pip")
        session.run(pip, "install", "-q", "-r", str(requirements), external=True)
        stamp.write_text(digest + "\n")
    peers_python = str((peers / "bin" / "python").absolute())
    session.run("python", "benchmarks/harness.py", "--peers-python", peers_python, *session.posargs)
