"""WordPressBackend / WordPressHook against the WordPress emulator."""

from __future__ import annotations

import base64
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from cms_operators.backend import (
    CmsAuthError,
    CmsBackend,
    CmsConfigError,
    CmsDuplicateEmail,
    CmsDuplicateLogin,
    CmsError,
    CmsMailFailed,
    CmsRejected,
    CmsUnavailable,
    CmsUser,
)
from cms_operators.registry import get as get_cms_type
from cms_operators.wordpress.backend import WordPressBackend, fit_display_name, login_search_term
from cms_operators.wordpress.hook import WordPressHook
from sandbox.wordpress import WordPressEmulator

APP_PASSWORD = "abcd EFGH 1234 ijkl MNOP 5678"  # as in conftest.py

SECRETS = (APP_PASSWORD, APP_PASSWORD.replace(" ", ""), base64.b64encode(f"admin:{APP_PASSWORD}".encode()).decode())


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(WordPressHook, "backoff_seconds", 0.01)


@pytest.fixture
def backend(cms_conn) -> WordPressBackend:
    return get_cms_type("wordpress").backend(cms_conn)


def set_conn(monkeypatch, **fields):
    conn = {"conn_type": "http", "login": "admin", "password": APP_PASSWORD, **fields}
    monkeypatch.setenv("AIRFLOW_CONN_CMS_DEFAULT", json.dumps(conn))


def gets(wordpress, route="/wp-json/wp/v2/users"):
    return [c for c in wordpress.calls if c.method == "GET" and c.path == route]


def posts(wordpress):
    return [c for c in wordpress.calls if c.method == "POST" and c.path == "/wp-json/wp/v2/users"]


def new_user(backend, **overrides) -> CmsUser:
    args = {"username": "jdoe", "email": "jdoe@example.test", "first_name": "Jane", "last_name": "Doe",
            "display_name": "Jane Doe", "roles": ["member"]}
    args.update(overrides)
    return backend.create_user(**args)


def seed_users(wordpress, count, prefix="user"):
    wordpress.seed({"users": [{"username": f"{prefix}{n}", "email": f"{prefix}{n}@example.org"}
                              for n in range(count)]})


# ----------------------------------------------------------------------------- factory and connection


def test_factory_gives_a_backend_without_network(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_CMS_DEFAULT", raising=False)
    backend = get_cms_type("WordPress").backend("cms_default")  # no connection needed until the first call
    assert isinstance(backend, CmsBackend)
    assert (backend.name, backend.rules.max_email_length, backend.rules.max_username_length) == ("wordpress", 100, 60)


def test_factory_rejects_unknown_cms_types():
    with pytest.raises(CmsConfigError, match="'typo3' is not supported.*wordpress"):
        get_cms_type("typo3")


def test_missing_connection_names_it(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_CMS_OTHER", raising=False)
    with pytest.raises(CmsConfigError, match="'cms_other' is not defined"):
        WordPressBackend("cms_other").find_by_email("a@example.test")


def test_connection_without_password_is_a_config_error(wordpress, monkeypatch):
    set_conn(monkeypatch, host=wordpress.url, password="")
    with pytest.raises(CmsConfigError, match="application password"):
        WordPressBackend("cms_default").find_by_email("a@example.test")


def test_host_without_scheme_uses_schema_and_port(wordpress, monkeypatch):
    host, port = wordpress.url.removeprefix("http://").split(":")
    set_conn(monkeypatch, host=host, schema="http", port=int(port))
    hook = WordPressHook("cms_default")
    assert (hook.site_url, hook.rest_url) == (wordpress.url, wordpress.url + "/wp-json")
    assert hook.test_connection() == (True, f"Authenticated as 'admin' at {wordpress.url}/wp-json")


def test_host_without_scheme_or_schema_is_refused_instead_of_guessing_https(wordpress, monkeypatch):
    # guessing https gave SSL failures against http sites, reported as an unreachable site
    host = wordpress.url.removeprefix("http://")
    set_conn(monkeypatch, host=host)
    with pytest.raises(CmsConfigError) as caught:
        WordPressBackend("cms_default").find_by_email("a@example.test")
    message = caught.value.message
    assert caught.value.code == "connection_invalid" and "'cms_default'" in message and "no scheme" in message
    assert f"https://{host}" in message and "http://" in message
    assert wordpress.calls == []
    ok, said = WordPressHook("cms_default").test_connection()
    assert not ok and "no scheme" in said


@pytest.mark.parametrize("verify, expected", [
    (False, False), ("False", False), ("off", False), (" no ", False), ("0", False),
    (True, True), ("TRUE", True), ("on", True), (None, True),
])
def test_verify_accepts_the_usual_spellings(wordpress, monkeypatch, verify, expected):
    set_conn(monkeypatch, host=wordpress.url, extra={"verify": verify})
    hook = WordPressHook("cms_default")
    hook.get_conn()
    assert hook.endpoint.verify is expected


def test_verify_keeps_a_ca_bundle_path(wordpress, monkeypatch, tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    set_conn(monkeypatch, host=wordpress.url, extra={"verify": str(bundle)})
    hook = WordPressHook("cms_default")
    hook.get_conn()
    assert hook.endpoint.verify == str(bundle)


@pytest.mark.parametrize("verify", ["maybe", "/etc/ssl/no-such-bundle.pem", {"path": "x"}])
def test_an_unusable_verify_is_refused_before_any_request(wordpress, monkeypatch, verify):
    set_conn(monkeypatch, host=wordpress.url, extra={"verify": verify})
    with pytest.raises(CmsConfigError) as caught:
        WordPressBackend("cms_default").find_by_email("a@example.test")
    assert "'cms_default'" in caught.value.message and "extra.verify" in caught.value.message
    assert wordpress.calls == []


@pytest.mark.parametrize("fields, field", [
    ({"login": "admin\n"}, "login"),
    ({"login": " admin"}, "login"),
    ({"login": "ad\tmin"}, "login"),
    ({"password": APP_PASSWORD + "\n"}, "password (the application password)"),
    ({"password": APP_PASSWORD.replace(" ", "\r\n", 1)}, "password (the application password)"),
    ({"password": APP_PASSWORD + " "}, "password (the application password)"),
])
def test_credentials_that_cannot_be_headers_are_refused_without_showing_them(wordpress, monkeypatch, fields,
                                                                              field):
    set_conn(monkeypatch, host=wordpress.url, **fields)
    with pytest.raises(CmsConfigError) as caught:
        WordPressBackend("cms_default").find_by_email("a@example.test")
    text = str(caught.value) + repr(caught.value)
    assert "'cms_default'" in text and field in text
    for value in fields.values():
        assert value not in text and value.strip() not in text
    for secret in SECRETS:
        assert secret not in text
    assert wordpress.calls == []


def test_rest_route_form_of_the_api_root(wordpress, monkeypatch):
    wordpress.seed({"users": [{"username": "larry", "email": "larry@example.org"}]})
    set_conn(monkeypatch, host=wordpress.url, extra={"rest_url": wordpress.url + "/?rest_route="})
    backend = WordPressBackend("cms_default")
    assert backend.find_by_email("larry@example.org").username == "larry"
    assert wordpress.calls[-1].path == "/" and wordpress.calls[-1].query["rest_route"] == "/wp/v2/users"


def test_extras_are_never_sent_as_headers(wordpress, monkeypatch):
    set_conn(monkeypatch, host=wordpress.url, extra={"X-Api-Key": "extra-secret-value",
                                                     "headers": {"X-Other": "other-value"}, "timeout": 5})
    backend = WordPressBackend("cms_default")
    backend.preflight(["member"])
    backend.find_by_email("a@example.test")
    sent = json.dumps([c.headers for c in wordpress.calls]).lower()
    assert wordpress.calls and "x-api-key" not in sent and "extra-secret-value" not in sent
    assert "x-other" not in sent and "other-value" not in sent


def test_no_cookies_are_kept(backend, wordpress):
    user = new_user(backend)
    backend.send_password_mail(user)  # wp-login.php answers with a Set-Cookie
    backend.find_by_email("jdoe@example.test")
    assert "cookie" not in wordpress.calls[-1].headers
    assert len(backend.hook.get_conn().cookies) == 0


def test_test_connection_reports_bad_credentials(wordpress, monkeypatch):
    set_conn(monkeypatch, host=wordpress.url, password="wrong")
    ok, message = WordPressHook("cms_default").test_connection()
    assert not ok and "cms_default" in message and "application password" in message


# ----------------------------------------------------------------------------- preflight


def test_preflight_succeeds_and_creates_nothing(backend, wordpress):
    users_before = wordpress.users
    description = backend.preflight(["subscriber", "member"])
    assert "as 'admin'" in description and "subscriber, member" in description
    assert wordpress.users == users_before
    (probe,) = posts(wordpress)
    assert probe.status == 500 and probe.body["roles"] == ["subscriber", "member"]


def test_preflight_when_only_creates_are_unavailable_leaves_it_to_the_batches(backend, wordpress):
    wordpress.inject(method="POST", path="/wp/v2/users", status=503, times=5)
    description = backend.preflight(["member"])
    assert "NOT verified" in description and "503" in description
    assert len(posts(wordpress)) == 3  # the probe is retried like a read: it cannot create anyone
    assert len(wordpress.users) == 1


def test_preflight_when_reads_are_unavailable_fails(backend, wordpress):
    wordpress.inject(method="GET", path="/wp/v2/users/me", status=503, times=5)
    with pytest.raises(CmsUnavailable):
        backend.preflight(["member"])


def test_preflight_with_a_bad_password_names_the_connection(wordpress, monkeypatch):
    set_conn(monkeypatch, host=wordpress.url, password="not the app password")
    with pytest.raises(CmsAuthError, match="connection 'cms_default'") as caught:
        WordPressBackend("cms_default").preflight(["member"])
    assert caught.value.status == 401
    assert posts(wordpress) == []


def test_preflight_with_a_missing_role_names_it_and_creates_nothing(backend, wordpress):
    with pytest.raises(CmsConfigError, match="role 'volunteer' does not exist") as caught:
        backend.preflight(["member", "volunteer"])
    assert caught.value.problems == [f"role 'volunteer' does not exist on WordPress {wordpress.url}; create it "
                                     "there or remove it from the roles setting"]
    assert [u["username"] for u in wordpress.users] == ["admin"]


def test_preflight_reports_every_missing_role_at_once(backend, wordpress):
    with pytest.raises(CmsConfigError) as caught:
        backend.preflight(["volunteer", "member", "board"])
    assert [p.split("'")[1] for p in caught.value.problems] == ["volunteer", "board"]
    assert [u["username"] for u in wordpress.users] == ["admin"]


def test_preflight_without_application_passwords(backend, wordpress):
    wordpress.app_passwords_available = False
    with pytest.raises(CmsConfigError, match="Application Passwords are not available"):
        backend.preflight([])


def test_preflight_names_missing_capabilities(monkeypatch):
    with WordPressEmulator(app_password=APP_PASSWORD, api_user_roles=("editor",)) as wordpress:
        set_conn(monkeypatch, host=wordpress.url)
        with pytest.raises(CmsAuthError, match="lacks create_users, list_users, edit_users"):
            WordPressBackend("cms_default").preflight(["member"])


def test_preflight_with_a_wrong_rest_url(wordpress, monkeypatch):
    set_conn(monkeypatch, host=wordpress.url, extra={"rest_url": wordpress.url + "/api"})
    with pytest.raises(CmsConfigError, match="rest_url"):
        WordPressBackend("cms_default").preflight([])


def test_preflight_falls_back_when_the_own_login_is_banned(monkeypatch):
    # Security plugins often list 'admin' in illegal_user_logins: then the own-login probe is a 400.
    with WordPressEmulator(app_password=APP_PASSWORD, illegal_logins=("admin",)) as wordpress:
        set_conn(monkeypatch, host=wordpress.url)
        WordPressBackend("cms_default").preflight(["member"])
        with pytest.raises(CmsConfigError, match="role 'nope'"):
            WordPressBackend("cms_default").preflight(["nope"])
        assert len(wordpress.users) == 1
        # own login, long login; then again, and the missing role alone to name it
        assert [c.status for c in posts(wordpress)] == [400, 500, 400, 400, 400]


def test_non_ascii_credentials_are_sent_as_utf8(monkeypatch):
    with WordPressEmulator(login="jöhn", admin_email="john@example.test", app_password=APP_PASSWORD) as wordpress:
        monkeypatch.setenv("AIRFLOW_CONN_CMS_DEFAULT", json.dumps({
            "conn_type": "http", "host": wordpress.url, "login": "jöhn", "password": APP_PASSWORD}))
        assert WordPressHook("cms_default").test_connection()[0]


# ----------------------------------------------------------------------------- lookups


def test_find_users_with_two_items_searches_without_counting(backend, wordpress):
    wordpress.seed({"users": [{"username": "ann", "email": "ann@example.org"},
                              {"username": "joann", "email": "joann@example.org"}]})
    found = backend.find_users([" ANN@example.org "], ["JoAnn"])
    assert [(u.username, u.email) for u in found] == [("ann", "ann@example.org"), ("joann", "joann@example.org")]
    searches = gets(wordpress)
    assert len(searches) == 2 and all(c.query.get("per_page") == "100" for c in searches)
    assert sorted(c.query["search"] for c in searches) == ["ann@example.org", "joann"]


def test_find_users_lists_everything_when_that_is_cheaper(backend, wordpress):
    seed_users(wordpress, 150)
    emails = [f"user{n}@example.org" for n in (1, 2, 3)] + ["nobody@example.org"]
    found = backend.find_users(emails, ["USER140", "admin"])
    assert sorted(u.username for u in found) == ["admin", "user1", "user140", "user2", "user3"]
    calls = gets(wordpress)
    assert [c.query.get("per_page") for c in calls] == ["1", "100", "100"]  # count + 2 pages of 151 users
    assert not any("search" in c.query for c in calls)


def test_find_users_searches_when_listing_costs_more(backend, wordpress):
    seed_users(wordpress, 350)  # 4 pages > 3 searches
    found = backend.find_users(["user7@example.org", "user300@example.org"], ["user12"])
    assert sorted(u.username for u in found) == ["user12", "user300", "user7"]
    calls = gets(wordpress)
    assert calls[0].query["per_page"] == "1"
    assert sorted(c.query["search"] for c in calls[1:]) == ["user12", "user300@example.org", "user7@example.org"]


def test_a_runs_listing_is_made_once_and_matches_as_find_users_does(backend, wordpress):
    seed_users(wordpress, 150)
    asked = [(["USER1@example.org ", "nobody@example.org"], ["user140", "Admin"]), ([], ["user7"])]
    expected = [[(u.uf_id, u.username) for u in backend.find_users(emails, names)] for emails, names in asked]
    wordpress.reset_calls()
    assert backend.user_listing(lookups=2) is None and gets(wordpress) == []  # a count cannot pay off
    listing = backend.user_listing(lookups=3000)  # a run's look-ups, a chunk of contacts at a time
    assert [c.query.get("per_page") for c in gets(wordpress)] == ["1", "100", "100"]  # count + 2 pages
    wordpress.reset_calls()
    assert [[(u.uf_id, u.username) for u in listing.match(emails, names)] for emails, names in asked] == expected
    assert gets(wordpress) == []  # each chunk is matched against the one listing


def test_searches_stay_when_they_cost_less_than_a_listing(backend, wordpress):
    seed_users(wordpress, 350)  # 4 pages
    assert backend.user_listing(lookups=4) is None
    assert [c.query.get("per_page") for c in gets(wordpress)] == ["1"]


def test_find_users_pages_through_long_search_results(backend, wordpress):
    seed_users(wordpress, 130, prefix="sam")
    found = backend.find_users([], ["sam129"])
    assert [u.username for u in found] == ["sam129"]
    found = backend.find_users([], ["sam"])  # 'sam' itself does not exist though 130 rows match
    assert found == []
    assert [c.query.get("page") for c in gets(wordpress)][-2:] == ["1", "2"]


def test_find_users_for_logins_with_an_at_sign(backend, wordpress):
    wordpress.seed({"users": [{"username": "jo@home", "email": "jo@example.org"}]})
    (user,) = backend.find_users([], ["JO@HOME"])
    assert user.username == "jo@home"
    assert gets(wordpress)[-1].query["search"] == "home"  # an '@' would search emails only


def test_plus_in_emails_is_encoded(backend, wordpress):
    wordpress.seed({"users": [{"username": "mary", "email": "mary+tag@example.org"}]})
    assert backend.find_by_email("Mary+Tag@example.org").username == "mary"
    assert gets(wordpress)[-1].query["search"] == "mary+tag@example.org"  # arrived as '+', not as a space


def test_find_by_email_picks_the_exact_match_among_fuzzy_results(backend, wordpress):
    wordpress.seed({"users": [{"id": 5, "username": "joann", "email": "joann@example.org"},
                              {"id": 6, "username": "ann", "email": "ann@example.org", "roles": ["member"]}]})
    found = backend.find_by_email(" ANN@example.org ")
    assert found == CmsUser(6, "ann", "ann@example.org", ("member",), registered=found.registered)
    assert found.registered  # WordPress's registered_date, which tells our account from an older one
    assert backend.find_by_email("nn@example.org") is None
    assert backend.find_by_email("") is None


def test_lookups_retry_transient_errors(backend, wordpress):
    wordpress.seed({"users": [{"username": "ann", "email": "ann@example.org"}]})
    wordpress.inject(method="GET", path="/wp/v2/users", status=503, times=2)
    assert backend.find_by_email("ann@example.org").username == "ann"
    assert [c.status for c in gets(wordpress)] == [503, 503, 200]


def test_lookups_give_up_after_three_tries(backend, wordpress):
    wordpress.inject(method="GET", path="/wp/v2/users", status=502, times=5)
    with pytest.raises(CmsUnavailable):
        backend.find_by_email("ann@example.org")
    assert len(gets(wordpress)) == 3


def test_lookups_honour_retry_after(backend, wordpress):
    wordpress.inject(method="GET", path="/wp/v2/users", status=429, retry_after=1)
    started = time.monotonic()
    backend.find_by_email("ann@example.org")
    assert time.monotonic() - started >= 1.0


@pytest.mark.parametrize("retry_after, low, high", [
    ("0.25", 0.25, 0.25),  # fractional seconds were ignored (plain back-off) before the shared parser
    ("in 20 s", 15.0, 20.0),  # as an HTTP date, made when the test runs
])
def test_lookups_honour_retry_after_in_seconds_or_as_an_http_date(backend, wordpress, retry_after, low, high):
    if retry_after == "in 20 s":
        retry_after = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    sleeps: list[float] = []
    backend.hook._sleep = sleeps.append
    wordpress.inject(method="GET", path="/wp/v2/users", status=429, retry_after=retry_after)
    backend.find_by_email("ann@example.org")
    assert len(sleeps) == 1 and low <= sleeps[0] <= high
    assert [c.status for c in gets(wordpress)] == [429, 200]


def test_a_long_retry_after_is_left_to_the_caller(backend, wordpress):
    wordpress.inject(method="GET", path="/wp/v2/users", status=503, retry_after=120, times=3)
    with pytest.raises(CmsUnavailable) as caught:
        backend.find_by_email("ann@example.org")
    assert caught.value.retry_after == 120
    assert len(gets(wordpress)) == 1


def test_html_instead_of_json_is_transient(backend, wordpress):
    wordpress.inject(method="GET", path="/wp/v2/users", status=200, body="<html>maintenance</html>", times=3)
    with pytest.raises(CmsUnavailable, match="not JSON"):
        backend.find_by_email("ann@example.org")


# ----------------------------------------------------------------------------- create


def test_create_returns_the_user_and_sends_a_random_password(backend, wordpress):
    user = new_user(backend, locale="en_US")
    assert user == CmsUser(2, "jdoe", "jdoe@example.test", ("member",), registered=user.registered)
    (stored,) = [u for u in wordpress.users if u["id"] == 2]
    assert (stored["name"], stored["first_name"], stored["last_name"], stored["locale"]) == (
        "Jane Doe", "Jane", "Doe", "en_US")
    new_user(backend, username="jdoe2", email="jdoe2@example.test")
    passwords = [c.body["password"] for c in posts(wordpress)]
    assert passwords == ["<redacted>", "<redacted>"]  # sent (the emulator keeps no copy)


def test_create_with_a_locale_the_site_lacks_leaves_it_out(backend, wordpress):
    new_user(backend, locale="de_DE")
    assert "locale" not in posts(wordpress)[-1].body


def test_create_without_roles_uses_the_default_role(backend):
    assert new_user(backend, roles=[]).roles == ("subscriber",)


def test_create_fits_long_display_names(backend, wordpress):
    user = new_user(backend, display_name="Tom & Jerry " * 30)
    (stored,) = [u for u in wordpress.users if u["id"] == user.uf_id]
    assert len(stored["name"]) <= 250


@pytest.mark.parametrize("existing, attempt, error", [
    ({"username": "JDOE", "email": "other@example.test"}, {}, CmsDuplicateLogin),
    ({"username": "someone", "email": "JDoe@Example.test"}, {}, CmsDuplicateEmail),
])
def test_create_maps_duplicates(backend, wordpress, existing, attempt, error):
    wordpress.seed({"users": [existing]})
    with pytest.raises(error) as caught:
        new_user(backend, **attempt)
    assert caught.value.status == 500


@pytest.mark.parametrize("overrides, code, text", [
    ({"username": "bad!"}, "rest_invalid_param", "username"),
    ({"username": "x" * 61}, "user_login_too_long", "60 characters"),
    ({"email": "not-an-email"}, "rest_invalid_param", "email"),
])
def test_create_maps_rejections_with_the_field(backend, overrides, code, text):
    with pytest.raises(CmsRejected, match=text) as caught:
        new_user(backend, **overrides)
    assert caught.value.code == code


def test_create_refuses_long_emails_before_asking(backend, wordpress):
    with pytest.raises(CmsRejected, match="100"):
        new_user(backend, email="e" * 95 + "@e.test")
    assert posts(wordpress) == []


def test_create_maps_an_opaque_500_to_rejected(backend, wordpress):
    wordpress.inject(method="POST", path="/wp/v2/users", status=500,
                     body={"code": "internal_server_error", "message": "<p>critical</p>", "data": {"status": 500}})
    with pytest.raises(CmsRejected) as caught:
        new_user(backend)
    assert (caught.value.status, caught.value.code) == (500, "internal_server_error")


@pytest.mark.parametrize("injection", [
    {"status": 503, "retry_after": 5},
    {"status": 502},
    {"status": 500, "body": "<html>Fatal error</html>"},
    {"status": None, "lose_answer": True},
])
def test_create_transient_failures_are_not_retried(backend, wordpress, injection):
    wordpress.inject(method="POST", path="/wp/v2/users", **injection)
    with pytest.raises(CmsUnavailable) as caught:
        new_user(backend)
    assert len(posts(wordpress)) == 1
    if injection.get("retry_after"):
        assert caught.value.retry_after == 5
    created = [u for u in wordpress.users if u["username"] == "jdoe"]
    assert len(created) == (1 if injection.get("lose_answer") else 0)  # a lost answer may hide a success


def test_create_with_a_missing_role_is_a_config_error(backend):
    with pytest.raises(CmsConfigError, match="nope"):
        new_user(backend, roles=["nope"])


def test_create_with_bad_credentials_is_an_auth_error(wordpress, monkeypatch):
    set_conn(monkeypatch, host=wordpress.url, password="wrong")
    with pytest.raises(CmsAuthError):
        new_user(WordPressBackend("cms_default"))


def test_create_with_the_wrong_route_is_a_config_error(wordpress, monkeypatch):
    set_conn(monkeypatch, host=wordpress.url, extra={"rest_url": wordpress.url + "/nothing-here"})
    with pytest.raises(CmsConfigError):
        new_user(WordPressBackend("cms_default"))


def test_create_answer_without_json_is_transient(backend, wordpress):
    wordpress.inject(method="POST", path="/wp/v2/users", status=201, body="<html>ok?</html>")
    with pytest.raises(CmsUnavailable):
        new_user(backend)


# ----------------------------------------------------------------------------- password mail


def test_send_password_mail(backend, wordpress):
    user = new_user(backend)
    backend.send_password_mail(user)
    assert [(m["user_login"], m["to"]) for m in wordpress.mails] == [("jdoe", "jdoe@example.test")]
    (call,) = [c for c in wordpress.calls if c.path == "/wp-login.php"]
    assert call.query == {"action": "lostpassword"} and call.body == {"user_login": "jdoe@example.test"}


def test_send_password_mail_when_the_site_cannot_mail(backend, wordpress):
    user = new_user(backend)
    wordpress.mail_works = False
    with pytest.raises(CmsMailFailed, match="could not be sent"):
        backend.send_password_mail(user)


def test_send_password_mail_for_an_unknown_user(backend):
    with pytest.raises(CmsRejected, match="no account"):
        backend.send_password_mail(CmsUser(99, "ghost", "ghost@example.test"))


def test_send_password_mail_when_unavailable(backend, wordpress):
    user = new_user(backend)
    wordpress.inject(path="/wp-login.php", status=503, times=3)
    with pytest.raises(CmsUnavailable):
        backend.send_password_mail(user)
    assert len([c for c in wordpress.calls if c.path == "/wp-login.php"]) == 1  # never sent twice


# ----------------------------------------------------------------------------- secrets


def test_no_secret_in_exceptions_or_logs(wordpress, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    errors: list[CmsError] = []
    backend = WordPressBackend("cms_default")
    set_conn(monkeypatch, host=wordpress.url)
    for attempt in (
        lambda: backend.preflight(["nope"]),
        lambda: new_user(backend, username="bad!"),
        lambda: new_user(backend, email="e" * 101),
        lambda: backend.send_password_mail(CmsUser(9, "x", "x@example.test")),
    ):
        with pytest.raises(CmsError) as caught:
            attempt()
        errors.append(caught.value)
    wordpress.inject(method="GET", status=503, times=3)
    with pytest.raises(CmsUnavailable) as caught:
        backend.find_by_email("a@example.test")
    errors.append(caught.value)
    set_conn(monkeypatch, host=wordpress.url, password=APP_PASSWORD + "x")  # a wrong one, also secret
    with pytest.raises(CmsAuthError) as caught:
        WordPressBackend("cms_default").preflight([])
    errors.append(caught.value)
    texts = [str(e) for e in errors] + [repr(e) for e in errors] + [repr(backend), repr(backend.hook)]
    texts += [r.getMessage() for r in caplog.records]
    assert caplog.records  # the retries were logged
    for secret in (*SECRETS, APP_PASSWORD + "x"):
        assert not [t for t in texts if secret in t]


# ----------------------------------------------------------------------------- helpers


def test_sanitize_username_matches_what_wordpress_accepts(backend):
    assert backend.rules.sanitize_username("Zoë  Ångström") == "zoe.angstrom"
    assert backend.rules.sanitize_username("Jöhn O'Brien-Smith!") == "john.obrien-smith"
    assert backend.rules.sanitize_username("ÆØÅ") == "aeoa"


def test_login_search_term():
    assert login_search_term("jdoe") == "jdoe"
    assert login_search_term("jo@home.example") == "home.example"
    assert login_search_term("https://x.example") == "x.example"


def test_fit_display_name_counts_escaped_characters():
    assert fit_display_name("  Jane   Doe ") == "Jane Doe"
    fitted = fit_display_name("&" * 300)
    assert len(fitted) * 5 <= 250 and fitted
    assert len(fit_display_name("n" * 300)) == 250
