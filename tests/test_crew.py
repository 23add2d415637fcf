"""test_crew.py: pipeline/crew.py hands every chunk out once, brings every result back, and says which chunks a
worker that died took with it."""

from __future__ import annotations

import os
import signal

import pytest

from fbt_audit.pipeline import crew as crewmod
from fbt_audit.pipeline.crew import ERROR, RESULT, Crew


def _run(crew: Crew, mine=lambda k: f"parent {k}".encode()) -> dict[int, tuple[int, bytes]]:
    got: dict[int, tuple[int, bytes]] = {}
    try:
        for k in crew.turns():
            got[k] = (RESULT, mine(k))
            for j, kind, data in crew.poll():
                assert j not in got
                got[j] = (kind, data)
        for j, kind, data in crew.finish():
            assert j not in got
            got[j] = (kind, data)
    finally:
        crew.close()
    return got


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_every_chunk_once_and_back_whole(workers):
    """Results larger than a pipe's buffer come back whole; each number is taken by exactly one process."""
    n = 40
    crew = Crew(n, workers, lambda k: bytes([k]) * (200_000 if k % 7 == 0 else k), lambda: None)
    got = _run(crew)
    assert sorted(got) == list(range(n))
    for k, (kind, data) in got.items():
        assert kind == RESULT
        if k in crew.taken:
            assert data == f"parent {k}".encode()
        else:
            assert data == bytes([k]) * (200_000 if k % 7 == 0 else k)
    assert crew.lost(set(got) - crew.taken) == ([], "the worker process ended without its result")
    assert len(crew.status) == workers and all(s == 0 for s in crew.status.values())


def test_a_failing_chunk_is_an_error_record_and_the_worker_goes_on():
    def work(k: int) -> bytes:
        if k == 3:
            raise ValueError("bad chunk")
        return b"ok"

    crew = Crew(8, 1, work, lambda: None)
    try:
        got = {k: (kind, data) for k, kind, data in crew.finish()}  # this process takes none: the worker does all
    finally:
        crew.close()
    assert got == {**{k: (RESULT, b"ok") for k in range(8) if k != 3}, 3: (ERROR, b"ValueError: bad chunk")}
    assert list(crew.status.values()) == [0]


def test_a_worker_that_dies_loses_its_chunk_and_says_how():
    """The worker kills itself on the first chunk it takes: that chunk is lost and the reason names the signal; the
    chunks it never took are still there for this process to take."""
    def work(k: int) -> bytes:
        os.kill(os.getpid(), signal.SIGKILL)
        return b"never"

    crew = Crew(6, 1, work, lambda: None)
    try:
        assert crew.finish() == []
        assert list(crew.turns()) == [1, 2, 3, 4, 5]
        assert crew.lost(set()) == ([0], "killed by signal 9 (SIGKILL)")
    finally:
        crew.close()


def test_close_stops_a_running_worker():
    crew = Crew(2, 1, lambda k: (signal.pause(), b"")[1], lambda: None)
    crew.close()
    assert list(crew.status.values()) == [signal.SIGTERM]


def test_too_many_chunks_refused():
    with pytest.raises(ValueError, match="at most"):
        Crew(crewmod.MAX_TICKETS + 1, 0, lambda k: b"", lambda: None)
