"""Password resets (pipeline/resets.py) against the CiviCRM emulator and each CMS emulator.

The demo seed puts Larry (contact 7, linked to CMS account 3) in the reset group `password_reset`
(id 8) and gives him the reset tag `reset_password` (id 5); Edgar (13, no account) is in the group.
"""

from __future__ import annotations

import pytest

from civicrm_hooks import queries
from civicrm_hooks.hook import CiviCRMHook
from cms_operators import registry
from cms_operators.backend import CmsMailFailed, CmsUnavailable
from pipeline import resets
from provisioning import outcomes
from provisioning.settings import Settings
from sandbox import emulators
from sandbox.sites import started_sites

RESET_GROUP, RESET_TAG, LARRY, EDGAR = 8, 5, 7, 13
MARKER = "[Airflow run cmsuser_nightly / reset_test]"


class World:
    def __init__(self, sites, cms_type: str):
        self.sites, self.civicrm_site, self.cms = sites, sites.civicrm, sites.cms
        self.settings = Settings(trigger_groups=["new_members"], roles=["member"], cms_type=cms_type,
                                 reset_groups=["password_reset"], reset_tags=["reset_password"])
        self.civicrm = CiviCRMHook("civicrm_default")
        self.kind = registry.get(cms_type)
        queries.ensure_option_values(self.civicrm, create=True)
        self.resets = queries.resolve_resets(self.civicrm, self.settings)

    def backend(self):
        return self.kind.backend("cms_default", self.settings)

    def run(self, backend=None, marker: str = MARKER) -> dict[int, dict]:
        backend = backend or self.backend()
        try:
            done = resets.send_resets(self.civicrm, backend, self.settings, self.resets, marker=marker,
                                      stamp="2026-12-04 02:00:00")
        finally:
            backend.close()
        return {r["contact_id"]: r for r in done}

    def membership(self, contact_id: int) -> str | None:
        return next((r["status"] for r in self.civicrm_site.table("GroupContact")
                     if r["group_id"] == RESET_GROUP and r["contact_id"] == contact_id), None)

    def tagged(self, contact_id: int) -> bool:
        return any(r["tag_id"] == RESET_TAG and r["entity_id"] == contact_id
                   for r in self.civicrm_site.table("EntityTag"))

    def reset_activities(self, contact_id: int) -> list[dict]:
        """The contact's "User Account Password Reset" activities of any run (id, status, subject, details)."""
        return queries.run_activities(self.civicrm, [contact_id], "", queries.PASSWORD_RESET_TYPE).get(contact_id, [])


@pytest.fixture
def world(monkeypatch, request):
    cms_type = getattr(request, "param", "wordpress")
    with started_sites(cms_type=cms_type) as sites:
        for key, value in sites.connection_env.items():
            monkeypatch.setenv(key, value)
        yield World(sites, cms_type)


class FailingMail:
    """The real backend of the world, but its password mails answer `error` (or the worker dies)."""

    def __init__(self, backend, error: BaseException):
        self._backend, self.error, self.asked = backend, error, 0

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def send_password_reset(self, user):
        self.asked += 1
        raise self.error


class Killed(BaseException):
    """The worker died (nothing the step could catch)."""


@pytest.mark.parametrize("world", emulators.names(), indirect=True)
def test_a_linked_contact_gets_one_reset_mail_and_everyone_is_recorded_and_taken_off(world):
    mails_before = len(world.cms.mails)
    results = world.run()

    assert {cid: r["outcome"] for cid, r in results.items()} == {LARRY: "reset_sent", EDGAR: "reset_failed"}
    assert results[LARRY]["uf_id"] == 3 and results[LARRY]["reason"] == outcomes.RESET_SENT
    assert results[EDGAR]["reason"] == outcomes.reset_no_account(1)
    assert len(world.cms.mails) == mails_before + 1  # in the group and tagged: one mail
    assert "created an account" not in str(world.cms.mails[-1])  # the reset mail, not a new account's
    assert world.membership(LARRY) == "Removed" and world.membership(EDGAR) == "Removed"
    assert not world.tagged(LARRY)
    (larry,) = world.reset_activities(LARRY)
    assert larry["status"] == "Completed"
    assert larry["subject"] == "Password Reset email send to uid : (3)"
    (edgar,) = world.reset_activities(EDGAR)
    assert (edgar["status"], edgar["subject"]) == ("Failed", "Failed to send Password reset email")
    assert outcomes.reset_no_account(1) in edgar["details"]

    # nobody is left in the reset group or tag: a later run sends nothing
    assert world.run(marker="[Airflow run cmsuser_nightly / next]") == {}
    assert len(world.cms.mails) == mails_before + 1


def test_a_link_to_an_account_the_cms_no_longer_has_fails_naming_it(world):
    world.civicrm.call("UFMatch", "update", {"values": {"uf_id": 999}, "where": [["contact_id", "=", LARRY]]})
    results = world.run()
    assert results[LARRY]["outcome"] == "reset_failed"
    assert results[LARRY]["reason"] == outcomes.reset_account_gone(999)
    assert world.membership(LARRY) == "Removed" and world.cms.mails == []


def test_a_cms_refusal_is_a_failure_and_the_contact_is_taken_off(world):
    backend = FailingMail(world.backend(), CmsMailFailed(None, "x", "The email could not be sent."))
    results = world.run(backend)
    assert results[LARRY]["outcome"] == "reset_failed"
    assert results[LARRY]["reason"] == outcomes.reset_refused("The email could not be sent.")
    assert world.membership(LARRY) == "Removed" and not world.tagged(LARRY)
    assert world.reset_activities(LARRY)[0]["status"] == "Failed"


def test_a_cms_that_could_not_be_asked_keeps_the_contact_for_the_next_run(world):
    backend = FailingMail(world.backend(), CmsUnavailable(503, "unavailable", "the CMS answered 503"))
    results = world.run(backend)
    assert results[LARRY]["outcome"] == "reset_deferred"
    assert world.membership(LARRY) == "Added" and world.tagged(LARRY)  # still due
    assert world.reset_activities(LARRY)[0]["status"] == "Failed"
    assert world.run(backend)[LARRY]["outcome"] == "reset_deferred"  # a retry of the run asks no more
    assert backend.asked == 1

    results = world.run(marker="[Airflow run cmsuser_nightly / next]")  # the next run sends it
    assert results[LARRY]["outcome"] == "reset_sent" and len(world.cms.mails) == 1
    assert world.membership(LARRY) == "Removed"


def test_a_request_that_broke_off_is_in_doubt_and_never_sent_again(world):
    backend = FailingMail(world.backend(), CmsUnavailable(None, "timeout", "no answer within 30 s"))
    results = world.run(backend)
    assert results[LARRY]["outcome"] == "reset_failed"
    assert results[LARRY]["reason"] == outcomes.reset_in_doubt("no answer within 30 s")
    assert world.membership(LARRY) == "Removed"


def test_a_worker_killed_while_asking_leaves_the_mail_in_doubt_for_the_retry(world):
    with pytest.raises(Killed):
        world.run(FailingMail(world.backend(), Killed()))
    assert world.reset_activities(LARRY)[0]["status"] == "Scheduled"

    results = world.run()  # Airflow's retry: the same run, the same marker
    assert results[LARRY]["outcome"] == "reset_failed" and results[LARRY]["reason"] == outcomes.RESET_STOPPED
    assert world.cms.mails == []  # never asked twice
    assert world.membership(LARRY) == "Removed"
    assert [a["status"] for a in world.reset_activities(LARRY)] == ["Failed"]


def test_a_worker_killed_before_asking_sends_on_the_retry(world, monkeypatch):
    def die(self, chunk):
        raise Killed()

    with monkeypatch.context() as patch:
        patch.setattr(resets._Resets, "send", die)
        with pytest.raises(Killed):
            world.run()
    assert world.reset_activities(LARRY)[0]["status"] == "Scheduled"

    results = world.run()
    assert results[LARRY]["outcome"] == "reset_sent" and len(world.cms.mails) == 1
    assert [a["status"] for a in world.reset_activities(LARRY)] == ["Completed"]


def test_a_finished_run_run_again_writes_and_sends_nothing_more(world):
    first = world.run()
    activities = len(world.civicrm_site.table("Activity"))
    world.civicrm.call("GroupContact", "save", {"records": [{"contact_id": LARRY, "group_id": RESET_GROUP,
                                                             "status": "Added"}], "match": ["contact_id", "group_id"]})
    again = world.run()  # a cleared task of the same run, Larry back in the group meanwhile
    assert again[LARRY]["outcome"] == first[LARRY]["outcome"] == "reset_sent"
    assert len(world.cms.mails) == 1 and len(world.civicrm_site.table("Activity")) == activities
