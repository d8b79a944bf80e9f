"""The Drupal 7 emulator's own behaviour: seeding, SQLite-like comparison, fault injection, no secrets kept."""

from __future__ import annotations

import requests

from sandbox.drupal7 import sandbox_connection, sandbox_site
from sandbox.drupal7.server import Drupal7Emulator


def login(site: Drupal7Emulator) -> requests.Session:
    http = requests.Session()
    answer = http.post(f"{site.url}/api/user/login.json", json={"username": site.login, "password": site.password},
                       timeout=10)
    http.headers["X-CSRF-Token"] = answer.json()["token"]
    return http


def test_seed_by_role_name_and_connection_fields():
    with sandbox_site("s3cret-value") as site:
        site.seed({"users": [{"uid": 7, "name": "larry", "mail": "larry@example.org", "roles": ["member"]}]})
        assert [(u["uid"], u["name"], u["roles"]) for u in site.users][-1] == (7, "larry", [4])
        assert sandbox_connection(site) == {"host": site.url, "login": "cmsuser_api", "password": "s3cret-value",
                                            "extra": {"endpoint": "api"}}


def test_case_sensitive_mode_compares_like_sqlite():
    with Drupal7Emulator(case_sensitive=True) as site:
        site.seed({"users": [{"name": "jo", "mail": "Jo@Example.org"}]})
        http = login(site)
        exact = http.get(f"{site.url}/api/user.json", params={"parameters[mail]": "jo@example.org"}, timeout=10)
        like = http.get(f"{site.url}/api/user.json", params={"parameters[mail]": "jo@example.org",
                                                             "options[parameters_op][mail]": "LIKE"}, timeout=10)
        assert exact.json() == []
        assert [r["name"] for r in like.json()] == ["jo"]


def test_injected_fault_and_lost_answer_and_no_password_recorded():
    with Drupal7Emulator() as site:
        http = login(site)
        site.inject(method="POST", path="/api/user.json", status=503, retry_after=2)
        answer = http.post(f"{site.url}/api/user.json", json={"name": "a", "mail": "a@example.org", "pass": "pw-1"},
                           timeout=10)
        assert (answer.status_code, answer.headers["Retry-After"]) == (503, "2")
        site.inject(method="POST", path="/api/user.json", status=None, lose_answer=True)
        try:
            http.post(f"{site.url}/api/user.json", json={"name": "b", "mail": "b@example.org", "pass": "pw-2"},
                      timeout=10)
        except requests.ConnectionError:
            pass
        assert "b" in [u["name"] for u in site.users]  # carried out, answer lost
        assert all("pw-" not in str(c.body) for c in site.calls)
        assert site.internal_errors == []
