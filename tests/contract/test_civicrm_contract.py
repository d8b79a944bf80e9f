"""The CiviCRM APIv4 REST contract (shared/contracts/civicrm-apiv4.md §8), over real HTTP with `requests`.

Runs against every site `civicrm_site` yields: the emulator today, a real CiviCRM when configured (see
sandbox/civicrm/testing.py). Tests build their own records through the API so they port to a real
site; the few that need seeded smart groups, permission changes or AuthX settings use `emulator_site`.
"""

from __future__ import annotations

import json
import re

import pytest

from sandbox.civicrm import testing as civicrm_fixtures

civicrm = civicrm_fixtures.civicrm
civicrm_site = civicrm_fixtures.civicrm_site
emulator_site = civicrm_fixtures.emulator_site

ENVELOPE_KEYS = ["values", "entity", "action", "debug", "version", "count", "countFetched"]


# ----------------------------------------------------------------------------- HTTP layer


def test_reads_work_by_post_and_by_get(civicrm_site):
    params = {"select": ["id"], "where": [["id", "=", "user_contact_id"]], "limit": 1}
    by_post = civicrm_site.values("Contact", "get", params)
    by_get = civicrm_site.session.get(civicrm_site.url("Contact", "get"), params={"params": json.dumps(params)},
                                      headers=civicrm_site.headers(), timeout=30)
    assert len(by_post) == 1
    assert by_get.status_code == 200 and by_get.json()["values"] == by_post


def test_writes_by_get_are_refused_with_405(civicrm_site):
    name = civicrm_site.unique("ByGet")
    response = civicrm_site.session.get(civicrm_site.url("Contact", "create"), timeout=30,
                                        params={"params": json.dumps({"values": {"last_name": name}})},
                                        headers=civicrm_site.headers())
    assert response.status_code == 405
    assert response.json() == {"error_code": 405, "error_message": "SECURITY: All requests that modify the "
                                                                   "database must be http POST, not GET."}
    assert civicrm_site.ids("Contact", [["last_name", "=", name]]) == set()


def test_a_json_body_is_ignored_and_runs_with_empty_params(civicrm_site):
    body = {"params": {"where": [["name", "=", "activity_type"]], "limit": 1}}
    response = civicrm_site.session.post(civicrm_site.url("OptionGroup", "get"), json=body,
                                         headers=civicrm_site.headers(), timeout=30)
    assert response.status_code == 200
    names = [row["name"] for row in response.json()["values"]]
    assert len(names) > 1 and "activity_type" in names  # neither where nor limit was seen


def test_params_in_a_multipart_form_body_are_read_as_in_a_url_encoded_one(civicrm_site):
    params = {"select": ["id", "name"], "where": [["name", "=", "activity_type"]], "limit": 1}
    response = civicrm_site.session.post(civicrm_site.url("OptionGroup", "get"), timeout=30,
                                         files={"params": (None, json.dumps(params))}, headers=civicrm_site.headers())
    assert response.request.headers["Content-Type"].startswith("multipart/form-data")
    assert response.status_code == 200
    values = response.json()["values"]
    assert [row["name"] for row in values] == ["activity_type"]  # where and limit were read
    assert values == civicrm_site.values("OptionGroup", "get", params)


def test_route_is_also_read_from_the_q_variable(emulator_site):
    base = emulator_site.emulator.url
    response = emulator_site.session.post(f"{base}/?civiwp=CiviCRM&q=civicrm/ajax/api4/Contact/get",
                                          data={"params": json.dumps({"select": ["id"], "limit": 1})},
                                          headers=emulator_site.headers(), timeout=30)
    assert response.status_code == 200
    assert (response.json()["entity"], response.json()["action"]) == ("Contact", "get")
    elsewhere = emulator_site.session.post(f"{base}/wp-json/civicrm/v3/rest", headers=emulator_site.headers())
    assert elsewhere.status_code == 404 and "json" not in elsewhere.headers["Content-Type"]


def test_index_field_picks_a_record_or_keys_by_a_field(civicrm_site):
    a, b = civicrm_site.contact(first_name="Ix1"), civicrm_site.contact(first_name="Ix2")
    params = {"select": ["id", "first_name"], "where": [["id", "IN", [a["id"], b["id"]]]], "orderBy": {"id": "ASC"}}
    first = civicrm_site.post("Contact", "get", params, index="0").json()["values"]
    keyed = civicrm_site.post("Contact", "get", params, index="id").json()["values"]
    assert first == {"id": a["id"], "first_name": "Ix1"}
    assert keyed == {str(a["id"]): {"id": a["id"], "first_name": "Ix1"},
                     str(b["id"]): {"id": b["id"], "first_name": "Ix2"}}


def test_invalid_json_in_params_is_a_non_json_500(emulator_site):
    response = emulator_site.session.post(emulator_site.url("Contact", "get"), data={"params": "{not json"},
                                          headers=emulator_site.headers(), timeout=30)
    assert response.status_code == 500
    with pytest.raises(ValueError):
        response.json()


# ----------------------------------------------------------------------------- authentication


@pytest.mark.parametrize("credential", ["Bearer wrong-key-0000", "{key}", "bearer {key}", "Basic Zm9vOmJhcg=="])
def test_a_bad_credential_is_401_plain_text(civicrm_site, credential):
    headers = civicrm_site.headers(**{"X-Civi-Auth": credential.format(key=civicrm_site.api_key)})
    response = civicrm_site.post("Contact", "get", {"limit": 1}, headers=headers)
    assert response.status_code == 401
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.text == "HTTP 401 Invalid credential"


def test_no_credential_is_the_anonymous_visitor_who_reads_nothing_and_writes_nothing(civicrm_site):
    anonymous = {"X-Requested-With": "XMLHttpRequest"}
    read = civicrm_site.post("Contact", "get", {"select": ["id"], "limit": 1}, headers=anonymous)
    assert read.status_code == 200
    assert read.json() == {"values": [], "entity": "Contact", "action": "get", "debug": None, "version": 4,
                           "count": 0, "countFetched": 0}
    write = civicrm_site.post("Contact", "create", {"values": {"last_name": civicrm_site.unique("Anon")}},
                              headers=anonymous)
    assert write.status_code == 403
    assert write.json()["error_message"].startswith("Sorry an error occurred and your request was not completed.")
    assert civicrm_site.ids("Contact", [["last_name", "=", civicrm_site.unique("Anon")]]) == set()


def test_x_civi_auth_needs_no_csrf_header(civicrm_site):
    response = civicrm_site.post("Contact", "get", {"select": ["id"], "limit": 1},
                                 headers=civicrm_site.headers(**{"X-Requested-With": None}))
    assert response.status_code == 200 and len(response.json()["values"]) == 1


def test_authorization_header_flow_needs_the_csrf_header(emulator_site):
    plain = {"Authorization": f"Bearer {emulator_site.api_key}", "X-Civi-Key": emulator_site.site_key}
    refused = emulator_site.post("Contact", "get", {"limit": 1}, headers=plain)
    assert refused.status_code == 400
    assert refused.json() == {"error_code": 400, "error_message": "SECURITY ALERT: Ajax requests can only be "
                                                                  "issued by javascript clients, eg. CRM.api4()."}
    allowed = emulator_site.post("Contact", "get", {"limit": 1},
                                 headers={**plain, "X-Requested-With": "XMLHttpRequest"})
    assert allowed.status_code == 200


@pytest.mark.parametrize("site_key", [None, "wrong-site-key"])
def test_site_key_guard_refuses_a_missing_or_wrong_key(emulator_site, site_key):
    # the fixture's API contact lacks "authenticate with api key", so only the site-key guard can pass
    response = emulator_site.post("Contact", "get", {"limit": 1},
                                  headers=emulator_site.headers(**{"X-Civi-Key": site_key}))
    assert response.status_code == 401
    assert response.text == "HTTP 401 Login not permitted. Must satisfy guard (site_key, perm)."
    assert emulator_site.post("Contact", "get", {"limit": 1}).status_code == 200


def test_check_permissions_cannot_be_switched_off(emulator_site):
    emulator_site.emulator.deny("Contact", "get")
    response = emulator_site.post("Contact", "get", {"limit": 1, "checkPermissions": False})
    assert response.status_code == 403
    assert response.json() == {"error_code": 0, "error_message": "Authorization failed", "status": 403}
    assert emulator_site.post("Group", "get", {"limit": 1}).status_code == 200


# ----------------------------------------------------------------------------- envelope


def test_envelope_keys_and_count_rules(civicrm_site):
    name = civicrm_site.unique("Count")
    ids = sorted(civicrm_site.contact(last_name=name, first_name=f"C{i}")["id"] for i in range(3))
    where = [["last_name", "=", name]]

    full = civicrm_site.api("Contact", "get", {"select": ["id"], "where": where, "orderBy": {"id": "ASC"},
                                               "limit": 2})
    assert list(full) == ENVELOPE_KEYS
    assert (full["entity"], full["action"], full["debug"], full["version"]) == ("Contact", "get", None, 4)
    assert [r["id"] for r in full["values"]] == ids[:2] and (full["count"], full["countFetched"]) == (2, 2)

    tail = civicrm_site.api("Contact", "get", {"select": ["id"], "where": where, "orderBy": {"id": "ASC"},
                                               "limit": 2, "offset": 2})
    assert [r["id"] for r in tail["values"]] == ids[2:]
    assert (tail["count"], tail["countFetched"]) == (3, 1)  # a page that is not full: rows + offset

    counted = civicrm_site.api("Contact", "get", {"select": ["row_count"], "where": where})
    assert counted["values"] == []
    assert (counted["count"], counted["countFetched"], counted["countMatched"]) == (3, 0, 3)


def test_write_envelopes(civicrm_site):
    created = civicrm_site.api("Contact", "create", {"values": {"contact_type": "Individual", "first_name": "W",
                                                                "last_name": civicrm_site.unique("Env")}})
    civicrm_site.track("Contact", created["values"][0]["id"])
    assert list(created) == ENVELOPE_KEYS
    assert (created["action"], created["count"], created["countFetched"]) == ("create", 1, 1)
    assert isinstance(created["values"][0]["id"], int)
    saved = civicrm_site.api("Contact", "save", {"records": [{"id": created["values"][0]["id"], "first_name": "V"}]})
    assert list(saved) == ENVELOPE_KEYS  # 5.76 reports no countMatched for save


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("entity, action, params, message", [
    ("Foo", "get", {}, "API (Foo, get) does not exist (or the extension it belongs to is not enabled)."),
    ("Contact", "frobnicate", {}, "Api Contact frobnicate version 4 does not exist."),
    ("Contact", "create", {"values": {"id": 2, "first_name": "x"}},
     "Cannot pass id to Create action. Use Update action instead."),
    ("Contact", "update", {"values": {"first_name": "x"}},
     'Parameter "where" is required unless primary keys are supplied in values.'),
    ("Contact", "delete", {}, 'Parameter "where" is required.'),
    ("GroupContact", "create", {"values": {"contact_id": 2}},
     "Mandatory values missing from Api4 GroupContact::create: group_id"),
    ("Email", "create", {"values": {"is_primary": True}},
     "Mandatory values missing from Api4 Email::create: email"),  # contact_id defaults to the current user
    ("Contact", "get", {"where": [["nope", "=", 1]]}, "Invalid field 'nope'"),
    ("Contact", "get", {"orderBy": {"nope": "ASC"}}, "Invalid field 'nope'"),
    ("Contact", "get", {"orderBy": {"id": "asc"}}, "Invalid sort direction. Cannot order by id asc"),
    ("Contact", "get", {"where": [["groups", "=", 5]]}, "Illegal operator for groups"),
    ("Contact", "get", {"where": [["id", "SOUNDS LIKE", 5]]}, "Illegal operator"),
    ("Contact", "get", {"join": [["Email AS e", "SIDEWAYS", ["e.contact_id", "=", "id"]]]},
     "Illegal value for join side: 'SIDEWAYS'."),
])
def test_api_errors_are_http_500_with_the_json_error_shape(civicrm_site, entity, action, params, message):
    error = civicrm_site.error(entity, action, params)
    if message is not None:
        assert error == message


def test_an_unknown_param_is_an_error(civicrm_site):
    assert civicrm_site.error("Contact", "get", {"values": {"first_name": "x"}}) == "Unknown api parameter: setValues"


def test_an_empty_in_list_matches_nothing(civicrm_site):
    assert civicrm_site.values("Contact", "get", {"select": ["id"], "where": [["id", "IN", []]]}) == []


def test_generic_error_mode_hides_the_detail():
    from sandbox.civicrm import CiviCRMEmulator

    with CiviCRMEmulator(api_key="generic-key", detailed_errors=False) as emulator:
        import requests

        response = requests.post(emulator.endpoint_template.format(entity="Foo", action="get"),
                                 data={"params": "{}"}, headers={"X-Civi-Auth": "Bearer generic-key"}, timeout=30)
    assert response.status_code == 500
    body = response.json()
    assert body["error_code"] == "1" and body["status"] == 500
    assert re.fullmatch(r"Sorry an error occurred and your request was not completed\. "
                        r"\(Error ID: [0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}\)", body["error_message"])


# ----------------------------------------------------------------------------- query semantics


def test_trashed_contacts_are_hidden_unless_the_where_names_them_or_asks_by_id(civicrm_site):
    name = civicrm_site.unique("Trash")
    live = civicrm_site.contact(last_name=name, first_name="Live")["id"]
    trashed = civicrm_site.contact(last_name=name, first_name="Gone", is_deleted=True)["id"]
    same = [["last_name", "=", name]]
    assert civicrm_site.ids("Contact", same) == {live}
    assert civicrm_site.ids("Contact", [*same, ["id", ">", 0]]) == {live}  # `>` does not lift the filter
    assert civicrm_site.ids("Contact", [*same, ["is_deleted", "IN", [0, 1]]]) == {live, trashed}
    assert civicrm_site.ids("Contact", [["OR", [["is_deleted", "=", True], ["id", "=", -1]]], *same]) == {trashed}
    assert civicrm_site.ids("Contact", [["id", "=", trashed]]) == {trashed}
    assert civicrm_site.ids("Contact", [["id", "IN", [live, trashed]]]) == {live, trashed}


def test_activity_test_and_deleted_rows_are_hidden_by_default(civicrm_site):
    me, subject = civicrm_site.me, civicrm_site.unique("Act")
    made = {}
    for label, extra in (("plain", {}), ("test", {"is_test": True}), ("deleted", {"is_deleted": True})):
        made[label] = civicrm_site.create("Activity", {"activity_type_id:name": "Meeting", "subject": subject,
                                                       "source_contact_id": me, **extra})["id"]
    same = [["subject", "=", subject]]
    assert civicrm_site.ids("Activity", same) == {made["plain"]}
    assert civicrm_site.ids("Activity", [*same, ["is_test", "IN", [0, 1]]]) == {made["plain"], made["test"]}
    assert civicrm_site.ids("Activity", [["id", "=", made["deleted"]]]) == {made["deleted"]}


@pytest.fixture
def named_contacts(civicrm_site):
    """Contacts A(da), B(ob), C(y) and N (no first name) sharing a unique last name; label -> id."""
    name = civicrm_site.unique("Ops")
    people = {label: civicrm_site.contact(last_name=name, **({"first_name": first} if first else {}))["id"]
              for label, first in (("A", "Ada"), ("B", "Bob"), ("C", "Cy"), ("N", None))}
    return name, people


@pytest.mark.parametrize("clause, expected", [
    (["first_name", "=", "Ada"], "A"),
    (["first_name", "!=", "Ada"], "BC"),
    (["first_name", "<>", "Ada"], "BC"),
    (["first_name", "<", "Bob"], "A"),
    (["first_name", ">", "Bob"], "C"),
    (["first_name", "<=", "Bob"], "AB"),
    (["first_name", ">=", "Bob"], "BC"),
    (["first_name", "IN", ["Ada", "Cy"]], "AC"),
    (["first_name", "NOT IN", ["Ada", "Cy"]], "B"),
    (["first_name", "LIKE", "%y"], "C"),
    (["first_name", "LIKE", "A_a"], "A"),
    (["first_name", "NOT LIKE", "A%"], "BC"),
    (["first_name", "IS NULL"], "N"),
    (["first_name", "IS NOT NULL"], "ABC"),
    (["first_name", "IS EMPTY"], "N"),
    (["first_name", "IS NOT EMPTY"], "ABC"),
    (["first_name", "BETWEEN", ["B", "Cz"]], "BC"),
    (["first_name", "NOT BETWEEN", ["B", "Cz"]], "A"),
    (["OR", [["first_name", "=", "Ada"], ["AND", [["first_name", "LIKE", "C%"], ["id", ">", 0]]]]], "AC"),
    (["NOT", [["first_name", "IN", ["Ada", "Bob"]]]], "C"),  # NULL stays unknown under NOT
    (["AND", [["first_name", "IS NOT NULL"], ["NOT", [["first_name", "=", "Bob"]]]]], "AC"),
])
def test_where_operators(civicrm_site, named_contacts, clause, expected):
    name, people = named_contacts
    found = civicrm_site.ids("Contact", [["last_name", "=", name], clause])
    assert found == {people[label] for label in expected}


def test_contains_on_a_serialized_field(civicrm_site):
    both = civicrm_site.create("Tag", {"name": civicrm_site.unique("both_"), "label": civicrm_site.unique("Both "),
                                       "used_for": ["civicrm_contact", "civicrm_activity"]})
    only = civicrm_site.create("Tag", {"name": civicrm_site.unique("only_"), "label": civicrm_site.unique("Only ")})
    assert only["used_for"] == ["civicrm_contact"]  # create default, returned as a list
    mine = [["id", "IN", [both["id"], only["id"]]]]
    assert civicrm_site.ids("Tag", [*mine, ["used_for", "CONTAINS", "civicrm_activity"]]) == {both["id"]}
    assert civicrm_site.ids("Tag", [*mine, ["used_for", "CONTAINS", "civicrm_contact"]]) == {both["id"], only["id"]}


def test_unknown_select_fields_are_dropped_and_id_is_always_there(civicrm_site):
    contact = civicrm_site.contact(first_name="Sel")
    rows = civicrm_site.values("Contact", "get", {"select": ["first_name", "no_such_field"],
                                                  "where": [["id", "=", contact["id"]]]})
    assert rows == [{"id": contact["id"], "first_name": "Sel"}]


def test_values_are_typed(civicrm_site):
    contact = civicrm_site.contact(first_name="Typed", do_not_email=True)
    row = civicrm_site.values("Contact", "get", {"select": ["id", "do_not_email", "is_deceased", "contact_type"],
                                                 "where": [["id", "=", contact["id"]]]})[0]
    assert row == {"id": contact["id"], "do_not_email": True, "is_deceased": False, "contact_type": "Individual"}
    activity = civicrm_site.create("Activity", {"activity_type_id:name": "Meeting", "source_contact_id": civicrm_site.me,
                                                "subject": civicrm_site.unique("Typed")})
    stamp = civicrm_site.values("Activity", "get", {"select": ["activity_date_time"],
                                                    "where": [["id", "=", activity["id"]]]})[0]["activity_date_time"]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", stamp)  # default now, no offset


def _option_value(site, group: str, name: str) -> int:
    rows = site.values("OptionValue", "get", {"select": ["value"], "where": [["option_group_id:name", "=", group],
                                                                           ["name", "=", name]]})
    return int(rows[0]["value"])


def test_pseudoconstant_suffixes_in_select_where_and_values(civicrm_site):
    me = civicrm_site.me
    activity = civicrm_site.create("Activity", {"activity_type_id:name": "Meeting", "status_id:name": "Completed",
                                                "subject": civicrm_site.unique("Sfx"), "source_contact_id": me})
    by_id = [["id", "=", activity["id"]]]
    row = civicrm_site.values("Activity", "get", {"select": ["activity_type_id", "activity_type_id:name",
                                                             "status_id:label"], "where": by_id})[0]
    assert row == {"id": activity["id"], "activity_type_id": _option_value(civicrm_site, "activity_type", "Meeting"),
                   "activity_type_id:name": "Meeting", "status_id:label": "Completed"}
    assert civicrm_site.ids("Activity", [*by_id, ["status_id:name", "=", "Completed"]]) == {activity["id"]}
    assert civicrm_site.ids("Activity", [*by_id, ["status_id:name", "IN", ["Scheduled", "Cancelled"]]]) == set()

    civicrm_site.values("Activity", "update", {"values": {"id": activity["id"], "status_id:name": "Cancelled"}})
    stored = civicrm_site.values("Activity", "get", {"select": ["status_id"], "where": by_id})[0]["status_id"]
    assert stored == _option_value(civicrm_site, "activity_status", "Cancelled")

    # an unknown name on write becomes NULL, without an error
    civicrm_site.values("Activity", "update", {"values": {"id": activity["id"], "status_id:name": "No Such Status"}})
    assert civicrm_site.values("Activity", "get", {"select": ["status_id"], "where": by_id})[0]["status_id"] is None


def test_implicit_joins_follow_foreign_keys(civicrm_site):
    contact = civicrm_site.contact(first_name="Imp")
    email = civicrm_site.create("Email", {"contact_id": contact["id"], "email": "imp@example.org"})
    group = civicrm_site.create("Group", {"name": civicrm_site.unique("imp_"), "title": civicrm_site.unique("Imp ")})
    civicrm_site.create("GroupContact", {"group_id": group["id"], "contact_id": contact["id"], "status": "Added"})

    rows = civicrm_site.values("Email", "get", {"select": ["contact_id.display_name", "contact_id.is_deleted"],
                                                "where": [["id", "=", email["id"]]]})
    assert rows == [{"id": email["id"], "contact_id.display_name": f"Imp {contact['last_name']}",
                     "contact_id.is_deleted": False}]
    rows = civicrm_site.values("GroupContact", "get", {
        "select": ["group_id:name", "contact_id.first_name", "status"],
        "where": [["contact_id", "=", contact["id"]], ["contact_id.is_deleted", "=", False]]})
    assert [(r["group_id:name"], r["contact_id.first_name"], r["status"]) for r in rows] == \
        [(group["name"], "Imp", "Added")]


def test_explicit_joins(civicrm_site):
    name = civicrm_site.unique("Join")
    two = civicrm_site.contact(last_name=name, first_name="Two")["id"]
    none = civicrm_site.contact(last_name=name, first_name="None")["id"]
    civicrm_site.create("Email", {"contact_id": two, "email": "two-a@example.org", "is_primary": True})
    civicrm_site.create("Email", {"contact_id": two, "email": "two-b@example.org", "is_primary": False})
    group = civicrm_site.create("Group", {"name": civicrm_site.unique("join_"), "title": civicrm_site.unique("Join ")})
    civicrm_site.create("GroupContact", {"group_id": group["id"], "contact_id": none, "status": "Added"})
    base = {"where": [["last_name", "=", name]], "orderBy": {"id": "ASC"}}

    left = civicrm_site.values("Contact", "get", {**base, "select": ["id", "e.email"],
                                                  "join": [["Email AS e", "LEFT", ["e.contact_id", "=", "id"]]]})
    assert sorted((r["id"], r["e.email"] or "") for r in left) == \
        sorted([(two, "two-a@example.org"), (two, "two-b@example.org"), (none, "")])  # rows multiply

    primary = [["Email AS e", "LEFT", ["e.contact_id", "=", "id"], ["e.is_primary", "=", True]]]
    rows = civicrm_site.values("Contact", "get", {**base, "select": ["id", "e.email"], "join": primary})
    assert [(r["id"], r["e.email"]) for r in rows] == [(two, "two-a@example.org"), (none, None)]

    grouped = civicrm_site.values("Contact", "get", {**base, "select": ["id"], "groupBy": ["id"],
                                                     "join": [["Email AS e", "LEFT", ["e.contact_id", "=", "id"]]]})
    assert [r["id"] for r in grouped] == [two, none]

    inner = [["GroupContact AS gc", "INNER", ["gc.contact_id", "=", "id"], ["gc.group_id", "=", group["id"]],
              ["gc.status", "=", "'Added'"]]]  # string literals in ON clauses carry their own quotes
    assert [r["id"] for r in civicrm_site.values("Contact", "get", {**base, "select": ["id"], "join": inner})] == [none]
    exclude = [["GroupContact AS gc", "EXCLUDE", ["gc.contact_id", "=", "id"], ["gc.group_id", "=", group["id"]]]]
    assert [r["id"] for r in civicrm_site.values("Contact", "get", {**base, "select": ["id"], "join": exclude})] == [two]


def test_email_primary_virtual_field(civicrm_site):
    contact = civicrm_site.contact(first_name="Prim")["id"]
    bare = civicrm_site.contact(first_name="Bare")["id"]
    civicrm_site.create("Email", {"contact_id": contact, "email": "other@example.org"})
    civicrm_site.create("Email", {"contact_id": contact, "email": "main@example.org", "is_primary": True})
    rows = civicrm_site.values("Contact", "get", {"select": ["email_primary.email"], "orderBy": {"id": "ASC"},
                                                  "where": [["id", "IN", [contact, bare]]]})
    assert rows == [{"id": contact, "email_primary.email": "main@example.org"}, {"id": bare, "email_primary.email": None}]


def test_groups_filter_static_members_and_child_groups(civicrm_site):
    name = civicrm_site.unique("Grp")
    parent = civicrm_site.create("Group", {"name": civicrm_site.unique("parent_"), "title": civicrm_site.unique("P ")})
    child = civicrm_site.create("Group", {"name": civicrm_site.unique("child_"), "title": civicrm_site.unique("C "),
                                          "parents": [parent["id"]]})
    added, removed, pending, in_child, trashed, outside = (
        civicrm_site.contact(last_name=name, first_name=label)["id"]
        for label in ("Added", "Removed", "Pending", "Child", "Trashed", "Outside"))
    for contact_id, group_id, status in ((added, parent, "Added"), (removed, parent, "Removed"),
                                         (pending, parent, "Pending"), (in_child, child, "Added"),
                                         (trashed, parent, "Added")):
        civicrm_site.create("GroupContact", {"contact_id": contact_id, "group_id": group_id["id"], "status": status})
    civicrm_site.values("Contact", "update", {"values": {"id": trashed, "is_deleted": True}})
    same = [["last_name", "=", name]]
    assert civicrm_site.ids("Contact", [*same, ["groups", "IN", [parent["id"]]]]) == {added, in_child}
    assert civicrm_site.ids("Contact", [*same, ["groups", "IN", [child["id"]]]]) == {in_child}
    assert civicrm_site.ids("Contact", [*same, ["groups", "NOT IN", [parent["id"]]]]) == {removed, pending, outside}


def test_groups_filter_with_smart_groups(emulator_site):
    # seed: smart group 7 matches 4 and 9, 9 has a Removed row; 8 is an inactive smart group (matches 2)
    def members(*group_ids):
        return emulator_site.ids("Contact", [["groups", "IN", list(group_ids)]])

    assert members(7) == {4}
    assert members(8) == set()
    assert members(5, 7) == {2, 4, 6}  # 5: static 2, child group 6's member 6; 3 Removed, 10 trashed
    explicit = emulator_site.values("GroupContact", "get", {"select": ["contact_id", "status"],
                                                             "where": [["group_id", "=", 7]]})
    assert [(r["contact_id"], r["status"]) for r in explicit] == [(9, "Removed")]  # no smart-group matches
    emulator_site.emulator.set_smart_members(7, {2, 4, 9, 10})
    assert members(7) == {2, 4}


# ----------------------------------------------------------------------------- write semantics


def test_save_with_match_updates_exactly_one_match_and_creates_otherwise(civicrm_site):
    name = civicrm_site.unique("Save")
    existing = civicrm_site.contact(last_name=name, first_name="Solo")["id"]
    twins = [civicrm_site.contact(last_name=name, first_name="Twin")["id"] for _ in range(2)]
    trashed = civicrm_site.contact(last_name=name, first_name="Trash", is_deleted=True)["id"]
    result = civicrm_site.api("Contact", "save", {
        "records": [{"first_name": "New", "last_name": name},
                    {"first_name": "Solo", "last_name": name, "do_not_email": False},
                    {"first_name": "Twin", "last_name": name},
                    {"first_name": "Trash", "last_name": name}],
        "defaults": {"contact_type": "Individual", "do_not_email": True},
        "match": ["first_name", "last_name"]})
    ids = [row["id"] for row in result["values"]]
    civicrm_site.track("Contact", *[i for i in ids if i not in (existing, *twins, trashed)])
    assert "countMatched" not in result
    assert ids[1] == existing  # exactly one match: updated, and results come back in input order
    assert len(set(ids)) == 4 and not {ids[0], ids[2], ids[3]} & {existing, *twins, trashed}
    flags = {r["id"]: r["do_not_email"] for r in civicrm_site.values(
        "Contact", "get", {"select": ["do_not_email"], "where": [["id", "IN", ids]]})}
    assert flags == {ids[0]: True, existing: False, ids[2]: True, ids[3]: True}  # record values beat defaults


def test_update_by_where_and_the_missing_id_fast_path(civicrm_site):
    name = civicrm_site.unique("Upd")
    ids = {civicrm_site.contact(last_name=name, first_name=f"U{i}")["id"] for i in range(2)}
    updated = civicrm_site.values("Contact", "update", {"values": {"do_not_email": True},
                                                        "where": [["last_name", "=", name]]})
    assert {row["id"] for row in updated} == ids
    assert civicrm_site.ids("Contact", [["last_name", "=", name], ["do_not_email", "=", True]]) == ids
    assert civicrm_site.values("Contact", "update", {"values": {"do_not_email": True},
                                                     "where": [["last_name", "=", name + "-none"]]}) == []
    # 5.76 checks that the row exists (the contract's "fast path" success is older releases')
    assert civicrm_site.error("Contact", "update", {"values": {"id": 987654321, "first_name": "Ghost"}}) == \
        "Expected one Contact but found 0"
    assert civicrm_site.ids("Contact", [["id", "=", 987654321]]) == set()


def test_delete_by_where(civicrm_site):
    tag = civicrm_site.create("Tag", {"name": civicrm_site.unique("del_"), "label": civicrm_site.unique("Del ")})
    contact = civicrm_site.contact(first_name="Del")["id"]
    link = civicrm_site.create("EntityTag", {"entity_table": "civicrm_contact", "entity_id": contact,
                                             "tag_id": tag["id"]})
    where = [["entity_table", "=", "civicrm_contact"], ["entity_id", "=", contact], ["tag_id", "=", tag["id"]]]
    assert civicrm_site.values("EntityTag", "delete", {"where": where}) == [{"id": str(link["id"])}]  # a string
    assert civicrm_site.values("EntityTag", "delete", {"where": where}) == []


def test_a_batch_save_is_all_or_nothing(civicrm_site):
    contact = civicrm_site.contact(first_name="Batch")["id"]
    message = civicrm_site.error("Email", "save", {"records": [
        {"contact_id": contact, "email": "first@example.org"},
        {"contact_id": contact},
        {"contact_id": contact, "email": "third@example.org"}]})
    assert message == "Mandatory values missing from Api4 Email::save: email"
    emails = civicrm_site.values("Email", "get", {"select": ["email"], "where": [["contact_id", "=", contact]]})
    # 5.76 saves a batch in one transaction (the contract's "not atomic" is older releases')
    assert emails == []


def test_group_contact_rules(civicrm_site):
    group = civicrm_site.create("Group", {"name": civicrm_site.unique("gc_"), "title": civicrm_site.unique("GC ")})
    contact = civicrm_site.contact(first_name="Member")["id"]
    row = civicrm_site.create("GroupContact", {"group_id": group["id"], "contact_id": contact})
    assert row["status"] == "Added"  # the modern create default
    assert civicrm_site.error("GroupContact", "create", {"values": {"group_id": group["id"], "contact_id": contact,
                                                                    "status": "Added"}}) == "DB Error: already exists"
    civicrm_site.error("GroupContact", "create", {"values": {"group_id": 987654321, "contact_id": contact}})

    civicrm_site.values("GroupContact", "update", {"values": {"status": "Removed"},
                                                   "where": [["group_id", "=", group["id"]],
                                                             ["contact_id", "=", contact]]})
    kept = civicrm_site.values("GroupContact", "get", {"select": ["status"], "where": [["id", "=", row["id"]]]})
    assert kept == [{"id": row["id"], "status": "Removed"}]  # an opt-out row, not a deletion
    saved = civicrm_site.api("GroupContact", "save", {"records": [{"group_id": group["id"], "contact_id": contact,
                                                                   "status": "Added"}],
                                                      "match": ["contact_id", "group_id"]})
    assert saved["values"][0]["id"] == row["id"]  # matched and updated, not a second row
    civicrm_site.values("GroupContact", "delete", {"where": [["id", "=", row["id"]]]})
    history = civicrm_site.values("SubscriptionHistory", "get", {"select": ["status", "method"],
                                                                 "where": [["group_id", "=", group["id"]]],
                                                                 "orderBy": {"id": "ASC"}})
    assert [h["status"] for h in history] == ["Added", "Removed", "Added", "Deleted"]
    assert {h["method"] for h in history} == {None}  # 5.76 records no method for API writes


def test_the_multi_call_form_answers_each_named_call_in_one_request(civicrm_site):
    """`POST civicrm/ajax/api4` with `calls`: the near-real-time watcher's one request per poll."""
    calls = {"history": ["SubscriptionHistory", "get", {"select": ["id"], "orderBy": {"id": "DESC"}, "limit": 1}],
             "tags": ["EntityTag", "get", {"select": ["id"], "orderBy": {"id": "DESC"}, "limit": 1}],
             "broken": ["NoSuchEntity", "get", {}]}
    response = civicrm_site.session.post(civicrm_site.template.replace("/{entity}/{action}", ""),
                                         data={"calls": json.dumps(calls)}, headers=civicrm_site.headers(),
                                         timeout=30)
    assert response.status_code == 200  # at least one call succeeded
    body = response.json()
    assert set(body) == {"history", "tags", "broken"}
    assert {"values", "count"} <= set(body["history"]) and {"values", "count"} <= set(body["tags"])
    assert "values" not in body["broken"] and "error_message" in body["broken"]


def test_joins_and_tags_write_new_rows_with_growing_ids_the_watcher_can_follow(civicrm_site):
    group = civicrm_site.create("Group", {"name": civicrm_site.unique("watch_"), "title": civicrm_site.unique("W ")})
    tag = civicrm_site.create("Tag", {"name": civicrm_site.unique("wt_"), "label": civicrm_site.unique("WT ")})
    contact = civicrm_site.contact(first_name="Watched")["id"]

    def newest(entity):
        rows = civicrm_site.values(entity, "get", {"select": ["id"], "orderBy": {"id": "DESC"}, "limit": 1})
        return rows[0]["id"] if rows else 0

    start_history, start_tags = newest("SubscriptionHistory"), newest("EntityTag")
    match = {"match": ["contact_id", "group_id"]}
    for status in ("Added", "Removed", "Added"):  # staff take a contact out to fix it and add it again
        civicrm_site.values("GroupContact", "save", {
            "records": [{"group_id": group["id"], "contact_id": contact, "status": status}], **match})
    tagged = {"entity_table": "civicrm_contact", "entity_id": contact, "tag_id": tag["id"]}
    first = civicrm_site.create("EntityTag", tagged)["id"]
    civicrm_site.values("EntityTag", "delete", {"where": [["id", "=", first]]})
    second = civicrm_site.create("EntityTag", tagged)["id"]

    history = civicrm_site.values("SubscriptionHistory", "get", {
        "select": ["id", "contact_id", "group_id", "status"], "where": [["id", ">", start_history]],
        "orderBy": {"id": "ASC"}, "limit": 1000})
    mine = [h for h in history if h["group_id"] == group["id"]]
    assert [(h["contact_id"], h["status"]) for h in mine] == [(contact, "Added"), (contact, "Removed"),
                                                             (contact, "Added")]
    assert all(h["id"] > start_history for h in mine)  # a re-add is a new row, after the cursor
    assert start_tags < first < second  # a tag given again is a new row too
    rows = civicrm_site.values("EntityTag", "get", {"select": ["id", "entity_table", "entity_id", "tag_id"],
                                                    "where": [["id", ">", start_tags]], "orderBy": {"id": "ASC"}})
    assert [r for r in rows if r["tag_id"] == tag["id"]] == [{"id": second, **tagged}]


def test_entity_tag_create_is_idempotent_and_checks_the_tag_only(civicrm_site):
    tag = civicrm_site.create("Tag", {"name": civicrm_site.unique("et_"), "label": civicrm_site.unique("ET ")})
    contact = civicrm_site.contact(first_name="Tagged")["id"]
    values = {"entity_table": "civicrm_contact", "entity_id": contact, "tag_id": tag["id"]}
    first = civicrm_site.create("EntityTag", values)
    assert civicrm_site.error("EntityTag", "create", {"values": values}) == "DB Error: already exists"
    again = civicrm_site.api("EntityTag", "save", {"records": [values],
                                                   "match": ["entity_table", "entity_id", "tag_id"]})
    assert again["values"][0]["id"] == first["id"]  # save with match is the idempotent way
    assert len(civicrm_site.values("EntityTag", "get", {"where": [["tag_id", "=", tag["id"]]]})) == 1
    civicrm_site.error("EntityTag", "create", {"values": {**values, "tag_id": 987654321}})
    dangling = civicrm_site.create("EntityTag", {**values, "entity_id": 987654321})  # entity_id is not a real FK
    assert dangling["entity_id"] == 987654321


def test_tag_group_and_option_group_names_are_unique(civicrm_site):
    tag_name, title = civicrm_site.unique("uniq_"), civicrm_site.unique("Uniq ")
    civicrm_site.create("Tag", {"name": tag_name, "label": title})
    assert civicrm_site.error("Tag", "create", {"values": {"name": tag_name, "label": title + "2"}}) == \
        "DB Error: already exists"
    civicrm_site.create("Group", {"name": tag_name, "title": title})
    assert civicrm_site.error("Group", "create", {"values": {"name": tag_name + "2", "title": title}}) == \
        "DB Error: already exists"
    assert civicrm_site.error("Group", "create", {"values": {"name": tag_name, "title": title + "2"}}) == \
        "DB Error: already exists"


def test_uf_match_rules(civicrm_site):
    one, two = civicrm_site.contact(first_name="Uf1")["id"], civicrm_site.contact(first_name="Uf2")["id"]
    uf_id = 900000000 + one
    login = f"{civicrm_site.unique('uf')}@example.org"
    first = civicrm_site.create("UFMatch", {"contact_id": one, "uf_id": uf_id, "uf_name": login})
    assert first["domain_id"] == 1
    again = civicrm_site.values("UFMatch", "create", {"values": {"contact_id": one, "uf_id": uf_id,
                                                                 "uf_name": login}})[0]
    assert again["id"] == first["id"]  # an exact repeat returns the existing row
    assert civicrm_site.error("UFMatch", "create", {"values": {"contact_id": one, "uf_id": uf_id + 1,
                                                               "uf_name": "x" + login}}) == "DB Error: already exists"
    assert civicrm_site.error("UFMatch", "create", {"values": {"contact_id": two, "uf_id": uf_id + 2,
                                                               "uf_name": login.upper()}}) == "DB Error: already exists"
    saved = civicrm_site.api("UFMatch", "save", {"records": [{"contact_id": one, "uf_id": uf_id + 3,
                                                              "uf_name": login}], "match": ["contact_id"]})
    assert saved["values"][0]["id"] == first["id"]
    rows = civicrm_site.values("UFMatch", "get", {"select": ["uf_id"], "where": [["contact_id", "=", one]]})
    assert rows == [{"id": first["id"], "uf_id": uf_id + 3}]


def test_email_primary_is_maintained_and_the_contact_must_exist(civicrm_site):
    contact = civicrm_site.contact(first_name="Mail")["id"]
    first = civicrm_site.create("Email", {"contact_id": contact, "email": "one@example.org"})
    assert first["is_primary"] is True  # a contact's first email becomes primary
    second = civicrm_site.create("Email", {"contact_id": contact, "email": "two@example.org", "is_primary": True})
    rows = civicrm_site.values("Email", "get", {"select": ["is_primary"], "where": [["contact_id", "=", contact]],
                                                "orderBy": {"id": "ASC"}})
    assert rows == [{"id": first["id"], "is_primary": False}, {"id": second["id"], "is_primary": True}]
    civicrm_site.error("Email", "create", {"values": {"contact_id": 987654321, "email": "nobody@example.org"}})


def test_activity_contacts_are_written_and_read_through_activity_contact(civicrm_site):
    me = civicrm_site.me
    targets = [civicrm_site.contact(first_name=f"T{i}")["id"] for i in range(2)]
    activity = civicrm_site.create("Activity", {
        "activity_type_id:name": "Meeting", "status_id:name": "Completed", "subject": civicrm_site.unique("AC"),
        "details": "<p>run 1</p>", "activity_date_time": "2024-05-01 10:15:00",
        "source_contact_id": me, "target_contact_id": targets})
    def linked(record_type):
        rows = civicrm_site.values("ActivityContact", "get", {
            "select": ["contact_id"], "where": [["activity_id", "=", activity["id"]],
                                                ["record_type_id:name", "=", record_type]]})
        return sorted(r["contact_id"] for r in rows)

    assert linked("Activity Targets") == sorted(targets)
    assert linked("Activity Source") == [me]
    rows = civicrm_site.values("ActivityContact", "get", {
        "select": ["activity_id.activity_type_id:name", "activity_id.status_id:name", "activity_id.activity_date_time"],
        "where": [["contact_id", "=", targets[0]], ["record_type_id:name", "=", "Activity Targets"]]})
    assert [{k: v for k, v in r.items() if k != "id"} for r in rows] == [{
        "activity_id.activity_type_id:name": "Meeting", "activity_id.status_id:name": "Completed",
        "activity_id.activity_date_time": "2024-05-01 10:15:00"}]
    assert civicrm_site.error("Activity", "create", {"values": {"activity_type_id:name": "Meeting"}}) == \
        "Mandatory values missing from Api4 Activity::create: source_contact_id"
    assert civicrm_site.error("Activity", "create", {"values": {"activity_type_id:name": "No Such Type",
                                                                "source_contact_id": me}}) == \
        "Mandatory values missing from Api4 Activity::create: activity_type_id"
    civicrm_site.error("Activity", "create", {"values": {"activity_type_id:name": "Meeting", "source_contact_id": me,
                                                         "target_contact_id": [987654321]}})


def test_option_values_get_the_next_value_and_are_not_unique(civicrm_site):
    group = civicrm_site.create("OptionGroup", {"name": civicrm_site.unique("og_"), "title": "Contract options"})
    def add(**values):
        return civicrm_site.create("OptionValue", {"option_group_id": group["id"], **values})

    assert add(label="First")["value"] == "1"
    assert add(label="Ten", value="10")["value"] == "10"
    twin_a = add(label="Twin", name="Twin")
    twin_b = add(label="Twin", name="Twin")  # no unique key on (group, name)
    assert (twin_a["value"], twin_b["value"]) == ("11", "12") and twin_a["id"] != twin_b["id"]
    assert twin_a["name"] == "Twin" and add(label="Spaced Label")["name"] == "Spaced_Label"

    record = {"option_group_id:name": group["name"], "name": "Once", "label": "Once", "is_active": True}
    first = civicrm_site.api("OptionValue", "save", {"records": [record], "match": ["option_group_id", "name"]})
    second = civicrm_site.api("OptionValue", "save", {"records": [record], "match": ["option_group_id", "name"]})
    civicrm_site.track("OptionValue", first["values"][0]["id"])
    assert second["values"][0]["id"] == first["values"][0]["id"]
    twins = civicrm_site.api("OptionValue", "save", {"records": [{**record, "name": "Twin", "label": "Twin"}],
                                                     "match": ["option_group_id", "name"]})
    civicrm_site.track("OptionValue", twins["values"][0]["id"])
    assert twins["values"][0]["id"] not in (twin_a["id"], twin_b["id"])  # two matches: a new record, no error


def test_chain_creates_a_contact_with_its_email(civicrm_site):
    result = civicrm_site.values("Contact", "create", {
        "values": {"contact_type": "Individual", "first_name": "Chain", "last_name": civicrm_site.unique("Ch")},
        "chain": {"email": ["Email", "create", {"values": {"contact_id": "$id", "email": "chain@example.org",
                                                           "is_primary": True}}]}})
    contact = result[0]
    civicrm_site.track("Contact", contact["id"])
    assert contact["email"][0]["contact_id"] == contact["id"]
    assert contact["email"][0]["email"] == "chain@example.org"


def test_unknown_keys_in_values_are_ignored(civicrm_site):
    contact = civicrm_site.contact(first_name="Extra", no_such_field="ignored")
    assert "no_such_field" not in civicrm_site.values("Contact", "get", {"where": [["id", "=", contact["id"]]]})[0]


# ----------------------------------------------------------------------------- faults (emulator, or a proxy)

faulty_site = civicrm_fixtures.faulty_site


def _members(site, group_id: int) -> list[tuple[int, str]]:
    rows = site.values("GroupContact", "get", {"select": ["contact_id", "status"],
                                               "where": [["group_id", "=", group_id]], "orderBy": {"id": "ASC"}})
    return [(r["contact_id"], r["status"]) for r in rows]


def test_an_injected_server_error_performs_nothing(faulty_site):
    name = faulty_site.unique("Fault")
    faulty_site.inject(entity="Contact", action="create", status=503)
    refused = faulty_site.post("Contact", "create", {"values": {"contact_type": "Individual", "last_name": name}})
    assert refused.status_code == 503
    assert faulty_site.ids("Contact", [["last_name", "=", name]]) == set()


def test_a_lost_answer_to_a_batched_save_with_match_was_applied_and_repeats_harmlessly(faulty_site):
    import requests

    group = faulty_site.create("Group", {"name": faulty_site.unique("lost_"), "title": faulty_site.unique("Lost ")})
    a, b = faulty_site.contact(first_name="LostA")["id"], faulty_site.contact(first_name="LostB")["id"]
    params = {"records": [{"contact_id": a, "group_id": group["id"], "status": "Added"},
                          {"contact_id": b, "group_id": group["id"], "status": "Added"}],
              "match": ["contact_id", "group_id"]}
    faulty_site.inject(entity="GroupContact", action="save", status=None, lose_answer=True)
    with pytest.raises(requests.ConnectionError):
        faulty_site.post("GroupContact", "save", params)
    assert _members(faulty_site, group["id"]) == [(a, "Added"), (b, "Added")]  # done, though unanswered
    faulty_site.api("GroupContact", "save", params)  # what a retry of an idempotent write does
    assert _members(faulty_site, group["id"]) == [(a, "Added"), (b, "Added")]


def test_a_lost_answer_to_a_create_cannot_be_repeated_safely(faulty_site):
    import requests

    contact = faulty_site.contact(first_name="Twice")["id"]
    subject = faulty_site.unique("Lost activity ")
    params = {"records": [{"activity_type_id": 1, "subject": subject, "source_contact_id": contact,
                           "target_contact_id": [contact]}]}
    faulty_site.inject(entity="Activity", action="save", status=None, lose_answer=True)
    with pytest.raises(requests.ConnectionError):
        faulty_site.post("Activity", "save", params)
    faulty_site.api("Activity", "save", params)  # a blind repeat
    found = faulty_site.ids("Activity", [["subject", "=", subject]])
    faulty_site.track("Activity", *found)
    assert len(found) == 2  # why the hook never repeats a create, and the journal reads before it writes


def test_the_hook_retries_a_lost_save_with_match_and_it_lands_once(faulty_site, monkeypatch):
    import json as json_module

    from civicrm_hooks.hook import CiviCRMHook

    group = faulty_site.create("Group", {"name": faulty_site.unique("hk_"), "title": faulty_site.unique("Hook ")})
    contact = faulty_site.contact(first_name="Hooked")["id"]
    base = faulty_site.template.split("/civicrm/")[0].split("/?")[0]
    monkeypatch.setenv("AIRFLOW_CONN_CONTRACT_FAULTS", json_module.dumps({
        "conn_type": "http", "host": base, "password": faulty_site.api_key,
        "extra": {"api4_url": faulty_site.template, **({"site_key": faulty_site.site_key}
                                                       if faulty_site.site_key else {})}}))
    hook = CiviCRMHook("contract_faults", timeout=30, backoff=0)
    faulty_site.inject(entity="GroupContact", action="save", status=None, lose_answer=True)
    hook.call("GroupContact", "save", {"records": [{"contact_id": contact, "group_id": group["id"],
                                                    "status": "Added"}], "match": ["contact_id", "group_id"]})
    assert _members(faulty_site, group["id"]) == [(contact, "Added")]
    hook.close()


# ----------------------------------------------------------------------------- behaviours seen on 5.76


def test_groups_and_tags_filter_but_are_not_returned_when_selected(civicrm_site):
    group = civicrm_site.create("Group", {"name": civicrm_site.unique("sel_"), "title": civicrm_site.unique("Sel ")})
    contact = civicrm_site.contact(first_name="Selected")["id"]
    civicrm_site.create("GroupContact", {"group_id": group["id"], "contact_id": contact, "status": "Added"})
    rows = civicrm_site.values("Contact", "get", {"select": ["id", "groups", "tags"],
                                                  "where": [["groups", "IN", [group["id"]]]]})
    assert rows == [{"id": contact}]


def test_activity_targets_are_null_in_the_create_answer(civicrm_site):
    me = civicrm_site.me
    target = civicrm_site.contact(first_name="Targeted")["id"]
    made = civicrm_site.create("Activity", {"activity_type_id:name": "Meeting", "subject": civicrm_site.unique("T "),
                                            "source_contact_id": me, "target_contact_id": [target]})
    assert made["target_contact_id"] is None  # read them through ActivityContact, as the pipeline does
    (read,) = civicrm_site.values("Activity", "get", {"select": ["target_contact_id"],
                                                      "where": [["id", "=", made["id"]]]})
    assert read["target_contact_id"] == [str(target)]  # strings, on 5.76


def test_an_unknown_contact_type_is_accepted(civicrm_site):
    odd = civicrm_site.contact(contact_type="Spaceship", first_name="Odd")
    assert odd["contact_type"] == "Spaceship"
