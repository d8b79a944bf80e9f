"""A batch records the attempts its waves complete (`record_done`): each contact's account linked and its mail
sent (or not due) gets its outcome activity, history and trigger take-off while the creates go on, and is
marked `recorded` so that finalize leaves it alone. Everything else stays finalize's."""

from __future__ import annotations

import pytest

from cms_operators.backend import CmsMailFailed, CmsRejected
from provisioning import journal, outcomes
from tests.pipeline.test_batch import ADA, ALAN, GRACE, World, batch_of, by_id, person


class Recorder:
    """record_done as the steps wire it: the entries' last journal write (with their outcome), then history and
    the take-off, which CiviCRM may refuse for some contacts (`refuse`)."""

    def __init__(self, world: World, refuse=(), error: BaseException | None = None):
        self.world, self.refuse, self.error = world, set(refuse), error
        self.calls: list[list[tuple]] = []

    def __call__(self, done):
        if self.error is not None:
            raise self.error
        self.calls.append([(entry.contact_id, entry.mail, activity) for entry, activity in done])
        written = self.world.journal.write([entry for entry, _ in done], {})
        return set(written) - self.refuse

    def recorded(self) -> dict[int, tuple]:
        """contact id -> (mail state in the journal, outcome activity); each contact recorded at most once."""
        flat = [item for call in self.calls for item in call]
        assert len({cid for cid, _, _ in flat}) == len(flat)
        return {cid: (mail, activity) for cid, mail, activity in flat}


@pytest.fixture
def world() -> World:
    return World()


def test_each_account_made_is_recorded_once_with_its_outcome_after_its_mail_went_out(world):
    recorder = Recorder(world)
    results = by_id(world.run(batch_of(ADA, GRACE, ALAN), record_done=recorder))

    recorded = recorder.recorded()
    assert set(recorded) == {1, 2, 3} and all(r["recorded"] for r in results.values())
    for cid, (mail, activity) in recorded.items():
        result = results[cid]
        assert mail == journal.MAIL_SENT  # the ledger's last word goes with the outcome
        assert activity == outcomes.activity_for("created", username=result["username"], uf_id=result["uf_id"],
                                                 uf_name=result["username"], reason=outcomes.reason_created(),
                                                 mail_note=outcomes.MAIL_SENT)
    assert world.cms.count("send_password_mail") == 3
    # the journal holds every account with its mail sent, as without recording
    assert sorted((e.contact_id, e.mail) for e in world.journal.activities.values()) == [(1, "sent"), (2, "sent"),
                                                                                        (3, "sent")]


def test_an_account_without_a_mail_due_is_recorded_when_linked(world):
    recorder = Recorder(world)
    results = by_id(world.run(batch_of(ADA, person(4, "Dora", "Quiet", do_not_email=True)), notify=True,
                              record_done=recorder))

    recorded = recorder.recorded()
    assert recorded[4][1]["details"] == f"{outcomes.reason_created()}; {outcomes.MAIL_DO_NOT_EMAIL}"
    assert recorded[4][0] == ""  # no mail was ever on its way
    assert results[4]["recorded"] and results[1]["recorded"]


def test_a_failed_mail_is_recorded_as_a_created_account_with_its_note(world):
    recorder = Recorder(world)
    world.cms.mail_errors[100] = CmsMailFailed(200, "retrieve_password_email_failure", "could not send")

    results = by_id(world.run(batch_of(ADA), record_done=recorder))

    [(mail, activity)] = recorder.recorded().values()
    assert (mail, activity["status"]) == ("", "Completed")
    assert activity["details"].endswith(outcomes.mail_failed("could not send"))
    assert results[1]["recorded"]


def test_failures_and_refused_records_are_left_to_finalize(world):
    recorder = Recorder(world, refuse={2})  # CiviCRM refused Grace's history record
    world.cms.script("alan@example.org", CmsRejected(400, "invalid_email", "Invalid email"))

    results = by_id(world.run(batch_of(ADA, GRACE, ALAN), record_done=recorder))

    assert results[3]["outcome"] == "failed" and 3 not in recorder.recorded()
    assert {cid: r["recorded"] for cid, r in results.items()} == {1: True, 2: False, 3: False}


def test_an_existing_account_linked_is_left_to_finalize(world):
    """Not ours: no journal activity to give an outcome to (finalize writes the contact's one activity)."""
    recorder = Recorder(world)
    existing = world.cms.add_user("grace_h", "grace@example.org")
    results = by_id(world.run(batch_of(ADA, GRACE, users=[(existing.uf_id, "grace_h", "grace@example.org")]),
                              record_done=recorder))

    assert results[2]["outcome"] == "linked_existing" and not results[2]["recorded"]
    assert set(recorder.recorded()) == {1}


def test_a_record_civicrm_fails_fails_the_batch_as_any_journal_write_does(world):
    """The record is the entries' last journal write: the batch stops for Airflow's retry, which finds every
    account linked and sends no mail twice."""
    rows = batch_of(ADA, GRACE)
    with pytest.raises(RuntimeError, match="CiviCRM is down"):
        world.run(rows, record_done=Recorder(world, error=RuntimeError("CiviCRM is down")))
    assert world.cms.count("create_user") == 2

    recorder = Recorder(world)
    results = by_id(world.run(rows, record_done=recorder))

    assert world.cms.count("create_user") == 2 and world.cms.count("send_password_mail") == 2
    assert all(r["outcome"] == "created" for r in results.values())
    # linked by the failed try: finalize records them (the retry's waves did not make them)
    assert recorder.calls == [] and not any(r["recorded"] for r in results.values())


def test_without_record_done_nothing_is_marked_recorded(world):
    results = world.run(batch_of(ADA, GRACE))
    assert [r["recorded"] for r in results] == [False, False]
    assert sorted(e.mail for e in world.journal.activities.values()) == ["sent", "sent"]


def test_an_account_whose_record_failed_still_has_its_id_in_the_journal(world):
    """A do-not-email account's first journal write with its id would have been its record: when that fails,
    the batch's closing write still puts the id in the journal, so no look-up is ever needed for it."""
    quiet = person(4, "Dora", "Quiet", do_not_email=True)
    with pytest.raises(RuntimeError):
        world.run(batch_of(quiet), record_done=Recorder(world, error=RuntimeError("CiviCRM is down")))
    made = world.cms.users["dora@example.org"]
    assert [(e.uf_id, e.username) for e in world.journal.of(4)] == [(made.uf_id, made.username)]
