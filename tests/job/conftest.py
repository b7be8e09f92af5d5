"""One job world (survey, quantum graph, backbone, site cache) per test module."""

from __future__ import annotations

import pytest
from jobworld import JobWorld, make_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> JobWorld:
    return make_world(tmp_path_factory.mktemp("job"))
