"""DrupalHook and DrupalBackend against the Drupal emulator over HTTP: error mapping, paging, retries of
reads only, pre-flight naming each missing role and permission, the password mail, no secret in messages."""

from __future__ import annotations

import json

import pytest

from cms_operators.backend import (
    CmsAuthError,
    CmsConfigError,
    CmsDuplicateEmail,
    CmsDuplicateLogin,
    CmsError,
    CmsMailFailed,
    CmsRejected,
    CmsUnavailable,
    CmsUser,
)
from cms_operators.drupal.backend import DrupalBackend
from cms_operators.drupal.hook import DrupalHook, field_of
from provisioning.rules import collation_key
from sandbox.drupal import testing
from sandbox.drupal.server import DrupalEmulator
from sandbox.drupal.testing import EMULATOR_PASSWORD, connection_json

drupal = testing.drupal            # fixtures
drupal_conn = testing.drupal_conn

LANG = ["administer users", "administer permissions", "administer languages"]


def backend() -> DrupalBackend:
    b = DrupalBackend("cms_default")
    b.hook._sleep = lambda seconds: None
    return b


def create(b: DrupalBackend, username: str, email: str, roles=(), **kwargs) -> CmsUser:
    return b.create_user(username=username, email=email, first_name="", last_name="", display_name="",
                         roles=list(roles), **kwargs)


def posts(emulator) -> list:
    return [c for c in emulator.calls if c.method == "POST"]


# ----------------------------------------------------------------------------- pre-flight


def test_preflight_describes_what_it_proved(drupal, drupal_conn):
    text = backend().preflight(["member", "volunteer"])
    assert text.startswith(f"Drupal {drupal.url} as 'cmsuser_api' (user 2): administer users, administer permissions "
                           "granted, JSON:API writable, roles member, volunteer exist, administrator roles "
                           "administrator, site_boss")
    assert "languages NOT readable (grant 'administer languages'" in text
    assert drupal.users[-1]["name"] == "cmsuser_api"  # nothing created


def test_preflight_names_every_role_problem_at_once(drupal, drupal_conn):
    with pytest.raises(CmsConfigError) as caught:
        backend().preflight(["member", "nope", "site_boss", "authenticated", "nada"])
    problems = caught.value.problems
    assert len(problems) == 4
    assert problems[0].startswith("role 'nope' does not exist on Drupal")
    assert "role 'site_boss' is an administrator role" in problems[1]
    assert "role 'authenticated' is implicit" in problems[2]
    assert problems[3].startswith("role 'nada' does not exist")


@pytest.mark.parametrize("permissions, missing", [
    (["administer users"], ["administer permissions"]),
    (["administer permissions"], ["administer users"]),
    ([], ["administer permissions", "administer users"]),
])
def test_preflight_names_each_missing_permission(drupal, drupal_conn, permissions, missing):
    drupal.set_permissions(permissions)
    with pytest.raises(CmsAuthError) as caught:
        backend().preflight(["member"])
    assert [p.split("permission '")[1].split("'")[0] for p in caught.value.problems] == missing
    assert EMULATOR_PASSWORD not in caught.value.message


def test_preflight_wrong_password_is_an_auth_error_without_the_secret(drupal, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CMS_DEFAULT", connection_json(drupal.url, drupal.login, "wrong-secret-xyz"))
    with pytest.raises(CmsAuthError) as caught:
        backend().preflight([])
    assert "anonymous visitor" in caught.value.message
    assert "wrong-secret-xyz" not in repr(caught.value) + caught.value.message


def test_preflight_read_only_json_api(drupal, drupal_conn):
    drupal.read_only = True
    with pytest.raises(CmsConfigError) as caught:
        backend().preflight([])
    assert caught.value.code == "read_only" and "/admin/config/services/jsonapi" in caught.value.message


def test_preflight_without_json_api_names_the_modules(drupal, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CMS_DEFAULT", connection_json(drupal.url, drupal.login, EMULATOR_PASSWORD,
                                                                   jsonapi_path="/api"))
    with pytest.raises(CmsConfigError) as caught:
        backend().preflight([])
    assert "enable the modules jsonapi and serialization" in caught.value.message


def test_bearer_token_when_the_login_is_empty(monkeypatch):
    with DrupalEmulator(token="tok-123456") as emulator:
        monkeypatch.setenv("AIRFLOW_CONN_CMS_DEFAULT", connection_json(emulator.url, "", "tok-123456"))
        assert "as 'cmsuser_api'" in backend().preflight([])
        assert all(c.headers.get("authorization") == "Bearer <redacted>" for c in emulator.calls)


def test_languages_and_fields_when_readable(drupal, drupal_conn):
    drupal.set_permissions(LANG)
    b = backend()
    assert b.preflight([]).endswith("languages en, fr")
    assert {"name", "mail", "field_member_number", "preferred_langcode", "roles"} <= b.user_field_names()


# ----------------------------------------------------------------------------- create


def test_create_sends_active_user_roles_by_uuid_language_and_fields(drupal, drupal_conn):
    drupal.set_permissions(LANG)
    b = backend()
    user = create(b, "pat.smith", " Pat@Example.test ", ["member"], locale="fr_FR",
                  fields={"field_member_number": "M-7"})
    assert (user.username, user.email, user.roles) == ("pat.smith", "Pat@Example.test", ("member",))
    stored = drupal.users[-1]
    assert (stored["status"], stored["preferred_langcode"], stored["fields"]) == (True, "fr", {"field_member_number": "M-7"})
    body = posts(drupal)[-1].body["data"]
    assert body["relationships"]["roles"]["data"] == [{"type": "user_role--user_role", "id": drupal.roles["member"]["uuid"]}]
    assert "pass" not in body["attributes"]


def test_language_not_enabled_or_not_readable_is_not_sent(drupal, drupal_conn):
    drupal.set_permissions(LANG)
    create(backend(), "de1", "de1@example.test", locale="de_DE")
    drupal.set_permissions(["administer users", "administer permissions"])
    create(backend(), "fr1", "fr1@example.test", locale="fr_FR")
    assert [p.body["data"]["attributes"].get("preferred_langcode") for p in posts(drupal)] == [None, None]


@pytest.mark.parametrize("username, email, error, code", [
    ("PAT", "other@example.test", CmsDuplicateLogin, "name_taken"),
    ("other", "PAT@example.TEST", CmsDuplicateEmail, "mail_taken"),
    ("pat", "pat@example.test", CmsDuplicateEmail, "mail_taken"),
    ("pät", "p3@example.test", CmsDuplicateLogin, "name_not_unique"),
    ("ok1", "a..b@example.test", CmsRejected, "invalid"),
])
def test_create_errors_are_classified(drupal, drupal_conn, username, email, error, code):
    b = backend()
    create(b, "pat", "pat@example.test")
    with pytest.raises(error) as caught:
        create(b, username, email)
    assert caught.value.code == code
    assert type(caught.value) is error


def test_refused_names_never_reach_the_site(drupal, drupal_conn):
    with pytest.raises(CmsRejected) as caught:
        create(backend(), "bad!", "x@example.test")
    assert "illegal character" in caught.value.message
    assert posts(drupal) == []


def test_unconfirmed_name_violation_is_rejected_not_duplicate(drupal, drupal_conn):
    drupal.inject(method="POST", path="/jsonapi/user/user", status=422, body={"errors": [
        {"status": "422", "detail": "name: The username x is reserved.", "source": {"pointer": "/data/attributes/name"}}]})
    with pytest.raises(CmsRejected) as caught:
        create(backend(), "x", "x@example.test")
    assert "no such account exists" in caught.value.message


def test_a_lost_answer_is_unavailable_and_the_create_is_sent_once(drupal, drupal_conn):
    drupal.inject(method="POST", path="/jsonapi/user/user", lose_answer=True)
    with pytest.raises(CmsUnavailable):
        create(backend(), "lost", "lost@example.test")
    assert len(posts(drupal)) == 1
    assert backend().find_by_email("LOST@example.test").username == "lost"  # it was created


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_create_is_never_retried(drupal, drupal_conn, status):
    drupal.inject(method="POST", path="/jsonapi/user/user", status=status, retry_after=1, times=3)
    with pytest.raises(CmsUnavailable):
        create(backend(), "once", "once@example.test")
    assert len(posts(drupal)) == 1


def test_unknown_role_is_a_config_error(drupal, drupal_conn):
    with pytest.raises(CmsConfigError) as caught:
        create(backend(), "r1", "r1@example.test", ["nope"])
    assert "nope" in caught.value.message


# ----------------------------------------------------------------------------- look-ups


def test_find_users_by_in_lookups_matching_logins_like_the_database(drupal, drupal_conn):
    drupal.seed({"users": [{"name": "José", "mail": "Jose@Example.test"}, {"name": "other", "mail": "o@example.test"}]})
    found = backend().find_users(["JOSE@example.test ", "none@example.test"], ["jose", "cmsuser_api"])
    assert [u.username for u in found] == ["cmsuser_api", "José"]
    gets = [c for c in drupal.calls if c.method == "GET"]
    assert len(gets) == 2  # one IN look-up for the emails, one for the names


def test_find_users_lists_when_that_is_cheaper(drupal, drupal_conn):
    drupal.seed({"users": [{"name": f"u{i}", "mail": f"u{i}@example.test"} for i in range(60)]})
    emails = [f"x{i}@example.test" for i in range(120)] + ["u59@example.test"]
    found = backend().find_users(emails, ["admin"])
    assert [u.username for u in found] == ["admin", "u59"]
    gets = [c for c in drupal.calls if c.method == "GET"]
    assert len(gets) == 1 + 2  # the size probe, then two pages of 50 (63 users + anonymous)
    assert all(("filter[v][condition][path]", "mail") not in c.query for c in gets)


def test_users_by_id_skips_missing_and_the_anonymous_user(drupal, drupal_conn):
    assert [u.uf_id for u in backend().users_by_id([0, 1, 2, 999])] == [1, 2]


def test_reads_are_retried_and_give_up_as_unavailable(drupal, drupal_conn):
    drupal.inject(method="GET", path="/jsonapi/user/user", status=503, times=1)
    assert backend().find_by_email("admin@example.test").uf_id == 1
    drupal.inject(method="GET", path="/jsonapi/user/user", status=503, times=5)
    with pytest.raises(CmsUnavailable):
        backend().find_by_email("admin@example.test")


def test_is_admin_uses_the_sites_admin_roles(drupal, drupal_conn):
    b = backend()
    assert b.is_admin(CmsUser(1, "admin", "a@x.test"))
    assert b.is_admin(CmsUser(9, "boss", "b@x.test", roles=("site_boss",)))
    assert not b.is_admin(CmsUser(9, "m", "m@x.test", roles=("member",)))
    drupal.set_permissions(["administer users"])
    fallback = backend()
    assert fallback.is_admin(CmsUser(9, "a", "a@x.test", roles=("administrator",)))
    assert not fallback.is_admin(CmsUser(9, "boss", "b@x.test", roles=("site_boss",)))


def test_collation_key_folds_case_and_accents():
    assert collation_key(" José ") == collation_key("JOSE") == "jose"
    assert field_of("/data/attributes/mail/value") == "mail" and field_of(None) is None


# ----------------------------------------------------------------------------- mail


def test_password_mail_is_one_anonymous_request_and_one_mail(drupal, drupal_conn):
    b = backend()
    user = create(b, "mailme", "mailme@example.test")
    b.send_password_mail(user)
    assert [m["to"] for m in drupal.mails] == ["mailme@example.test"]
    call = [c for c in drupal.calls if c.path == "/user/password"][0]
    assert "authorization" not in call.headers and call.query == [("_format", "json")]
    assert call.body == {"mail": "mailme@example.test"}


def test_password_mail_failure(drupal, drupal_conn):
    b = backend()
    user = create(b, "m2", "m2@example.test")
    drupal.mail_works = False
    with pytest.raises(CmsMailFailed) as caught:
        b.send_password_mail(user)
    assert "Unable to send email" in caught.value.message
    drupal.inject(method="POST", path="/user/password", status=503)
    with pytest.raises(CmsUnavailable):
        b.send_password_mail(user)
    assert len([c for c in drupal.calls if c.path == "/user/password"]) == 2  # never retried


def test_no_message_carries_the_password(drupal, drupal_conn):
    messages = []
    drupal.set_permissions([])
    for action in (lambda b: b.preflight(["member"]), lambda b: create(b, "x", "x@example.test"),
                   lambda b: b.find_by_email("x@example.test")):
        try:
            action(backend())
        except CmsError as exc:
            messages.append(exc.message + repr(exc))
    assert len(messages) == 3
    assert not any(EMULATOR_PASSWORD in m for m in messages)


def test_hook_test_connection(drupal, drupal_conn):
    assert DrupalHook().test_connection() == (True, f"Authenticated as 'cmsuser_api' at {drupal.url}/jsonapi")
    ok, text = DrupalHook(timeout=5).test_connection()
    assert ok
    json.dumps(text)
