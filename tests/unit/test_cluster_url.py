"""The ``cluster`` query parameter of a Redis URL (workqueue.broker.cluster.cluster_choice)."""

from __future__ import annotations

import pytest

from workqueue.broker.cluster import cluster_choice


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://h:1/0", ("redis://h:1/0", None)),
        ("redis://u:p@h:1/0?cluster=yes", ("redis://u:p@h:1/0", True)),
        ("redis://h:1?cluster=1", ("redis://h:1", True)),
        ("redis://h:1/0?cluster=no", ("redis://h:1/0", False)),
        (
            "rediss://h:1/0?ssl_ca_certs=ca.pem&cluster=true",
            ("rediss://h:1/0?ssl_ca_certs=ca.pem", True),
        ),
    ],
)
def test_cluster_parameter_is_read_and_removed(url: str, expected: tuple[str, bool | None]) -> None:
    assert cluster_choice(url) == expected
