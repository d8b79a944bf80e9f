"""Creation is exclusive per email, across DAG runs and workers: the locks a batch holds while it creates.

The CMS cannot be trusted to refuse a second account for an email under concurrency (WordPress checks
for a taken email, then inserts, with no lock in between), and a look-up before the create only
narrows that window. So every create holds a lock on its normalised email (trimmed, lower-case) in a
store every worker shares, from before its journal entry is written until its link is saved: a
second run that wants the email waits (a bounded time) and then reads UFMatch, the journal and the
CMS (whose duplicate-email answer can no longer be raced) after the first is done. Creates for
different emails never wait for each other.

The stores: PostgreSQL session-level advisory locks (lock_hooks/store.py; a worker that dies drops its
session and with it its locks, so no lock is ever left stale), and `ProcessLockStore`, exclusive only
inside one Python process (dag.test, the demo). No Airflow import: the Airflow side (lock_hooks/hook.py)
picks the store from the connection.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from cms_operators.backend import CmsUnavailable
from transport.errors import ProvisioningError

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5  # how often a batch asks again for emails another run holds
_KEY_PERSON = b"cmsuser-email"  # the hash's own domain: no other use of blake2b gives these keys


class LockError(ProvisioningError):
    """The creation lock cannot be used as configured (missing or wrong connection); never retried."""


class LockUnavailable(LockError):
    """The lock store did not answer (PostgreSQL down or unreachable); a retry may succeed."""

    retryable = True


class LockLost(CmsUnavailable):
    """The session holding the batch's locks is gone: nothing more is created in this try, which the
    batch treats like an unavailable CMS (the rest is linked, then Airflow retries)."""


def normalise_email(email: str | None) -> str:
    """The form two emails are the same account in: trimmed and lower-case (as the plan dedupes)."""
    return (email or "").strip().lower()


def lock_key(email: str) -> int:
    """A signed 64-bit key (PostgreSQL's bigint) for the normalised email; the same on every worker
    (Python's own hash() is salted per process, PostgreSQL's hashtext is internal: neither is used)."""
    digest = hashlib.blake2b(normalise_email(email).encode(), digest_size=8, person=_KEY_PERSON).digest()
    return int.from_bytes(digest, "big", signed=True)


class LockStore(Protocol):
    """One session of a lock store. Locks belong to the session; closing it releases every one."""

    description: str  # where the locks live, for the log (never a password)

    def try_lock(self, keys: Sequence[int]) -> set[int]:
        """Take each free key at once (never waits); returns the keys this session now holds."""

    def unlock(self, keys: Sequence[int]) -> None:
        """Release keys this session holds."""

    def confirm(self) -> None:
        """Raise LockUnavailable when the session (and so every lock it held) is gone."""

    def close(self) -> None:
        """End the session; its locks go with it."""


class ProcessLockStore:
    """Locks that exist in this Python process only: exact for dag.test and the demo, where every task
    runs in one process, and no protection at all between processes or machines."""

    description = "in-process lock (exclusive inside this one Python process only)"
    _table: dict[int, object] = {}  # key -> owning session, shared by every session of the process
    _guard = threading.Lock()

    def __init__(self):
        self._owner = object()

    def try_lock(self, keys: Sequence[int]) -> set[int]:
        with self._guard:
            got = set()
            for key in keys:
                if self._table.setdefault(key, self._owner) is self._owner:
                    got.add(key)
            return got

    def unlock(self, keys: Sequence[int]) -> None:
        with self._guard:
            for key in keys:
                if self._table.get(key) is self._owner:
                    del self._table[key]

    def confirm(self) -> None:
        return None

    def close(self) -> None:
        with self._guard:
            for key in [k for k, owner in self._table.items() if owner is self._owner]:
                del self._table[key]


@dataclass(frozen=True)
class Held:
    """The emails a batch holds (normalised), and the session to confirm before each create."""

    emails: frozenset[str]
    store: LockStore | None = None

    def __contains__(self, email: object) -> bool:
        return isinstance(email, str) and normalise_email(email) in self.emails

    def confirm(self) -> None:
        """Raise LockLost when the locks may be gone (their session died): no create goes out unguarded."""
        if self.store is None:
            return
        try:
            self.store.confirm()
        except LockError as exc:
            raise LockLost(None, "lock_lost", f"the creation lock's session ended ({exc.message}); nothing more "
                           "is created in this try, the task retries") from exc


class EmailLocks:
    """`with locks(emails) as held:` one store session for the block; the emails' locks taken at once where
    free, the others asked for again every POLL_SECONDS until `wait_seconds` have passed. `held` names the
    emails got; the caller leaves the others for later. Every lock is released when the block ends."""

    def __init__(self, open_store: Callable[[], LockStore], *, wait_seconds: float,
                 poll_seconds: float = POLL_SECONDS, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.open_store = open_store
        self.wait_seconds = max(0.0, float(wait_seconds))
        self.poll_seconds = poll_seconds
        self.sleep = sleep
        self.clock = clock

    @contextmanager
    def __call__(self, emails: Iterable[str], *, wait: bool = True) -> Iterator[Held]:
        """`wait=False`: take only what is free now."""
        wanted: dict[int, set[str]] = {}
        for email in emails:
            normal = normalise_email(email)
            if normal:
                wanted.setdefault(lock_key(normal), set()).add(normal)
        if not wanted:  # nothing to create (links only): no session is opened
            yield Held(frozenset())
            return
        store = self.open_store()
        got: set[int] = set()
        try:
            got = self._acquire(store, sorted(wanted), self.wait_seconds if wait else 0.0)
            if len(got) < len(wanted) and wait:
                log.info("creation lock (%s): %d of %d emails are held by another run or worker for longer than "
                         "%g s; those contacts are left for a later try", store.description,
                         len(wanted) - len(got), len(wanted), self.wait_seconds)
            yield Held(frozenset(email for key in got for email in wanted[key]), store)
        finally:
            try:
                if got:
                    store.unlock(sorted(got))
            except LockError as exc:  # closing the session below releases them anyway
                log.warning("creation lock (%s): could not release %d locks (%s); ending the session releases "
                            "them", store.description, len(got), exc.message)
            finally:
                store.close()

    def _acquire(self, store: LockStore, keys: list[int], wait_seconds: float) -> set[int]:
        got = set(store.try_lock(keys))
        deadline = self.clock() + wait_seconds
        while len(got) < len(keys):
            left = deadline - self.clock()
            if left <= 0:
                break
            self.sleep(min(self.poll_seconds, left))
            got |= store.try_lock([key for key in keys if key not in got])
        return got


def process_locks(wait_seconds: float = 0.0) -> EmailLocks:
    """Locks inside this process only (the default of a BatchContext built without a lock store)."""
    return EmailLocks(ProcessLockStore, wait_seconds=wait_seconds)
