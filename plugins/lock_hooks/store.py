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
        # one request at a time: the batch's threads confirm side by side, and psycopg 3's pipeline mode (the
        # confirm's) belongs to the whole connection while it lasts
        self._guard = threading.Lock()
        self._libpq = _libpq_of(connection)
        try:
            connection.autocommit = True
        except Exception as exc:
            self.close()
            raise LockUnavailable(f"{description}: {_text(exc)}") from exc

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            with self._guard, self.connection.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        except Exception as exc:
            raise self._error(exc) from exc

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
        """One round trip: it answers only while the session, and so its locks, still exists.

        On psycopg 3 it is a bare protocol Sync (`sync_once`), which starts no transaction. Any statement would
        do the same job, but PostgreSQL walks every lock the session holds at each transaction's end: with a
        batch's 5,000 creation locks, a `SELECT 1` cost the server 0.22 ms of CPU (0.8 ms between creates 25 ms
        apart), against 0.02 ms for the Sync. psycopg2 has no pipeline mode (nor has a libpq older than 14), so
        there it is the `SELECT 1`."""
        if self._libpq is None:
            self._query("SELECT 1")
            return
        try:
            with self._guard:
                sync_once(self._libpq)
        except Exception as exc:
            raise self._error(exc) from exc

    def close(self) -> None:
        try:
            self.connection.close()
        except Exception:  # already gone: its locks went with it
            pass
