"""What one open dashboard costs Redis: commands per second, per view (docs/dashboard.md).

Starts a private ``redis-server`` and a producer on it (no worker, so nothing else talks to
that Redis), fills ``QUEUES`` queues with a few jobs each (one failed job per queue is not
needed: the lists read the indexes whatever their size, up to 50 records), opens the
dashboard in headless Chromium, and for each view resets ``INFO commandstats`` (``CONFIG
RESETSTAT``), waits ``SECONDS`` and reads the commands run.

    python tests/browser/dashboard_cost.py [QUEUES] [SECONDS]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import wq_testkit  # noqa: E402
from dashboard_kit import API_KEY, Stack  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402
from redis_server import RedisServer  # noqa: E402

VIEWS = ["queues", "jobs/queued", "failed", "workers", "limits", "schedules"]


def commands(server: RedisServer) -> dict[str, int]:
    stats = server.client().info("commandstats")
    return {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}


def main() -> None:
    queues = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        wq_testkit.REDIS_URL = server.url  # the Stack's processes use this Redis
        import dashboard_kit

        dashboard_kit.REDIS_URL = server.url
        stack = Stack("wqcost", Path(tmp))
        try:
            stack.start_producer()
            for q in range(queues):
                for n in range(5):
                    stack.enqueue("test_echo", {"n": n}, queue=f"q{q}")
            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path=shutil.which("chromium"), headless=True, args=["--no-sandbox"]
                )
                page = browser.new_page()
                page.goto(stack.url + "/ui")
                page.fill("#key", API_KEY)
                page.click("#login-form button[type=submit]")
                page.wait_for_selector("#queues-view")
                print(f"{queues} queues, {seconds:.0f} s per view")
                print(f"{'view':<12} {'commands/s':>10} {'requests/s':>10}  top commands")
                requests: list[str] = []
                page.on("request", lambda r: requests.append(r.url))
                for view in VIEWS:
                    page.goto(stack.url + "/ui#" + view)
                    page.wait_for_timeout(2000)
                    requests.clear()
                    server.client().config_resetstat()
                    page.wait_for_timeout(seconds * 1000)
                    calls = commands(server)
                    calls.pop("config|resetstat", None)
                    calls.pop("info", None)  # this script's own
                    total = sum(calls.values())
                    top = sorted(calls.items(), key=lambda kv: -kv[1])[:5]
                    print(
                        f"{view:<12} {total / seconds:>10.1f} {len(requests) / seconds:>10.2f}  "
                        + ", ".join(f"{k} {v / seconds:.1f}" for k, v in top)
                    )
                browser.close()
        finally:
            stack.stop()
            server.stop()


if __name__ == "__main__":
    main()
