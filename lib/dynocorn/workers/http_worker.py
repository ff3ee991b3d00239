"""What every built-in worker class does with one parsed request: run the app and answer.

The classes differ only in who calls `handle()`: the sync worker's loop inline, a gthread
pool thread, or a gevent greenlet. `handle()` never closes the connection itself: it says
whether the connection may serve another request, and the caller, which owns the
connection's place in its loop, acts on that.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from bisect import bisect_left
from typing import Any

from dynocorn.http import CONTINUE, Limits, Request, RequestParser
from dynocorn.metrics.queue_time import queue_ms
from dynocorn.metrics.tally import BOUNDS
from dynocorn.scoreboard import BEGIN, ENDED_AT, RECORD_SIZE
from dynocorn.settings import no_hook
from dynocorn.sockets import Listener
from dynocorn.workers.base import Worker, WorkerAbort
from dynocorn.workers.connection import Connection
from dynocorn.workers.policy import ConnectionPolicy, Phase, Watched
from dynocorn.wsgi import EnvironBuilder, Response, WSGISettings, call_app
from dynocorn.wsgi_input import EMPTY_INPUT, EmptyInput, IncompleteBody, Input

DRAIN_LIMIT = 65536  # unread body we discard to keep a connection; beyond, we close it
# Shared by the loop classes (sync, gthread, gevent):
RECV_SIZE = 65536  # bytes read from a connection at once
BODY_BUFFER = 65536  # bodies up to this are read before the app is called
LOOP_TICK = 1.0  # seconds between heartbeats (and looks at idle connections)


def ready(request: Request) -> bool:
    """Serve once the body is in, or once enough is buffered that the app should stream it."""
    return request.complete or request.expect_continue or len(request.body) >= BODY_BUFFER


class HttpWorker(Worker):
    # What new_connection() builds; a worker class whose I/O differs swaps in a subclass.
    connection_class: type[Connection] = Connection
    terminating = False  # TERM: every worker is stopping (set by the signal handler)

    def setup_http(self) -> None:
        cfg = self.cfg
        self.limits = Limits(
            request_line=cfg.limit_request_line,
            fields=cfg.limit_request_fields,
            field_size=cfg.limit_request_field_size,
        )
        self.keepalive = float(cfg.keepalive)
        # A blocked send or recv gives up before the master's timeout would kill us.
        self.io_timeout = min(cfg.timeout / 2, 30.0) if cfg.timeout else 30.0
        self.policy = ConnectionPolicy(self.keepalive, self.io_timeout)
        settings = WSGISettings(
            multithread=self.multithread,
            multiprocess=cfg.workers > 1,
            errors=sys.stderr,
            forwarded_allow_ips=cfg.forwarded_allow_ips,
            secure_scheme_headers=cfg.secure_scheme_headers,
            script_name=os.environ.get("SCRIPT_NAME", ""),
        )
        self.builders: dict[int, EnvironBuilder] = {
            listener.fileno(): EnvironBuilder(settings, sockname_of(listener))
            for listener in self.listeners
        }
        self.use_sendfile = bool(cfg.sendfile)
        self.setup_record()
        self.tally_rows = self.tally.rows
        self.has_pre_request = cfg.pre_request is not no_hook
        self.has_post_request = cfg.post_request is not no_hook

    def setup_record(self) -> None:
        """Where this worker writes what it serves now (scoreboard.py's records), read by
        `dynocorn ctl status`; a worker without a slot writes to memory no one reads."""
        slot = self.board_slot
        if self.balance is not None and slot is not None:
            records = self.balance.board.records
            self.record_memory: Any = records.memory
            self.record_ends = records.ends
            self.record_at = slot * RECORD_SIZE
        else:
            self.record_memory, self.record_at = bytearray(RECORD_SIZE), 0
            self.record_ends = memoryview(self.record_memory).cast("I")
        self.record_ended_at = (self.record_at + ENDED_AT) // 4
        # next() on a count is one step under the GIL: threads never take the same number.
        self.begun_count = itertools.count(1)
        self.ended_count = itertools.count(1)

    def phase(self) -> Phase:
        if self.terminating:
            return Phase.TERMINATING
        return Phase.SERVING if self.alive else Phase.RETIRING

    def handle(self, connection: Connection, request: Request) -> bool:
        """Serve one request; True if the connection may serve the next one."""
        # The last request before max-requests recycling says so: the client must not send
        # another on this connection, which is about to close.
        last = self.nr + 1 >= self.max_requests
        keep_alive = request.keep_alive and self.alive and self.keepalive > 0 and not last
        # When its bytes came in (the loop's clock read at recv): no clock read of its own.
        started = connection.last_active
        BEGIN.pack_into(
            self.record_memory, self.record_at, started, next(self.begun_count), request.head
        )
        # The usual request has no body: its shared empty wsgi.input, without a call.
        if request.complete and not request.chunked and not request.content_length:
            body: Input | EmptyInput = EMPTY_INPUT
        else:
            body = _wsgi_input(connection, request)
        environ = connection.builder.build(request, body, connection.peer)
        request_start = environ.get("HTTP_X_REQUEST_START")
        if request_start is not None:
            self.note_queue_time(request_start)
        response = Response(
            request,
            connection.send,
            keep_alive=keep_alive,
            sendfile=connection.send_file if self.use_sendfile else None,
        )
        keep = True
        try:
            if self.has_pre_request:
                self.cfg.pre_request(self, request)
            assert self.wsgi is not None
            call_app(self.wsgi, environ, response)
        except WorkerAbort as abort:
            self.report_abort(abort, request)
            send_error(response)
            raise
        except IncompleteBody as error:
            status = 408 if connection.read_timed_out else 400
            self.log.debug(f"Incomplete request body from {connection.peer}: {error}")
            send_error(response, status)
            keep = False
        except OSError as error:
            self.log.debug(f"Client went away: {error}")
            keep = False
        except Exception:
            self.log.exception(f"Error handling request {request.raw_target}")
            send_error(response)
            keep = False
        finally:
            self.after_app(connection, request, environ, response, started)
        if body is EMPTY_INPUT:
            return keep and response.keep_alive
        return keep and response.keep_alive and body.drain(DRAIN_LIMIT)

    def report_abort(self, abort: WorkerAbort, request: Request) -> None:
        """The master's timeout reached this request: logged once, here, with the stack it
        was stuck in (where to look is the whole point), not again as the worker exits."""
        self.log.exception(f"Request aborted at timeout: {request.method} {request.raw_target}")
        abort.reported = True

    def note_queue_time(self, request_start: str) -> None:
        """How long the router held the request (X-Request-Start), for the metrics lines."""
        queued = queue_ms(request_start, time.time())
        if queued is not None:
            self.queue_times.add(queued)
            seconds = queued / 1000
            queue = self.tally.queue
            queue[bisect_left(BOUNDS, seconds)] += 1
            queue[-1] += seconds

    def after_app(
        self,
        connection: Watched,
        request: Request,
        environ: dict[str, Any],
        response: Response,
        started: float,
    ) -> None:
        """Count the request, and log it (access log, StatsD, post_request) when asked to."""
        # The connection was active until now: the loop reads this, no second clock read.
        now = connection.last_active = time.monotonic()
        duration = now - started
        self.record_ends[self.record_ended_at] = next(self.ended_count)
        # Counted in its row (metrics/tally.py), inlined: the path of every request.
        row = self.tally_rows.get((request.method, response.status_code))
        if row is None:
            row = self.tally.row(request.method, response.status_code)
        row[bisect_left(BOUNDS, duration)] += 1
        row[-1] += duration
        # request_done() counts and checks; skipped when it could only count.
        if self.nr + 1 >= self.checks_due:
            self.request_done()
        else:
            self.nr += 1
        if self.access_log is not None:
            self.access_log.log(environ, request, response, duration)
        if self.statsd is not None:
            self.statsd.request(response.status_code, duration * 1000)
        if self.has_post_request:
            try:
                self.cfg.post_request(self, request, environ, response)
            except Exception:
                self.log.exception("post_request hook failed")

    def new_connection(self, sock: Any, peer: Any, listener_fd: int) -> Connection:
        connection = self.connection_class(
            sock, peer, RequestParser(self.limits), self.builders[listener_fd]
        )
        connection.io_timeout = self.io_timeout
        connection.listener_fd = listener_fd
        return connection


def _wsgi_input(connection: Connection, request: Request) -> Input:
    """The wsgi.input of a request with a body (asked of its framing, attributes, not of its
    Body, which would be a call)."""
    body = Input(request, connection.read_more)
    if request.expect_continue:
        body.on_first_read = lambda: connection.send(CONTINUE)
    return body


def send_error(response: Response, status: int = 500) -> None:
    """The error page, unless the response has begun (or the client is gone)."""
    try:
        response.send_error(status)
    except OSError:
        pass


def sockname_of(listener: Listener) -> Any:
    try:
        return listener.sock.getsockname()
    except OSError:
        return None
