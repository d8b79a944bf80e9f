"""The Drupal 7 + Services 3.x users contract (shared/contracts/cms-users.md §4.1), run against the emulator
(sandbox/drupal7) and a real Drupal 7.101 + Services 7.x-3.20 (sandbox/real_drupal7) with the same literal
assertions: first the wire (what the site answers), then Drupal7Backend on top of it."""

from __future__ import annotations

import pytest
import requests

from cms_operators.backend import (
    CmsAuthError,
    CmsConfigError,
    CmsDuplicateEmail,
    CmsDuplicateLogin,
    CmsRejected,
)
from sandbox.drupal7 import testing

drupal7_site = testing.drupal7_site  # fixtures: the emulator and the session's real Drupal 7

TIMEOUT = 30


class Client:
    """A bare Services client: login, then calls with the session cookie and the CSRF token."""

    def __init__(self, site):
        self.site = site
        self.base = f"{site.url}/{site.endpoint}"
        self.http = requests.Session()
        self.http.headers["Accept"] = "application/json"

    def login(self, password: str | None = None) -> requests.Response:
        answer = self.http.post(f"{self.base}/user/login.json", timeout=TIMEOUT,
                                json={"username": self.site.login, "password": password or self.site.password})
        if answer.status_code == 200:
            self.http.headers["X-CSRF-Token"] = answer.json()["token"]
        return answer

    def post(self, route: str, body) -> requests.Response:
        return self.http.post(f"{self.base}/{route}", json=body, timeout=TIMEOUT)

    def get(self, route: str, params=None) -> requests.Response:
        return self.http.get(f"{self.base}/{route}", params=params, timeout=TIMEOUT)


def account(name: str, mail: str, **more) -> dict:
    return {"name": name, "mail": mail, "pass": "a-long-random-password-1", "status": 1, **more}


@pytest.fixture
def client(drupal7_site):
    c = Client(drupal7_site)
    assert c.login().status_code == 200
    return c


@pytest.fixture
def backend(drupal7_site, monkeypatch):
    from cms_operators.drupal7.backend import Drupal7Backend

    monkeypatch.setenv("AIRFLOW_CONN_CMS_DEFAULT", drupal7_site.connection())
    b = Drupal7Backend(settings={"admin_roles": ["administrator", "site boss"]})
    yield b
    b.close()


# --------------------------------------------------------------------------- the wire


def test_login_answers_a_session_and_a_token(drupal7_site):
    answer = Client(drupal7_site).login()
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"sessid", "session_name", "token", "user"}
    assert body["session_name"].startswith("SESS")
    assert body["user"]["uid"] == "2"
    assert body["user"]["roles"] == {"2": "authenticated user", "7": "cmsuser api"}


def test_wrong_password_is_401(drupal7_site):
    answer = Client(drupal7_site).login("wrong-password")
    assert answer.status_code == 401
    assert answer.json() == ["Wrong username or password."]


def test_writes_need_the_csrf_token(client):
    del client.http.headers["X-CSRF-Token"]
    answer = client.post("user.json", account("no.token", "no.token@example.org"))
    assert answer.status_code == 401
    assert answer.json() == ["CSRF validation failed"]


def test_a_forgotten_session_is_anonymous(client, drupal7_site):
    drupal7_site.expire_sessions()
    answer = client.post("user.json", account("late", "late@example.org"))
    assert (answer.status_code, answer.json()) == (403, ["Access denied for user anonymous"])


def test_create_answers_the_uid_as_a_string_and_keeps_roles(client):
    answer = client.post("user.json", account("jdoe", "JDoe@Example.org", roles={"4": "4", "5": "5"}, language="fr"))
    assert answer.status_code == 200
    uid = answer.json()["uid"]
    assert uid == "3"
    user = client.get(f"user/{uid}.json").json()
    assert (user["name"], user["mail"], user["status"], user["language"]) == ("jdoe", "JDoe@Example.org", "1", "fr")
    assert user["roles"] == {"2": "authenticated user", "4": "member", "5": "volunteer"}


def test_duplicates_and_validation_are_406_form_errors(client):
    assert client.post("user.json", account("jdoe", "jdoe@example.org")).status_code == 200
    taken = client.post("user.json", account("JDOE", "JDOE@example.org"))
    assert taken.status_code == 406
    assert taken.json() == {"form_errors": {
        "name": 'The name <em class="placeholder">JDOE</em> is already taken.',
        "mail": 'The e-mail address <em class="placeholder">JDOE@example.org</em> is already taken.'}}
    bad = client.post("user.json", account(" bad", "not-a-mail"))
    assert bad.json() == {"form_errors": {
        "name": "The username cannot begin with a space.",
        "mail": 'The e-mail address <em class="placeholder">not-a-mail</em> is not valid.'}}
    assert client.post("user.json", {"name": "nopass", "mail": "nopass@example.org"}).json() == \
        {"form_errors": {"pass": "Password field is required."}}
    illegal = "An illegal choice has been detected. Please contact the site administrator."
    assert client.post("user.json", account("r", "r@example.org", roles={"99": "99"})).json() == \
        {"form_errors": {"roles": illegal}}
    assert client.post("user.json", account("l", "l@example.org", language="de")).json() == \
        {"form_errors": {"language": illegal}}


def test_roles_are_dropped_silently_without_administer_permissions(client, drupal7_site):
    drupal7_site.set_permissions(["administer users", "access user profiles"])
    answer = client.post("user.json", account("noroles", "noroles@example.org", roles={"4": "4"}))
    assert answer.status_code == 200
    assert client.get(f"user/{answer.json()['uid']}.json").json()["roles"] == {"2": "authenticated user"}


def test_index_filters_in_pages_of_20_and_lists_the_anonymous_user(client):
    for i in range(3):
        assert client.post("user.json", account(f"u{i}", f"U{i}@example.org")).status_code == 200
    rows = client.get("user.json", {"parameters[mail]": "u0@example.org,U2@EXAMPLE.ORG",
                                    "fields": "uid,name,mail", "options[orderby][uid]": "ASC"}).json()
    assert [(r["uid"], r["name"], r["mail"]) for r in rows] == [("3", "u0", "U0@example.org"),
                                                                 ("5", "u2", "U2@example.org")]
    everyone = client.get("user.json", {"fields": "uid", "pagesize": 50, "options[orderby][uid]": "ASC"}).json()
    assert [r["uid"] for r in everyone] == ["0", "1", "2", "3", "4", "5"]
    page = client.get("user.json", {"fields": "uid", "pagesize": 2, "page": 1, "options[orderby][uid]": "ASC"}).json()
    assert [r["uid"] for r in page] == ["2", "3"]


def test_the_mail_actions_send_drupals_own_mails(client, drupal7_site):
    uid = client.post("user.json", account("mailme", "mailme@example.org")).json()["uid"]
    assert client.post(f"user/{uid}/resend_welcome_email.json", {}).json() == [True]
    assert client.post(f"user/{uid}/password_reset.json", {}).json() == [True]
    assert [(m["to"], m["subject"]) for m in drupal7_site.mails()] == [
        ("mailme@example.org", "An administrator created an account for you at cmsuser real Drupal 7"),
        ("mailme@example.org", "Replacement login information for mailme at cmsuser real Drupal 7")]
    assert client.post("user/99/password_reset.json", {}).status_code == 404


# --------------------------------------------------------------------------- the backend


def test_preflight_reads_roles_languages_and_mail_mode(backend):
    said = backend.preflight(["member", "Volunteer"])
    assert said.endswith("roles member (4), volunteer (5); languages en, fr; mail by resend_welcome_email; "
                         "look-ups case-insensitive")
    assert backend.user_field_names() == {"field_member_number"}


def test_preflight_names_unknown_and_administrator_roles(backend):
    with pytest.raises(CmsConfigError) as caught:
        backend.preflight(["member", "nosuch", "site boss"])
    problems = caught.value.problems
    assert len(problems) == 2
    assert problems[0].startswith("role 'nosuch' does not exist on Drupal 7 http://127.0.0.1:")
    assert problems[0].endswith("use one of: authenticated user (2), administrator (3), member (4), volunteer (5), "
                                "site boss (6), cmsuser api (7)")
    assert problems[1].startswith("role 'site boss' administers Drupal 7 http://127.0.0.1:")


@pytest.mark.parametrize("missing", ["administer users", "administer permissions", "access user profiles"])
def test_preflight_names_each_missing_permission(backend, drupal7_site, missing):
    drupal7_site.set_permissions([p for p in testing.API_PERMISSIONS if p != missing])
    with pytest.raises((CmsConfigError, CmsAuthError)) as caught:
        backend.preflight(["member"])
    assert f"lacks the permission '{missing}'" in caught.value.message


def test_create_find_and_mail_through_the_backend(backend, drupal7_site):
    user = backend.create_user(username="jane.doe", email="Jane@Example.org", first_name="Jane", last_name="Doe",
                               display_name="Jane Doe", roles=["member"], locale="fr_FR",
                               fields={"field_member_number": "M-7"})
    assert (user.uf_id, user.username, user.roles) == (3, "jane.doe", ("member",))
    found = backend.find_users([" JANE@example.org ", "nobody@example.org"], ["ADMIN"])
    assert [(u.uf_id, u.username, u.email, u.roles) for u in found] == [
        (1, "admin", "admin@example.test", ("administrator",)), (3, "jane.doe", "Jane@Example.org", ("member",))]
    assert [backend.is_admin(u) for u in found] == [True, False]
    assert backend.find_by_email("jane@EXAMPLE.org").uf_id == 3
    assert backend.find_by_email("nobody@example.org") is None
    assert [u.uf_id for u in backend.users_by_id([3, 1, 99])] == [1, 3]
    backend.send_password_mail(user)
    assert [(m["to"], m["subject"]) for m in drupal7_site.mails()] == [
        ("Jane@Example.org", "An administrator created an account for you at cmsuser real Drupal 7")]


def test_a_page_past_the_last_user_is_empty_so_many_look_ups_become_one_listing(client, backend):
    # the choice between look-ups and a listing rests on an index page past the users answering []
    assert client.get("user.json", {"fields": "uid", "page": 50, "pagesize": 20}).json() == []
    user = backend.create_user(username="ada.lovelace", email="Ada@Example.org", first_name="Ada",
                               last_name="Lovelace", display_name="", roles=["member"])
    emails = [f"person{i}@example.org" for i in range(60)] + ["ada@example.org"]
    found = backend.find_users(emails, [f"person{i}.x" for i in range(60)] + ["ADMIN"])  # 8 look-ups due
    assert [(u.uf_id, u.roles) for u in found] == [(1, ("administrator",)), (user.uf_id, ("member",))]


def test_a_password_reset_is_drupals_replacement_login_mail(backend, drupal7_site):
    user = backend.create_user(username="reset.me", email="reset@example.org", first_name="", last_name="",
                               display_name="", roles=[])
    backend.send_password_reset(user)  # the reset group and tag: never the "account created" mail
    assert [(m["to"], m["subject"]) for m in drupal7_site.mails()] == [
        ("reset@example.org", "Replacement login information for reset.me at cmsuser real Drupal 7")]


def test_create_errors_are_classified(backend):
    backend.create_user(username="taken", email="taken@example.org", first_name="", last_name="", display_name="",
                        roles=[])
    with pytest.raises(CmsDuplicateLogin):
        backend.create_user(username="TAKEN", email="other@example.org", first_name="", last_name="",
                            display_name="", roles=[])
    with pytest.raises(CmsDuplicateEmail):
        backend.create_user(username="other", email="TAKEN@example.org", first_name="", last_name="",
                            display_name="", roles=[])
    with pytest.raises(CmsRejected) as caught:
        backend.create_user(username="fine", email="bad@-example.org", first_name="", last_name="", display_name="",
                            roles=[])
    assert caught.value.code == "invalid" and "mail" in caught.value.message
    with pytest.raises(CmsConfigError):
        backend.create_user(username="fine", email="fine@example.org", first_name="", last_name="", display_name="",
                            roles=["nosuch"])


def test_a_forgotten_session_is_renewed_once(backend, drupal7_site):
    backend.preflight([])
    logins = backend.hook.logins
    drupal7_site.expire_sessions()
    user = backend.create_user(username="after.expiry", email="after@example.org", first_name="", last_name="",
                               display_name="", roles=[])
    assert backend.hook.logins == logins + 1
    assert [u.uf_id for u in backend.find_users(["after@example.org"], [])] == [user.uf_id]


def test_open_registration_sends_the_reset_mail_instead(backend, drupal7_site):
    drupal7_site.set_register(2)
    user = backend.create_user(username="open.site", email="open@example.org", first_name="", last_name="",
                               display_name="", roles=[])
    backend.send_password_mail(user)
    assert [m["subject"] for m in drupal7_site.mails()] == [
        "Replacement login information for open.site at cmsuser real Drupal 7"]
