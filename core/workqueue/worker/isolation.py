"""``JobType(isolation="process")``: one attempt in a child process of its own.

The worker starts ``python -m workqueue.worker.isolation``, writes the pickled handler (by
reference: module and name), payload and context fields to its stdin and reads the reply
from its stdout as JSON (never pickle: the child may run untrusted code, and the worker must
not unpickle what it sends back; a result is JSON anyway). Cancelling the awaiting task (the
attempt's timeout, a lost lease, a graceful stop) kills the child with SIGKILL at once, so
the slot frees at once even for a handler spinning the CPU or stuck in C code. The child
ignores SIGINT/SIGTERM (the worker decides when it stops) and exits by itself when the
worker process goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import pickle
import signal
import sys
import threading
import time
from datetime import datetime
from typing import Any

import msgspec

from workqueue.errors import PermanentError, RetryLater
from workqueue.jobtypes import Handler, JobContext

__all__ = ["IsolatedError", "run_isolated"]

_ERROR_TYPES: dict[str, type[IsolatedError]] = {}


class IsolatedError(Exception):
    """An exception raised by a handler in its child process, rebuilt by name in the worker
    (its class need not be picklable); it renders as ``"<original type>: message"``."""


def _error_type(name: str) -> type[IsolatedError]:
    cls = _ERROR_TYPES.get(name)
    if cls is None:
        safe = name if name.isidentifier() else "HandlerError"
        cls = _ERROR_TYPES[name] = type(safe, (IsolatedError,), {})
    return cls


async def run_isolated(handler: Handler, payload: Any, ctx: JobContext) -> Any:
    """Run ``handler(payload, ctx)`` in a child process; its result, or its error raised here.

    A child that dies without a reply (killed, crashed, out of memory) is an error naming its
    exit code.
    """
    fields = (
        ctx.job_id,
        ctx.type,
        ctx.queue,
        ctx.attempt,
        ctx.retries,
        ctx.enqueued_at,
        ctx.worker_id,
        ctx.timeout,
        ctx.token,
    )
    request = pickle.dumps((handler, payload, fields), protocol=pickle.HIGHEST_PROTOCOL)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workqueue.worker.isolation",
        str(os.getpid()),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        out, _ = await proc.communicate(request)
    except BaseException:
        # Timed out, lease lost or stopping: the child must not run on.
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(BaseException):
            await asyncio.shield(proc.wait())
        raise
    if not out:
        raise RuntimeError(f"isolated handler process exited with {proc.returncode}, no reply")
    try:
        kind, first, second = msgspec.json.decode(out, type=tuple[str, Any, Any])
    except msgspec.DecodeError:
        raise RuntimeError("isolated handler process sent a malformed reply") from None
    if kind == "ok":
        return first
    if kind == "retry":
        raise RetryLater(str(first), float(second))
    if kind == "permanent":
        raise PermanentError(str(first))
    raise _error_type(str(first))(str(second))


def _watch_parent(parent: int) -> None:
    """Exit when the worker is gone (re-parented), so a killed worker leaves no child behind."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(70)


def _child_main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = int(sys.argv[1]) if len(sys.argv) > 1 else os.getppid()
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    reply_to = sys.stdout.buffer
    sys.stdout = sys.stderr  # a handler's print() must not corrupt the reply
    # The request comes from the worker that started this process (a trusted pipe).
    handler, payload, fields = pickle.loads(sys.stdin.buffer.read())  # noqa: S301
    from loguru import logger

    job_id, job_type, queue, attempt, retries, enqueued_at, worker_id, timeout, token = fields
    assert isinstance(enqueued_at, datetime)
    bound = logger.bind(job_id=job_id, type=job_type, attempt=attempt, queue=queue)
    ctx = JobContext(
        job_id, job_type, queue, attempt, retries, enqueued_at, worker_id, timeout, bound, token
    )
    reply: tuple[Any, ...]
    try:
        result = handler(payload, ctx)
        if inspect.isawaitable(result):

            async def wait() -> Any:
                return await result

            result = asyncio.run(wait())
        reply = ("ok", result, None)
    except RetryLater as exc:
        reply = ("retry", str(exc), exc.delay_seconds)
    except PermanentError as exc:
        reply = ("permanent", str(exc), None)
    except Exception as exc:
        reply = ("error", type(exc).__name__, str(exc))
    try:
        data = msgspec.json.encode(reply)
    except (TypeError, ValueError, OverflowError):  # not JSON-able: stored as null
        data = msgspec.json.encode(("ok", None, None))
    reply_to.write(data)
    reply_to.flush()


if __name__ == "__main__":
    _child_main()
