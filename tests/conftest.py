"""Shared fixtures: the PostgreSQL store that `.ci/run` starts (see BITSCOUT_TEST_POSTGRES)."""

from __future__ import annotations

import os
import re
import uuid

import pytest

POSTGRES_ENV = "BITSCOUT_TEST_POSTGRES"
REQUIRE_POSTGRES_ENV = "BITSCOUT_REQUIRE_POSTGRES"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """SQLAlchemy URL of a PostgreSQL database for Optuna's RDB storage.

    `.ci/run` starts a throwaway server and sets BITSCOUT_TEST_POSTGRES (with a password,
    e.g. `postgresql+psycopg://user:secret@127.0.0.1:PORT/bitscout_test`) and
    BITSCOUT_REQUIRE_POSTGRES=1, so in CI a missing server fails instead of skipping.
    """
    url = os.environ.get(POSTGRES_ENV, "").strip()
    if url:
        return url
    if os.environ.get(REQUIRE_POSTGRES_ENV) == "1":
        pytest.fail(f"{REQUIRE_POSTGRES_ENV}=1 but {POSTGRES_ENV} is not set", pytrace=False)
    pytest.skip(f"no PostgreSQL server (set {POSTGRES_ENV}; .ci/run starts one)")


def unique_study_name(prefix: str = "test") -> str:
    """A study name no other test (or earlier run against the same database) uses."""
    prefix = re.sub(r"[^A-Za-z0-9_.-]+", "-", prefix).strip("-")[:60] or "test"
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def study_name(request: pytest.FixtureRequest) -> str:
    """A fresh study name for this test, e.g. `test_foo-1a2b3c4d5e6f`."""
    return unique_study_name(request.node.name)
