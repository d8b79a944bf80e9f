"""create_batch under the creation lock: what it holds and when, and what it does with an email another run holds.

The fakes of test_batch.py (CMS, UFMatch, journal) and the fake lock store of test_locks.py; a second "run"
is a second session of the same lock table.
"""

from __future__ import annotations

import copy

import pytest

from cms_operators.backend import CmsUnavailable
from pipeline.batch import BatchContext, BatchIncomplete, create_batch
from pipeline.locks import EmailLocks, LockUnavailable, lock_key
from provisioning import outcomes
from tests.pipeline.test_batch import ADA, ALAN, GRACE, MARKER, World, batch_of
from tests.pipeline.test_locks import Clock, FakeStore


class Run:
    """One run's batch over a shared lock table; every session it opens is recorded."""

    def __init__(self, world: World, table: dict, name: str = "this run", wait: float = 3.0, fail_on=None):
        self.world, self.table, self.name, self.fail_on = world, table, name, fail_on
        self.clock = Clock()
        self.sessions: list[FakeStore] = []
        self.slept: list[tuple[float, int]] = []
        self.locks = EmailLocks(self.open, wait_seconds=wait, poll_seconds=1, sleep=self.clock.sleep,
                                clock=self.clock.time)

    def open(self) -> FakeStore:
        self.sessions.append(FakeStore(self.table, self.name, fail_on=self.fail_on))
        return self.sessions[-1]

    def holds(self, email: str) -> bool:
        return self.table.get(lock_key(email)) == self.name

    def batch_sleep(self, seconds: float) -> None:
        """The batch's own pauses (not the lock's waits), with the number of locks held meanwhile."""
        self.world.sleeps.append(seconds)
        self.slept.append((seconds, sum(owner == self.name for owner in self.table.values())))

    def run(self, rows: list[dict], *, final_try: bool = False) -> list[dict]:
        w = self.world
        ctx = BatchContext(backend=w.cms, linked_accounts=w.civicrm.linked_accounts, save_links=w.civicrm.save_links,
                           read_journal=w.journal.read, write_journal=w.journal.write, links_for=w.civicrm.links_for,
                           marker=MARKER, final_try=final_try, load_timed_out=lambda: None,
                           store_timed_out=lambda when: None, sleep=self.batch_sleep, lock=self.locks)
        return create_batch(copy.deepcopy(rows), ctx)


def by_id(results):
    return {r["contact_id"]: r for r in results}


def test_every_create_and_its_link_happen_while_the_email_is_held_and_it_is_released_after():
    world = World()
    table: dict = {}
    run = Run(world, table)
    seen = []
    create_user, save_links = world.cms.create_user, world.civicrm.save_links
    linked_accounts, read_journal = world.civicrm.linked_accounts, world.journal.read

    def spy(name, fn, email_of):
        def call(*args, **kwargs):
            seen.append((name, {e: run.holds(e) for e in email_of(*args, **kwargs)}))
            return fn(*args, **kwargs)
        return call

    both = lambda *a, **k: ["ada@example.org", "grace@example.org"]  # noqa: E731
    world.cms.create_user = spy("create_user", create_user, lambda **k: [k["email"]])
    world.civicrm.save_links = spy("save_links", save_links, lambda links: [link["uf_name"] for link in links])
    world.civicrm.linked_accounts = spy("linked_accounts", linked_accounts, both)
    world.journal.read = spy("read_journal", read_journal, both)

    results = run.run(batch_of(ADA, GRACE))

    assert [r["outcome"] for r in results] == ["created", "created"]
    assert [name for name, _ in seen] == ["linked_accounts", "read_journal", "create_user", "create_user",
                                          "save_links"]
    assert all(all(held.values()) for _, held in seen), seen
    assert table == {} and run.sessions[0].closed  # released once the links were written
    assert len(run.sessions) == 1  # one session for the batch
    # the session was confirmed before each create
    assert [c[0] for c in run.sessions[0].calls].count("confirm") == 2


def test_an_email_another_run_holds_is_left_alone_and_retried():
    world, table = World(), {}
    table[lock_key("ada@example.org")] = "other run"
    run = Run(world, table, wait=3)
    rows = batch_of(ADA, GRACE)
    create_user, created_at = world.cms.create_user, {}

    def timed_create(**fields):
        created_at[fields["email"]] = run.clock.now
        return create_user(**fields)

    world.cms.create_user = timed_create
    with pytest.raises(BatchIncomplete, match="1 of 2 contacts wait for another run or worker creating an account"):
        run.run(rows)

    assert created_at == {"grace@example.org": 0}  # Grace's create did not wait for Ada's email
    assert run.clock.now == 3  # then Ada's was waited for, a bounded time
    assert [s.closed for s in run.sessions] == [True, True]  # a session per pass
    assert world.cms.creates("ada@example.org") == []  # nothing sent for Ada
    assert all(e.contact_id != 1 for write in world.journal.writes for e in write)  # nor journalled
    assert world.cms.creates("grace@example.org") == ["grace.hopper"]
    assert set(world.civicrm.rows) == {2}  # Grace is linked before the task raises
    assert table == {lock_key("ada@example.org"): "other run"}

    del table[lock_key("ada@example.org")]  # the other run finished without making Ada's account
    results = by_id(run.run(rows))
    assert results[1]["outcome"] == "created" and results[2]["reason"] == outcomes.linked_by_earlier_try()
    assert world.cms.creates("ada@example.org") == ["ada.lovelace"]


def test_still_held_on_the_last_try_the_contact_is_deferred_with_nothing_sent():
    world, table = World(), {lock_key("ada@example.org"): "other run"}
    results = by_id(Run(world, table, wait=2).run(batch_of(ADA, GRACE), final_try=True))
    assert results[1]["outcome"] == "deferred"
    assert results[1]["reason"] == outcomes.email_locked_elsewhere(2.0)
    assert "lock_wait_seconds (2 s)" in results[1]["reason"]
    assert results[2]["outcome"] == "created"
    assert world.cms.creates("ada@example.org") == [] and 1 not in world.civicrm.rows


def test_the_other_runs_account_for_the_same_contact_is_linked_not_made_again():
    """The other run created and linked Ada while this batch waited: reading after the lock sees it."""
    world, table = World(), {}
    key = lock_key("ada@example.org")
    table[key] = "other run"
    run = Run(world, table, wait=10)
    rows = batch_of(ADA)

    def other_run_finishes(seconds):
        Clock.sleep(run.clock, seconds)
        if key in table and run.clock.now >= 2:
            user = world.cms.add_user("ada.lovelace", "ada@example.org")
            world.civicrm.link(1, user.uf_id, "ada@example.org")
            del table[key]

    run.locks.sleep = other_run_finishes
    [result] = run.run(rows)
    assert world.cms.count("create_user") == 0
    assert (result["outcome"], result["reason"]) == ("created", outcomes.linked_by_earlier_try())


def test_the_other_runs_account_for_another_contact_with_the_email_is_refused_not_duplicated():
    """Contact 9 of the other run got the account; after the lock our create meets the CMS's duplicate
    answer (no longer racy), looks up, and the UFMatch check refuses the account linked to contact 9."""
    world, table = World(), {}
    user = world.cms.add_user("ada.l", "ada@example.org")
    world.civicrm.link(9, user.uf_id, "ada@example.org")
    [result] = Run(world, table).run(batch_of(ADA))
    assert len([u for u in world.cms.users.values() if u.email == "ada@example.org"]) == 1
    assert result["outcome"] == "failed"
    assert result["reason"] == outcomes.account_linked_to_other("ada.l", user.uf_id, 9)


def test_a_lost_lock_session_stops_further_creates_and_the_batch_retries():
    world, table = World(), {}
    run = Run(world, table)
    confirms = []

    def confirm():
        confirms.append(1)
        if len(confirms) > 1:
            raise LockUnavailable("server closed the connection")

    original = run.open

    def open_store():
        store = original()
        store.confirm = confirm
        return store

    run.locks.open_store = open_store
    with pytest.raises(BatchIncomplete, match="creation lock's session ended"):
        run.run(batch_of(ADA, GRACE, ALAN))
    assert world.cms.count("create_user") == 1  # the first create only: no create without a live lock
    assert set(world.civicrm.rows) == {1}  # and it is linked


def test_a_batch_with_nothing_to_create_opens_no_lock_session():
    world = World()
    existing = world.cms.add_user("grace_h", "grace@example.org")
    rows = batch_of(GRACE, users=[(existing.uf_id, "grace_h", "grace@example.org")])
    run = Run(world, {})
    assert [r["outcome"] for r in run.run(rows)] == ["linked_existing"]
    assert run.sessions == []


def test_a_lock_store_that_cannot_be_reached_fails_the_try_before_anything_is_read_or_sent():
    world = World()
    run = Run(world, {}, fail_on="try_lock")
    with pytest.raises(LockUnavailable):
        run.run(batch_of(ADA))
    assert world.cms.calls == [] and world.journal.writes == [] and world.civicrm.saves == []


def test_a_timed_out_create_keeps_its_email_locked_for_the_client_timeout():
    """The CMS may still be storing the account after our client gave up: no other run may create beside it."""
    world = World()
    run = Run(world, {})
    world.cms.script("ada@example.org", CmsUnavailable(None, "timeout", "WordPress did not answer within 30 s"))

    with pytest.raises(BatchIncomplete):
        run.run(batch_of(ADA, GRACE))
    assert run.slept == [(30.0, 2)]  # the client timeout, with the batch's two emails still locked
    assert run.table == {}  # released after
