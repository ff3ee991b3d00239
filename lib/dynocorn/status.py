"""What the master knows right now, as one JSON-able snapshot: the answer to `dynocorn ctl
status` and `stats`, what `dynocorn top` draws, and what /metrics and OTLP export.

Built on demand, in the master's loop, from what it holds already (worker handles, their
slots, the shared records of what each serves now, the summed tallies) plus a fresh read of
each process's memory, so a snapshot is never older than the question.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import TYPE_CHECKING, Any, Protocol

from dynocorn.metrics.memory import ProcessMemory, read_process_memory
from dynocorn.metrics.tally import ServerTally

if TYPE_CHECKING:
    from dynocorn.handoff import Balance
    from dynocorn.memory_policy import MemoryPolicy
    from dynocorn.metrics.monitor import MemoryMonitor
    from dynocorn.sockets import Listener
    from dynocorn.worker_handle import WorkerHandle

# struct tcp_info (linux/tcp.h): eight one-byte fields, then u32s: rto, ato, snd_mss,
# rcv_mss, unacked. On a listening socket, unacked is the accept queue's length now.
TCP_INFO_SIZE = 104
UNACKED_AT = 8 + 4 * 4


class Master(Protocol):
    """What a snapshot reads of the master (arbiter.py)."""

    pid: int
    workers: dict[int, WorkerHandle]
    num_workers: int
    listeners: list[Listener]
    balance: Balance | None
    monitor: MemoryMonitor
    memory_policy: MemoryPolicy
    tally: ServerTally
    started_at: float  # time.monotonic()


def listen_backlog(listeners: list[Listener]) -> int | None:
    """Connections accepted by the kernel and waiting for a worker, over the TCP listeners;
    None when no listener can tell (unix sockets)."""
    total, known = 0, False
    for listener in listeners:
        if listener.sock.family not in (socket.AF_INET, socket.AF_INET6):
            continue
        try:
            info = listener.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_SIZE)
        except OSError:
            continue
        total += struct.unpack_from("=I", info, UNACKED_AT)[0]
        known = True
    return total if known else None


def _memory(memory: ProcessMemory | None) -> dict[str, int] | None:
    if memory is None:
        return None
    return {"rss": memory.rss, "pss": memory.pss, "uss": memory.uss, "swap": memory.swap}


def worker_rows(
    master: Master, now: float, memories: dict[int, ProcessMemory]
) -> list[dict[str, Any]]:
    """One row per worker, by slot (a worker on its way out shows after its successor)."""
    workers = list(master.workers.values())
    slots = master.monitor.slots
    slots.assign(workers)
    board = master.balance.board if master.balance is not None else None
    rows = []
    for handle in sorted(workers, key=lambda h: (slots.slot.get(h.pid, 0), -h.spawn_number)):
        row: dict[str, Any] = {
            "slot": slots.slot.get(handle.pid),
            "pid": handle.pid,
            "age": round(now - handle.spawned_at, 3),
            "requests": handle.requests,
            "running": 0,
            "method": None,
            "path": None,
            "request_age": None,
        }
        if board is not None and handle.board_slot is not None:
            serving = board.records.read(handle.board_slot)
            row["requests"] = max(row["requests"], serving.ended)
            row["running"] = serving.running
            if serving.running:
                row.update(method=serving.method, path=serving.target)
                row["request_age"] = round(serving.age, 3)
        row["state"] = _state(handle, row["running"])
        row["memory"] = _memory(memories.get(handle.pid) or handle.memory)
        rows.append(row)
    return rows


def _state(handle: WorkerHandle, running: int) -> str:
    if handle.stopping:
        return "stopping"
    if not handle.ready:
        return "booting"
    return "busy" if running else "idle"


def status(master: Master) -> dict[str, Any]:
    """Workers, then the master and the dyno: `dynocorn ctl status`."""
    now = time.monotonic()
    monitor = master.monitor
    workers = list(master.workers.values())
    memories = {h.pid: m for h in workers if (m := read_process_memory(h.pid)) is not None}
    own = read_process_memory(master.pid)
    # Measured now, the way the memory lines and the budget measure it (the cgroup's figures,
    # or the sum of PSS).
    dyno = monitor.dyno_memory(own, list(memories.values()), workers)
    policy = master.memory_policy
    quota = monitor.quota
    return {
        "workers": worker_rows(master, now, memories),
        "master": {
            "pid": master.pid,
            "uptime": round(now - master.started_at, 3),
            "memory": _memory(own),
        },
        "target_workers": master.num_workers,
        "memory": {
            "total": dyno.total,
            "held": dyno.held,
            "quota": quota,
            "budget": int(policy.budget * quota) if quota else None,
            "source": dyno.source,
        },
        "backlog": listen_backlog(master.listeners),
        "time": time.time(),
    }


def stats(master: Master) -> dict[str, Any]:
    """status, and the request counts since start: `dynocorn ctl stats`, top and /metrics."""
    snapshot = status(master)
    snapshot["requests"] = master.tally.as_json()
    snapshot["active_requests"] = sum(row["running"] for row in snapshot["workers"])
    return snapshot
