"""``--processes K``: K worker processes under one supervisor.

Each child is a plain ``workqueue worker`` process. The supervisor forwards SIGTERM/SIGINT,
restarts a child that died without being asked to (with a growing delay, so a job that kills
its worker cannot make it spin), and exits once every child has stopped.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

from loguru import logger

__all__ = ["supervise"]

RESTART_DELAY_MAX_SECONDS = 10.0


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
        children[slot] = subprocess.Popen([*command, "--metrics-port", port])
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
