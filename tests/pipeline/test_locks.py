"""The creation lock's logic (pipeline/locks.py) with a fake store: keys, bounded waits, release, lost sessions."""

from __future__ import annotations

import threading

import pytest

from pipeline.locks import (
    EmailLocks,
    Held,
    LockError,
    LockLost,
    LockUnavailable,
    ProcessLockStore,
    lock_key,
    normalise_email,
)


class FakeStore:
    """A lock store session over a shared table (key -> session), recording every call."""

    def __init__(self, table: dict, name: str = "s", *, fail_on: str | None = None):
        self.table, self.name, self.fail_on = table, name, fail_on
        self.calls: list[tuple] = []
        self.closed = False
        self.description = f"fake store {name}"

    def _maybe_fail(self, method: str) -> None:
        if self.fail_on == method:
            raise LockUnavailable(f"{self.description}: connection reset")

    def try_lock(self, keys):
        self.calls.append(("try_lock", list(keys)))
        self._maybe_fail("try_lock")
        got = set()
        for key in keys:
            if self.table.setdefault(key, self.name) == self.name:
                got.add(key)
        return got

    def unlock(self, keys):
        self.calls.append(("unlock", list(keys)))
        self._maybe_fail("unlock")
        for key in keys:
            if self.table.get(key) == self.name:
                del self.table[key]

    def confirm(self):
        self.calls.append(("confirm",))
        self._maybe_fail("confirm")

    def close(self):
        self.closed = True
        for key in [k for k, owner in self.table.items() if owner == self.name]:
            del self.table[key]


class Clock:
    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def locks_over(store: FakeStore, clock: Clock, wait: float = 5.0, poll: float = 1.0) -> EmailLocks:
    return EmailLocks(lambda: store, wait_seconds=wait, poll_seconds=poll, sleep=clock.sleep, clock=clock.time)


# ------------------------------------------------------------------------------------------ keys


def test_one_key_per_normalised_email_and_64_bit_signed():
    assert normalise_email("  Ada.Lovelace@Example.ORG ") == "ada.lovelace@example.org"
    assert lock_key("  Ada.Lovelace@Example.ORG ") == lock_key("ada.lovelace@example.org")
    assert lock_key("ada@example.org") != lock_key("ada@example.com")
    keys = {lock_key(f"user{n}@example.org") for n in range(10_000)}
    assert len(keys) == 10_000
    assert all(-(2 ** 63) <= key < 2 ** 63 for key in keys)
    assert min(keys) < 0 < max(keys)  # the whole bigint range is used


def test_keys_are_the_same_in_every_process():
    """Python's hash() is salted per process: the key must not depend on it (a fixed value proves it)."""
    assert lock_key("ada@example.org") == lock_key("ada@example.org")
    assert lock_key("ada@example.org") == int.from_bytes(
        __import__("hashlib").blake2b(b"ada@example.org", digest_size=8, person=b"cmsuser-email").digest(),
        "big", signed=True)


# ------------------------------------------------------------------------------------------ acquire


def test_free_emails_are_held_at_once_and_released_with_the_session():
    table, clock = {}, Clock()
    store = FakeStore(table)
    with locks_over(store, clock)(["Ada@example.org", "grace@example.org"]) as held:
        assert "ada@example.org" in held and " GRACE@example.org" in held
        assert set(table) == {lock_key("ada@example.org"), lock_key("grace@example.org")}
    assert table == {} and store.closed and clock.sleeps == []
    assert store.calls[0] == ("try_lock", sorted(table_keys := [lock_key("ada@example.org"),
                                                                lock_key("grace@example.org")]))
    assert store.calls[-1] == ("unlock", sorted(table_keys))


def test_an_email_held_elsewhere_is_waited_for_a_bounded_time_then_left_out():
    table, clock = {lock_key("ada@example.org"): "other run"}, Clock()
    store = FakeStore(table)
    with locks_over(store, clock, wait=5, poll=1)(["ada@example.org", "grace@example.org"]) as held:
        assert "grace@example.org" in held
        assert "ada@example.org" not in held
    assert clock.now == 5 and clock.sleeps == [1, 1, 1, 1, 1]
    # only the missing key is asked for again
    assert [c for c in store.calls if c[0] == "try_lock"][1:] == [("try_lock", [lock_key("ada@example.org")])] * 5
    assert table == {lock_key("ada@example.org"): "other run"}  # the other run's lock is untouched


def test_an_email_released_while_waiting_is_taken():
    key = lock_key("ada@example.org")
    table, clock = {key: "other run"}, Clock()
    store = FakeStore(table)

    def sleep(seconds):
        Clock.sleep(clock, seconds)
        if clock.now >= 2:
            table.pop(key, None)  # the other run linked its account and let go

    locks = EmailLocks(lambda: store, wait_seconds=60, poll_seconds=1, sleep=sleep, clock=clock.time)
    with locks(["ada@example.org"]) as held:
        assert "ada@example.org" in held
        assert table == {key: "s"}
    assert clock.now == 2


def test_zero_wait_asks_once():
    table, clock = {lock_key("ada@example.org"): "other run"}, Clock()
    store = FakeStore(table)
    with locks_over(store, clock, wait=0)(["ada@example.org"]) as held:
        assert held.emails == frozenset()
    assert clock.sleeps == [] and len([c for c in store.calls if c[0] == "try_lock"]) == 1


def test_no_emails_opens_no_session():
    opened = []
    locks = EmailLocks(lambda: opened.append(1), wait_seconds=5)
    with locks(["", "  ", None]) as held:
        assert held.emails == frozenset()
        held.confirm()  # nothing to confirm
    assert opened == []


def test_the_session_is_closed_and_the_locks_released_when_the_block_raises():
    table, clock = {}, Clock()
    store = FakeStore(table)
    with pytest.raises(RuntimeError), locks_over(store, clock)(["ada@example.org"]):
        assert table
        raise RuntimeError("the batch failed")
    assert table == {} and store.closed


def test_a_store_that_fails_while_locking_is_closed_and_the_error_raised():
    store = FakeStore({}, fail_on="try_lock")
    with pytest.raises(LockUnavailable), locks_over(store, Clock())(["ada@example.org"]):
        pytest.fail("the block must not run without its locks")
    assert store.closed


def test_a_failed_unlock_still_closes_the_session(caplog):
    table = {}
    store = FakeStore(table, fail_on="unlock")
    with locks_over(store, Clock())(["ada@example.org"]):
        pass
    assert store.closed and table == {}  # closing the session released them
    assert "could not release 1 locks" in caplog.text
    assert "ada" not in caplog.text  # no email in the log


def test_the_log_names_counts_never_emails(caplog):
    table = {lock_key("ada@example.org"): "other run"}
    caplog.set_level("INFO")
    with locks_over(FakeStore(table), Clock(), wait=1)(["ada@example.org", "grace@example.org"]):
        pass
    assert "1 of 2 emails are held by another run" in caplog.text
    assert "example.org" not in caplog.text


def test_confirm_turns_a_lost_session_into_a_transient_cms_error():
    from cms_operators.backend import CmsUnavailable

    held = Held(frozenset({"ada@example.org"}), FakeStore({}, fail_on="confirm"))
    with pytest.raises(LockLost) as caught:
        held.confirm()
    assert isinstance(caught.value, CmsUnavailable) and caught.value.retryable
    assert caught.value.code == "lock_lost" and "connection reset" in caught.value.message
    assert not issubclass(LockError, CmsUnavailable)  # a configuration problem is not a CMS outage


# ------------------------------------------------------------------------------------------ in-process store


def test_process_store_sessions_exclude_each_other_and_release_on_close():
    first, second = ProcessLockStore(), ProcessLockStore()
    assert first.try_lock([1, 2]) == {1, 2}
    assert first.try_lock([1]) == {1}  # its own, again
    assert second.try_lock([1, 2, 3]) == {3}
    second.unlock([1])  # not its own: nothing happens
    assert second.try_lock([1]) == set()
    first.unlock([1])
    assert second.try_lock([1]) == {1}
    first.close()
    assert second.try_lock([2]) == {2}
    second.close()
    third = ProcessLockStore()
    assert third.try_lock([1, 2, 3]) == {1, 2, 3}
    third.close()


def test_process_locks_between_threads_let_one_holder_at_a_time():
    locks = EmailLocks(ProcessLockStore, wait_seconds=10, poll_seconds=0.01)
    inside, overlaps = [], []
    guard = threading.Lock()

    def worker():
        for _ in range(20):
            with locks(["ada@example.org"]) as held:
                assert "ada@example.org" in held
                with guard:
                    inside.append(1)
                    if len(inside) > 1:
                        overlaps.append(len(inside))
                threading.Event().wait(0.001)
                with guard:
                    inside.pop()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == []
