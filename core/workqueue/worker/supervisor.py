"""``--processes K``: K worker processes under one supervisor.

Each child is a plain ``workqueue worker`` process. The supervisor forwards SIGTERM/SIGINT,
restarts a child that died without being asked to (with a growing delay, so a job that kills
its worker cannot make it spin), and exits once every child has stopped. A child that exits
with :data:`RECYCLE_EXIT_CODE` stopped on purpose to be recycled (too many hung handler
threads; its jobs were finished or handed back) and is restarted at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

from loguru import logger

__all__ = ["RECYCLE_EXIT_CODE", "SUPERVISED_ENV", "supervise"]

RESTART_DELAY_MAX_SECONDS = 10.0
#: a child's exit code meaning "recycle me": restarted at once, not counted as a crash
RECYCLE_EXIT_CODE = 75
#: set in a child's environment, so it exits to be recycled rather than re-executing itself
SUPERVISED_ENV = "WORKQUEUE_SUPERVISED"


def supervise(processes: int, child_args: Sequence[str], metrics_port: int = 0) -> int:
    """Run ``processes`` children with ``workqueue worker <child_args>``; returns an exit code.

    Child ``i`` serves its metrics on ``metrics_port + i`` (none when ``metrics_port`` is 0).
    """
    command = [sys.executable, "-m", "workqueue", "worker", *child_args, "--processes", "1"]
    children: dict[int, subprocess.Popen[bytes]] = {}
    delays: dict[int, float] = {}
    stopping = False

    def spawn(slot: int) -> None:
        port = str(metrics_port + slot) if metrics_port else "0"
        env = {**os.environ, SUPERVISED_ENV: "1"}
        children[slot] = subprocess.Popen([*command, "--metrics-port", port], env=env)
        logger.info("supervisor: started worker process {} (pid {})", slot, children[slot].pid)

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for slot in range(processes):
        spawn(slot)
    restart_at: dict[int, float] = {}
    while True:
        alive = False
        for slot, child in list(children.items()):
            code = child.poll()
            if code is None:
                alive = True
                continue
            if stopping:
                continue
            if code == RECYCLE_EXIT_CODE and slot not in restart_at:
                logger.info("supervisor: worker process {} recycled itself; restarting", slot)
                delays.pop(slot, None)
                restart_at[slot] = time.monotonic()
            if slot not in restart_at:
                delay = min(RESTART_DELAY_MAX_SECONDS, delays.get(slot, 0.5) * 2)
                delays[slot] = delay
                restart_at[slot] = time.monotonic() + delay
                logger.warning(
                    "supervisor: worker process {} exited with {}; restarting in {:.1f}s",
                    slot,
                    code,
                    delay,
                )
            alive = True
            if time.monotonic() >= restart_at[slot]:
                del restart_at[slot]
                spawn(slot)
        if stopping and not alive:
            return 0
        time.sleep(0.1)
