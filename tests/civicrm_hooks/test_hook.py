"""CiviCRMHook against the emulator: what it sends, how it pages, when it retries, how it reports failures."""

from __future__ import annotations

import json
import logging
import secrets
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from civicrm_hooks.hook import IN_CHUNK, CiviCRMAuthError, CiviCRMError, CiviCRMHook, CiviCRMUnavailable
from sandbox.civicrm.testing import connection_json

GENERIC_500 = {"error_code": "1", "error_message": "Sorry an error occurred and your request was not completed. "
                                                   "(Error ID: ABCD-EFGH-IJKL)", "status": 500}


def calls(civicrm, entity=None, action=None):
    return [c for c in civicrm.calls if entity in (None, c.entity) and action in (None, c.action)]


def lower(headers: dict) -> dict:
    return {k.lower(): v for k, v in headers.items()}


# ----------------------------------------------------------------------------- what goes over the wire


def test_a_call_posts_params_as_a_multipart_form_field_with_the_auth_headers(hook, civicrm):
    assert hook.call("Contact", "get", {"select": ["first_name"], "where": [["id", "=", 2]]}) == \
        [{"id": 2, "first_name": "Ada"}]
    call = civicrm.calls[-1]
    headers = lower(call.headers)
    assert (call.method, call.entity, call.action, call.status) == ("POST", "Contact", "get", 200)
    assert headers["x-civi-auth"] == f"Bearer {civicrm.api_key}"
    assert headers["x-civi-key"] == civicrm.site_key
    assert headers["x-requested-with"] == "XMLHttpRequest"
    assert headers["content-type"].startswith("multipart/form-data; boundary=")
    assert call.params == {"select": ["first_name"], "where": [["id", "=", 2]]}


def test_connection_extras_are_never_sent_as_headers(civicrm, monkeypatch):
    template = civicrm.url + "/?civiwp=CiviCRM&q=civicrm/ajax/api4/{entity}/{action}"
    monkeypatch.setenv("AIRFLOW_CONN_CIVICRM_DEFAULT",
                       connection_json(civicrm, api4_url=template, verify=False, x_custom="do-not-send"))
    CiviCRMHook().call("Contact", "get", {"limit": 1})
    headers = lower(civicrm.calls[-1].headers)
    assert civicrm.calls[-1].status == 200
    assert not {"site_key", "api4_url", "verify", "x_custom", "x-custom", "extra"} & set(headers)
    sent = " ".join(headers.values())
    assert "do-not-send" not in sent and "civiwp" not in sent
    assert sent.count(civicrm.site_key) == 1  # only as X-Civi-Key


def test_host_without_a_scheme_takes_it_from_the_schema_field(civicrm, monkeypatch):
    host, port = civicrm.url.removeprefix("http://").split(":")
    monkeypatch.setenv("AIRFLOW_CONN_CIVICRM_DEFAULT", json.dumps({
        "conn_type": "http", "host": host, "port": int(port), "schema": "http", "password": civicrm.api_key,
        "extra": {"site_key": civicrm.site_key}}))
    ok, message = CiviCRMHook().test_connection()
    assert ok, message


def test_host_without_a_scheme_or_schema_is_refused_instead_of_guessing_https(civicrm, monkeypatch, sleeps):
    # guessing https gave SSL failures against http sites, reported as an unreachable site
    host = civicrm.url.removeprefix("http://")
    monkeypatch.setenv("AIRFLOW_CONN_CIVICRM_DEFAULT", json.dumps({
        "conn_type": "http", "host": host, "password": civicrm.api_key, "extra": {"site_key": civicrm.site_key}}))
    made = CiviCRMHook()
    made._sleep = sleeps.append
    with pytest.raises(CiviCRMAuthError) as caught:
        made.call("Contact", "get", {"limit": 1})
    text = str(caught.value)
    assert "'civicrm_default'" in text and "no scheme" in text and f"https://{host}" in text and "http://" in text
    assert civicrm.calls == [] and sleeps == []


def test_a_host_without_a_scheme_does_not_matter_when_api4_url_is_set(civicrm, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CIVICRM_DEFAULT", json.dumps({
        "conn_type": "http", "host": "crm.example.org", "password": civicrm.api_key,
        "extra": {"site_key": civicrm.site_key, "api4_url": civicrm.endpoint_template}}))
    assert CiviCRMHook().call("Contact", "get", {"select": ["id"], "where": [["id", "=", 2]]}) == [{"id": 2}]


@pytest.mark.parametrize("verify, expected", [
    (False, False), ("False", False), (" off ", False), ("0", False), ("TRUE", True), ("yes", True), (None, True),
])
def test_verify_accepts_the_usual_spellings(civicrm, monkeypatch, verify, expected):
    monkeypatch.setenv("AIRFLOW_CONN_CIVICRM_DEFAULT", connection_json(civicrm, verify=verify))
    assert CiviCRMHook()._config().verify is expected


def test_verify_keeps_a_ca_bundle_path(civicrm, monkeypatch, tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("AIRFLOW_CONN_CIVICRM_DEFAULT", connection_json(civicrm, verify=str(bundle)))
    assert CiviCRMHook()._config().verify == str(bundle)


@pytest.mark.parametrize("verify", ["maybe", "/etc/ssl/no-such-bundle.pem", ["true"]])
def test_an_unusable_verify_is_refused_before_any_request(civicrm, monkeypatch, verify):
    monkeypatch.setenv("AIRFLOW_CONN_CIVICRM_DEFAULT", connection_json(civicrm, verify=verify))
    with pytest.raises(CiviCRMAuthError) as caught:
        CiviCRMHook().call("Contact", "get", {"limit": 1})
    text = str(caught.value)
    assert "'civicrm_default'" in text and "extra.verify" in text and "CA bundle" in text
    assert civicrm.calls == []


@pytest.mark.parametrize("where, bad, field", [
    ("password", lambda key: key + "\n", "password (the API key)"),  # refused, no longer stripped
    ("password", lambda key: key[:6] + "\n" + key[6:], "password (the API key)"),
    ("password", lambda key: " " + key, "password (the API key)"),
    ("password", lambda key: key[:6] + "\t" + key[6:], "password (the API key)"),
    ("site_key", lambda key: key + "\r\n", "extra.site_key"),
    ("site_key", lambda key: key[:6] + "\x00" + key[6:], "extra.site_key"),
])
def test_credentials_that_cannot_be_headers_are_refused_without_showing_them(civicrm, monkeypatch, where, bad,
                                                                              field):
    api_key = bad(civicrm.api_key) if where == "password" else civicrm.api_key
    site_key = bad(civicrm.site_key) if where == "site_key" else civicrm.site_key
    monkeypatch.setenv("AIRFLOW_CONN_CIVICRM_DEFAULT", json.dumps({
        "conn_type": "http", "host": civicrm.url, "password": api_key, "extra": {"site_key": site_key}}))
    made = CiviCRMHook()
    with pytest.raises(CiviCRMAuthError) as caught:
        made.call("Contact", "get", {"limit": 1})
    text = str(caught.value)
    assert "'civicrm_default'" in text and field in text
    for secret in (civicrm.api_key, civicrm.site_key, civicrm.api_key[:6], civicrm.site_key[-6:]):
        assert secret not in text and secret not in repr(caught.value)
    assert civicrm.calls == []
    ok, message = made.test_connection()
    assert not ok and field in message and civicrm.api_key not in message


def test_no_cookies_are_kept(hook, civicrm):
    civicrm.inject(entity="Contact", action="get", status=None, headers={"Set-Cookie": "SESSabc=123; Path=/"})
    hook.call("Contact", "get", {"limit": 1})
    hook.call("Contact", "get", {"limit": 1})
    assert "cookie" not in lower(civicrm.calls[-1].headers)


def test_site_key_and_api_key_are_masked_once_read(hook, civicrm):
    from airflow.sdk._shared.secrets_masker import redact  # the masker mask_secret feeds

    line = f"site key {civicrm.site_key}, api key {civicrm.api_key}"
    assert civicrm.site_key in redact(line)  # fresh random keys: not masked before the hook reads them
    hook.test_connection()
    assert civicrm.site_key not in redact(line) and civicrm.api_key not in redact(line)


def test_constructing_a_hook_reads_no_connection():
    made = CiviCRMHook("no_such_connection")
    assert repr(made) == "CiviCRMHook(civicrm_conn_id='no_such_connection')"


def test_one_debug_line_per_call_without_params(hook, civicrm, caplog):
    hook._log = logging.getLogger("test.civicrm_hook")
    with caplog.at_level(logging.DEBUG, logger="test.civicrm_hook"):
        hook.call("Contact", "get", {"where": [["first_name", "=", "Secret-Ada"]]})
    records = [r for r in caplog.records if r.name == "test.civicrm_hook"]
    assert [r.levelno for r in records] == [logging.DEBUG]
    message = records[0].getMessage()
    assert "Contact.get" in message and "200" in message
    assert "Secret-Ada" not in message and civicrm.api_key not in message


# ----------------------------------------------------------------------------- paging


def test_get_all_pages_by_id_across_pages_and_keeps_the_callers_where(hook, civicrm):
    civicrm.seed({"contacts": [{"first_name": "Page", "last_name": f"P{i}", "do_not_email": i % 4 == 0}
                               for i in range(45)]})
    civicrm.reset_calls()
    rows = list(hook.get_all("Contact", {"select": ["last_name"],
                                         "where": [["first_name", "=", "Page"], ["do_not_email", "=", False]]}))
    expected = [r["id"] for r in civicrm.table("Contact") if r["first_name"] == "Page" and not r["do_not_email"]]
    assert len(expected) == 33
    assert [r["id"] for r in rows] == expected
    assert all(set(r) == {"id", "last_name"} for r in rows)
    pages = calls(civicrm, "Contact", "get")
    assert len(pages) == 4  # 10 + 10 + 10 + 3: a short page ends the loop
    lasts = [0, expected[9], expected[19], expected[29]]
    for page, last in zip(pages, lasts, strict=True):
        assert page.params["where"] == [["first_name", "=", "Page"], ["do_not_email", "=", False], ["id", ">", last]]
        assert (page.params["orderBy"], page.params["limit"]) == ({"id": "ASC"}, 10)


def test_get_all_with_a_full_last_page_asks_once_more(hook, civicrm):
    civicrm.seed({"contacts": [{"first_name": "Even", "last_name": f"E{i}"} for i in range(20)]})
    civicrm.reset_calls()
    assert len(list(hook.get_all("Contact", {"where": [["first_name", "=", "Even"]]}))) == 20
    assert len(calls(civicrm, "Contact", "get")) == 3


def test_get_all_caps_at_the_callers_limit_and_refuses_offset_and_other_orders(hook, civicrm):
    assert len(list(hook.get_all("Contact", {"limit": 3}))) == 3
    assert [c.params["limit"] for c in calls(civicrm, "Contact", "get")] == [3]
    with pytest.raises(ValueError, match="offset"):
        list(hook.get_all("Contact", {"offset": 5}))
    with pytest.raises(ValueError, match="orderBy"):
        list(hook.get_all("Contact", {"orderBy": {"last_name": "ASC"}}))


def test_get_all_refuses_a_join_that_multiplies_rows(hook):
    params = {"select": ["id", "e.email"], "where": [["id", "=", 6]],  # contact 6 has two emails
              "join": [["Email AS e", "LEFT", ["e.contact_id", "=", "id"]]]}
    with pytest.raises(ValueError, match="groupBy"):
        list(hook.get_all("Contact", params))


def test_get_in_chunks_values_and_yields_each_row_once(hook, civicrm):
    rows = list(hook.get_in("Contact", "id", [2, 3, 4, 5, 6, 7, 8, 9, 10, 2, 3, None], {"select": ["id"]}, chunk=4))
    assert sorted(r["id"] for r in rows) == list(range(2, 11))  # `id IN` lifts the trash filter: 10 is there
    chunks = [c.params["where"][0] for c in calls(civicrm, "Contact", "get")]
    assert chunks == [["id", "IN", [2, 3, 4, 5]], ["id", "IN", [6, 7, 8, 9]], ["id", "IN", [10]]]

    civicrm.reset_calls()
    members = [r["id"] for r in hook.get_in("Contact", "groups", [5, 7, 6], {"select": ["id"]}, chunk=1)]
    assert members == [2, 6, 4]  # 6 is in group 5 (through child group 6) and in 6: yielded once
    assert list(hook.get_in("Contact", "id", [])) == [] and len(civicrm.calls) == 3


def test_get_in_sends_a_whole_create_batch_of_ids_in_one_call(hook, civicrm):
    """A call costs a real CiviCRM its bootstrap whatever the list: a batch of 5,000 contacts is one IN."""
    assert IN_CHUNK >= 5000  # the largest batch_size
    rows = list(hook.get_in("Contact", "id", range(2, 2 + IN_CHUNK), {"select": ["id"]}))
    assert {r["id"] for r in rows} >= {2, 3, 4, 5, 6} and len(calls(civicrm, "Contact", "get")) == 1
    civicrm.reset_calls()
    list(hook.get_in("Contact", "id", range(2, 3 + IN_CHUNK), {"select": ["id"]}))
    assert [len(c.params["where"][0][2]) for c in calls(civicrm, "Contact", "get")] == [IN_CHUNK, 1]


def test_call_full_returns_the_envelope(hook):
    counted = hook.call_full("Contact", "get", {"select": ["row_count"], "where": [["groups", "IN", [5]]]})
    assert (counted["values"], counted["count"], counted["countMatched"]) == ([], 2, 2)
    saved = hook.call_full("GroupContact", "save", {"records": [{"contact_id": 2, "group_id": 5, "status": "Added"}],
                                                    "match": ["contact_id", "group_id"]})
    assert "countMatched" not in saved and saved["values"][0]["contact_id"] == 2  # 5.76 sends none for save


# ----------------------------------------------------------------------------- retries


@pytest.mark.parametrize("action, params, expected", [
    ("get", {}, True), ("getFields", {}, True), ("update", {"where": [["id", "=", 1]]}, True),
    ("delete", {"where": [["id", "=", 1]]}, True), ("save", {"records": [{"x": 1}], "match": ["x"]}, True),
    ("save", {"records": [{"id": 1}, {"id": 2}]}, True), ("save", {"records": [{"id": 1}, {"x": 2}]}, False),
    ("create", {"values": {}}, False), ("replace", {"records": []}, False),
])
def test_which_calls_are_idempotent(action, params, expected):
    assert CiviCRMHook.is_idempotent(action, params) is expected


@pytest.mark.parametrize("status, body", [
    (429, {"error_code": "rate_limit", "error_message": "Too many requests"}),  # was a permanent CiviCRMError
    (429, "<html><h1>429 Too Many Requests</h1></html>"),  # was taken for a login page (CiviCRMAuthError)
    (503, "<html><h1>Service Unavailable</h1></html>"),
    (503, {"error_message": "Down for maintenance"}),
])
def test_429_and_503_are_transient_whatever_the_body(hook, civicrm, sleeps, status, body):
    civicrm.inject(entity="Contact", action="get", status=status, body=body, times=2)
    assert hook.call("Contact", "get", {"select": ["id"], "where": [["id", "=", 2]]}) == [{"id": 2}]
    assert [c.status for c in calls(civicrm, "Contact", "get")] == [status, status, 200]
    assert sleeps == [0.5, 1.0]

    civicrm.inject(entity="Contact", action="get", status=status, body=body, times=3)
    with pytest.raises(CiviCRMUnavailable) as caught:
        hook.call("Contact", "get", {"limit": 1})
    assert caught.value.retryable and caught.value.status == status and "3 tries" in str(caught.value)


def test_a_429_on_create_is_unavailable_and_not_repeated(hook, civicrm, sleeps):
    civicrm.inject(entity="Contact", action="create", status=429, body="<html>Too Many Requests</html>",
                   retry_after=1, times=3)
    with pytest.raises(CiviCRMUnavailable, match="rate limited.*not retried"):
        hook.call("Contact", "create", {"values": {"first_name": "Rate", "last_name": "Limited"}})
    assert len(calls(civicrm, "Contact", "create")) == 1 and sleeps == []


def test_reads_are_retried_on_503_with_exponential_backoff(hook, civicrm, sleeps):
    civicrm.inject(entity="Contact", action="get", status=503, times=2)
    assert hook.call("Contact", "get", {"select": ["id"], "where": [["id", "=", 2]]}) == [{"id": 2}]
    assert [c.status for c in calls(civicrm, "Contact", "get")] == [503, 503, 200]
    assert sleeps == [0.5, 1.0]


@pytest.mark.parametrize("retry_after, waited", [(2, 2.0), (30, 30.0), ("0", 0.0)])
def test_retry_after_is_honoured_up_to_30_seconds(hook, civicrm, sleeps, retry_after, waited):
    civicrm.inject(entity="Contact", action="get", status=503, retry_after=retry_after)
    hook.call("Contact", "get", {"limit": 1})
    assert sleeps == [waited]


def test_retry_after_as_an_http_date_is_honoured(hook, civicrm, sleeps):
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=10), usegmt=True)
    civicrm.inject(entity="Contact", action="get", status=429, retry_after=when)
    hook.call("Contact", "get", {"limit": 1})
    assert len(sleeps) == 1 and 8 <= sleeps[0] <= 10  # whole seconds in the date, time spent since


@pytest.mark.parametrize("retry_after, asked", [(120, "wait 120 s"), ("in an hour", "wait 3")])  # ~3600 s
def test_a_longer_retry_after_than_30_seconds_gives_up_without_sleeping(hook, civicrm, sleeps, retry_after, asked):
    if retry_after == "in an hour":  # an HTTP date, made when the test runs
        retry_after = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    civicrm.inject(entity="Contact", action="get", status=503, retry_after=retry_after, times=3)
    with pytest.raises(CiviCRMUnavailable) as caught:
        hook.call("Contact", "get", {"limit": 1})
    text = str(caught.value)
    assert "server asked to wait" in text and asked in text and "30 s" in text and "1 try" in text
    assert sleeps == [] and len(calls(civicrm, "Contact", "get")) == 1


def test_retry_after_does_not_make_a_create_repeat(hook, civicrm, sleeps):
    civicrm.inject(entity="Contact", action="create", status=503, retry_after=2, times=3)
    with pytest.raises(CiviCRMUnavailable, match="not retried"):
        hook.call("Contact", "create", {"values": {"first_name": "Once"}})
    assert len(calls(civicrm, "Contact", "create")) == 1 and sleeps == []


def test_reads_give_up_after_three_tries(hook, civicrm):
    civicrm.inject(entity="Contact", action="get", status=502, times=5)
    with pytest.raises(CiviCRMUnavailable) as caught:
        hook.call("Contact", "get", {"limit": 1})
    assert caught.value.status == 502 and "3 tries" in str(caught.value)
    assert len(calls(civicrm, "Contact", "get")) == 3


def test_a_create_is_never_retried(hook, civicrm, sleeps):
    civicrm.inject(entity="Contact", action="create", status=503, times=3)
    with pytest.raises(CiviCRMUnavailable, match="not retried"):
        hook.call("Contact", "create", {"values": {"first_name": "Once", "last_name": "Only"}})
    assert len(calls(civicrm, "Contact", "create")) == 1 and sleeps == []
    assert not [r for r in civicrm.table("Contact") if r["first_name"] == "Once"]


def test_a_lost_answer_on_create_is_not_retried_because_it_may_have_applied(hook, civicrm):
    civicrm.inject(entity="Contact", action="create", lose_answer=True)
    with pytest.raises(CiviCRMUnavailable, match="may or may not have been applied"):
        hook.call("Contact", "create", {"values": {"first_name": "Maybe", "last_name": "Applied"}})
    assert [c.lost for c in calls(civicrm, "Contact", "create")] == [True]
    assert len([r for r in civicrm.table("Contact") if r["first_name"] == "Maybe"]) == 1


def test_a_lost_answer_on_save_with_match_is_retried_safely(hook, civicrm, sleeps):
    civicrm.inject(entity="GroupContact", action="save", lose_answer=True)
    params = {"records": [{"contact_id": 4, "group_id": 5, "status": "Added"}], "match": ["contact_id", "group_id"]}
    saved = hook.call("GroupContact", "save", params)
    rows = [r for r in civicrm.table("GroupContact") if (r["contact_id"], r["group_id"]) == (4, 5)]
    assert len(rows) == 1 and saved[0]["id"] == rows[0]["id"]
    assert [c.lost for c in calls(civicrm, "GroupContact", "save")] == [True, False]
    assert sleeps == [0.5]


def test_a_timeout_is_retried_for_reads(civicrm_conn, civicrm, sleeps):
    slow = CiviCRMHook(civicrm_conn, timeout=0.3)
    slow._sleep = sleeps.append
    civicrm.inject(entity="Contact", action="get", status=None, delay=1.0)
    assert slow.call("Contact", "get", {"select": ["id"], "where": [["id", "=", 3]]}) == [{"id": 3}]
    assert sleeps == [0.5]
    slow.close()


def test_a_generic_500_is_retried_for_reads_but_not_for_creates(hook, civicrm):
    civicrm.inject(entity="Contact", action="get", status=500, body=GENERIC_500)
    assert hook.call("Contact", "get", {"select": ["id"], "where": [["id", "=", 2]]}) == [{"id": 2}]
    civicrm.inject(entity="Contact", action="create", status=500, body=GENERIC_500)
    with pytest.raises(CiviCRMError) as caught:
        hook.call("Contact", "create", {"values": {"first_name": "G"}})
    assert type(caught.value) is CiviCRMError and caught.value.message.startswith("Sorry an error occurred")
    assert len(calls(civicrm, "Contact", "create")) == 1


def test_a_non_json_500_counts_as_unavailable(hook, civicrm):
    civicrm.inject(entity="Contact", action="get", status=500, body="<b>Fatal error</b>: out of memory", times=3)
    with pytest.raises(CiviCRMUnavailable, match="without JSON"):
        hook.call("Contact", "get", {"limit": 1})
    assert len(calls(civicrm, "Contact", "get")) == 3


# ----------------------------------------------------------------------------- error mapping


def test_401_is_an_auth_error_naming_the_connection_and_what_to_check(civicrm, monkeypatch):
    wrong = "wrong-" + secrets.token_hex(8)
    monkeypatch.setenv("AIRFLOW_CONN_CIVICRM_DEFAULT", json.dumps({
        "conn_type": "http", "host": civicrm.url, "password": wrong, "extra": {"site_key": civicrm.site_key}}))
    made = CiviCRMHook()
    with pytest.raises(CiviCRMAuthError) as caught:
        made.call("Contact", "get", {"limit": 1})
    error = caught.value
    assert error.status == 401 and (error.entity, error.action) == ("Contact", "get")
    text = str(error)
    assert "'civicrm_default'" in text and "password" in text and "site_key" in text and "Invalid credential" in text
    assert "32 characters" not in text  # a short key: no length hint
    for secret in (wrong, civicrm.site_key):
        assert secret not in text and secret not in repr(error) and secret not in repr(made._settings)
    assert len(civicrm.calls) == 1  # never retried


def test_401_with_an_api_key_over_32_characters_says_civicrm_cuts_it(civicrm, monkeypatch):
    too_long = "k" + secrets.token_hex(20)  # 41 characters: saved in CiviCRM as its first 32 only
    monkeypatch.setenv("AIRFLOW_CONN_CIVICRM_DEFAULT", json.dumps({
        "conn_type": "http", "host": civicrm.url, "password": too_long, "extra": {"site_key": civicrm.site_key}}))
    with pytest.raises(CiviCRMAuthError) as caught:
        CiviCRMHook().call("Contact", "get", {"limit": 1})
    text = str(caught.value)
    assert caught.value.status == 401 and "'civicrm_default'" in text
    assert "at most 32 characters" in text and "32 characters or fewer" in text and "41 characters" in text
    assert too_long not in text and too_long[:32] not in text


def test_a_failed_site_key_guard_is_an_auth_error(civicrm, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CIVICRM_DEFAULT", connection_json(civicrm, site_key="not-the-site-key"))
    with pytest.raises(CiviCRMAuthError, match="Must satisfy guard"):
        CiviCRMHook().call("Contact", "get", {"limit": 1})


def test_403_is_an_auth_error_naming_the_permission_problem(hook, civicrm):
    civicrm.deny("UFMatch")
    with pytest.raises(CiviCRMAuthError) as caught:
        hook.call("UFMatch", "get", {"limit": 1})
    assert caught.value.status == 403 and "UFMatch.get" in str(caught.value) and "permission" in str(caught.value)
    assert len(calls(civicrm, "UFMatch")) == 1


def test_a_login_page_is_an_auth_error_and_not_retried(hook, civicrm):
    civicrm.inject(entity="Contact", action="get", status=200, body="<html><form id='loginform'>Log in</form></html>")
    with pytest.raises(CiviCRMAuthError, match="non-JSON"):
        hook.call("Contact", "get", {"limit": 1})
    assert len(calls(civicrm, "Contact", "get")) == 1


def test_a_redirect_is_an_auth_error_naming_the_url_setting(hook, civicrm):
    civicrm.inject(entity="Contact", action="get", status=302, body="moved",
                   headers={"Location": "https://site.example/wp-login.php?redirect_to=x"})
    with pytest.raises(CiviCRMAuthError, match="redirected .*wp-login.php") as caught:
        hook.call("Contact", "get", {"limit": 1})
    assert "api4_url" in str(caught.value)


def test_api_errors_are_raised_once_with_the_server_message(hook, civicrm):
    with pytest.raises(CiviCRMError) as caught:
        hook.call("Contact", "get", {"where": [["nope", "=", 1]]})
    error = caught.value
    assert type(error) is CiviCRMError
    assert (error.status, error.message, error.entity, error.action) == (500, "Invalid field 'nope'", "Contact", "get")
    assert str(error) == "CiviCRM Contact.get failed (HTTP 500): Invalid field 'nope'"
    assert len(calls(civicrm, "Contact", "get")) == 1


def test_an_unreachable_site_is_unavailable(civicrm_conn, civicrm, sleeps):
    made = CiviCRMHook(civicrm_conn, timeout=2)
    made._sleep = sleeps.append
    made.call("Contact", "get", {"limit": 1})  # settings read while the emulator is up
    civicrm.stop()
    with pytest.raises(CiviCRMUnavailable, match="could not reach"):
        made.call("Contact", "get", {"limit": 1})
    assert sleeps == [0.5, 1.0]


@pytest.mark.parametrize("conn, fragment", [
    ({"conn_type": "http", "host": "http://127.0.0.1:9", "extra": {}}, "Password"),
    ({"conn_type": "http", "password": "k-123456", "extra": {}}, "no host"),
    ({"conn_type": "http", "host": "http://127.0.0.1:9", "password": "k-123456",
      "extra": {"api4_url": "http://127.0.0.1:9/civicrm/ajax/api4"}}, "{entity} and {action}"),
])
def test_unusable_connection_settings_are_auth_errors_before_any_request(monkeypatch, conn, fragment):
    monkeypatch.setenv("AIRFLOW_CONN_CIVICRM_BROKEN", json.dumps(conn))
    with pytest.raises(CiviCRMAuthError) as caught:
        CiviCRMHook("civicrm_broken").call("Contact", "get", {"limit": 1})
    assert fragment in str(caught.value) and "'civicrm_broken'" in str(caught.value)


# ----------------------------------------------------------------------------- test_connection


def test_test_connection_reports_the_api_contact(hook):
    assert hook.test_connection() == (True, "Connected to CiviCRM as contact 1 (Sandbox API user).")


def test_test_connection_fails_with_a_wrong_key(civicrm, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CIVICRM_DEFAULT", json.dumps({
        "conn_type": "http", "host": civicrm.url, "password": "wrong-key-123", "extra": {"site_key": civicrm.site_key}}))
    ok, message = CiviCRMHook().test_connection()
    assert not ok and "HTTP 401" in message and "civicrm_default" in message


def test_test_connection_fails_for_a_missing_connection():
    ok, message = CiviCRMHook("no_such_connection").test_connection()
    assert not ok and "no_such_connection" in message


# ----------------------------------------------------------------------------- errors in a 200 body


def test_a_generic_error_in_a_200_body_is_retried_like_the_500_it_is(hook, civicrm, sleeps):
    # WordPress under `php -S` sends its 200 status line first: CiviCRM's 500 is only in the body
    generic = {"error_code": "1", "status": 500,
               "error_message": "Sorry an error occurred and your request was not completed. (Error ID: AB)"}
    civicrm.inject(entity="Contact", action="get", status=200, body=generic, times=2)
    rows = hook.call("Contact", "get", {"select": ["id"], "where": [["id", "=", 2]]})
    assert rows == [{"id": 2}]
    assert len(calls(civicrm, "Contact", "get")) == 3 and len(sleeps) == 2


def test_a_detailed_error_in_a_200_body_is_an_error_with_its_status_and_message(hook, civicrm):
    civicrm.inject(entity="GroupContact", action="create", status=200,
                   body={"error_code": 0, "error_message": "DB Error: already exists", "status": 500})
    with pytest.raises(CiviCRMError) as raised:
        hook.call("GroupContact", "create", {"values": {"contact_id": 2, "group_id": 5}})
    assert (type(raised.value), raised.value.status, raised.value.message) == (
        CiviCRMError, 500, "DB Error: already exists")


@pytest.mark.parametrize(("body", "error"), [
    ({"error_code": 0, "error_message": "Authorization failed", "status": 403}, CiviCRMAuthError),
    ({"error_code": 401, "error_message": "SECURITY ALERT: Ajax requests can only be issued by javascript "
                                          "clients, eg. CRM.api4()."}, CiviCRMAuthError),  # before 5.47
    ({"error_code": 0, "error_message": "Service busy", "status": 503}, CiviCRMUnavailable),
])
def test_a_refusal_or_a_busy_site_in_a_200_body_is_read_as_such(hook, civicrm, body, error):
    civicrm.inject(entity="UFMatch", action="get", status=200, body=body, times=5)
    with pytest.raises(error):
        hook.call("UFMatch", "get", {"select": ["id"], "limit": 1})


def test_call_many_reads_several_entities_in_one_request(hook, civicrm):
    before = len(civicrm.calls)
    answers = hook.call_many({"groups": ("Group", "get", {"select": ["id"], "where": [["id", "=", 5]]}),
                              "tags": ("Tag", "get", {"select": ["name"], "where": [["id", "=", 3]]})})
    assert answers == {"groups": [{"id": 5}], "tags": [{"id": 3, "name": "needs_login"}]}
    assert len(civicrm.calls) == before + 1


def test_call_many_names_the_call_that_failed_and_takes_no_writes(hook):
    with pytest.raises(CiviCRMError, match="Nope") as failed:
        hook.call_many({"good": ("Group", "get", {"limit": 1}), "bad": ("Nope", "get", {})})
    assert failed.value.entity == "Nope"
    with pytest.raises(ValueError, match="reads only"):
        hook.call_many({"write": ("Group", "create", {"values": {"name": "x"}})})

