"""Emulator-only behaviour of sandbox.civicrm: seeding, fault injection, recorded calls, modes, speed, CLI.

What CiviCRM itself does is covered by tests/contract/test_civicrm_contract.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from sandbox.civicrm import CiviCRMEmulator
from sandbox.civicrm import testing as civicrm_fixtures

civicrm = civicrm_fixtures.civicrm
REPO = Path(__file__).resolve().parents[2]


def post(emulator, entity, action, params=None, *, headers=None, **fields):
    if headers is None:
        headers = {"X-Civi-Auth": f"Bearer {emulator.api_key}", "X-Requested-With": "XMLHttpRequest"}
        if emulator.site_key:
            headers["X-Civi-Key"] = emulator.site_key
    return requests.post(emulator.endpoint_template.format(entity=entity, action=action), timeout=30,
                         data={"params": json.dumps(params or {}), **fields}, headers=headers)


def values(emulator, entity, action, params=None):
    response = post(emulator, entity, action, params)
    assert response.status_code == 200, response.text
    return response.json()["values"]


# ----------------------------------------------------------------------------- seeding


def test_seed_keeps_ids_and_continues_after_them():
    with CiviCRMEmulator() as emulator:
        emulator.seed({"contacts": [{"id": 40, "first_name": "Forty", "email": "forty@example.org"},
                                    {"first_name": "Next", "emails": [{"email": "a@example.org"},
                                                                      {"email": "b@example.org", "is_primary": True}]}]})
        contacts = {r["first_name"]: r for r in emulator.table("Contact")}
        assert contacts["Forty"]["id"] == 40 and contacts["Next"]["id"] == 41
        assert contacts["Sandbox"]["id"] == 1 and contacts["Sandbox"]["display_name"] == "Sandbox API user"
        emails = {r["email"]: r for r in emulator.table("Email")}
        assert emails["forty@example.org"]["is_primary"] and emails["b@example.org"]["is_primary"]
        assert not emails["a@example.org"]["is_primary"]
        created = values(emulator, "Contact", "create", {"values": {"first_name": "Api"}})[0]
        assert created["id"] == 42


def test_a_seeded_contact_with_the_api_contact_id_replaces_the_stand_in():
    with CiviCRMEmulator(api_key="admin-key") as emulator:
        emulator.seed({"contacts": [{"id": 1, "first_name": "Site", "last_name": "Admin"}]})
        me = values(emulator, "Contact", "get", {"select": ["display_name"], "where": [["id", "=", "user_contact_id"]]})
        assert me == [{"id": 1, "display_name": "Site Admin"}]


def test_seed_errors_name_the_item():
    emulator = CiviCRMEmulator()
    with pytest.raises(ValueError, match=r"group_contacts\[1\]: DB Error: constraint violation"):
        emulator.seed({"contacts": [{"id": 2, "first_name": "A"}],
                       "groups": [{"id": 5, "name": "g", "title": "G"}],
                       "group_contacts": [{"contact_id": 2, "group_id": 5}, {"contact_id": 2, "group_id": 99}]})
    with pytest.raises(ValueError, match=r"contacts\[0\]: id 2 is already taken"):
        emulator.seed({"contacts": [{"id": 2, "first_name": "Again"}]})


def test_seed_file_reads_the_civicrm_part_of_yaml_or_plain_json(tmp_path):
    yaml_file = tmp_path / "seed.yaml"
    yaml_file.write_text("civicrm:\n  tags:\n    - {id: 3, name: needs_login, label: Needs login}\n"
                         "wordpress:\n  users: []\n")
    json_file = tmp_path / "seed.json"
    json_file.write_text(json.dumps({"groups": [{"id": 9, "name": "g9", "title": "Nine"}]}))
    emulator = CiviCRMEmulator()
    emulator.seed_file(yaml_file)
    emulator.seed_file(json_file)
    assert [(t["id"], t["name"], t["used_for"]) for t in emulator.table("Tag")] == \
        [(3, "needs_login", ["civicrm_contact"])]
    assert [g["title"] for g in emulator.table("Group")] == ["Nine"]


def test_the_demo_seed_loads():
    emulator = CiviCRMEmulator()
    emulator.seed_file(REPO / "sandbox" / "demo_seed.yaml")
    assert len(emulator.table("Contact")) > 10 and emulator.table("UFMatch")


def test_seeded_api_keys_authenticate_other_contacts(civicrm):
    civicrm.seed({"contacts": [{"id": 30, "first_name": "Second", "last_name": "User", "api_key": "second-key"}]})
    response = post(civicrm, "Contact", "get", {"select": ["display_name"], "where": [["id", "=", "user_contact_id"]]},
                    headers={"X-Civi-Auth": "Bearer second-key"})  # holds the perm: no site key needed
    assert response.json()["values"] == [{"id": 30, "display_name": "Second User"}]


def test_core_option_values_and_domain_are_there():
    emulator = CiviCRMEmulator()
    by_group = {}
    groups = {g["id"]: g["name"] for g in emulator.table("OptionGroup")}
    for row in emulator.table("OptionValue"):
        by_group.setdefault(groups[row["option_group_id"]], {})[row["name"]] = row["value"]
    assert by_group["activity_status"] == {"Scheduled": "1", "Completed": "2", "Cancelled": "3", "Left Message": "4",
                                           "Unreachable": "5", "Not Required": "6", "Available": "7", "No_show": "8"}
    assert (by_group["activity_type"]["Meeting"], by_group["activity_type"]["Email"]) == ("1", "3")
    assert by_group["activity_contacts"] == {"Activity Assignees": "1", "Activity Source": "2",
                                             "Activity Targets": "3"}
    assert "Failed" not in by_group["activity_status"]
    assert [d["id"] for d in emulator.table("Domain")] == [1]


def test_smart_group_criteria_are_evaluated_live(civicrm):
    civicrm.seed({"groups": [{"id": 20, "name": "no_mail", "title": "No mail", "saved_search_id": 3,
                              "criteria": [["do_not_email", "=", True]]}]})
    members = {r["id"] for r in values(civicrm, "Contact", "get", {"where": [["groups", "IN", [20]]]})}
    assert members == {3}
    values(civicrm, "Contact", "update", {"values": {"id": 2, "do_not_email": True}})
    members = {r["id"] for r in values(civicrm, "Contact", "get", {"where": [["groups", "IN", [20]]]})}
    assert members == {2, 3}


# ----------------------------------------------------------------------------- table(), calls, injection


def test_table_gives_copies_and_computed_children(civicrm):
    rows = civicrm.table("Group")
    rows[0]["title"] = "changed"
    rows[0]["parents"].append(99)
    fresh = {g["id"]: g for g in civicrm.table("Group")}
    assert fresh[5]["title"] == "New members" and fresh[6]["parents"] == [5]
    assert fresh[5]["children"] == [6]
    with pytest.raises(KeyError, match="unknown entity"):
        civicrm.table("Nope")


def test_calls_are_recorded_and_can_be_reset(civicrm):
    post(civicrm, "Contact", "get", {"limit": 1})
    post(civicrm, "Nope", "get", {})
    assert [(c.entity, c.action, c.status, c.params) for c in civicrm.calls] == \
        [("Contact", "get", 200, {"limit": 1}), ("Nope", "get", 500, {})]
    assert civicrm.calls[0].headers["X-Civi-Auth"] == f"Bearer {civicrm.api_key}"
    civicrm.reset_calls()
    assert civicrm.calls == []


def test_injected_faults_match_entity_and_action_and_count_down(civicrm):
    civicrm.inject(entity="Contact", action="get", status=503, times=2, retry_after=7)
    other = post(civicrm, "Group", "get", {"limit": 1})
    first, second, third = (post(civicrm, "Contact", "get", {"limit": 1}) for _ in range(3))
    assert other.status_code == 200 and third.status_code == 200
    assert first.status_code == second.status_code == 503 and first.headers["Retry-After"] == "7"
    assert first.json() == {"status_code": 503, "status_message": "Temporarily unavailable for maintenance."}


@pytest.mark.parametrize("status, body, content_type, text", [
    (500, None, "application/json", '"error_message":"Injected failure"'),
    (502, None, "text/html", "502 Bad Gateway"),
    (504, None, "text/html", "504 Gateway Time-out"),
    (500, {"error_code": "1", "error_message": "Sorry"}, "application/json", '"Sorry"'),
    (200, "<html>login</html>", "text/html", "login"),
])
def test_injected_answers(civicrm, status, body, content_type, text):
    civicrm.inject(status=status, body=body)  # any entity, any action
    response = post(civicrm, "Email", "get", {})
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith(content_type) and text in response.text
    assert [c.status for c in civicrm.calls] == [status]


def test_injected_faults_do_not_run_the_call_but_a_lost_answer_does(civicrm):
    civicrm.inject(entity="Tag", action="create", status=500)
    assert post(civicrm, "Tag", "create", {"values": {"name": "refused"}}).status_code == 500
    civicrm.inject(entity="Tag", action="create", lose_answer=True)
    with pytest.raises(requests.ConnectionError):
        post(civicrm, "Tag", "create", {"values": {"name": "lost"}})
    names = [t["name"] for t in civicrm.table("Tag")]
    assert "refused" not in names and "lost" in names
    assert civicrm.calls[-1].lost and civicrm.calls[-1].status == 200


def test_a_delay_only_fault_slows_the_answer(civicrm):
    civicrm.inject(entity="Contact", status=None, delay=0.3)
    started = time.monotonic()
    assert post(civicrm, "Contact", "get", {"limit": 1}).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_concurrent_requests_are_served(civicrm):
    results = []

    def worker(i):
        created = post(civicrm, "Contact", "create", {"values": {"first_name": f"Thread{i}"}})
        results.append(created.status_code)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 12
    ids = [r["id"] for r in civicrm.table("Contact") if (r["first_name"] or "").startswith("Thread")]
    assert len(set(ids)) == 12


# ----------------------------------------------------------------------------- modes and extras


def test_legacy_csrf_mode_answers_refusals_with_http_200():
    with CiviCRMEmulator(api_key="legacy-key", legacy_csrf=True) as emulator:
        no_header = post(emulator, "Contact", "get", {}, headers={"X-Civi-Auth": "Bearer legacy-key"})
        assert no_header.status_code == 200
        assert no_header.json() == {"error_code": 401, "error_message": "SECURITY ALERT: Ajax requests can only be "
                                                                        "issued by javascript clients, eg. CRM.api4()."}
        by_get = requests.get(emulator.endpoint_template.format(entity="Contact", action="create"), timeout=30,
                              headers={"X-Civi-Auth": "Bearer legacy-key", "X-Requested-With": "XMLHttpRequest"})
        assert by_get.status_code == 200 and by_get.json()["error_code"] == 400


def test_legacy_error_shape_is_an_empty_list():
    with CiviCRMEmulator(api_key="old-key", legacy_errors=True) as emulator:
        response = post(emulator, "Foo", "get", {})
        assert (response.status_code, response.json()) == (500, [])


@pytest.mark.parametrize("kwargs, send_site_key, status", [
    ({"site_key": "sk-1", "guards": ()}, False, 200),                      # no guard at all
    ({"site_key": "sk-1", "guards": ("site_key",)}, False, 401),
    ({"site_key": "sk-1", "guards": ("site_key",)}, True, 200),
    ({"site_key": "sk-1", "api_perm": True}, False, 200),                  # the perm guard passes
    ({"site_key": None}, False, 200),                                      # default: no site key, perm held
    ({"site_key": None, "api_perm": False}, False, 401),
])
def test_authx_guard_settings(kwargs, send_site_key, status):
    with CiviCRMEmulator(api_key="guard-key", **kwargs) as emulator:
        headers = {"X-Civi-Auth": "Bearer guard-key"}
        if send_site_key:
            headers["X-Civi-Key"] = kwargs["site_key"]
        assert post(emulator, "Contact", "get", {"limit": 1}, headers=headers).status_code == status


def test_legacy_rest_credentials_are_accepted_but_refused_with_http_200(civicrm):
    url = civicrm.endpoint_template.format(entity="Contact", action="get")
    good = requests.post(url, data={"params": "{}", "api_key": civicrm.api_key, "key": civicrm.site_key}, timeout=30)
    bad = requests.post(url, data={"params": "{}", "api_key": "nope", "key": civicrm.site_key}, timeout=30)
    assert good.status_code == 200 and "values" in good.json()
    assert bad.status_code == 200 and bad.json() == {"error_message": "FATAL: Invalid credential", "is_error": 1}


def test_email_primary_can_be_switched_off(civicrm):
    older = CiviCRMEmulator(api_key="old", email_primary=False)
    older.seed({"contacts": [{"id": 2, "first_name": "Ada", "email": "ada@example.org"}]})
    with older:
        assert values(older, "Contact", "get", {"select": ["email_primary.email"], "where": [["id", "=", 2]]}) == \
            [{"id": 2}]
        assert post(older, "Contact", "get", {"where": [["email_primary.email", "=", "x"]]}).status_code == 500
    assert values(civicrm, "Contact", "get", {"select": ["email_primary.email"], "where": [["id", "=", 2]]}) == \
        [{"id": 2, "email_primary.email": "ada@example.org"}]


def test_contact_delete_uses_the_trash_unless_told_otherwise(civicrm):
    assert values(civicrm, "Contact", "delete", {"where": [["id", "=", 2]]}) == [{"id": "2"}]  # as 5.76: text
    assert {r["id"]: r["is_deleted"] for r in civicrm.table("Contact")}[2] is True
    values(civicrm, "Contact", "delete", {"where": [["id", "=", 7]], "useTrash": False})
    assert 7 not in {r["id"] for r in civicrm.table("Contact")}
    assert not [r for r in civicrm.table("UFMatch") if r["contact_id"] == 7]  # cascaded
    assert not [r for r in civicrm.table("Email") if r["contact_id"] == 7]


def test_display_name_falls_back_to_organisation_and_email(civicrm):
    rows = {r["id"]: r["display_name"] for r in civicrm.table("Contact")}
    assert rows[8] == "Acme Ltd"
    only_email = values(civicrm, "Contact", "create", {"values": {"email_primary.email": "solo@example.org"}})[0]
    assert civicrm.table("Contact")[-1]["display_name"] == "solo@example.org" and only_email["id"]


def test_on_clause_values_without_quotes_are_fields(civicrm):
    join = [["GroupContact AS gc", "INNER", ["gc.contact_id", "=", "id"], ["gc.status", "=", "Added"]]]
    response = post(civicrm, "Contact", "get", {"join": join})
    assert response.status_code == 500 and response.json()["error_message"] == "Invalid field 'Added'"


def test_aggregates_and_group_by(civicrm):
    rows = values(civicrm, "GroupContact", "get", {"select": ["group_id", "COUNT(id) AS members"],
                                                   "groupBy": ["group_id"], "orderBy": {"members": "DESC"}})
    assert rows == [{"group_id": 5, "members": 3}, {"group_id": 6, "members": 1}, {"group_id": 7, "members": 1}]


def test_get_fields_and_get_actions(civicrm):
    fields = values(civicrm, "Activity", "getFields", {"action": "create", "select": ["name", "required"],
                                                       "where": [["required", "=", True]]})
    assert fields == [{"name": "activity_type_id", "required": True}, {"name": "source_contact_id", "required": True}]
    readable = [f["name"] for f in values(civicrm, "Activity", "getFields", {"select": ["name"]})]
    assert "source_contact_id" not in readable and "subject" in readable  # write-only pseudo-field
    options = values(civicrm, "GroupContact", "getFields", {"where": [["name", "=", "status"]], "loadOptions": True})
    assert options[0]["options"] == {"Added": "Added", "Removed": "Removed", "Pending": "Pending"}
    assert {a["name"] for a in values(civicrm, "Domain", "getActions")} == {"get", "getFields", "getActions", "checkAccess"}


def test_replace_saves_records_and_deletes_the_rest(civicrm):
    result = values(civicrm, "EntityTag", "replace", {"where": [["tag_id", "=", 3]],
                                                      "records": [{"entity_id": 4, "tag_id": 3},
                                                                  {"entity_id": 6, "tag_id": 3}],
                                                      "match": ["entity_id", "tag_id"]})
    assert len(result) == 2
    assert sorted(r["entity_id"] for r in civicrm.table("EntityTag") if r["tag_id"] == 3) == [4, 6]


def test_multi_call_form(civicrm):
    calls = {"me": ["Contact", "get", {"where": [["id", "=", "user_contact_id"]], "select": ["id"]}],
             "bad": ["Nope", "get", {}]}
    response = requests.post(civicrm.url + "/civicrm/ajax/api4", data={"calls": json.dumps(calls)}, timeout=30,
                             headers={"X-Civi-Auth": f"Bearer {civicrm.api_key}", "X-Civi-Key": civicrm.site_key})
    body = response.json()
    assert response.status_code == 200  # 200 as soon as one call succeeded
    assert body["me"]["values"] == [{"id": 1}] and body["bad"]["error_message"].startswith("API (Nope, get)")


# ----------------------------------------------------------------------------- speed


class _CountingRows(dict):
    """A table's rows that count each row the query engine reads."""

    reads = 0

    def __getitem__(self, row_id):
        self.reads += 1
        return super().__getitem__(row_id)


@pytest.mark.slow
def test_pages_of_100k_contacts_read_only_the_rows_they_return():
    # The benchmarks lean on the emulator staying fast at scale. Its speed is what the index makes it,
    # so count the rows each query reads (times are printed, never asserted: they are the machine's).
    started = time.perf_counter()
    emulator = CiviCRMEmulator(api_key="speed-key")
    emulator.seed({"contacts": [{"id": i, "first_name": f"F{i}", "last_name": "Bulk", "email": f"u{i}@example.org",
                                 "is_deleted": i % 100 == 0} for i in range(2, 100_002)]})
    seeded = time.perf_counter() - started
    contacts = emulator.store.table("Contact")
    contacts.rows = rows = _CountingRows(contacts.rows)
    with emulator:
        session = requests.Session()
        headers = {"X-Civi-Auth": "Bearer speed-key", "X-Requested-With": "XMLHttpRequest"}

        def timed(params):
            rows.reads, begin = 0, time.perf_counter()
            response = session.post(emulator.endpoint_template.format(entity="Contact", action="get"),
                                    data={"params": json.dumps(params)}, headers=headers, timeout=30)
            return (time.perf_counter() - begin) * 1000, rows.reads, response.json()["values"]

        timed({"limit": 1})  # warm the connection
        page_ms, page_reads, page = timed({"select": ["id", "display_name", "email_primary.email"],
                                           "where": [["id", ">", 50_000]], "orderBy": {"id": "ASC"}, "limit": 1000})
        wanted = list(range(70_000, 70_500))
        in_ms, in_reads, found = timed({"select": ["id", "first_name"], "where": [["id", "IN", wanted]], "limit": 0})
    print(f"\n100k contacts: seed {seeded:.2f} s, keyset page of 1000 {page_ms:.1f} ms ({page_reads} rows read), "
          f"id IN 500 {in_ms:.1f} ms ({in_reads} rows read)")
    expected_page = [i for i in range(50_001, 60_000) if i % 100][:1000]
    assert [r["id"] for r in page] == expected_page
    assert page[0] == {"id": 50_001, "display_name": "F50001 Bulk", "email_primary.email": "u50001@example.org"}
    assert sorted(r["id"] for r in found) == wanted  # `id IN` lifts the trash filter: 70000 is included
    # The page skips its 10 trashed contacts; a scan of the table would read 100,000.
    assert page_reads == 1010 and in_reads == 500


# ----------------------------------------------------------------------------- CLI


def test_cli_serves_a_seeded_emulator(tmp_path):
    seed = tmp_path / "seed.yaml"
    seed.write_text("civicrm:\n  contacts:\n    - {id: 2, first_name: Ada, last_name: Lovelace}\n")
    process = subprocess.Popen([sys.executable, "-m", "sandbox", "civicrm", "--seed", str(seed), "--port", "0",
                                "--api-key", "cli-key"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        response = requests.post(f"{url}/civicrm/ajax/api4/Contact/get", timeout=30,
                                 data={"params": json.dumps({"select": ["display_name"], "where": [["id", "=", 2]]})},
                                 headers={"X-Civi-Auth": "Bearer cli-key"})
        assert response.json()["values"] == [{"id": 2, "display_name": "Ada Lovelace"}]
    finally:
        process.terminate()
        process.wait(timeout=10)
