"""Run the fault suite as a restricted Redis user (``nox -s acl``).

Starts a private ``redis-server`` on a free port whose ACL file disables the default user and
defines one user limited to the test key prefixes, without the dangerous and admin commands::

    user default off
    user wqtest on >RANDOM ~wqtest-* &* +@all -@dangerous -@admin

then runs ``pytest tests/faults -m "not soak"`` with
``WORKQUEUE_TEST_REDIS_URL`` pointing at that user, and stops the server. Any command the code
or the tests use that the user may not run (KEYS, FLUSHALL, FLUSHDB, CONFIG, DEBUG, INFO, ...)
fails the run; the server's ACL LOG is printed when it has entries. Extra arguments go to
pytest. Exit status: pytest's, or 1 when the ACL LOG shows a refused command.

Only the fault suite runs here, less the tests that bring servers of their own
(``OWN_SERVERS``); tests/integration runs once, in ``nox -s tests``, against the
shared Redis (the CI tiers: docs/reliability.md).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from redis_server import RedisServer  # tests/ is on sys.path: this script's own folder

USER = "wqtest"
#: fault tests that run wholly against Redis servers of their own (a Cluster, a Sentinel
#: set): the restricted user is never theirs, so they run once, in ``nox -s faults``
OWN_SERVERS = [
    "--ignore=tests/faults/test_cluster_failover.py",
    "--ignore=tests/faults/test_cluster_reshard.py",
    "--ignore=tests/faults/test_failover_durable.py",
]
ADMIN = "aclrunadmin"


def main(argv: list[str]) -> int:
    password = secrets.token_hex(12)
    admin_password = secrets.token_hex(12)
    directory = Path(tempfile.mkdtemp(prefix="wq-acl-"))
    acl_file = directory / "users.acl"
    acl_file.write_text(
        "user default off\n"
        f"user {ADMIN} on >{admin_password} ~* &* +@all\n"
        f"user {USER} on >{password} ~wqtest-* &* +@all -@dangerous -@admin\n"
    )
    server = RedisServer(directory, appendonly=False, extra_args=["--aclfile", str(acl_file)])
    server.start(wait=False)
    try:
        admin = redis.Redis(port=server.port, username=ADMIN, password=admin_password)
        deadline = time.monotonic() + 15
        while True:
            try:
                admin.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    print("the ACL redis-server did not start", file=sys.stderr)
                    return 1
                time.sleep(0.1)
        url = f"redis://{USER}:{password}@127.0.0.1:{server.port}/0"
        print(f"redis-server with ACLs on 127.0.0.1:{server.port}; tests run as user {USER!r}")
        started = time.monotonic()
        code = subprocess.call(
            [sys.executable, "-m", "pytest", "tests/faults", "-m", "not soak", *OWN_SERVERS, *argv],
            env={**os.environ, "WORKQUEUE_TEST_REDIS_URL": url},
        )  # fmt: skip
        print(f"acl session: pytest took {time.monotonic() - started:.0f} s")
        refused = admin.acl_log(count=50)
        admin.close()
        if refused:
            print("ACL LOG (commands or keys refused to the test user):", file=sys.stderr)
            for entry in refused:
                print(f"  {entry}", file=sys.stderr)
            return code or 1
        return code
    finally:
        server.close()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
