"""The group flush of a file system: a caller returns only after a flush that began after its call
has ended, callers arriving together share flushes, and a failed flush fails its waiters only."""

from __future__ import annotations

import ctypes
import threading
import time

import pytest

from expediente.blobs import fs_flush
from expediente.blobs.fs_flush import FileSystemFlush

pytestmark = pytest.mark.skipif(not fs_flush.available(), reason="syncfs (Linux) is not available here")


class RecordingSyncfs:
    """Stands in for the syscall: records when each flush began and ended."""

    def __init__(self, seconds: float = 0.01, fail: set[int] = frozenset()):
        self.seconds = seconds
        self.fail = fail
        self.flushes: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def __call__(self, fd: int) -> int:
        begun = time.monotonic()
        time.sleep(self.seconds)
        with self._lock:
            self.flushes.append((begun, time.monotonic()))
            number = len(self.flushes)
        if number in self.fail:
            ctypes.set_errno(5)
            return -1
        return 0


def _flush_from_threads(flush: FileSystemFlush, threads: int, each: int = 5) -> list[tuple[float, float]]:
    """``threads`` callers flushing ``each`` times at once: (called, returned) of every call."""
    calls: list[tuple[float, float]] = []
    lock = threading.Lock()

    def caller() -> None:
        for _ in range(each):
            called = time.monotonic()
            flush.flush()
            with lock:
                calls.append((called, time.monotonic()))

    running = [threading.Thread(target=caller) for _ in range(threads)]
    for t in running:
        t.start()
    for t in running:
        t.join()
    return calls


def test_the_real_syncfs_flushes(tmp_path):
    FileSystemFlush(tmp_path).flush()  # the syscall itself, on this machine's file system


def test_every_caller_waits_for_a_flush_begun_after_its_call(tmp_path, monkeypatch):
    fake = RecordingSyncfs()
    monkeypatch.setattr(fs_flush, "_SYNCFS", fake)
    calls = _flush_from_threads(FileSystemFlush(tmp_path), threads=8)
    assert len(calls) == 40
    for called, returned in calls:
        assert any(called <= begun and ended <= returned for begun, ended in fake.flushes), (called, returned)
    assert len(fake.flushes) < 40  # callers arriving during a flush shared the next one
    begins = sorted(fake.flushes)
    assert all(a[1] <= b[0] for a, b in zip(begins, begins[1:]))  # one flush at a time


def test_a_failed_flush_fails_its_waiters_and_the_next_one_succeeds(tmp_path, monkeypatch):
    monkeypatch.setattr(fs_flush, "_SYNCFS", RecordingSyncfs(seconds=0, fail={1}))
    flush = FileSystemFlush(tmp_path)
    with pytest.raises(OSError) as failed:
        flush.flush()
    assert failed.value.errno == 5
    flush.flush()


class FileRecordingSyncfs:
    """Stands in for the syscall in several processes: appends each flush's begin and end
    (CLOCK_MONOTONIC is one clock for the whole machine) to a shared file."""

    def __init__(self, path, seconds: float = 0.01):
        self.path = path
        self.seconds = seconds

    def __call__(self, fd: int) -> int:
        begun = time.monotonic()
        time.sleep(self.seconds)
        with open(self.path, "a") as f:
            f.write(f"{begun} {time.monotonic()}\n")
        return 0


def _calls_in_a_process(directory, out_path) -> None:
    """Four threads of one process, five flushes each; the calls' times go to ``out_path``."""
    calls = _flush_from_threads(FileSystemFlush(directory), threads=4)
    with open(out_path, "a") as f:
        f.writelines(f"{a} {b}\n" for a, b in calls)


def test_processes_share_flushes_through_the_state_file(tmp_path, monkeypatch):
    """Two processes flushing the same store: one flush at a time among them, every call
    covered by a flush begun after it, and fewer flushes than calls (they serve each other)."""
    import multiprocessing

    flushes, calls = tmp_path / "flushes.txt", tmp_path / "calls.txt"
    monkeypatch.setattr(fs_flush, "_SYNCFS", FileRecordingSyncfs(flushes))  # inherited by the forks
    store = tmp_path / "store"
    store.mkdir()
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_calls_in_a_process, args=(store, calls)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    done = [tuple(map(float, line.split())) for line in calls.read_text().splitlines()]
    ran = sorted(tuple(map(float, line.split())) for line in flushes.read_text().splitlines())
    assert len(done) == 40
    for called, returned in done:
        assert any(called <= begun and ended <= returned for begun, ended in ran), (called, returned)
    assert all(a[1] <= b[0] for a, b in zip(ran, ran[1:]))  # never two at once, across processes
    assert len(ran) < 40
    assert (store / fs_flush.STATE_FILE).exists()
