"""``workqueue up``: embedded Redis, producer and worker; the seed's request end to end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from redis_server import free_port

pytestmark = pytest.mark.slow

SEED_TASK = {
    "type": "test_echo",
    "Retries": 3,
    "payload": {"to": "worldisweird2020@gmail.com", "subject": "testing producer"},
}


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def up_env() -> tuple[dict[str, str], int, int]:
    """The environment of a ``workqueue up`` on free ports with its own embedded Redis
    (nothing answers at the Redis URL), and its producer and metrics ports."""
    redis_port, port, metrics_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "WORKQUEUE_PLUGINS": "wq_testplugin_good",
        "WORKQUEUE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "WORKQUEUE_PORT": str(port),
        "WORKQUEUE_METRICS_PORT": str(metrics_port),
    }
    return env, port, metrics_port


def wait_ready(up: subprocess.Popen[bytes], port: int, out: Path) -> None:
    """Wait until the producer ``up`` started answers /ready (``out``: up's output)."""
    deadline = time.monotonic() + 30
    with httpx.Client(timeout=5) as http:
        while True:
            try:
                if http.get(f"http://127.0.0.1:{port}/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert up.poll() is None, out.read_text()
            assert time.monotonic() < deadline, "producer never became ready"
            time.sleep(0.1)


def test_up_runs_everything_and_stops_cleanly(installed_test_plugin: None, tmp_path: Path) -> None:
    env, port, metrics_port = up_env()
    with (tmp_path / "up.out").open("wb") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "workqueue", "up"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(up, port, tmp_path / "up.out")
        deadline = time.monotonic() + 30
        with httpx.Client(timeout=5) as http:
            answer = http.post(f"http://127.0.0.1:{port}/api/enqueue", json=SEED_TASK)
            assert answer.status_code == 202, answer.text
            job_id = answer.json()["id"]
            while True:
                try:
                    metrics = http.get(f"http://127.0.0.1:{metrics_port}/api/metrics").json()
                    if metrics["jobs_done"] == 1:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the job was never counted"
                time.sleep(0.1)
            job = http.get(f"http://127.0.0.1:{port}/api/jobs/{job_id}").json()
            assert job["status"] == "completed" and job["retries"] == 3
        assert (tmp_path / ".workqueue" / "appendonlydir").exists() or any(
            (tmp_path / ".workqueue").glob("*.aof*")
        )
        kids = children_of(up.pid)
        assert len(kids) == 3  # redis-server, producer, worker
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=60) == 0
        printed = (tmp_path / "up.out").read_text()
        assert f"http://127.0.0.1:{port}/enqueue" in printed and "stopped" in printed
        time.sleep(0.5)
        assert [k for k in kids if alive(k)] == []
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
