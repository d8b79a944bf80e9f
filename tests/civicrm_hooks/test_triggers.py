"""The near-real-time watcher against the CiviCRM emulator over HTTP: what fires, what does not, what it costs.

The standard seed (sandbox/civicrm/testing.py): static group 5 (new_members) with child group 6, smart
group 7; tags 3 (needs_login) and 4 (login_created); contacts 2-10.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from civicrm_hooks import queries
from civicrm_hooks.triggers import CURSOR_KEY, TriggerJoinsWatcher

NEW_MEMBERS, CHILD, SMART = 5, 6, 7
NEEDS_LOGIN, LOGIN_CREATED = 3, 4
POLL = 0.05


class StateStore:
    """The asset's state store as the triggerer gives it to a watcher (aget/aset of JSON values)."""

    def __init__(self, values=None):
        self.values = dict(values or {})

    async def aget(self, key, default=None):
        return self.values.get(key, default)

    async def aset(self, key, value):
        self.values[key] = value


class Watching:
    """A watcher running on its own event loop for one test; `next_event()` waits for what it fires."""

    def __init__(self, store=None, **kwargs):
        kwargs = {"civicrm_conn_id": "civicrm_default", "groups": ["new_members"], "tags": ["needs_login"],
                  "poll_interval": POLL, **kwargs}
        self.trigger = TriggerJoinsWatcher(**kwargs)
        self.trigger.asset_state_store = store
        self.loop = asyncio.new_event_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task = self.loop.create_task(self._consume())  # runs whenever the loop does, as in a triggerer

    async def _consume(self):
        async for event in self.trigger.run():
            await self.queue.put(event)

    def next_event(self, timeout=3.0):
        """The next event's payload, or None when none comes within `timeout` seconds."""
        try:
            return self.loop.run_until_complete(asyncio.wait_for(self.queue.get(), timeout)).payload
        except TimeoutError:
            if self.task.done():
                self.task.result()  # the watcher ended: raise what ended it
            return None

    def close(self):
        self.task.cancel()
        try:
            self.loop.run_until_complete(self.task)
        except BaseException:  # noqa: BLE001 - cancelled, or ended by the error a test provoked
            pass
        self.loop.close()


@pytest.fixture
def watching(civicrm_conn):
    made = []

    def start(**kwargs):
        made.append(Watching(**kwargs))
        return made[-1]

    yield start
    for watcher in made:
        watcher.close()


@pytest.fixture
def between_polls(monkeypatch):
    """A lock each of the watcher's polls holds: `with between_polls:` waits out a poll still under way and
    keeps the next from starting. Needed because a poll runs in a thread (asyncio.to_thread), which goes on
    after next_event's timeout has stopped the watcher's loop, so it may read CiviCRM after what the test
    does next."""
    lock = threading.Lock()

    def guard(real):
        def guarded(*args, **kwargs):
            with lock:
                return real(*args, **kwargs)
        return guarded

    for name in ("change_cursor", "changes_since"):
        monkeypatch.setattr(queries, name, guard(getattr(queries, name)))
    return lock


def join(hook, contact_id, group_id, status="Added"):
    hook.call("GroupContact", "save", {"records": [{"contact_id": contact_id, "group_id": group_id,
                                                    "status": status}], "match": ["contact_id", "group_id"]})


def tag(hook, contact_id, tag_id):
    hook.call("EntityTag", "create", {"values": {"entity_id": contact_id, "tag_id": tag_id,
                                                 "entity_table": "civicrm_contact"}})


def triggers(**fields):
    return queries.Triggers(static_groups={NEW_MEMBERS: "New members"}, tags={NEEDS_LOGIN: "Needs login"},
                            child_groups={CHILD: "child"}, **fields)


def test_joins_and_tags_fire_and_name_the_contacts_while_history_before_the_start_does_not(civicrm, hook,
                                                                                            watching):
    watcher = watching()
    assert watcher.next_event(timeout=0.5) is None  # the seed's members joined before watching began

    join(hook, 4, NEW_MEMBERS)
    event = watcher.next_event()
    assert event["joins"] == 1 and set(event["spans"]) == {"history"}
    assert queries.joined_contacts(hook, event["spans"], triggers()) == {4}

    tag(hook, 9, NEEDS_LOGIN)
    event = watcher.next_event()
    assert set(event["spans"]) == {"tags"}
    assert queries.joined_contacts(hook, event["spans"], triggers()) == {9}

    join(hook, 7, CHILD)  # a static child group counts as the trigger group
    assert queries.joined_contacts(hook, watcher.next_event()["spans"], triggers()) == {7}


def test_a_contact_removed_and_added_again_fires_again(civicrm, hook, watching):
    watcher = watching()
    assert watcher.next_event(timeout=0.5) is None
    join(hook, 2, NEW_MEMBERS, "Removed")  # seed: 2 is in the group; staff take it out to fix it
    assert watcher.next_event(timeout=0.5) is None  # a removal is no join
    join(hook, 2, NEW_MEMBERS)  # CiviCRM reuses the GroupContact row; the history gets a new row
    assert queries.joined_contacts(hook, watcher.next_event()["spans"], triggers()) == {2}


def test_other_groups_tags_and_entities_do_not_fire(civicrm, hook, watching):
    [other] = hook.call("Group", "create", {"values": {"name": "other", "title": "Other"}})
    watcher = watching()
    assert watcher.next_event(timeout=0.5) is None
    join(hook, 4, other["id"])
    tag(hook, 4, LOGIN_CREATED)
    hook.call("EntityTag", "create", {"values": {"entity_id": 1, "tag_id": NEEDS_LOGIN,
                                                 "entity_table": "civicrm_activity"}})
    assert watcher.next_event(timeout=0.5) is None
    join(hook, 3, NEW_MEMBERS)  # the cursor moved past the others: only this one is reported
    event = watcher.next_event()
    assert event["joins"] == 1
    assert queries.joined_contacts(hook, event["spans"], triggers()) == {3}


def test_while_nothing_happens_each_poll_is_one_request(civicrm, watching, monkeypatch):
    polls = []
    changes_since = queries.changes_since

    def counted(*args):
        polls.append(len(civicrm.calls))
        return changes_since(*args)

    monkeypatch.setattr(queries, "changes_since", counted)
    watcher = watching(poll_interval=0.05)
    deadline = time.monotonic() + 30
    while len(polls) < 6 and time.monotonic() < deadline:
        assert watcher.next_event(timeout=0.2) is None
    first, last = polls[1], polls[-1]  # from the second poll on: the names are resolved, the cursor taken
    requests = civicrm.calls[first:last]
    assert len(requests) == len(polls) - 2  # one request per poll, however fast the machine
    assert {(c.entity, c.action) for c in requests} == {("", "")}  # the multi-call route


def test_the_cursor_is_kept_so_a_restarted_watcher_misses_nothing_and_repeats_nothing(civicrm, hook, watching):
    store = StateStore()
    first = watching(store=store)
    assert first.next_event(timeout=0.5) is None
    start = dict(store.values[CURSOR_KEY])
    join(hook, 4, NEW_MEMBERS)
    assert first.next_event()["joins"] == 1
    assert first.next_event(timeout=0.3) is None  # the poll after the event stores the cursor past it
    assert store.values[CURSOR_KEY]["history"] > start["history"]
    first.close()

    tag(hook, 9, NEEDS_LOGIN)  # while no watcher runs (a triggerer restart)
    second = watching(store=store)
    event = second.next_event()
    assert set(event["spans"]) == {"tags"}  # the join seen before is not repeated
    assert queries.joined_contacts(hook, event["spans"], triggers()) == {9}


def test_a_civicrm_outage_is_waited_out_and_a_lasting_one_ends_the_watcher_for_the_triggerer(civicrm, hook,
                                                                                              watching, capsys,
                                                                                              between_polls):
    watcher = watching(max_consecutive_failures=50)
    assert watcher.next_event(timeout=0.5) is None
    with between_polls:  # so the watcher's next poll is the first to meet the outage
        join(hook, 4, NEW_MEMBERS)
        civicrm.inject(status=503, times=3)  # CiviCRM refuses its next poll (the hook's own retries included)
    assert queries.joined_contacts(hook, watcher.next_event(timeout=10)["spans"], triggers()) == {4}
    assert "CiviCRM poll failed (1 of 50" in "".join(capsys.readouterr())

    ending = watching(max_consecutive_failures=2)
    civicrm.inject(status=500, times=100, body={"error_code": 0, "error_message": "DB Error: no such table"})
    with pytest.raises(Exception, match="no such table"):
        ending.next_event(timeout=2.0)


def test_a_misspelt_group_is_named_in_the_log_and_retried(civicrm, watching, capsys):
    watcher = watching(groups=["new_membrs"], max_consecutive_failures=100)
    assert watcher.next_event(timeout=0.5) is None
    logged = "".join(capsys.readouterr())
    assert "'new_membrs'" in logged and "check the connection and the group and tag settings" in logged
