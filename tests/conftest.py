"""Shared test setup: the prepared data cache lives in the session's temporary directory, never in
the user's home (subprocesses inherit it through the environment)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    previous = os.environ.get("ENGINE_DATA_CACHE")
    os.environ["ENGINE_DATA_CACHE"] = str(tmp_path_factory.mktemp("data-cache"))
    yield
    if previous is None:
        os.environ.pop("ENGINE_DATA_CACHE", None)
    else:
        os.environ["ENGINE_DATA_CACHE"] = previous
