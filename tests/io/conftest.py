"""Fixtures of the storage tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.io.s3faults import FaultProxy


@pytest.fixture()
def proxy(s3_server) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the test's S3 server (:mod:`tests.io.s3faults`)."""
    with FaultProxy(s3_server["client_kwargs"]["endpoint_url"]) as p:
        yield p
