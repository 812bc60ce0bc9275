"""Entry point of the peer scripts, run with the peers' virtualenv's python::

    python peers/run.py PEER enqueue --n N --mode single|bulk|fill   (prints the timing)
    python peers/run.py PEER argv --processes P                      (prints the worker commands)

``BENCH_REDIS_URL`` names the peer's db on the bench redis-server. Each ``peers/<peer>.py``
defines its no-op task, ``enqueue(n, mode) -> seconds`` (``BULK`` says whether a bulk API
exists; ``fill`` is an untimed quick fill) and ``worker_argv(processes) -> list of commands``:
one command for a worker with that many processes, or several single-process workers when that
is how the peer scales.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

from common import emit  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("peer")
    parser.add_argument("phase", choices=["enqueue", "argv", "info"])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--mode", choices=["single", "bulk", "fill"], default="single")
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    module = importlib.import_module(f"{args.peer}_peer")
    if args.phase == "enqueue":
        emit({"n": args.n, "seconds": module.enqueue(args.n, args.mode)})
    elif args.phase == "argv":
        print(json.dumps(module.worker_argv(args.processes)))
    else:
        from importlib.metadata import version

        print(json.dumps({"bulk": module.BULK, "version": version(module.DIST)}))


if __name__ == "__main__":
    main()
