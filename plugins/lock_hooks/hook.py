"""The creation lock's Airflow connection (default `cmsuser_lock`): which store holds the locks.

- type `postgres`: PostgreSQL advisory locks through the Postgres provider's hook (host, port, login,
  password, database = schema, its extras such as `sslmode`). Any PostgreSQL every worker reaches will
  do, Airflow's metadata database included: the locks touch no table.
- `extra.in_process: true` (any type, e.g. `generic`): locks inside one Python process only, for
  dag.test and the demo; every use logs a warning saying that it protects nothing between workers.
- missing, or another type: pre-flight stops the run naming the connection, and no batch creates
  anything. Creation is never left unguarded by accident.
"""

from __future__ import annotations

import logging

from airflow.sdk import BaseHook

from pipeline.locks import EmailLocks, LockError, LockStore, LockUnavailable, ProcessLockStore, lock_key

log = logging.getLogger(__name__)

DEFAULT_CONN_ID = "cmsuser_lock"
PROBE_KEY = lock_key("cmsuser lock probe")  # pre-flight takes and releases this key: no email has it
IN_PROCESS_WARNING = (
    "creation lock: connection '{conn_id}' keeps the locks in this Python process only (extra.in_process). "
    "That is exact for dag.test and the demo, and NO protection between workers, machines or the task "
    "processes of a real scheduler: two overlapping runs could then make two accounts for one email. "
    "In production give '{conn_id}' type postgres (README, 'The creation lock').")


def _truthy(value) -> bool:
    return value is True or str(value).strip().lower() in {"true", "1", "yes"}


class CreationLockHook(BaseHook):
    """Opens sessions of the lock store the connection names (one per create batch)."""

    conn_name_attr = "lock_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "postgres"
    hook_name = "CMS user creation lock"

    def __init__(self, lock_conn_id: str = DEFAULT_CONN_ID, **kwargs):
        super().__init__(**kwargs)
        self.lock_conn_id = lock_conn_id

    def _connection(self):
        try:
            return self.get_connection(self.lock_conn_id)
        except Exception as exc:  # Airflow's "not defined" error (its class moved between versions)
            raise LockError(
                f"there is no Airflow connection '{self.lock_conn_id}' for the creation lock, and no account is "
                "created without it: add it of type postgres, pointing at a PostgreSQL database every worker "
                "reaches (Airflow's metadata database will do); for a single-process sandbox (dag.test) give it "
                "extra {\"in_process\": true} instead; or name another connection in the setting lock_conn_id "
                f"(README, 'The creation lock'). ({type(exc).__name__})") from exc

    def open_store(self) -> LockStore:
        """A new session of the connection's store; PostgreSQL errors are LockUnavailable (retried)."""
        conn = self._connection()
        if _truthy(conn.extra_dejson.get("in_process")):
            log.warning(IN_PROCESS_WARNING.format(conn_id=self.lock_conn_id))
            return ProcessLockStore()
        if conn.conn_type != "postgres":
            raise LockError(f"connection '{self.lock_conn_id}' is of type {conn.conn_type!r}; the creation lock needs "
                            "type postgres (or extra {\"in_process\": true} for a single-process sandbox only)")
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        from lock_hooks.store import PostgresLockStore

        where = f"PostgreSQL advisory locks at {conn.host}:{conn.port or 5432}/{conn.schema or ''} " \
                f"(connection '{self.lock_conn_id}')"
        try:
            session = PostgresHook(postgres_conn_id=self.lock_conn_id).get_conn()
        except Exception as exc:
            raise LockUnavailable(f"{where}: cannot connect: {' '.join(str(exc).split())}") from exc
        return PostgresLockStore(session, where)

    def email_locks(self, wait_seconds: float) -> EmailLocks:
        """What a batch holds its emails with (BatchContext.lock)."""
        return EmailLocks(self.open_store, wait_seconds=wait_seconds)

    def check(self) -> str:
        """Pre-flight: a session opens and can take and release a lock. Returns where the locks live."""
        store = self.open_store()
        try:
            if store.try_lock([PROBE_KEY]):
                store.unlock([PROBE_KEY])
            # else another run's pre-flight holds it this very moment: the store answered, which is the point
        finally:
            store.close()
        return store.description

    def test_connection(self) -> tuple[bool, str]:
        try:
            where = self.check()
        except LockError as exc:
            return False, exc.message
        return True, f"Creation lock ready: {where}."
