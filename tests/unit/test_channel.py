"""The pipe from a worker to its master (channel.py), over a real pipe."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from dynocorn.channel import MasterChannel, Message, WorkerChannel
from dynocorn.exit_cause import ExitCause


@pytest.fixture
def ends() -> Iterator[tuple[WorkerChannel, MasterChannel]]:
    read_fd, write_fd = os.pipe()
    worker, master = WorkerChannel(write_fd), MasterChannel(read_fd)
    yield worker, master
    worker.close()
    master.close()


def test_messages_arrive_in_order_with_their_payload(
    ends: tuple[WorkerChannel, MasterChannel],
) -> None:
    worker, master = ends
    worker.ready()
    worker.stats({"requests": 3, "queue": [1.5]})
    worker.retiring(ExitCause.MAX_REQUESTS.value)
    messages = master.read()
    assert messages is not None
    assert list(messages) == [
        (Message.READY, None),
        (Message.STATS, {"requests": 3, "queue": [1.5]}),
        (Message.RETIRING, "max_requests"),
    ]


def test_a_retirement_says_why_and_a_bare_one_is_still_read(
    ends: tuple[WorkerChannel, MasterChannel],
) -> None:
    worker, master = ends
    for cause in (ExitCause.LIFETIME, ExitCause.MEMORY, ExitCause.TIMEOUT):
        worker.retiring(cause.value)
    os.write(worker.fd, b"x\nx no_such_cause\n")  # a worker of another version, say
    messages = master.read()
    assert messages is not None
    reasons = [payload for kind, payload in messages if kind is Message.RETIRING]
    assert reasons == ["lifetime", "memory", "timeout", None, "no_such_cause"]
    causes = [ExitCause.of_retirement(reason) for reason in reasons]
    assert causes == [
        ExitCause.LIFETIME,
        ExitCause.MEMORY,
        ExitCause.TIMEOUT,
        ExitCause.STOPPED,  # no reason given: it left, and that is all the master knows
        ExitCause.STOPPED,
    ]


def test_nothing_to_read_is_no_message_and_a_closed_end_is_none(
    ends: tuple[WorkerChannel, MasterChannel],
) -> None:
    worker, master = ends
    messages = master.read()
    assert messages is not None and list(messages) == []
    worker.close()
    assert master.read() is None  # the worker is exiting


def test_a_message_split_across_reads_waits_for_its_end(
    ends: tuple[WorkerChannel, MasterChannel],
) -> None:
    worker, master = ends
    os.write(worker.fd, b's {"requests"')
    messages = master.read()
    assert messages is not None and list(messages) == []
    os.write(worker.fd, b": 7}\ngarbage\ns {not json\nr\n")
    messages = master.read()
    assert messages is not None
    # Lines the master cannot read are skipped, not fatal: the next ones still count.
    assert list(messages) == [(Message.STATS, {"requests": 7}), (Message.READY, None)]


def test_a_full_pipe_drops_messages_whole_and_the_next_ones_arrive(
    ends: tuple[WorkerChannel, MasterChannel],
) -> None:
    """The worker never blocks on a master that is not reading; what it could not send is
    lost whole, never cut, so a later message is not glued to half of an earlier one."""
    worker, master = ends
    sent = [{"queue": [0.25] * size} for size in (3000, 1000, 2100, 700) * 10]  # 3-15 KB
    for figures in sent:  # far more than a pipe holds, and nobody reads
        worker.stats(figures)
    worker.ready()  # this one too may be dropped: the pipe is full
    received = drain(master)
    assert received and all(message in [(Message.STATS, f) for f in sent] for message in received)
    for _ in range(2):  # the next heartbeat sends the tail of a message cut short, if any
        worker.ready()
        assert drain(master)[-1] == (Message.READY, None)


def drain(master: MasterChannel) -> list[tuple[Message, Any]]:
    """Every message waiting in the pipe."""
    received = []
    while (messages := master.read()) is not None and (batch := list(messages)):
        received += batch
    return received
