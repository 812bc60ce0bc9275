"""``workqueue up`` as a terminal runs it: Ctrl-C to the whole process group, busy ports."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from redis_server import RedisServer, free_port
from test_up import alive, children_of, up_env, wait_ready

pytestmark = pytest.mark.slow


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


async def _job_status(url: str, job_id: str) -> str:
    from workqueue.client import Client
    from workqueue.registry import Registry

    async with Client.from_url(url, registry=Registry.from_job_types([])) as client:
        return (await client.get_job(job_id)).status


def test_ctrl_c_to_the_process_group_lets_the_running_job_finish_then_stops_redis_last(
    installed_test_plugin: None, tmp_path: Path
) -> None:
    env, port, _ = up_env()
    ledger = tmp_path / "ledger.jsonl"
    out = tmp_path / "up.out"
    with out.open("wb") as sink:
        # A terminal runs `up` as the leader of a foreground process group; Ctrl-C sends
        # SIGINT to every process of that group.
        up = subprocess.Popen(
            [sys.executable, "-m", "workqueue", "up"],
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_ready(up, port, out)
        kids = {pid: _cmdline(pid) for pid in children_of(up.pid)}
        [redis_pid] = [pid for pid, cmd in kids.items() if "redis-server" in cmd]
        assert len(kids) == 3, kids
        task = {"type": "test_record", "payload": {"ledger": str(ledger), "sleep": 3}}
        answer = httpx.post(f"http://127.0.0.1:{port}/enqueue", json=task, timeout=5)
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["id"]
        deadline = time.monotonic() + 20
        while not (ledger.exists() and ledger.read_text()):
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.05)

        os.killpg(up.pid, signal.SIGINT)  # Ctrl-C
        sent = time.monotonic()
        gone: dict[int, float] = {}
        while up.poll() is None or len(gone) < len(kids):
            for pid in kids:
                if pid not in gone and not alive(pid):
                    gone[pid] = time.monotonic()
            assert time.monotonic() - sent < 30, f"up did not stop: {out.read_text()}"
            time.sleep(0.01)
        assert up.returncode == 0, out.read_text()
        others = [gone[pid] for pid in kids if pid != redis_pid]
        assert gone[redis_pid] >= max(others), "redis-server stopped before the others"
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()

    # The job ran once, and its outcome reached Redis before Redis stopped.
    runs = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert [run["job_id"] for run in runs] == [job_id]
    server = RedisServer(tmp_path / ".workqueue")  # the embedded Redis's data, reloaded
    server.start()
    try:
        assert asyncio.run(_job_status(server.url, job_id)) == "completed"
    finally:
        server.stop()


@pytest.mark.parametrize("which", ["producer", "metrics"])
def test_up_names_a_port_in_use_before_printing_its_banner(
    which: str, installed_test_plugin: None, tmp_path: Path
) -> None:
    port, metrics_port = free_port(), free_port()
    busy = port if which == "producer" else metrics_port
    env = {
        **os.environ,
        "WORKQUEUE_PLUGINS": "wq_testplugin_good",
        "WORKQUEUE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "WORKQUEUE_PORT": str(port),
        "WORKQUEUE_METRICS_PORT": str(metrics_port),
    }
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", busy))
        holder.listen()
        done = subprocess.run(
            [sys.executable, "-m", "workqueue", "up"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert f"port {busy}" in done.stderr and "in use" in done.stderr
    assert "producer  http" not in done.stdout and "Ctrl-C" not in done.stdout
    assert not (tmp_path / ".workqueue").exists()  # nothing was started
