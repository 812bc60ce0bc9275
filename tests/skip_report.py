"""pytest plugin: no test is skipped silently.

A test may be left out only with a reason that starts with ``not run here:`` (the allowed
category), for example::

    pytest.skip("not run here: network namespaces need root")
    @pytest.mark.skipif(cond, reason="not run here: libfaketime is not installed")
    pytest.importorskip("mod", reason="not run here: mod is not installed")

Every test (or whole module) that did not run is listed, with its reason, in a ``NOT RUN: N
tests`` section of the terminal summary, printed on every run (``NOT RUN: 0 tests`` included),
before pytest's own short summary and closing line.

Any other skip (a bare ``pytest.skip``, an ``importorskip`` or ``skipif`` without the
category) is an *unexpected skip*. When ``CI`` is set to a true value (``1``, ``true``,
``yes``) or ``--strict-skips`` is given, it fails: a test's report becomes a failure (or an
error, when the skip came from a fixture or a mark) and a module's becomes a collection error.
Elsewhere it is listed in the NOT RUN section, marked as one that would fail under CI.

When ``WQ_NOT_RUN_LOG`` names a file, each run also appends to it one line per test not run,
``session<TAB>nodeid<TAB>reason<TAB>expected|unexpected`` (the nox session, or ``-``), and
a ``nothing-collected`` line when pytest collected no tests (exit 5, which fails the session):
.ci/run prints them all at its end.

Loaded by tests/conftest.py (``pytest_plugins``); the plugins' suites load it with
``-p skip_report`` and ``tests/`` on ``PYTHONPATH`` (see noxfile.py). xfail is left alone, and
tests deselected with ``-m``/``-k`` are counted by pytest's own closing line.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from dataclasses import dataclass

import pytest

NOT_RUN_HERE = "not run here:"
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class NotRun:
    nodeid: str
    reason: str
    expected: bool  # False: skipped without the "not run here:" category


_RECORDS = pytest.StashKey[list[NotRun]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("skip report").addoption(
        "--strict-skips",
        action="store_true",
        default=False,
        help=f"fail any skip whose reason does not start with {NOT_RUN_HERE!r} "
        "(on by default when CI is true)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_RECORDS] = []


def _strict(config: pytest.Config) -> bool:
    ci = os.environ.get("CI", "").strip().lower() in _TRUE
    return ci or bool(config.getoption("strict_skips", default=False))


def _reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    message = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else longrepr
    return str(message).removeprefix("Skipped: ").strip()


def _check(config: pytest.Config, report: pytest.TestReport | pytest.CollectReport) -> None:
    """Record a skipped report; turn it into a failure when unexpected under CI."""
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = _reason(report)
    expected = reason.lower().startswith(NOT_RUN_HERE)
    nodeid = report.nodeid or "<session>"
    config.stash[_RECORDS].append(NotRun(nodeid, reason, expected))
    if expected or not _strict(config):
        return
    report.outcome = "failed"
    report.longrepr = (
        f"unexpected skip (CI=true or --strict-skips): {reason!r}\n"
        f"A test may be left out only with a reason starting {NOT_RUN_HERE!r}: install what "
        "it needs, or give the skip that reason so it is reported as not run."
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    _check(item.config, report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    _check(collector.config, report)
    return report


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    records = config.stash.get(_RECORDS, [])
    strict = _strict(config)
    unexpected = [r for r in records if not r.expected]
    title = f"NOT RUN: {len(records)} test{'' if len(records) == 1 else 's'}"
    if unexpected:
        title += f" ({len(unexpected)} without a '{NOT_RUN_HERE}' reason)"
    terminalreporter.write_sep("=", title, red=bool(unexpected), yellow=bool(records))
    for record in records:
        line = f"{record.nodeid}: {record.reason}"
        if not record.expected:
            line += "  [FAILED: unexpected skip]" if strict else "  [unexpected: fails under CI]"
        terminalreporter.write_line(line)
    nothing = exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED
    log = os.environ.get("WQ_NOT_RUN_LOG")
    if log and (records or nothing):
        session = os.environ.get("NOX_CURRENT_SESSION", "-")
        with open(log, "a", encoding="utf-8") as out:
            for r in records:
                kind = "expected" if r.expected else "unexpected"
                out.write(f"{session}\t{r.nodeid}\t{' '.join(r.reason.split())}\t{kind}\n")
            if nothing:
                args = " ".join(config.invocation_params.args)
                out.write(f"{session}\tpytest {args}\tno tests collected\tnothing-collected\n")
    if nothing:
        terminalreporter.write_line(
            "NOT RUN: pytest collected no tests (exit 5): check the paths and the -m/-k "
            "selection; nothing ran",
            red=True,
        )
