"""JoomlaHook and JoomlaBackend against the Joomla emulator over HTTP: error mapping, paging, retries
of reads only, pre-flight naming every problem, administrators, the password mail, no secret in
any message."""

from __future__ import annotations

import json

import pytest

from cms_operators.backend import (
    CmsAuthError,
    CmsConfigError,
    CmsDuplicateEmail,
    CmsDuplicateLogin,
    CmsMailFailed,
    CmsRejected,
    CmsUnavailable,
    CmsUser,
)
from cms_operators.joomla.backend import JoomlaBackend, random_password
from cms_operators.joomla.hook import JoomlaHook, says_email_taken, says_login_taken, token_user_id
from sandbox.joomla import testing as joomla_testing
from sandbox.joomla.testing import connection_json

joomla = joomla_testing.joomla
joomla_conn = joomla_testing.joomla_conn

USERS = "/api/index.php/v1/users"


@pytest.fixture
def backend(joomla_conn):
    backend = JoomlaBackend(joomla_conn)
    backend.hook._sleep = lambda seconds: None
    backend.site_form._sleep = lambda seconds: None
    return backend


def make(backend, username, email, roles=("2",), name=""):
    return backend.create_user(username=username, email=email, first_name="", last_name="",
                               display_name=name or username, roles=list(roles))


def posts(joomla):
    return [c for c in joomla.calls if c.method == "POST" and c.path == USERS]


# ------------------------------------------------------------------ hook


def test_token_names_its_user(joomla):
    assert token_user_id(joomla.api_token) == 43
    assert token_user_id("not a token") is None


@pytest.mark.parametrize("text", ["Save failed with the following error: Username in use.",
                                  "L'enregistrement a échoué avec l'erreur suivante&#160;: Nom d'utilisateur utilisé"])
def test_login_taken_in_english_and_french(text):
    assert says_login_taken(text) and not says_email_taken(text)


def test_invalid_username_message_is_not_a_duplicate():
    text = ("Veuillez saisir un nom d'utilisateur valide, sans espaces au début ou à la fin, d'au moins 2 caractères, "
            "<strong>sans les caractères suivants</strong> : < > \\ &quot; ' &#37; ; ( ) & et de maximum 150 caractères.")
    assert not says_login_taken(text) and not says_email_taken(text)
    assert not says_email_taken("The email address you entered is invalid. Please enter another email address.")


def test_test_connection(joomla_conn, joomla):
    ok, message = JoomlaHook(joomla_conn).test_connection()
    assert ok and "'airflow_api' (user 43)" in message


def test_wrong_token_is_an_auth_error_without_the_token(monkeypatch, joomla):
    bad = joomla.api_token[:-4] + "AAAA"
    monkeypatch.setenv("AIRFLOW_CONN_CMS_DEFAULT", connection_json(joomla.url, bad))
    backend = JoomlaBackend("cms_default")
    with pytest.raises(CmsAuthError) as caught:
        backend.preflight(["2"])
    assert caught.value.status == 401 and "Allowed User Groups" in caught.value.message
    assert bad not in caught.value.message and bad not in repr(caught.value)


def test_missing_token_names_the_connection(monkeypatch, joomla):
    monkeypatch.setenv("AIRFLOW_CONN_CMS_DEFAULT", json.dumps({"conn_type": "joomla", "host": joomla.url}))
    with pytest.raises(CmsConfigError, match="'cms_default' needs a password: the Joomla API token"):
        JoomlaBackend("cms_default").groups()


def test_reads_are_retried_and_creates_are_not(backend, joomla):
    joomla.inject(method="GET", path=USERS, status=503, times=2)
    assert backend.find_by_email("admin@example.test").uf_id == 42
    joomla.inject(method="POST", path=USERS, status=503)
    with pytest.raises(CmsUnavailable):
        make(backend, "once", "once@example.org")
    assert len(posts(joomla)) == 1


def test_a_lost_create_answer_is_unavailable_and_the_account_exists(backend, joomla):
    joomla.inject(method="POST", path=USERS, status=None, lose_answer=True)
    with pytest.raises(CmsUnavailable):
        make(backend, "lost", "lost@example.org")
    assert backend.find_by_email("LOST@example.org").username == "lost"


def test_retry_after_is_kept(backend, joomla):
    joomla.inject(method="POST", path=USERS, status=429, retry_after=7)
    with pytest.raises(CmsUnavailable) as caught:
        make(backend, "slow", "slow@example.org")
    assert caught.value.retry_after == 7


def test_html_instead_of_json_is_unavailable(backend, joomla):
    joomla.inject(method="GET", path=USERS, status=200, body="<html>maintenance</html>", times=3)
    with pytest.raises(CmsUnavailable, match="not JSON"):
        backend.find_by_email("x@example.org")


# ------------------------------------------------------------------ pre-flight


def test_preflight_proves_everything_and_creates_nothing(backend, joomla):
    summary = backend.preflight(["Enregistré", "3"])
    assert summary.startswith(f"Joomla {joomla.url} as 'airflow_api' (user 43): may create users, mail_to_user off")
    assert "Enregistré (2), Auteur (3)" in summary
    assert len(joomla.store.users) == 2 and joomla.mails == []


def test_preflight_names_every_problem_at_once(backend, joomla):
    joomla.store.mail_to_user = True
    joomla.add_group("Twins", 2)
    joomla.add_group("Twins", 3)
    with pytest.raises(CmsConfigError) as caught:
        backend.configure(admin_groups=["Nobody here"]).preflight(["nope", "99", "Super utilisateur", "twins", "2"])
    problems = caught.value.problems
    assert len(problems) == 6, problems
    assert problems[0].startswith(f"group 'nope' does not exist on Joomla {joomla.url}; create it or use one of: "
                                  "Public (1), Enregistré (2)")
    assert problems[1] == f"group id 99 does not exist on Joomla {joomla.url}; create it or fix the setting"
    assert problems[2].startswith("group title 'twins' names 2 groups") and "give the id instead" in problems[2]
    assert problems[3].startswith("admin_groups: group 'Nobody here' does not exist")
    assert problems[4] == (f"group 'Super utilisateur' (8) administers Joomla {joomla.url}: remove it from the roles "
                           "setting")
    assert "'Notification Mail to User' (mail_to_user): set it to No" in problems[5]
    assert len(joomla.store.users) == 2 and joomla.mails == []  # the probe created and mailed nobody


def test_preflight_without_create_permission(backend, joomla):
    joomla.set_api_can_create(False)
    with pytest.raises(CmsConfigError) as caught:
        backend.preflight(["2"])
    assert caught.value.problems == [f"the API user of connection 'cms_default' may not create users on Joomla "
                                     f"{joomla.url}: give its group 'Create' permission on Users (Users > Options > "
                                     "Permissions)"]


def test_preflight_in_french(backend, joomla):
    joomla.store.language = "fr-FR"
    assert "mail_to_user off" in backend.preflight([])
    joomla.store.mail_to_user = True
    with pytest.raises(CmsConfigError, match="mail_to_user"):
        backend.preflight([])


# ------------------------------------------------------------------ create


def test_create_sends_a_strong_password_and_the_resolved_groups(backend, joomla):
    user = make(backend, "jane.doe", "Jane@Example.org", roles=["Auteur"], name="  Jane   Doe ")
    assert user == CmsUser(uf_id=100, username="jane.doe", email="Jane@Example.org", roles=("3",),
                           registered=user.registered)
    body = posts(joomla)[0].body
    assert body["groups"] == ["3"] and body["name"] == "Jane Doe" and body["block"] == "0"
    assert body["password"] == "<redacted>" and joomla.mails == []


def test_default_group_is_registered(backend, joomla):
    assert make(backend, "plain", "plain@example.org", roles=[]).roles == ("2",)


def test_password_meets_every_default_policy():
    password = random_password()
    assert len(password) == 48 and password == password.strip() and "\\" not in password
    assert sum(c.isupper() for c in password) >= 8 and sum(c.isdigit() for c in password) >= 8


def test_unknown_or_admin_groups_are_never_sent(backend, joomla):
    with pytest.raises(CmsConfigError, match="group id 999 does not exist"):
        make(backend, "lost", "lost@example.org", roles=["999"])
    with pytest.raises(CmsConfigError, match="administrator group"):
        make(backend, "boss", "boss@example.org", roles=["7"])
    assert posts(joomla) == []


def test_duplicates_and_rejections(backend, joomla):
    make(backend, "josé", "jose@example.org")
    with pytest.raises(CmsDuplicateLogin):
        make(backend, "JOSE", "other@example.org")
    with pytest.raises(CmsDuplicateEmail):
        make(backend, "jose2", "JOSE@example.org")
    with pytest.raises(CmsRejected, match="may not contain"):
        make(backend, "a;b", "ab@example.org")
    with pytest.raises(CmsRejected, match="at most 100"):
        make(backend, "long", "l" * 60 + "@" + "d" * 40 + ".org")
    # Joomla itself takes a one-label domain (the planner's email rule is stricter)
    assert make(backend, "bad.mail", "bad@mail").email == "bad@mail"


def test_an_unreadable_save_failure_is_settled_by_a_look_up(backend, joomla):
    make(backend, "first", "first@example.org")
    odd = {"errors": [{"title": "Speichern fehlgeschlagen: E-Mail vergeben", "code": 400}]}
    joomla.inject(method="POST", path=USERS, status=400, body=odd)
    with pytest.raises(CmsDuplicateEmail, match="found by look-up"):
        make(backend, "second", "FIRST@example.org")
    joomla.inject(method="POST", path=USERS, status=400, body=odd)
    with pytest.raises(CmsDuplicateLogin, match="found by look-up"):
        make(backend, "First", "new@example.org")
    joomla.inject(method="POST", path=USERS, status=400, body=odd)
    with pytest.raises(CmsRejected, match="Speichern fehlgeschlagen"):
        make(backend, "third", "third@example.org")


# ------------------------------------------------------------------ look-ups


def _seed(joomla, count):
    joomla.seed({"users": [{"name": "Same Name", "username": f"member{i:03d}", "email": f"m{i:03d}@example.org"}
                           for i in range(count)]})


def test_find_users_by_searches_when_few(backend, joomla):
    _seed(joomla, 30)
    joomla.calls.clear()
    found = backend.find_users([" M001@EXAMPLE.ORG "], ["MEMBER002"])
    assert [u.username for u in found] == ["member001", "member002"]
    searches = [c.query.get("filter[search]") for c in joomla.calls if c.path == USERS]
    assert searches == ["m001@example.org", "username:MEMBER002"]


def test_find_users_by_listing_when_cheaper(backend, joomla):
    _seed(joomla, 30)
    backend.page_size = 10
    joomla.calls.clear()
    wanted = [f"m{i:03d}@example.org" for i in range(0, 30, 3)]
    found = backend.find_users(wanted, ["admin", "nobody"])
    assert [u.username for u in found] == ["admin"] + [f"member{i:03d}" for i in range(0, 30, 3)]
    listing = [c for c in joomla.calls if c.path == USERS]
    assert len(listing) == 1 + 4  # the count, then 32 users in pages of 10
    assert all("filter[search]" not in c.query for c in listing)


def test_a_listing_that_missed_users_falls_back_to_searches(backend, joomla):
    _seed(joomla, 30)
    backend.page_size = 10
    # a page that comes back short (as equal names can shuffle between pages): the fallback finds the rest
    joomla.inject(method="GET", path=USERS, status=200, times=1, body_contains=None,
                  body={"links": {"next": "x"}, "data": [], "meta": {"total-pages": 4}})
    joomla.calls.clear()
    found = backend.find_users([f"m{i:03d}@example.org" for i in range(5)], [])
    assert [u.username for u in found] == [f"member{i:03d}" for i in range(5)]


def test_users_by_id(backend, joomla):
    _seed(joomla, 5)
    found = backend.users_by_id([42, 100, 999])
    assert [(u.uf_id, u.roles) for u in found] == [(42, ("8",)), (100, ("2",))]


def test_is_admin_follows_groups_children_and_admin_groups(backend, joomla):
    sub = joomla.add_group("Sous-admins", 8)
    helpers = joomla.add_group("Helpers", 2)
    joomla.seed({"users": [{"id": 200, "username": "sub", "email": "sub@example.org", "groups": [sub]},
                           {"id": 201, "username": "helper", "email": "h@example.org", "groups": [helpers]},
                           {"id": 202, "username": "adm", "email": "adm@example.org", "groups": [7]},
                           {"id": 203, "username": "member", "email": "mem@example.org", "groups": [2]}]})
    listed = {u.username: u for u in backend.find_users([], ["sub", "helper", "adm", "member", "admin"])}
    assert {name: backend.is_admin(u) for name, u in listed.items()} == {
        "sub": True, "helper": False, "adm": True, "member": False, "admin": True}
    backend.configure(admin_groups=["Helpers"])
    assert backend.is_admin(listed["helper"]) and not backend.is_admin(listed["member"])
    assert backend.is_admin(CmsUser(uf_id=1, username="x", email="", roles=("A title nobody has",)))


# ------------------------------------------------------------------ password mail


def test_password_mail_is_joomlas_reset_mail_once(backend, joomla):
    user = make(backend, "mailme", "mailme@example.org")
    backend.send_password_mail(user)
    assert [(m["kind"], m["to"]) for m in joomla.mails] == [("password_reset", "mailme@example.org")]
    assert joomla.store.users[user.uf_id]["resetCount"] == 1


def test_password_mail_not_taken_is_a_mail_failure(backend, joomla):
    user = make(backend, "limited", "limited@example.org")
    joomla.store.reset_count = 1
    backend.send_password_mail(user)
    with pytest.raises(CmsMailFailed, match="reset count did not change"):
        backend.send_password_mail(user)
    assert len(joomla.mails) == 1


def test_password_mail_for_a_blocked_or_missing_user(backend, joomla):
    joomla.seed({"users": [{"id": 300, "username": "blocked", "email": "b@example.org", "block": 1}]})
    with pytest.raises(CmsRejected, match="blocked"):
        backend.send_password_mail(CmsUser(300, "blocked", "b@example.org"))
    with pytest.raises(CmsRejected, match="no user 999"):
        backend.send_password_mail(CmsUser(999, "gone", "gone@example.org"))
    assert joomla.mails == []


def test_password_mail_when_the_form_breaks(backend, joomla):
    user = make(backend, "form", "form@example.org")
    joomla.inject(method="POST", path="/index.php", status=None, lose_answer=True)
    with pytest.raises(CmsUnavailable):
        backend.send_password_mail(user)
    form_posts = sum(c.method == "POST" and c.path == "/index.php" for c in joomla.calls)
    joomla.inject(method="GET", path="/index.php", status=200, body="<html>offline</html>")
    with pytest.raises(CmsMailFailed, match="shows no form token"):
        backend.send_password_mail(user)
    assert sum(c.method == "POST" and c.path == "/index.php" for c in joomla.calls) == form_posts


def test_no_token_in_any_call_record_or_message(backend, joomla):
    joomla.inject(method="POST", path=USERS, status=500, body={"errors": [{"title": "boom " + joomla.api_token}]})
    with pytest.raises(CmsUnavailable) as caught:
        make(backend, "secret", "secret@example.org")
    assert joomla.api_token not in caught.value.message
    assert all(joomla.api_token not in repr(c) for c in joomla.calls)


def test_admin_groups_from_the_run_settings(joomla_conn, joomla):
    from types import SimpleNamespace

    from cms_operators import registry

    helpers = joomla.add_group("Helpers", 2)
    backend = registry.get("joomla").backend(joomla_conn, settings=SimpleNamespace(admin_groups=["Helpers", 6]))
    assert backend.admin_groups == ("Helpers", "6")
    assert {helpers, 6, 7, 8} <= backend.admin_group_ids()
    assert registry.get("joomla").backend(joomla_conn).admin_groups == ()
