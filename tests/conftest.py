"""Fixtures shared by several test modules."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.postgres_server import postgres_url  # noqa: F401 - one throwaway PostgreSQL cluster per session
from tools.browser import BrowserUnavailable, chromium


@pytest.fixture(scope="session")
def browser() -> Iterator:
    """A headless Debian Chromium (Playwright); the test is skipped, saying why, where it cannot start."""
    try:
        with chromium() as browser:
            yield browser
    except BrowserUnavailable as err:
        pytest.skip(f"needs Chromium: {err}")
