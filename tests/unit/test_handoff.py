"""The scoreboard (lib/dynocorn/handoff.py): real shared memory, as the master makes it."""

from __future__ import annotations

import os

import pytest

from dynocorn.handoff import Balance
from dynocorn.scoreboard import Scoreboard
from dynocorn.slow_watch import MARK_MASK, mark, running_for


def test_slots_are_claimed_lowest_first_and_released() -> None:
    board = Scoreboard(4)
    assert [board.claim(), board.claim(), board.claim()] == [0, 1, 2]
    board.release(1)
    assert board.claim() == 1
    assert board.claim() == 3
    assert board.claim() is None  # full: that worker takes no part in the balance


def test_the_fair_share_and_the_emptiest_count_only_live_workers() -> None:
    board = Scoreboard(8)
    for slot, count in ((board.claim(), 5), (board.claim(), 3), (board.claim(), 0)):
        assert slot is not None
        board.set(slot, count)
    assert board.fair_share() == 3  # ceil(8 / 3)
    assert board.fewest() == 0
    assert Scoreboard(2).fair_share() == 0 and Scoreboard(2).fewest() == 0


def test_a_forked_worker_writes_what_the_master_reads() -> None:
    board = Scoreboard(2)
    slot = board.claim()
    assert slot == 0 and not board.stopping
    pid = os.fork()
    if pid == 0:  # the child: a worker
        board.set(slot, 7)
        os._exit(0)
    os.waitpid(pid, 0)
    assert board.fair_share() == 7
    board.stop()
    assert board.stopping


def test_a_worker_counts_from_when_it_serves_not_from_its_fork() -> None:
    board = Scoreboard(4)
    serving, booting = board.claim(), board.claim()
    assert serving is not None and booting is not None
    board.set(serving, 3)
    # A booting worker's 0 would make every other worker over its share and the emptiest
    # a worker that cannot take a connection yet.
    assert board.fewest() == 3 and board.fair_share() == 3 and board.live_counts() == [3]
    board.set(booting, 0)
    assert board.fewest() == 0 and board.fair_share() == 2 and board.live_counts() == [3, 0]


def test_the_master_pokes_a_worker_whose_request_runs_on(request: pytest.FixtureRequest) -> None:
    """slow_watch.py on real shared memory and a real pipe: a request that has run the
    worker's slow_after is a poke, and again after as long; a new request, or none, is not."""
    balance = Balance(slots=4)
    request.addfinalizer(balance.close)
    board, watch = balance.board, balance.watch
    first, second = board.claim(), board.claim()
    assert first is not None and second is not None
    read_end = watch.open(first)
    watch.open(second)
    for slot in (first, second):
        board.set(slot, 1)  # both serve: there is someone to pass connections to
        board.slow_after_us[slot] = 10_000  # 10 ms

    def poked() -> bool:
        try:
            return os.read(read_end, 10) == b"!"
        except BlockingIOError:
            return False

    started = 100.0
    board.marks[first] = mark(started)  # the second worker is between requests
    watch.look(started + 0.009)  # 9 ms in: not yet
    assert not poked()
    watch.look(started + 0.015)  # first seen late, timed from its start all the same
    assert poked()
    watch.look(started + 0.022)  # again only after as long again
    assert not poked()
    watch.look(started + 0.028)  # (the next look is due 5 ms after the last)
    assert poked()
    board.marks[first] = mark(started + 0.030)  # the next request: its own clock
    watch.look(started + 0.035)
    assert not poked()
    board.marks[first] = 0
    watch.look(started + 0.100)
    assert not poked()
    watch.close(second)  # one worker left: no one to pass to, no looks at all
    board.release(second)
    assert watch.next_look(started) == float("inf")


def test_a_mark_times_a_request_across_the_wrap() -> None:
    started = (MARK_MASK + 1) / 1000 - 0.004  # 4 ms before the millisecond count wraps
    assert running_for(mark(started), started + 0.010) == pytest.approx(0.010, abs=0.0011)
