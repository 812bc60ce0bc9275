"""Run schemathesis against a live producer (the ``nox -s schemathesis`` session).

Starts ``python -m workqueue producer`` on a free port with a unique key prefix and the test
plugin, waits for ``/health``, runs ``schemathesis run <url>/schema/openapi.json --checks all``
and exits with its status. The producer is always stopped and the prefix's keys deleted
(``SCAN MATCH prefix:*`` + ``DEL``; never a flush). Extra arguments go to schemathesis.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import redis

MAX_EXAMPLES = "100"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_healthy(url: str, process: subprocess.Popen[bytes], deadline_s: float = 30.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if process.poll() is not None:
            raise SystemExit(f"the producer exited early with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"the producer did not answer {url}/health within {deadline_s:g} s")


def delete_prefix(redis_url: str, prefix: str) -> int:
    client = redis.Redis.from_url(redis_url)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(client.delete(*batch))
                batch.clear()
        if batch:
            deleted += int(client.delete(*batch))
    finally:
        client.close()
    return deleted


def main(argv: list[str]) -> int:
    redis_url = os.environ.get("WORKQUEUE_REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"wqschema-{uuid.uuid4().hex[:12]}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_dir = Path(tempfile.mkdtemp(prefix="wq-schemathesis-"))
    env = {
        **os.environ,
        "WORKQUEUE_PLUGINS": "wq_testplugin_good",
        "WORKQUEUE_KEY_PREFIX": prefix,
        "WORKQUEUE_REDIS_URL": redis_url,
    }
    env.pop("WORKQUEUE_API_KEY", None)
    command = [sys.executable, "-m", "workqueue", "producer", "--port", str(port)]
    command += ["--redis-url", redis_url, "--key-prefix", prefix]
    command += ["--log-file", str(log_dir / "producer.log")]
    producer = subprocess.Popen(command, env=env)
    try:
        wait_healthy(url, producer)
        beside = Path(sys.executable).parent / "schemathesis"
        schemathesis = str(beside) if beside.exists() else shutil.which("schemathesis")
        if schemathesis is None:
            raise SystemExit("schemathesis is not installed")
        run = [schemathesis, "run", f"{url}/schema/openapi.json", "--checks", "all"]
        if not any(arg.startswith(("--max-examples", "-n")) for arg in argv):
            run += ["--max-examples", MAX_EXAMPLES]
        # Run in the scratch directory so schemathesis's caches stay out of the checkout.
        return subprocess.run([*run, *argv], check=False, cwd=log_dir).returncode
    finally:
        producer.terminate()
        try:
            producer.wait(timeout=15)
        except subprocess.TimeoutExpired:
            producer.kill()
            producer.wait()
        deleted = delete_prefix(redis_url, prefix)
        print(f"stopped the producer; deleted {deleted} keys under {prefix}:*")
        shutil.rmtree(log_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
