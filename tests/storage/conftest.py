"""One SeaweedFS S3 server for the storage tests of a session (it takes a few seconds to start)."""

from __future__ import annotations

from typing import Iterator

import pytest

from ..conftest import require
from ..support.seaweed import S3Server, seaweed, weed_problem


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    require("SeaweedFS", weed_problem())
    with seaweed(tmp_path_factory.mktemp("s3")) as server:
        yield server
