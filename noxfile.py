"""Automation: ``nox`` runs tests, lint, typecheck, schemathesis and acl; ``nox -s bench`` runs the
benchmark and ``nox -s soak`` the long load tests."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "schemathesis", "acl"]
nox.options.reuse_existing_virtualenvs = True

PLUGINS = ["plugins/send_email", "plugins/http_webhook", "plugins/examples/workqueue-example-greet"]


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """The core suite against the real Redis, then each plugin's own suite."""
    session.install("-e", ".[test,speed]")
    for plugin in PLUGINS:
        session.install("-e", f"{plugin}[test]")
    session.run("pytest", "tests", *session.posargs)
    for plugin in PLUGINS:
        with session.chdir(plugin):
            session.run("pytest", "tests")


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
def acl(session: nox.Session) -> None:
    """The integration and fault suites as a restricted Redis user (T30).

    tests/acl_run.py starts a private redis-server whose default user is off and whose test
    user has ``~wqtest-* &* +@all -@dangerous -@admin`` (no KEYS, FLUSH*, CONFIG, DEBUG,
    INFO...), runs ``pytest tests/integration tests/faults -m "not soak"`` as that user and
    fails if any command was refused. Takes about as long as those suites (~5 min here).
    """
    session.install("-e", ".[test,speed]", "-e", "tests/plugin_packages/wq-testplugin-good")
    for plugin in PLUGINS:
        session.install("-e", f"{plugin}[test]")
    session.run("python", "tests/acl_run.py", *session.posargs)


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
