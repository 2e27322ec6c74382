"""Planner statistics are kept fresh: search plans depend on them."""

from __future__ import annotations

import time

import sqlalchemy as sa

from expediente.db.statistics import refresh


def test_refresh_runs_on_both_engines(services):
    refresh(services.engine)
    if services.engine.dialect.name == "sqlite":
        with services.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM sqlite_stat1")).scalar_one() > 0


def test_sqlite_statistics_refreshed_in_background_at_start(services):
    if services.engine.dialect.name != "sqlite":
        assert services.statistics is None  # autovacuum keeps PostgreSQL's
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with services.engine.connect() as conn:
            if conn.execute(sa.text("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'")).scalar_one():
                return
        time.sleep(0.05)
    raise AssertionError("sqlite_stat1 was never created")
