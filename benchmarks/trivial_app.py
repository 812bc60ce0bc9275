"""A trivial Litestar route served with the producer's uvicorn settings: the HTTP ceiling.

``POST /enqueue`` decodes the JSON body and answers 202 with a small JSON object, touching no
Redis, so its req/s is what Litestar + uvicorn alone allow on this machine; WorkQueue's
``POST /enqueue`` is compared with it::

    python trivial_app.py --port PORT
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from litestar import Litestar, post


@post("/enqueue", status_code=202)
async def enqueue(data: dict[str, Any]) -> dict[str, Any]:
    return {"id": "0" * 32, "type": data.get("type"), "status": "queued"}


app = Litestar([enqueue])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # the same settings as `workqueue producer` (core/workqueue/cli/producer.py)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="auto",
        http="auto",
        access_log=False,
        log_level="info",
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
