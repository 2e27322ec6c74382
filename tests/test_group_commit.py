"""Group commit: concurrent write jobs share transactions, yet each succeeds or fails alone."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from expediente.db.group_commit import GroupCommitter, flush_inserts, insert_rows

probe_md = sa.MetaData()
probe = sa.Table("gc_probe", probe_md, sa.Column("k", sa.String(32), primary_key=True), sa.Column("v", sa.Integer))


@pytest.fixture
def committer(services):
    probe_md.create_all(services.engine)
    gc = GroupCommitter(services.engine, name="test-group-commit")
    yield gc
    gc.close()
    probe_md.drop_all(services.engine)


def keys(engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(probe.c.k)).scalars())


def run_concurrently(committer, jobs):
    results: dict[int, object] = {}

    def call(i, job):
        try:
            results[i] = committer.run(job)
        except Exception as exc:  # noqa: BLE001 - recorded for the assertions
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i, job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_every_job_commits_and_gets_its_result(committer, services):
    def job(i):
        return lambda conn: (insert_rows(conn, probe, [{"k": f"k{i}", "v": i}]), i)[1]

    results = run_concurrently(committer, [job(i) for i in range(40)])
    assert results == {i: i for i in range(40)}
    assert keys(services.engine) == {f"k{i}" for i in range(40)}


def test_a_failing_job_fails_alone_and_leaves_nothing(committer, services):
    def good(i):
        return lambda conn: insert_rows(conn, probe, [{"k": f"ok{i}", "v": i}])

    def bad(conn):
        insert_rows(conn, probe, [{"k": "half-written", "v": 0}])
        raise ValueError("petición inválida")

    results = run_concurrently(committer, [good(i) for i in range(10)] + [bad] + [good(i) for i in range(10, 20)])
    assert isinstance(results[10], ValueError)
    assert keys(services.engine) == {f"ok{i}" for i in range(20)}


def test_a_duplicate_found_at_flush_fails_only_its_job(committer, services):
    jobs = [lambda conn: insert_rows(conn, probe, [{"k": "same", "v": 1}]) for _ in range(2)]
    jobs += [lambda conn: insert_rows(conn, probe, [{"k": "other", "v": 2}])]
    results = run_concurrently(committer, jobs)
    failures = [r for r in results.values() if isinstance(r, sa.exc.IntegrityError)]
    assert len(failures) == 1
    assert keys(services.engine) == {"same", "other"}


def test_reads_inside_the_transaction_see_earlier_inserts(committer):
    def write_then_read(conn):
        insert_rows(conn, probe, [{"k": "visible", "v": 7}])
        flush_inserts(conn)
        return conn.execute(sa.select(probe.c.v).where(probe.c.k == "visible")).scalar()

    assert committer.run(write_then_read) == 7
