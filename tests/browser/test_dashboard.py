"""The dashboard at /ui in a real headless Chromium, against a real producer, worker and Redis.

Log in with the key (nothing shown before), see the queues and a failed job, retry it, show a
payload on request, cancel a running job, pause and resume a queue (once the producer has the
pause routes), watch a new queue appear without a reload; no console error, and every request
the page makes goes to the producer's own origin. With ``WQ_SCREENSHOT_DIR`` set, each page is
saved there as a PNG (docs/img/ holds the committed ones).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from dashboard_kit import API_KEY, PageLog, Stack

EXPECT_MS = 15_000
SHOTS = os.environ.get("WQ_SCREENSHOT_DIR")


def shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"dashboard-{name}.png"), full_page=True)


def log_in(page: Any, stack: Stack) -> None:
    from playwright.sync_api import expect

    page.goto(stack.url + "/ui")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#key", API_KEY)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#queues-view")).to_be_visible(timeout=EXPECT_MS)


def assert_clean(log: PageLog, stack: Stack) -> None:
    assert log.errors == []
    assert log.requests, "the page made no request"
    foreign = [url for url in log.requests if not url.startswith(stack.url + "/")]
    assert foreign == [], "requests to another origin"


def test_nothing_without_the_key(stack: Stack, page_and_log: tuple[Any, PageLog]) -> None:
    from playwright.sync_api import expect

    page, log = page_and_log
    stack.enqueue("test_echo", {"x": 1}, queue="hidden-queue")
    page.goto(stack.url + "/ui")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#nav")).to_be_hidden()
    page.wait_for_timeout(2500)  # a refresh would have happened by now
    assert "hidden-queue" not in page.content()
    assert page.locator("#view").inner_text() == ""
    shot(page, "login")
    # the page's own fetch of a data route is refused without the key
    status = page.evaluate("fetch('/ui/api/overview').then(r => r.status)")
    assert status == 401
    status = page.evaluate(
        "fetch('/jobs/x/retry', {method: 'POST', headers: {'Content-Type': 'application/json'},"
        " body: '{}'}).then(r => r.status)"
    )
    assert status == 401
    # a wrong key is refused, and still nothing is shown
    page.fill("#key", "not-the-key")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error")).to_have_text("wrong key")
    assert "hidden-queue" not in page.content()
    # CSP on the page
    answer = page.request.get(stack.url + "/ui")
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    log.errors = [e for e in log.errors if "401" not in e]  # the two refusals asked above
    assert_clean(log, stack)


def test_operate_from_the_dashboard(
    stack: Stack, page_and_log: tuple[Any, PageLog], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page, log = page_and_log
    failed_id = stack.enqueue("test_permanent", {"secret": "s3cr3t-value"})
    stack.start_worker("dash")
    stack.wait_status(failed_id, "failed")
    stack.enqueue("test_echo", {"n": 1}, queue="other")

    log_in(page, stack)
    queues = page.locator("#queues-view")
    expect(queues.locator("td", has_text=re.compile(r"^dash$"))).to_be_visible()
    expect(queues.locator("td", has_text=re.compile(r"^other$"))).to_be_visible()
    for wave in range(4):  # finished jobs over a few seconds: the chart draws their rate
        for n in range(10 * (wave + 1)):
            stack.enqueue("test_echo", {"n": n})
        page.wait_for_timeout(1200)
    expect(queues.locator("svg.chart polyline.rate")).to_have_count(1)
    expect(queues.locator("svg.chart polyline.wait")).to_have_count(1)
    shot(page, "queues")

    # failed jobs: the job is listed, with its error; no payload value anywhere
    page.click("nav a[data-view=failed]")
    row = page.locator("#failed-view tr", has_text=failed_id)
    expect(row).to_be_visible(timeout=EXPECT_MS)
    expect(row).to_contain_text("PermanentError")
    assert "s3cr3t-value" not in page.content()
    shot(page, "failed")

    # the job's detail: history; the payload only on request
    row.locator("a.job-link").click()
    detail = page.locator("#job-view")
    expect(detail).to_contain_text("test_permanent", timeout=EXPECT_MS)
    expect(detail.locator("table tbody tr")).to_have_count(1)
    assert "s3cr3t-value" not in page.content()
    page.click("#show-payload")
    expect(page.locator("#payload")).to_contain_text("s3cr3t-value", timeout=EXPECT_MS)

    # retry it: the worker runs it again (a second attempt, failed again: it never succeeds)
    page.click("#job-view button[data-action=retry]")
    expect(detail.locator("table tbody tr")).to_have_count(2, timeout=EXPECT_MS)
    assert stack.wait_status(failed_id, "failed")["attempts"] == 2
    expect(page.locator("#payload")).to_be_visible()  # kept while on this job
    shot(page, "job")

    # cancel a running job from the list of active jobs; it ends cancelled
    ledger = tmp_path / "ledger.jsonl"
    running_id = stack.enqueue("test_poll_cancel", {"seconds": 60, "ledger": str(ledger)})
    stack.wait_status(running_id, "active")
    page.goto(stack.url + "/ui#jobs/active")
    active_row = page.locator("#jobs-view tr", has_text=running_id)
    expect(active_row).to_be_visible(timeout=EXPECT_MS)
    page.click("nav a[data-view=workers]")
    expect(page.locator("#workers-view a.job-link", has_text=running_id)).to_be_visible(
        timeout=EXPECT_MS
    )
    shot(page, "workers")
    page.click("nav a[data-view=jobs]")
    page.select_option("#status-select", "active")
    page.locator("#jobs-view tr", has_text=running_id).locator("button[data-action=cancel]").click()
    stack.wait_status(running_id, "cancelled")
    page.goto(stack.url + f"/ui#job/{running_id}")
    expect(page.locator("#job-view .badge.cancelled").first).to_be_visible(timeout=EXPECT_MS)
    expect(page.locator("#progress")).not_to_have_text("-")

    # a new queue appears without a reload
    page.click("nav a[data-view=queues]")
    expect(queues).to_be_visible()
    page.evaluate("window.__noReload = 1")
    stack.enqueue("test_echo", {"n": 2}, queue="brand-new")
    expect(queues.locator("td", has_text=re.compile(r"^brand-new$"))).to_be_visible(timeout=4000)
    assert page.evaluate("window.__noReload") == 1

    # schedules and limits pages draw (from GET /schedules and GET /limits)
    page.click("nav a[data-view=limits]")
    expect(page.locator("#limits-view")).to_contain_text("test_limited_conc", timeout=EXPECT_MS)
    shot(page, "limits")
    stack.put_schedule(
        "nightly-echo",
        {
            "cron": "0 3 * * *",
            "type": "test_echo",
            "payload": {"secret": "s3cr3t-value"},
            "queue": "dash",
        },
    )
    page.click("nav a[data-view=schedules]")
    schedule = page.locator("#schedules-view tr", has_text="nightly-echo")
    expect(schedule).to_contain_text("0 3 * * *", timeout=EXPECT_MS)
    assert "s3cr3t-value" not in page.content()
    shot(page, "schedules")

    # forgetting the key hides everything again
    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()
    assert "brand-new" not in page.content()
    assert_clean(log, stack)


def test_pause_and_resume(stack: Stack, page_and_log: tuple[Any, PageLog]) -> None:
    from playwright.sync_api import expect

    page, log = page_and_log
    stack.enqueue("test_echo", {"n": 0}, queue="dash")
    stack.start_worker("dash")
    log_in(page, stack)
    row = page.locator("#queues-view tr", has_text="dash")
    row.locator("button[data-action=pause]").click()
    expect(row.locator(".badge.paused")).to_be_visible(timeout=EXPECT_MS)
    held = stack.enqueue("test_echo", {"n": 1}, queue="dash")
    page.wait_for_timeout(2000)
    assert stack.job(held)["status"] == "queued"  # a paused queue starts nothing
    shot(page, "paused")
    row.locator("button[data-action=resume]").click()
    expect(row.locator(".badge.paused")).to_have_count(0, timeout=EXPECT_MS)
    stack.wait_status(held, "completed")
    assert_clean(log, stack)
