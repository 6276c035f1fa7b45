"""Early pytest plugin: the test session's embedded servers, started explicitly and once.

Loaded with `-p tests.embedded_servers` (pyproject's addopts) so that it runs before
pytest-django loads the settings, which never start servers themselves. The controlling
process starts PostgreSQL, Redis and OpenBao under `.hallmark-test/` (unless
HALLMARK_DATABASE_URL / HALLMARK_REDIS_URL / HALLMARK_VAULT_ADDR point at servers of your own)
and exports their addresses; xdist workers inherit them. `--collect-only` starts nothing.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Collecting imports the models but never connects: addresses that lead nowhere will do.
COLLECT_ONLY_PLACEHOLDERS = {
    "HALLMARK_DATABASE_URL": "postgresql://collect-only.invalid/hallmark",
    "HALLMARK_REDIS_URL": "redis://collect-only.invalid:6379/0",
    "HALLMARK_VAULT_ADDR": "http://collect-only.invalid:8200",
    # Outside the embedded default the settings require a key of their own.
    "HALLMARK_SECRET_KEY": "collect-only-placeholder",
}
_SERVERS = pytest.StashKey[Any]()


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> Generator[None, Any, Any]:
    from config import embedded

    os.environ.setdefault("HALLMARK_DATA_DIR", str(ROOT / ".hallmark-test"))
    if {"--collect-only", "--co"} & set(args):
        for name, placeholder in COLLECT_ONLY_PLACEHOLDERS.items():
            os.environ.setdefault(name, placeholder)
    elif embedded.needed():
        servers = embedded.ensure_started(Path(os.environ["HALLMARK_DATA_DIR"]))
        early_config.stash[_SERVERS] = servers
        if servers is not None and "postgres" in servers.owned:
            _drop_databases_of_earlier_planes(os.environ["HALLMARK_DATABASE_URL"])
    return (yield)


def _drop_databases_of_earlier_planes(url: str) -> None:
    """The e2e planes of earlier sessions left databases behind (a plane may be restarted on
    its database within a test, so they are not dropped as they stop); dropping them keeps
    the data dir, which tests scan, from growing session after session."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        names = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'hallmark\\_e2e\\_%'"
        ).fetchall()
        for (name,) in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pytest_unconfigure(config: pytest.Config) -> None:
    servers = config.stash.get(_SERVERS, None)
    if servers is not None:
        servers.stop()
