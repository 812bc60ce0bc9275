"""Network partition of one worker, with a real network namespace and a veth pair.

A worker runs inside a network namespace of its own and reaches the private redis-server over
a veth pair (a link-local /30 made by the test, on that pair only). While it runs a job the
test takes the link down: the worker is cut off but alive, its lease runs out, and a second
worker (outside) recovers the job and completes it. When the link comes back, the cut-off
worker's late ack is refused as stale (its log says "stale lease"), and the job is counted
completed exactly once.

Needs root and iproute2 (``ip netns``); skipped with the reason where they are not available.
Namespaces and links are always deleted at teardown.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from infra_support import RedisFactory, enqueue_http, wait_for
from services import Proc, Services, read_ledger

pytestmark = pytest.mark.slow


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=check)


@dataclass
class NetNs:
    name: str
    host_if: str
    ns_if: str
    host_addr: str
    ns_addr: str

    def link(self, up: bool) -> None:
        """Take the host end of the veth pair down (both ends lose carrier) or up again."""
        _ip("link", "set", self.host_if, "up" if up else "down")


@pytest.fixture
def netns() -> Iterator[NetNs]:
    if os.geteuid() != 0:
        pytest.skip("not run here: network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("not run here: iproute2 ('ip') is not installed")
    tag = secrets.token_hex(3)
    # A random link-local /30, used only on the veth pair made here.
    third, fourth = 100 + secrets.randbelow(150), 4 * secrets.randbelow(63)
    ns = NetNs(
        f"wqns-{tag}",
        f"wqh{tag}",
        f"wqn{tag}",
        f"169.254.{third}.{fourth + 1}",
        f"169.254.{third}.{fourth + 2}",
    )
    made = _ip("netns", "add", ns.name, check=False)
    if made.returncode != 0:
        pytest.skip(f"not run here: 'ip netns add' failed: {made.stderr.strip()}")
    try:
        _ip("link", "add", ns.host_if, "type", "veth", "peer", "name", ns.ns_if)
        _ip("link", "set", ns.ns_if, "netns", ns.name)
        _ip("addr", "add", f"{ns.host_addr}/30", "dev", ns.host_if)
        _ip("link", "set", ns.host_if, "up")
        _ip("-n", ns.name, "addr", "add", f"{ns.ns_addr}/30", "dev", ns.ns_if)
        _ip("-n", ns.name, "link", "set", ns.ns_if, "up")
        _ip("-n", ns.name, "link", "set", "lo", "up")
        yield ns
    finally:
        _ip("netns", "del", ns.name, check=False)
        _ip("link", "del", ns.host_if, check=False)


def _worker_in_namespace(
    services: Services, ns: NetNs, redis_url: str, *, lease: float, tmp_path: Path
) -> Proc:
    """``ip netns exec NS python -m workqueue worker`` (ip execs python: same pid)."""
    index = len(services.procs)
    log_file = tmp_path / f"worker-ns-{index}.log"
    stderr_file = tmp_path / f"worker-ns-{index}.stderr"
    env = {
        **os.environ,
        "WORKQUEUE_PLUGINS": "wq_testplugin_good",
        "WORKQUEUE_KEY_PREFIX": services.prefix,
        "WORKQUEUE_REDIS_URL": redis_url,
        "WORKQUEUE_LOG_FILE": str(log_file),
        "WORKQUEUE_LEASE_SECONDS": str(lease),
        "WORKQUEUE_METRICS_PORT": "0",
    }
    with stderr_file.open("wb") as stderr:
        popen = subprocess.Popen(
            ["ip", "netns", "exec", ns.name, sys.executable, "-m", "workqueue", "worker"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    proc = Proc("worker-ns", popen, log_file, stderr_file)
    services.procs.append(proc)
    return proc


def test_cut_off_worker_is_replaced_and_its_late_ack_is_refused(
    netns: NetNs,
    redis_factory: RedisFactory,
    services: Services,
    key_prefix: str,
    tmp_path: Path,
) -> None:
    # Listening beyond loopback: protected mode wants a password (as production would).
    server = redis_factory(
        extra_args=["--bind", "127.0.0.1", netns.host_addr], password="netns-test-pw"
    )
    inside_url = f"redis://:netns-test-pw@{netns.host_addr}:{server.port}/0"
    outside_url = server.url
    ledger = tmp_path / "ledger.jsonl"

    cut_off = _worker_in_namespace(services, netns, inside_url, lease=2.0, tmp_path=tmp_path)
    wait_for(lambda: "worker started" in cut_off.log(), timeout=30, what="worker in the netns")
    producer = services.producer(outside_url)
    answer = enqueue_http(
        producer.url, {"type": "test_record", "payload": {"ledger": str(ledger), "sleep": 4}}
    )
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    wait_for(lambda: read_ledger(ledger)[job_id] == 1, timeout=30, what="job started inside")

    netns.link(up=False)
    link_restored = False
    try:
        replacement = services.worker(outside_url, lease=2.0)

        def completed() -> bool:
            info = httpx.get(f"{producer.url}/jobs/{job_id}", timeout=5).json()
            return bool(info["status"] == "completed")

        wait_for(completed, timeout=60, what="the job completed by the outside worker")
        assert read_ledger(ledger)[job_id] == 2  # ran once inside, once outside
        assert cut_off.alive(), cut_off.log()[-3000:]
        assert "stale lease" not in cut_off.log()
        netns.link(up=True)
        link_restored = True
        wait_for(
            lambda: "stale lease" in cut_off.log_file.read_text(),
            timeout=60,
            what="the cut-off worker's late ack refused as stale",
        )
    finally:
        if not link_restored:
            with contextlib.suppress(subprocess.CalledProcessError):
                netns.link(up=True)

    info = httpx.get(f"{producer.url}/jobs/{job_id}", timeout=5).json()
    assert info["status"] == "completed" and info["attempts"] == 2, info
    with server.client() as admin:
        stats = admin.hgetall(f"{key_prefix}:{{default}}:stats")
    assert stats.get(b"done") == b"1", stats  # completed exactly once in the counters
    assert b"failed" not in stats
    assert replacement.alive()
    assert read_ledger(ledger)[job_id] == 2
