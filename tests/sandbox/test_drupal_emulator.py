"""The Drupal emulator's own switches: seeding, fault injection, the call and mail records, flood control,
the command line. (What the real Drupal answers is tests/contract/test_drupal_contract.py.)"""

from __future__ import annotations

import argparse
import json
import time

import pytest
import requests

from sandbox.drupal import DrupalEmulator, add_cli

AUTH = ("cmsuser_api", "api-password")
H = {"Content-Type": "application/vnd.api+json"}


def create(emulator, name, mail, auth=AUTH):
    body = {"data": {"type": "user--user", "attributes": {"name": name, "mail": mail, "status": True, "pass": "s3cret"}}}
    return requests.post(emulator.jsonapi_url + "/user/user", json=body, auth=auth, headers=H, timeout=10)


def test_seed_roles_users_languages_and_fields(tmp_path):
    seed = {"drupal": {"roles": [{"id": "board", "label": "Board", "is_admin": True}],
                       "users": [{"uid": 40, "name": "seeded", "mail": "s@example.test", "roles": ["board"],
                                  "fields": {"field_city": "Oslo"}}],
                       "languages": ["en", "nb"], "user_fields": ["field_city"]}}
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(seed))
    with DrupalEmulator() as emulator:
        emulator.seed_file(path)
        assert emulator.users[-1]["uid"] == 40 and emulator.languages == ["en", "nb"]
        item = requests.get(emulator.jsonapi_url + "/user/user", params={"filter[name]": "SEEDED"}, auth=AUTH,
                            timeout=10).json()["data"][0]
        assert item["attributes"]["field_city"] == "Oslo"
        assert item["relationships"]["roles"]["data"][0]["meta"] == {"drupal_internal__target_id": "board"}
        assert create(emulator, "next", "n@example.test").json()["data"]["attributes"]["drupal_internal__uid"] == 41
        with pytest.raises(ValueError):
            emulator.seed({"users": [{"name": "Seeded", "mail": "x@example.test"}]})


def test_injection_status_retry_after_body_and_times():
    with DrupalEmulator() as emulator:
        emulator.inject(method="GET", path="/jsonapi/user/*", status=429, retry_after=7, times=2)
        for _ in range(2):
            response = requests.get(emulator.jsonapi_url + "/user/user", auth=AUTH, timeout=10)
            assert (response.status_code, response.headers["Retry-After"]) == (429, "7")
        assert requests.get(emulator.jsonapi_url + "/user/user", auth=AUTH, timeout=10).status_code == 200
        emulator.inject(body_contains="only@example.test", status=500, body={"errors": [{"detail": "boom"}]})
        assert create(emulator, "other", "other@example.test").status_code == 201
        failed = create(emulator, "only", "only@example.test")
        assert failed.status_code == 500 and failed.json() == {"errors": [{"detail": "boom"}]}


def test_delay_and_lost_answer_carry_the_request_out():
    with DrupalEmulator() as emulator:
        emulator.inject(method="POST", delay=0.3, status=None)
        started = time.monotonic()
        assert create(emulator, "slow", "slow@example.test").status_code == 201
        assert time.monotonic() - started >= 0.3
        emulator.inject(method="POST", lose_answer=True)
        with pytest.raises(requests.ConnectionError):
            create(emulator, "lost", "lost@example.test")
        assert emulator.users[-1]["name"] == "lost"
        assert emulator.calls[-1].lost is True


def test_calls_keep_no_credentials_or_passwords():
    with DrupalEmulator() as emulator:
        create(emulator, "rec", "rec@example.test")
        call = emulator.calls[-1]
        assert call.headers["authorization"] == "Basic <redacted>"
        assert call.body["data"]["attributes"]["pass"] == "<redacted>"
        assert "api-password" not in repr(emulator.calls)
        emulator.reset_calls()
        assert emulator.calls == []


def test_flood_control_locks_the_account_after_five_failures():
    with DrupalEmulator() as emulator:
        for _ in range(5):
            assert "meta" not in requests.get(emulator.jsonapi_url, auth=("cmsuser_api", "bad"), timeout=10).json()
        assert "meta" not in requests.get(emulator.jsonapi_url, auth=AUTH, timeout=10).json()


def test_mail_record_and_language_link():
    with DrupalEmulator() as emulator:
        emulator.seed({"users": [{"name": "fr", "mail": "fr@example.test", "preferred_langcode": "fr"}]})
        response = requests.post(emulator.url + "/user/password?_format=json", json={"mail": "FR@example.test"},
                                 timeout=10)
        assert response.status_code == 200
        assert emulator.mails[0]["to"] == "fr@example.test" and "/fr/user/reset/" in emulator.mails[0]["link"]


def test_without_the_language_module_there_is_no_language_resource():
    with DrupalEmulator(languages=None) as emulator:
        index = requests.get(emulator.jsonapi_url, auth=AUTH, timeout=10).json()
        assert "configurable_language--configurable_language" not in index["links"]
        response = requests.get(emulator.jsonapi_url + "/configurable_language/configurable_language", auth=AUTH,
                                timeout=10)
        assert response.status_code == 404


def test_command_line():
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["drupal", "--port", "0", "--token", "t"])
    assert args.token == "t" and args.login == "cmsuser_api"
