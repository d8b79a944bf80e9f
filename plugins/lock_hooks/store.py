"""PostgreSQL session-level advisory locks on one DB-API connection (psycopg2 or psycopg 3); no Airflow import.

`pg_try_advisory_lock(bigint)` never waits, so the waiting is ours (pipeline/locks.py: bounded, and
never in an order that could deadlock); the locks belong to the session, not to a transaction, so the
connection runs in autocommit and holds no transaction open; a worker that dies (or whose connection
drops) loses its session and PostgreSQL releases every lock of it at once: none is ever left stale.
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Sequence

from pipeline.locks import LockError, LockUnavailable

OUT_OF_SHARED_MEMORY = "53200"  # SQLSTATE when the shared lock table is full
CONFIRM_TIMEOUT = 30.0  # seconds a confirm waits for the server's answer before the locks count as lost
# How recent the session's last answer must be for a create to go out without asking again. PostgreSQL drops a
# session it hears nothing from (a cut network) only when TCP keepalive gives up on it: at least a second of
# silence even with tcp_keepalives_idle at its minimum. Every session it ends itself (terminate, shutdown, a crash,
# idle_session_timeout) it tells the client first, which `_server_spoke` sees at once.
CONFIRM_MAX_AGE = 0.25


def _text(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _libpq_of(connection):
    """psycopg 3's libpq connection where that libpq has pipeline mode (14 or later), else None (psycopg2)."""
    pgconn = getattr(connection, "pgconn", None)
    if pgconn is None:
        return None
    import psycopg

    return pgconn if psycopg.Pipeline.is_supported() else None


def sync_once(pgconn, timeout: float = CONFIRM_TIMEOUT) -> None:
    """One protocol Sync on an idle libpq connection, and its answer: a round trip that starts no transaction.

    Done at libpq's level (psycopg's `pq` interface) rather than with psycopg's `connection.pipeline()`: that
    block sends two Syncs (the one asked for and one of its own on leaving) through generators whose Python
    work held the interpreter lock for 14% of an 8-thread batch's time. Raises psycopg.OperationalError when
    the session is gone, TimeoutError when no answer came within `timeout` seconds."""
    import psycopg
    from psycopg import pq

    deadline = time.monotonic() + timeout
    pgconn.enter_pipeline_mode()
    try:
        pgconn.pipeline_sync()
        while pgconn.flush():  # 1 while some of the message is still to be sent
            _wait(pgconn.socket, select.POLLOUT, deadline)
        while True:
            while not pgconn.is_busy():
                result = pgconn.get_result()
                if result is None:
                    break
                if result.status == pq.ExecStatus.PIPELINE_SYNC:
                    return
                if result.status == pq.ExecStatus.FATAL_ERROR:
                    raise psycopg.OperationalError(
                        (result.error_message or pgconn.error_message).decode("utf-8", "replace").strip())
            _wait(pgconn.socket, select.POLLIN, deadline)
            pgconn.consume_input()  # raises when the server closed the session
    finally:
        if pgconn.pipeline_status != pq.PipelineStatus.OFF and pgconn.status == pq.ConnStatus.OK:
            try:
                pgconn.exit_pipeline_mode()
            except psycopg.Error:  # results still pending after an error: the connection is of no more use
                pass


def _wait(fd: int, event: int, deadline: float) -> None:
    poll = select.poll()
    poll.register(fd, event | select.POLLERR | select.POLLHUP)
    left = deadline - time.monotonic()
    if left <= 0 or not poll.poll(left * 1000):
        raise TimeoutError("no answer from the lock's PostgreSQL session in time")


class PostgresLockStore:
    """One PostgreSQL session of the lock store (see pipeline.locks.LockStore)."""

    def __init__(self, connection, description: str):
        self.connection = connection
        self.description = description
        self.max_age = CONFIRM_MAX_AGE
        # one request at a time: the batch's threads confirm side by side, and psycopg 3's pipeline mode (the
        # confirm's) belongs to the whole connection while it lasts
        self._guard = threading.Lock()
        self._libpq = _libpq_of(connection)
        self._answered_at = float("-inf")  # when the last request the server answered was sent (monotonic)
        try:
            connection.autocommit = True
        except Exception as exc:
            self.close()
            raise LockUnavailable(f"{description}: {_text(exc)}") from exc

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._guard:
            return self._answered(sql, params)

    def _answered(self, sql: str, params: tuple = ()) -> list[tuple]:
        """One statement's rows (the caller holds the guard); its answer proves the session alive when it was sent."""
        sent = time.monotonic()
        try:
            with self.connection.cursor() as cur:
                cur.execute(sql, params)
                rows = cur.fetchall()
        except Exception as exc:
            raise self._error(exc) from exc
        self._answered_at = sent
        return rows

    def _error(self, exc: Exception) -> LockError:
        """The driver's error (psycopg2 and psycopg 3 have different classes) as ours."""
        state = getattr(exc, "pgcode", None) or getattr(exc, "sqlstate", None)
        if state == OUT_OF_SHARED_MEMORY:
            return LockError(
                f"{self.description}: PostgreSQL's lock table is full ({_text(exc)}). Each running create "
                "batch holds one advisory lock per email it creates: raise max_locks_per_transaction on "
                "that server, or lower batch_size or the slots of the cmsuser_cms pool")
        return LockUnavailable(f"{self.description}: {_text(exc)}")

    def try_lock(self, keys: Sequence[int]) -> set[int]:
        if not keys:
            return set()
        rows = self._query("SELECT k FROM unnest(%s::bigint[]) AS k WHERE pg_try_advisory_lock(k)",
                           ([int(k) for k in keys],))
        return {int(row[0]) for row in rows}

    def unlock(self, keys: Sequence[int]) -> None:
        if keys:
            self._query("SELECT pg_advisory_unlock(k) FROM unnest(%s::bigint[]) AS k", ([int(k) for k in keys],))

    def confirm(self) -> None:
        """The session, and so every lock it holds, still exists: it answered a request sent at most `max_age`
        seconds ago (a confirm, or the batch's own try_lock and unlock) and has sent nothing since; else one
        round trip now, which the threads waiting behind it share.

        That is what a round trip before every create told (10,000 of them in a run of 10,000, each a wait for
        the server's process to be scheduled), within the quarter second no lock can be lost unseen in
        (CONFIRM_MAX_AGE). On psycopg 3 the round trip is a bare protocol Sync (`sync_once`), which starts no
        transaction: a statement would do the same job, but PostgreSQL walks every lock the session holds at each
        transaction's end (0.22 ms of the server's CPU with a batch's 5,000 locks, against 0.02 ms for the Sync).
        psycopg2 has no pipeline mode (nor has a libpq older than 14), so there it is a `SELECT 1`."""
        with self._guard:
            if time.monotonic() - self._answered_at < self.max_age and not self._server_spoke():
                return
            if self._libpq is None:
                self._answered("SELECT 1")
                return
            sent = time.monotonic()
            try:
                sync_once(self._libpq)
            except Exception as exc:
                raise self._error(exc) from exc
            self._answered_at = sent

    def _server_spoke(self) -> bool:
        """Whether the server has sent anything since its last answer. On an idle session that is PostgreSQL
        ending it (its FATAL message, then the close), so the next confirm asks instead of trusting the last."""
        try:
            poll = select.poll()
            poll.register(self.connection.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
            return bool(poll.poll(0))
        except Exception:  # the connection is closed already: the round trip says so
            return True

    def close(self) -> None:
        try:
            self.connection.close()
        except Exception:  # already gone: its locks went with it
            pass
