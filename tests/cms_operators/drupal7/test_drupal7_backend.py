"""Drupal7Backend and Drupal7Hook against the emulator over HTTP: error mapping, paging, SQLite-like look-ups,
session renewal, retries of reads only, logout on close, no secret in any message."""

from __future__ import annotations

import pytest

from cms_operators.backend import CmsAuthError, CmsConfigError, CmsUnavailable
from cms_operators.drupal7.backend import Drupal7Backend
from sandbox.drupal7 import testing
from sandbox.drupal7.server import Drupal7Emulator
from sandbox.drupal7.testing import EMULATOR_PASSWORD, connection_json

drupal7 = testing.drupal7  # fixtures: a started emulator and a connection to it
drupal7_conn = testing.drupal7_conn


def new(**kwargs) -> dict:
    return {"first_name": "", "last_name": "", "display_name": "", "roles": [], **kwargs}


def test_find_users_pages_through_more_than_20(drupal7, drupal7_conn):
    drupal7.seed({"users": [{"name": f"u{i}", "mail": f"U{i}@example.org"} for i in range(45)]})
    backend = Drupal7Backend(drupal7_conn)
    found = backend.find_users([f"u{i}@example.org" for i in range(45)], [])
    assert len(found) == 45
    index_calls = [c for c in drupal7.calls if c.path == "/api/user.json" and c.method == "GET"]
    assert max(int(dict(c.query)["page"]) for c in index_calls) >= 0
    backend.close()


def index_calls(site) -> list[dict]:
    return [dict(c.query) for c in site.calls if c.path == "/api/user.json" and c.method == "GET"]


def test_a_site_with_fewer_users_than_the_look_ups_would_reach_is_listed_once(drupal7, drupal7_conn):
    drupal7.seed({"users": [{"name": "ada.lovelace", "mail": "ada@example.org"},
                            {"name": "someone", "mail": "grace@example.org"}]})
    backend = Drupal7Backend(drupal7_conn)
    assert backend.case_insensitive()  # asked once per session, before the count starts
    drupal7.calls.clear()
    found = backend.find_users([f"p{i}@example.org" for i in range(99)] + ["Grace@Example.org"],
                               [f"p{i}.x" for i in range(99)] + ["Ada.Lovelace"])
    assert sorted(u.username for u in found) == ["ada.lovelace", "someone"]
    calls = index_calls(drupal7)
    # 10 look-ups of 20 values were due: one call at their last page found it empty, one listed every user
    assert [(c["page"], c.get("parameters[mail]"), c.get("parameters[name]")) for c in calls] == [
        ("9", None, None), ("0", None, None)]
    backend.close()


def test_a_site_with_more_users_than_that_is_looked_up_20_values_a_call(drupal7, drupal7_conn):
    drupal7.seed({"users": [{"name": f"u{i}", "mail": f"u{i}@example.org"} for i in range(70)]})
    backend = Drupal7Backend(drupal7_conn)
    assert backend.case_insensitive()
    drupal7.calls.clear()
    found = backend.find_users([f"u{i}@example.org" for i in range(30)], [f"u{i}" for i in range(40, 70)])
    assert len(found) == 60
    calls = index_calls(drupal7)
    assert calls[0]["page"] == "3" and "parameters[mail]" not in calls[0]  # the probe: 70 users reach page 3
    # then look-ups only: 2 chunks of emails and 2 of names (a full page of 20 answers asks for the next page)
    assert all("parameters[mail]" in c or "parameters[name]" in c for c in calls[1:])
    assert len({c["parameters[mail]"] for c in calls if "parameters[mail]" in c}) == 2
    assert len({c["parameters[name]"] for c in calls if "parameters[name]" in c}) == 2
    backend.close()


def test_case_sensitive_site_is_looked_up_with_like(monkeypatch):
    with Drupal7Emulator(password=EMULATOR_PASSWORD, case_sensitive=True) as site:
        site.seed({"users": [{"name": "jo", "mail": "Jo@Example.org"}]})
        monkeypatch.setenv("AIRFLOW_CONN_CMS_DEFAULT", connection_json(site.url, site.login, EMULATOR_PASSWORD))
        backend = Drupal7Backend()
        assert backend.case_insensitive() is False
        assert backend.find_by_email("jo@example.org").username == "jo"
        assert [u.username for u in backend.find_users(["JO@EXAMPLE.ORG"], ["JO"])] == ["jo"]
        backend.close()


def test_5xx_on_create_is_unavailable_and_sent_once(drupal7, drupal7_conn):
    backend = Drupal7Backend(drupal7_conn)
    backend.preflight([])
    drupal7.inject(method="POST", path="/api/user.json", status=500, times=3)
    with pytest.raises(CmsUnavailable):
        backend.create_user(username="x.y", email="x@example.org", **new())
    assert len([c for c in drupal7.calls if c.method == "POST" and c.path == "/api/user.json"]) == 2  # probe + 1


def test_reads_are_retried(drupal7, drupal7_conn):
    backend = Drupal7Backend(drupal7_conn)
    backend.hook._sleep = lambda seconds: None
    backend.hook.login()
    drupal7.inject(method="GET", path="/api/user.json", status=503, times=2)
    assert backend.find_by_email("admin@example.test").uf_id == 1


def test_wrong_password_and_wrong_endpoint(drupal7, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CMS_DEFAULT", connection_json(drupal7.url, drupal7.login, "wrong-one"))
    with pytest.raises(CmsAuthError) as caught:
        Drupal7Backend().preflight([])
    assert "wrong-one" not in caught.value.message and "Wrong username or password" in caught.value.message
    monkeypatch.setenv("AIRFLOW_CONN_CMS_DEFAULT", connection_json(drupal7.url, drupal7.login, EMULATOR_PASSWORD,
                                                                   endpoint="rest"))
    with pytest.raises(CmsConfigError) as caught:
        Drupal7Backend().preflight([])
    assert "extra.endpoint" in caught.value.message


def test_close_logs_out_and_no_secret_in_calls(drupal7, drupal7_conn):
    backend = Drupal7Backend(drupal7_conn)
    backend.preflight(["member"])
    backend.close()
    assert drupal7.calls[-1].path == "/api/user/logout.json"
    assert not drupal7._sessions
    assert all(EMULATOR_PASSWORD not in str(c.body) for c in drupal7.calls)
    assert EMULATOR_PASSWORD not in repr(backend) + repr(backend.hook)


def test_fields_must_be_drupal_fields(drupal7, drupal7_conn):
    with pytest.raises(CmsConfigError):
        Drupal7Backend(drupal7_conn).create_user(username="a.b", email="a@example.org", fields={"pass": "x"}, **new())
