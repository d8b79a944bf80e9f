"""The Joomla emulator's own behaviour: seeding, tokens, fault injection, call and mail records, reset."""

from __future__ import annotations

import time

import pytest
import requests

from sandbox.joomla import JoomlaEmulator
from sandbox.joomla.store import collation_key, is_email_address, like, page_start

USERS = "/api/index.php/v1/users"


@pytest.fixture
def emulator():
    with JoomlaEmulator() as e:
        yield e


def get(e, route="/v1/users", token=None, **params):
    return requests.get(e.api_url + route, params=params, timeout=10,
                        headers={"X-Joomla-Token": token or e.api_token, "Accept": "application/vnd.api+json"})


def post(e, body, token=None):
    return requests.post(e.api_url + "/v1/users", json=body, timeout=10,
                         headers={"X-Joomla-Token": token or e.api_token, "Accept": "application/vnd.api+json"})


def test_seed_users_and_groups(emulator):
    emulator.seed({"groups": [{"id": 20, "title": "Members", "parent_id": 2}],
                   "users": [{"id": 500, "name": "Ann", "username": "ann", "email": "ann@example.org", "groups": [20]}]})
    row = get(emulator, **{"filter[search]": "ann@"}).json()["data"][0]["attributes"]
    assert (row["id"], row["group_names"]) == (500, "Members")
    with pytest.raises(ValueError, match="username exists"):
        emulator.seed({"users": [{"username": "ANN", "email": "x@example.org"}]})


def test_tokens_like_the_token_plugin(emulator):
    assert get(emulator).status_code == 200
    assert get(emulator, token=emulator.admin_token).status_code == 200
    emulator.store.users[43]["token_enabled"] = False
    assert get(emulator).status_code == 401
    emulator.store.users[43]["token_enabled"] = True
    emulator.store.users[43]["block"] = 1
    assert get(emulator).status_code == 401
    emulator.store.users[43]["block"] = 0
    emulator.store.token_groups.discard(10)
    assert get(emulator).json() == {"errors": [{"title": "Forbidden"}]}


def test_inject_status_retry_after_and_body_match(emulator):
    emulator.inject(method="POST", path=USERS, status=503, retry_after=9, body_contains="victim@")
    ok = post(emulator, {"name": "A", "username": "other", "email": "other@example.org", "groups": ["2"],
                         "password": "Long-enough-123"})
    assert ok.status_code == 200
    hit = post(emulator, {"name": "V", "username": "victim", "email": "victim@example.org", "groups": ["2"],
                          "password": "Long-enough-123"})
    assert (hit.status_code, hit.headers["Retry-After"]) == (503, "9")
    assert emulator.store.user_by_login("victim") is None


def test_inject_delay_and_lost_answer(emulator):
    emulator.inject(method="GET", path="/api/*", status=None, delay=0.3)
    started = time.monotonic()
    assert get(emulator).status_code == 200 and time.monotonic() - started >= 0.3
    emulator.inject(method="POST", path=USERS, status=None, lose_answer=True)
    with pytest.raises(requests.ConnectionError):
        post(emulator, {"name": "L", "username": "lost", "email": "lost@example.org", "groups": ["2"],
                        "password": "Long-enough-123"})
    assert emulator.store.user_by_login("lost") is not None and emulator.calls[-1].lost


def test_calls_keep_no_token_or_password(emulator):
    post(emulator, {"name": "S", "username": "sec", "email": "sec@example.org", "groups": ["2"],
                    "password": "Long-enough-123"})
    assert emulator.calls[-1].body["password"] == "<redacted>"
    assert emulator.api_token not in repr(emulator.calls)


def test_reset_goes_back_to_the_start(emulator):
    emulator.add_group("Extra")
    emulator.store.mail_to_user = True
    post(emulator, {"name": "M", "username": "m1", "email": "m1@example.org", "groups": ["2"]})
    assert len(emulator.mails) == 1 and "Password: " in emulator.mails[0]["body"]
    emulator.inject(status=500, times=5)
    emulator.reset()
    assert [u["id"] for u in emulator.users] == [42, 43] and emulator.mails == [] and emulator.calls == []
    assert get(emulator).status_code == 200 and len(emulator.store.groups) == 10


def test_joomla_text_rules():
    assert collation_key("JOSÉ") == collation_key("jose")
    assert like("%a_x%", "anna.x@example.org") and not like("%a_x%", "ax")
    assert page_start(5, 3, 7) == 6 and page_start(3, 3, 7) == 3 and page_start(0, 20, 7) == 0
    assert is_email_address("a@b") and not is_email_address("m" * 65 + "@example.org")
    assert not is_email_address("a..b@example.org") and not is_email_address("a@-b.org")
