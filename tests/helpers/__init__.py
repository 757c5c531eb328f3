"""Helpers shared by the test modules (plain functions; the fixtures are in ``tests/conftest.py``).

- :mod:`tests.helpers.malls`: a fabricated world and malls served for a ``with`` block;
- :mod:`tests.helpers.snapshots`: fabricated crawl snapshots for validation tests;
- :mod:`tests.helpers.serving`: request bodies and a poller for the search service;
- :mod:`tests.helpers.registry`: stand-ins for a training result, for registry tests;
- :mod:`tests.helpers.catalogs`: small catalogs of coloured JPEGs for index tests.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

from pipelines.settings import PROJECT_ROOT

#: the real CC0 photos beside the project (tests that need them skip where absent)
SHARED_PHOTOS = PROJECT_ROOT.parent / "shared" / "datasets" / "clothing-photos"


def missing(what: str) -> NoReturn:
    """Skip a test whose prerequisite (a browser, Postgres, the shared photos) is missing here;
    under ``CI=true`` fail it instead: CI installs every prerequisite, so a skip there would
    hide a test that never ran."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true and {what}", pytrace=False)
    pytest.skip(what)


def wait_until(condition, timeout_s: float = 60.0, every_s: float = 0.02, what: str = "the condition"):
    """Poll ``condition()`` until it returns something truthy (returned) or fail after
    ``timeout_s``: tests wait on state, not on a sleep long enough on a fast machine."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(every_s)
