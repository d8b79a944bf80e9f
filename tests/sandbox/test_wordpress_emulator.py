"""The WordPress emulator's own features: fault injection, seeding, call records, speed, CLI.
(Its WordPress behaviour is checked against a real WordPress in tests/contract.)"""

from __future__ import annotations

import json
import time

import pytest
import requests

from sandbox.__main__ import build_parser
from sandbox.wordpress import WordPressEmulator

APP_PASSWORD = "abcd EFGH 1234 ijkl MNOP 5678"
AUTH = ("admin", APP_PASSWORD)


@pytest.fixture
def wp():
    with WordPressEmulator(app_password=APP_PASSWORD) as emulator:
        yield emulator


def create(wp, **fields):
    body = {"username": "jdoe", "email": "jdoe@example.test", "password": "pw", **fields}
    return requests.post(wp.rest_url + "/wp/v2/users", json=body, auth=AUTH, timeout=10)


# ----------------------------------------------------------------------------- injection


def test_injected_status_with_retry_after_then_normal_answers(wp):
    wp.inject(method="POST", path="/wp/v2/users", status=503, times=2, retry_after=7)
    first, second, third = (create(wp, username=f"u{n}", email=f"u{n}@example.test") for n in range(3))
    assert (first.status_code, first.headers["Retry-After"]) == (503, "7")
    assert second.status_code == 503
    assert third.status_code == 201
    assert [u["username"] for u in wp.users] == ["admin", "u2"]  # the injected calls did nothing
    assert [c.status for c in wp.calls] == [503, 503, 201]


def test_injection_matches_method_and_path_only(wp):
    wp.inject(method="POST", path="/wp-json/wp/v2/users", status=429)
    listing = requests.get(wp.rest_url + "/wp/v2/users", auth=AUTH, timeout=10)
    me = requests.get(wp.rest_url + "/wp/v2/users/me", auth=AUTH, timeout=10)
    assert (listing.status_code, me.status_code) == (200, 200)
    assert create(wp).status_code == 429
    assert create(wp).status_code == 201


def test_injection_with_a_json_body_and_prefix_path(wp):
    wp.inject(path="/wp/v2/*", status=500, body={"code": "db_down", "message": "x", "data": None})
    response = requests.get(wp.rest_url + "/wp/v2/users/me", auth=AUTH, timeout=10)
    assert response.status_code == 500 and response.json()["code"] == "db_down"


def test_injected_delay_slows_the_answer(wp):
    wp.inject(method="GET", path="/wp/v2/users/me", status=None, delay=0.4)
    started = time.monotonic()
    response = requests.get(wp.rest_url + "/wp/v2/users/me", auth=AUTH, timeout=10)
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.4


def test_delay_longer_than_the_client_timeout_is_a_timeout(wp):
    wp.inject(method="POST", path="/wp/v2/users", status=None, delay=1.0)
    with pytest.raises(requests.Timeout):
        requests.post(wp.rest_url + "/wp/v2/users", json={"username": "slow", "email": "s@example.test",
                                                           "password": "x"}, auth=AUTH, timeout=0.3)
    time.sleep(0.9)  # the emulator still carries the request out, like a slow real site
    assert "slow" in [u["username"] for u in wp.users]


def test_lost_answer_really_creates_the_user(wp):
    wp.inject(method="POST", path="/wp/v2/users", lose_answer=True)
    with pytest.raises(requests.ConnectionError):
        create(wp)
    (created,) = [u for u in wp.users if u["username"] == "jdoe"]
    assert created["email"] == "jdoe@example.test"
    assert wp.calls[-1].lost and wp.calls[-1].status == 201
    assert create(wp).json()["code"] == "existing_user_login"  # the lost create did happen


def test_lost_answer_on_lostpassword_still_sends_the_mail(wp):
    wp.seed({"users": [{"username": "mailme", "email": "m@example.test"}]})
    wp.inject(path="/wp-login.php", lose_answer=True)
    with pytest.raises(requests.ConnectionError):
        requests.post(wp.url + "/wp-login.php?action=lostpassword", data={"user_login": "mailme"}, timeout=10)
    assert [m["user_login"] for m in wp.mails] == ["mailme"]


def test_clear_faults_forgets_pending_injections(wp):
    wp.inject(status=503, times=100)
    wp.clear_faults()
    assert create(wp).status_code == 201


# ----------------------------------------------------------------------------- seed and records


def test_seed_assigns_ids_and_keeps_given_ones(wp):
    wp.seed({"users": [
        {"id": 10, "username": "ten", "email": "ten@example.test", "roles": ["member"], "first_name": "T",
         "last_name": "En"},
        {"username": "next", "email": "next@example.test"},
    ]})
    users = {u["username"]: u for u in wp.users}
    assert users["admin"]["id"] == 1 and users["admin"]["roles"] == ["administrator"]
    assert (users["ten"]["id"], users["ten"]["roles"], users["ten"]["name"]) == (10, ["member"], "T En")
    assert users["next"]["id"] == 11 and users["next"]["roles"] == ["subscriber"]
    assert create(wp).json()["id"] == 12


def test_seed_rejects_duplicates_case_insensitively(wp):
    wp.seed({"users": [{"username": "jdoe", "email": "jdoe@example.test"}]})
    with pytest.raises(ValueError, match="login"):
        wp.seed({"users": [{"username": "JDOE", "email": "other@example.test"}]})
    with pytest.raises(ValueError, match="email"):
        wp.seed({"users": [{"username": "other", "email": "JDoe@Example.test"}]})


def test_seeded_users_are_found_over_http(wp):
    wp.seed({"users": [{"username": "larry", "email": "Larry@example.org", "roles": ["member"]}]})
    found = requests.get(wp.rest_url + "/wp/v2/users", params={"context": "edit", "search": "larry@example.org"},
                         auth=AUTH, timeout=10).json()
    assert [(u["username"], u["roles"]) for u in found] == [("larry", ["member"])]
    assert create(wp, username="x", email="LARRY@example.org").json()["code"] == "existing_user_email"


def test_seed_file_yaml_uses_the_wordpress_part(wp, tmp_path):
    seed = tmp_path / "seed.yaml"
    seed.write_text("civicrm: {contacts: []}\nwordpress:\n  users:\n"
                    "    - {id: 3, username: larry, email: larry@example.org, roles: [member]}\n")
    wp.seed_file(seed)
    assert [u["username"] for u in wp.users] == ["admin", "larry"]


def test_seed_file_json_without_wrapper(wp, tmp_path):
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"users": [{"username": "jj", "email": "jj@example.org"}]}))
    wp.seed_file(seed)
    assert [u["username"] for u in wp.users] == ["admin", "jj"]


def test_calls_are_recorded_without_secrets(wp):
    create(wp)
    (call,) = wp.calls
    assert (call.method, call.path, call.status) == ("POST", "/wp-json/wp/v2/users", 201)
    assert call.body["username"] == "jdoe" and call.body["password"] == "<redacted>"
    assert call.headers["authorization"] == "Basic <redacted>"
    assert APP_PASSWORD not in repr(wp.calls) and "pw" not in json.dumps(call.body["password"])
    wp.reset_calls()
    assert wp.calls == []


def test_users_are_copies(wp):
    wp.users[0]["email"] = "changed@example.test"
    assert wp.users[0]["email"] == "admin@example.test"


def test_mail_switch_and_record(wp):
    wp.seed({"users": [{"username": "mailme", "email": "m@example.test"}]})
    wp.mail_works = False
    failed = requests.post(wp.url + "/wp-login.php?action=lostpassword", data={"user_login": "mailme"},
                           allow_redirects=False, timeout=10)
    wp.mail_works = True
    sent = requests.post(wp.url + "/wp-login.php?action=lostpassword", data={"user_login": "m@example.test"},
                         allow_redirects=False, timeout=10)
    assert failed.status_code == 200 and sent.status_code == 302
    assert [(m["user_login"], m["to"]) for m in wp.mails] == [("mailme", "m@example.test")]


def test_application_passwords_unavailable_means_anonymous(wp):
    wp.app_passwords_available = False
    index = requests.get(wp.rest_url + "/", timeout=10).json()
    me = requests.get(wp.rest_url + "/wp/v2/users/me", auth=AUTH, timeout=10)
    assert index["authentication"] == []
    assert me.status_code == 401


def test_api_user_without_user_capabilities_is_403():
    with WordPressEmulator(app_password=APP_PASSWORD, api_user_roles=("editor",)) as wp:
        response = create(wp)
        assert (response.status_code, response.json()["code"]) == (403, "rest_cannot_create_user")


# ----------------------------------------------------------------------------- speed and CLI


def test_100k_users_seed_and_lookups_are_fast():
    started = time.monotonic()
    with WordPressEmulator(app_password=APP_PASSWORD) as wp:
        wp.seed({"users": [{"username": f"user{n:06d}", "email": f"user{n:06d}@example.org"}
                           for n in range(100_000)]})
        found = requests.get(wp.rest_url + "/wp/v2/users", auth=AUTH, timeout=30,
                             params={"context": "edit", "search": "user099999@example.org"}).json()
        page = requests.get(wp.rest_url + "/wp/v2/users", auth=AUTH, timeout=30,
                            params={"context": "edit", "per_page": 100, "page": 1000, "orderby": "id"})
        duplicate = create(wp, username="USER050000", email="new@example.org")
        fresh = create(wp, username="fresh", email="fresh@example.org")
    elapsed = time.monotonic() - started
    assert [u["username"] for u in found] == ["user099999"]
    assert page.headers["X-WP-Total"] == "100001" and len(page.json()) == 100
    assert duplicate.json()["code"] == "existing_user_login"
    assert fresh.status_code == 201
    print(f"\n100k users seeded and looked up in {elapsed:.1f} s")  # speed lives in bench/, not here


def test_cli_has_the_wordpress_subcommand():
    args = build_parser().parse_args(["wordpress", "--seed", "s.yaml", "--port", "8002", "--login", "api",
                                      "--app-password", "p w"])
    assert (args.command, args.seed, args.port, args.login, args.app_password) == (
        "wordpress", "s.yaml", 8002, "api", "p w")
    assert callable(args.func)


def test_widened_duplicate_check_lets_concurrent_creates_make_two_accounts_for_one_email(wp):
    """The failure the creation lock exists for: WordPress's checks and INSERT are not atomic."""
    from concurrent.futures import ThreadPoolExecutor

    def two_at_once(email):
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(create, wp, username=f"{email.split('@')[0]}{n}", email=email) for n in range(2)]
            return sorted(f.result().status_code for f in futures)

    wp.widen_duplicate_check(0.5)
    assert two_at_once("twin@example.test") == [201, 201]
    assert sum(u["email"] == "twin@example.test" for u in wp.users) == 2
    # a create that comes after the gap is refused as WordPress refuses it
    assert create(wp, username="twin9", email="twin@example.test").json()["code"] == "existing_user_email"
    wp.widen_duplicate_check(0)  # closed: one account, the other create refused
    assert two_at_once("solo@example.test") == [201, 500]
    assert sum(u["email"] == "solo@example.test" for u in wp.users) == 1
