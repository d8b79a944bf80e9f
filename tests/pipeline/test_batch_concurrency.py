"""Creates side by side inside one batch (`max_concurrency`): every guarantee of test_batch.py still holds,
the threads share one pace, and each has its own CMS session."""

from __future__ import annotations

import threading
import time

import pytest

from cms_operators.backend import CmsAuthError, CmsUnavailable, CmsUser
from pipeline.batch import BatchIncomplete, _Work
from pipeline.pacing import Pacer
from tests.pipeline.test_batch import ALAN, FakeCms, World, batch_of, by_id, person

PEOPLE = [person(10 + n, f"First{n}", f"Last{n}") for n in range(12)]


class SlowCms(FakeCms):
    """The test batch's CMS, answering each create after `latency` seconds; records who was in flight."""

    def __init__(self, latency: float = 0.05):
        super().__init__()
        self.latency = latency
        self.guard = threading.RLock()
        self.in_flight = self.most_in_flight = 0
        self.starts: list[float] = []
        self.sessions: list[SlowCms] = []  # the sessions opened for the batch's threads
        self.closed = 0
        self.parent: SlowCms | None = None
        self.mailed_by: list[SlowCms] = []

    def session(self) -> SlowCms:
        """A thread's own session on the same site (shares the users, the calls and the answers)."""
        other = SlowCms(self.latency)
        other.__dict__.update({k: v for k, v in self.__dict__.items()
                               if k not in ("sessions", "parent", "closed", "mailed_by")})
        other.parent = self
        with self.guard:
            self.sessions.append(other)
        return other

    def add_user(self, *args, **kwargs):
        root = self.parent or self
        if root is not self:  # one site: its ids are counted once, whichever session creates
            return root.add_user(*args, **kwargs)
        with self.guard:
            return super().add_user(*args, **kwargs)

    def close(self):
        root = self.parent or self
        with root.guard:
            root.closed += 1

    def send_password_mail(self, user):
        root = self.parent or self
        with root.guard:
            root.mailed_by.append(self)
        super().send_password_mail(user)

    def create_user(self, **request):
        root = self.parent or self
        with root.guard:
            root.in_flight += 1
            root.most_in_flight = max(root.most_in_flight, root.in_flight)
            root.starts.append(time.monotonic())
        try:
            time.sleep(self.latency)
            with root.guard:  # the site's own table: one writer at a time
                return super().create_user(**request)
        finally:
            with root.guard:
                root.in_flight -= 1


class Sleeps(list):
    """Sleeps for real, and keeps what it slept."""

    def append(self, seconds):
        super().append(seconds)
        time.sleep(seconds)


@pytest.fixture
def world() -> World:
    made = World()
    made.cms = SlowCms()
    made.sleeps = []
    return made


def test_creates_run_side_by_side_each_thread_on_its_own_session_and_every_account_is_made_once(world):
    started = time.monotonic()
    results = world.run(batch_of(*PEOPLE), concurrency=4, open_backend=world.cms.session)
    took = time.monotonic() - started

    assert [r["outcome"] for r in results] == ["created"] * len(PEOPLE)
    assert world.cms.most_in_flight == 4
    assert took < len(PEOPLE) * world.cms.latency  # a sequential batch could not have been this quick
    assert sorted(u.email for u in world.cms.users.values()) == sorted(p["email"] for p in PEOPLE)
    assert len(world.cms.sessions) == 4 and world.cms.closed == 4  # each thread's session, closed after
    assert sorted(world.saved_contacts()) == [p["contact_id"] for p in PEOPLE]  # linked in one write
    # the journal names every account before any create is posted, as in the one-by-one batch
    assert len(world.journal.writes[0]) == len(PEOPLE) and all(e.pending for e in world.journal.writes[0])
    assert len(world.cms.mailed) == len(PEOPLE)
    assert set(world.cms.mailed_by) <= set(world.cms.sessions) and len(world.cms.mailed_by) == len(PEOPLE)


def test_taken_logins_get_their_suffixes_side_by_side_too(world):
    for n in range(4):
        world.cms.add_user(f"first{n}.last{n}", f"someone{n}@elsewhere.example")
    results = by_id(world.run(batch_of(*PEOPLE), concurrency=4, open_backend=world.cms.session))
    assert {results[10 + n]["username"] for n in range(4)} == {f"first{n}.last{n}2" for n in range(4)}
    assert all(r["outcome"] == "created" for r in results.values())


def test_a_rate_limit_holds_across_the_threads():
    clock = {"now": 0.0}
    waits: list[float] = []

    def sleep(seconds):
        waits.append(seconds)

    pacer = Pacer(10, clock=lambda: clock["now"], sleep=sleep)
    threads = [threading.Thread(target=pacer.wait) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(waits) == pytest.approx([0.1, 0.2, 0.3, 0.4])  # five starts, 0.1 s apart, in any thread order
    assert Pacer(None, clock=lambda: 5.0, sleep=sleep).wait() is None and len(waits) == 4  # no limit: no wait


def test_a_pause_the_cms_asks_for_stops_every_thread(world):
    world.cms.script(PEOPLE[0]["email"], CmsUnavailable(429, "rate_limited", "slow down", retry_after=0.4))
    world.sleeps = Sleeps()
    with pytest.raises(BatchIncomplete, match="1 of 12"):  # its create is left for the retry, as one by one
        world.run(batch_of(*PEOPLE), concurrency=4, open_backend=world.cms.session,
                  pacer=Pacer(sleep=world.sleeps.append))
    assert len(world.cms.users) == len(PEOPLE) - 1
    starts = sorted(world.cms.starts)
    first = starts[0]
    # the 429 came back after the first round (~0.05 s); the starts after it waited out the pause
    later = [t - first for t in starts if t - first > 0.06]
    assert later and min(later) >= 0.4
    assert 0.4 in [round(s, 2) for s in world.sleeps]


def test_a_refused_credential_in_one_thread_stops_the_batch(world):
    world.cms.script(PEOPLE[5]["email"], CmsAuthError(401, "invalid_auth", "Sorry, you are not allowed"))
    with pytest.raises(CmsAuthError):
        world.run(batch_of(*PEOPLE), concurrency=3, open_backend=world.cms.session)
    assert world.cms.closed == 3
    assert len(world.cms.starts) < len(PEOPLE) + 1


def test_one_thread_is_the_one_by_one_batch(world):
    results = world.run(batch_of(ALAN, *PEOPLE[:3]), concurrency=1, open_backend=world.cms.session)
    assert [r["outcome"] for r in results] == ["created"] * 4
    assert world.cms.sessions == [] and world.cms.most_in_flight == 1


def test_every_create_reports_its_time_to_the_pacer(world):
    class Recording(Pacer):
        def __init__(self):
            super().__init__()
            self.times: list[float] = []

        def answered(self, seconds):
            self.times.append(seconds)
            super().answered(seconds)

    for concurrency, people in ((1, PEOPLE[:6]), (4, PEOPLE[6:])):
        pacer = Recording()
        world.run(batch_of(*people), concurrency=concurrency,
                  open_backend=world.cms.session, pacer=pacer)
        assert len(pacer.times) == 6 and min(pacer.times) >= world.cms.latency * 0.9


def test_each_thread_takes_a_waiting_mail_after_each_create_so_creates_stay_in_flight(world, monkeypatch):
    """A wave hands out many mails at once. If every thread sent them all before its next create, the CMS would
    have no create under way for that while (measured: 16% of the creates' pace lost at 4 threads). Each thread
    alternates instead, as one sending an account's create and then its mail would: two mails in a row only once
    it has no create left to take."""
    from pipeline import batch as batch_module

    monkeypatch.setattr(batch_module, "WAVE_SECONDS", 0.02)
    world.cms.latency = 0.01
    jobs: dict[int, list[str]] = {}  # each thread's session: its jobs in order
    guard = threading.Lock()
    creating, mailing = SlowCms.create_user, SlowCms.send_password_mail

    def create_user(cms, **request):
        with guard:
            jobs.setdefault(id(cms), []).append("create")
        return creating(cms, **request)

    def send_password_mail(cms, user):
        with guard:
            jobs.setdefault(id(cms), []).append("mail")
        return mailing(cms, user)

    monkeypatch.setattr(SlowCms, "create_user", create_user)
    monkeypatch.setattr(SlowCms, "send_password_mail", send_password_mail)
    people = [person(100 + n, f"First{n}", f"Last{n}") for n in range(40)]
    results = world.run(batch_of(*people), concurrency=4, open_backend=world.cms.session)

    assert [r["outcome"] for r in results] == ["created"] * 40 and len(world.cms.mailed) == 40, [r["reason"] for r in results if r["outcome"] != "created"][:3]
    assert len(jobs) == 4 and sum(job == "mail" for seq in jobs.values() for job in seq) == 40
    for seq in jobs.values():  # while creates are plenty (up to a thread's fifth of ten): never two mails in a row
        fifth_create = [n for n, job in enumerate(seq) if job == "create"][4]
        before = seq[:fifth_create]
        assert not any(a == b == "mail" for a, b in zip(before, before[1:], strict=False)), seq


def test_two_mails_in_a_row_only_when_more_mails_wait_than_creates_are_left():
    """The rule behind the alternation: a thread's next job after a create is a waiting mail, else a create;
    when more mails wait than creates are left unanswered, a mail whatever the last job was, so that the mails
    of the last waves go out beside the last creates (their waits on the CMS) rather than alone after them."""
    work = _Work(4)
    work.release([{"contact_id": n} for n in range(1, 5)], low_water=-1)
    work.add_mails([(101, CmsUser(uf_id=101, username="u101", email="u101@example.org"))])
    assert work.take()[0] == "create"
    assert work.take(after_create=True)[0] == "mail"
    work.add_mails([(100 + n, CmsUser(uf_id=100 + n, username=f"u{n}", email=f"u{n}@example.org"))
                    for n in range(2, 6)])  # 4 waiting, 4 creates unanswered: alternate still
    assert work.take()[0] == "create"
    work.created()  # 3 unanswered now, 4 mails waiting
    assert [work.take()[0], work.take()[0]] == ["mail", "create"]  # 3 mails for 3 creates: alternate again
