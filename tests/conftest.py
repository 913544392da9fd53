"""Fixtures shared by several test modules."""
from tests.postgres_server import postgres_url  # noqa: F401 - one throwaway PostgreSQL cluster per session
