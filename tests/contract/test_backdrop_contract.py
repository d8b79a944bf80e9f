"""One contract suite for Backdrop through bee, run against the emulator (bee as a local command) and
against a real Backdrop 1.28 over a real private sshd (sandbox/real_backdrop): literal expected values,
no branching on the target. The fixture `backdrop_site` gives both the same interface."""

from __future__ import annotations

import re

import pytest

from cms_operators.backdrop.backend import BackdropBackend
from cms_operators.backdrop.hook import BeeHook
from cms_operators.backend import (
    CmsConfigError,
    CmsDuplicateEmail,
    CmsDuplicateLogin,
    CmsMailFailed,
    CmsRejected,
    CmsUnavailable,
    CmsUser,
    NewUser,
)
from sandbox.backdrop import testing

backdrop_site = testing.backdrop_site  # fixtures: the emulator and the session's real Backdrop
BASE_URL = "https://backdrop.example.test"
SUBJECT = "An administrator created an account for you at cmsuser real Backdrop"


@pytest.fixture
def backend(backdrop_site, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CMS_DEFAULT", backdrop_site.connection())
    backend = BackdropBackend("cms_default")
    yield backend
    backend.close()


def ada(**changes) -> NewUser:
    values = dict(username="ada.lovelace", email="Ada@Example.org", roles=("member",), locale="fr_FR",
                  fields={"field_member_number": "M2"})
    values.update(changes)
    return NewUser(**values)


def test_facts_name_the_site_roles_admin_role_fields_and_languages(backend):
    facts = backend.facts()
    assert facts["version"] == "1.28.x-dev"
    assert facts["roles"] == {"editor": "Editor", "administrator": "Administrator", "member": "Member",
                              "volunteer": "Volunteer"}
    assert facts["admin_role"] == "administrator"
    assert set(facts["fields"]) == {"field_member_number"}
    assert facts["languages"] == ["en", "fr"]
    assert backend.user_field_names() == {"field_member_number"}
    assert backend.rules.admin_roles == frozenset({"administrator"})


def test_preflight_proves_roles_and_names_each_missing_one(backend):
    assert "roles member, volunteer exist" in backend.preflight(["member", "volunteer"])
    with pytest.raises(CmsConfigError) as caught:
        backend.preflight(["member", "ghost", "administrator", "authenticated"])
    assert [p.split(":")[0] if "implicit" in p else p.split(" on ")[0] for p in caught.value.problems] == [
        "role 'ghost' does not exist", "role 'administrator' is an administrator role",
        "role 'authenticated' is implicit in Backdrop and cannot be given"]


def test_create_makes_an_active_account_with_roles_language_and_field(backdrop_site, backend):
    user = backend.create_user(**{**vars(ada()), "roles": ["member", "volunteer"]})
    assert (user.username, user.email, user.roles) == ("ada.lovelace", "Ada@Example.org", ("member", "volunteer"))
    assert user.registered is not None
    stored = backdrop_site.users()["ada.lovelace"]
    assert (stored["uid"], stored["status"], stored["language"], stored["member_number"]) == (user.uf_id, 1, "fr", "M2")
    assert stored["roles"] == ["member", "volunteer"]
    # a language the site does not have is not sent: the account gets none
    other = backend.create_user(**vars(ada(username="alan.turing", email="alan@example.org", locale="de_DE")))
    assert backdrop_site.users()["alan.turing"]["language"] == ""
    assert backend.find_by_email("ALAN@example.ORG") == other
    assert backdrop_site.mails() == []  # creating sends no mail


def test_many_creates_in_one_call_answer_in_order(backdrop_site, backend):
    backdrop_site.seed([{"name": "jane.doe", "mail": "jane.doe@example.org"}])
    answers = backend.create_users([
        ada(),
        ada(username="JANE.DOE", email="other@example.org"),       # name taken, other case
        ada(username="jane.d", email="JANE.DOE@EXAMPLE.ORG"),      # mail taken, other case
        ada(username="bad<name>", email="b@example.org"),          # refused before the call
        ada(username="adá.lovelace", email="c@example.org"),       # the collation ignores accents
        ada(username="grace.hopper", email="grace@example.org", roles=(), fields=None, locale=None),
    ])
    assert [type(a).__name__ for a in answers] == ["CmsUser", "CmsDuplicateLogin", "CmsDuplicateEmail",
                                                   "CmsRejected", "CmsDuplicateLogin", "CmsUser"]
    assert answers[3].code == "invalid_username"
    assert sorted(backdrop_site.users()) == ["ada.lovelace", "admin", "grace.hopper", "jane.doe"]
    assert backdrop_site.users()["grace.hopper"]["roles"] == []


def test_the_php_refuses_what_user_validate_name_refuses(backdrop_site, monkeypatch):
    """Our own check is bypassed: the program on the site validates names itself."""
    monkeypatch.setenv("AIRFLOW_CONN_CMS_DEFAULT", backdrop_site.connection())
    hook = BeeHook("cms_default")
    try:
        answer = hook.call("create_users", {"users": [
            {"name": "bad<name>", "mail": "x@example.org"}, {"name": " lead", "mail": "y@example.org"},
            {"name": "n" * 61, "mail": "z@example.org"}, {"name": "ok.name", "mail": "not-an-email"},
            {"name": "ok.name", "mail": "ok@example.org", "roles": ["ghost"]},
            {"name": "ok.name", "mail": "ok@example.org", "fields": {"field_ghost": "1"}}]})
    finally:
        hook.close()
    assert [(r["error"], r["field"]) for r in answer["results"]] == [
        ("invalid_name", "name"), ("invalid_name", "name"), ("invalid_name", "name"), ("invalid_mail", "mail"),
        ("unknown_role", "roles"), ("unknown_field", "field_ghost")]
    assert sorted(backdrop_site.users()) == ["admin"]


def test_an_unknown_operation_is_refused(backdrop_site, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CMS_DEFAULT", backdrop_site.connection())
    hook = BeeHook("cms_default")
    with pytest.raises(CmsConfigError) as caught:
        hook.call("delete_everything", {})
    hook.close()
    assert caught.value.code == "unknown_operation"


def test_lookups_compare_as_backdrop_does_and_skip_missing_ids(backdrop_site, backend):
    uids = backdrop_site.seed([{"name": "Jane.Doe", "mail": "Jane.Doe@Example.org", "roles": ["member"]},
                               {"name": "boss", "mail": "boss@example.org", "roles": ["administrator"]}])
    found = backend.find_users([" jane.doe@EXAMPLE.org ", "nobody@example.org"], ["BOSS", "nobody"])
    assert [(u.uf_id, u.username) for u in found] == [(uids["Jane.Doe"], "Jane.Doe"), (uids["boss"], "boss")]
    assert [u.uf_id for u in backend.users_by_id([1, uids["boss"], 999999])] == [1, uids["boss"]]
    admin, boss = backend.users_by_id([1, uids["boss"]])
    assert backend.is_admin(admin) and backend.is_admin(boss)
    assert not backend.is_admin(found[0])
    assert backend.find_by_email("missing@example.org") is None


def test_admin_roles_setting_adds_administrators(backdrop_site, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CMS_DEFAULT", backdrop_site.connection())
    uids = backdrop_site.seed([{"name": "ed", "mail": "ed@example.org", "roles": ["editor"]}])
    backend = BackdropBackend("cms_default", settings={"admin_roles": ["editor"]})
    (ed,) = backend.users_by_id([uids["ed"]])
    assert backend.is_admin(ed)
    assert backend.rules.admin_roles == frozenset({"administrator", "editor"})
    with pytest.raises(CmsConfigError) as caught:
        BackdropBackend("cms_default", settings={"admin_roles": ["ghost"]}).preflight([])
    assert "admin_roles: role 'ghost' does not exist" in caught.value.message
    backend.close()


def test_password_mail_is_backdrops_own_with_a_one_time_link(backdrop_site, backend):
    (user, other) = backend.create_users([ada(), ada(username="grace", email="grace@example.org")])
    assert backend.send_password_mails([user, other]) == {}
    mails = backdrop_site.mails()
    assert [(m["to"].lower(), m["subject"]) for m in mails] == [("ada@example.org", SUBJECT),
                                                                ("grace@example.org", SUBJECT)]
    assert re.search(rf"{re.escape(BASE_URL)}/user/reset/{user.uf_id}/\d+/\S+", mails[0]["body"])
    assert "ada.lovelace" in mails[0]["body"]


def test_a_password_reset_is_backdrops_own_reset_mail(backdrop_site, backend):
    (user,) = backend.create_users([ada()])
    backdrop_site.set_notify(False)  # the "created by an administrator" switch does not touch resets
    assert backend.send_password_mails([user], reset=True) == {}
    backend.send_password_reset(user)
    mails = backdrop_site.mails()
    assert [(m["to"].lower(), m["subject"]) for m in mails] == [
        ("ada@example.org", "Password reset information for ada.lovelace at cmsuser real Backdrop")] * 2
    assert re.search(rf"{re.escape(BASE_URL)}/user/reset/{user.uf_id}/\d+/\S+", mails[0]["body"])


def test_mail_failures_are_reported_per_account(backdrop_site, backend):
    (user,) = backend.create_users([ada()])
    backdrop_site.set_mail_works(False)
    failed = backend.send_password_mails([user])
    assert isinstance(failed[user.uf_id], CmsMailFailed) and failed[user.uf_id].code == "mail_failed"
    backdrop_site.set_mail_works(True)
    backdrop_site.set_notify(False)
    with pytest.raises(CmsMailFailed) as caught:
        backend.send_password_mail(user)
    assert caught.value.code == "notify_off"
    ghost = CmsUser(uf_id=999999, username="ghost", email="ghost@example.org")
    assert backend.send_password_mails([ghost])[999999].code == "no_user"
    assert backdrop_site.mails() == []


def test_a_call_that_dies_half_way_leaves_whole_accounts_found_by_email(backdrop_site, backend):
    requests = [ada(username=f"user{i}", email=f"user{i}@example.org") for i in range(6)]
    backend.facts()  # read before the fault is armed
    backdrop_site.break_next_call_after_items(2)
    with pytest.raises(CmsUnavailable) as caught:
        backend.create_users(requests)
    assert caught.value.code == "connection_lost"
    made = backend.find_users([r.email for r in requests], [])
    made_names = sorted(u.username for u in made)
    assert made_names[:2] == ["user0", "user1"]
    assert made_names == [f"user{i}" for i in range(len(made_names))]  # a prefix: in order, none skipped
    for user in made:  # each whole: roles, language and field were saved with it
        stored = backdrop_site.users()[user.username]
        assert (stored["roles"], stored["language"], stored["member_number"]) == (["member"], "fr", "M2")
    # the retry: what exists is a duplicate (found by email), the rest is made; never two accounts per email
    answers = backend.create_users(requests)
    assert [isinstance(a, CmsDuplicateLogin) for a in answers[:len(made)]] == [True] * len(made)
    assert all(isinstance(a, CmsUser) for a in answers[len(made):])
    by_mail: dict[str, int] = {}
    for stored in backdrop_site.users().values():
        by_mail[stored["mail"].lower()] = by_mail.get(stored["mail"].lower(), 0) + 1
    assert max(by_mail.values()) == 1 and len(by_mail) == 7


def test_an_over_long_email_and_bad_username_are_refused_before_any_call(backdrop_site, backend):
    long_email = "a" * 60 + "@" + ".".join(["b" * 60] * 4) + ".org"
    answers = backend.create_users([ada(email=long_email), ada(username=" lead")])
    assert [a.code for a in answers] == ["email_too_long", "invalid_username"]
    assert all(isinstance(a, CmsRejected) for a in answers)
    assert sorted(backdrop_site.users()) == ["admin"]


def test_duplicates_raise_from_create_user(backdrop_site, backend):
    backdrop_site.seed([{"name": "jane.doe", "mail": "jane.doe@example.org"}])
    with pytest.raises(CmsDuplicateLogin):
        backend.create_user(**vars(ada(username="Jane.Doe")))
    with pytest.raises(CmsDuplicateEmail):
        backend.create_user(**vars(ada(email="JANE.doe@example.org")))
