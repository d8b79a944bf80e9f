"""The nightly DAG against a real CiviCRM 5.76 and the real WordPress it lives in (dag.test).

Most of our users run exactly this pair. The pipeline's API user holds the permissions the
README lists, no more; the test seeds its data with the site admin's key (the API user may not
add contacts, and should not). Each test starts from the freshly installed site.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import requests
import yaml

from sandbox import local_airflow
from tests.dags.conftest import BASE_SETTINGS

pytestmark = [pytest.mark.slow, pytest.mark.real_civicrm]


@dataclass
class Pair:
    site: object  # sandbox.real_civicrm.RealCiviCRM
    ids: dict[str, int]

    def api(self, entity: str, action: str, params: dict, *, admin: bool = True) -> list[dict]:
        key = self.site.admin_api_key if admin else self.site.api_key
        answer = requests.post(self.site.api4_url.replace("{entity}", entity).replace("{action}", action),
                               data={"params": json.dumps(params)}, timeout=60,
                               headers={"X-Civi-Auth": f"Bearer {key}", "X-Requested-With": "XMLHttpRequest"})
        assert answer.status_code == 200, (entity, action, answer.status_code, answer.text[:300])
        return answer.json()["values"]

    def wp(self, method: str, route: str, **kwargs):
        admin = self.site.state["admin"]
        answer = requests.request(method, f"{self.site.base_url}/?rest_route={route}", timeout=60,
                                  auth=(admin["login"], admin["app_password"]), **kwargs)
        assert answer.status_code in (200, 201), (route, answer.status_code, answer.text[:300])
        return answer.json()

    def users(self) -> dict[str, dict]:
        return {u["email"].lower(): u for u in self.wp("GET", "/wp/v2/users", params={"context": "edit",
                                                                                    "per_page": 100})}

    def links(self) -> dict[int, dict]:
        return {r["contact_id"]: r for r in self.api("UFMatch", "get", {"select": ["contact_id", "uf_id", "uf_name"]})}

    def activities(self, contact_id: int) -> list[tuple[str, str]]:
        rows = self.api("ActivityContact", "get", {
            "select": ["activity_id", "activity_id.status_id:name", "activity_id.subject"],
            "where": [["contact_id", "=", contact_id], ["record_type_id:name", "=", "Activity Targets"],
                      ["activity_id.activity_type_id:name", "=", "User Account Creation"]],
            "orderBy": {"activity_id": "ASC"}})
        return [(r["activity_id.status_id:name"], r["activity_id.subject"]) for r in rows]

    def members(self, group: str) -> dict[int, str]:
        return {r["contact_id"]: r["status"] for r in self.api("GroupContact", "get", {
            "select": ["contact_id", "status"], "where": [["group_id", "=", self.ids[group]]]})}

    def tagged(self, tag: str) -> set[int]:
        return {r["entity_id"] for r in self.api("EntityTag", "get", {
            "select": ["entity_id"], "where": [["tag_id", "=", self.ids[tag]]]})}


def _seed(pair: Pair) -> None:
    """Groups (static, smart, history), tags, and one contact per situation."""
    ids = pair.ids
    for name, title in (("new_members", "New members"), ("has_login", "Has a website login")):
        ids[name] = pair.api("Group", "create", {"values": {"name": name, "title": title}})[0]["id"]
    search = pair.api("SavedSearch", "create", {"values": {
        "name": "volunteers_search", "label": "Volunteers", "api_entity": "Contact",
        "api_params": {"version": 4, "select": ["id"], "where": [["job_title", "=", "Volunteer"]]}}})[0]["id"]
    ids["volunteers_smart"] = pair.api("Group", "create", {"values": {
        "name": "volunteers_smart", "title": "Volunteers (smart)", "saved_search_id": search}})[0]["id"]
    for name, label in (("needs_login", "Needs login"), ("login_created", "Login created")):
        ids[name] = pair.api("Tag", "create", {"values": {"name": name, "label": label}})[0]["id"]
    people = {
        "ada": {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.org", "trigger": "group"},
        "grace": {"first_name": "Grace", "last_name": "Hopper", "email": "grace@example.org", "trigger": "tag"},
        "alan": {"first_name": "Alan", "last_name": "Turing", "email": "alan@example.org", "trigger": "smart",
                 "job_title": "Volunteer"},
        "jane": {"first_name": "Jane", "last_name": "Doe", "email": "Jane.Doe@Example.org", "trigger": "group"},
        "nora": {"first_name": "Nora", "last_name": "Noemail", "email": None, "trigger": "group"},
        "ivan": {"first_name": "Иван", "last_name": "Петров", "email": "ivan@example.org", "trigger": "group"},
    }
    for key, person in people.items():
        values = {k: v for k, v in person.items() if k not in ("email", "trigger")}
        contact = pair.api("Contact", "create", {"values": {"contact_type": "Individual", **values}})[0]["id"]
        ids[key] = contact
        if person["email"]:
            pair.api("Email", "create", {"values": {"contact_id": contact, "email": person["email"],
                                                    "is_primary": True}})
        if person["trigger"] == "group":
            pair.api("GroupContact", "create", {"values": {"contact_id": contact, "group_id": ids["new_members"],
                                                           "status": "Added"}})
        elif person["trigger"] == "tag":
            pair.api("EntityTag", "create", {"values": {"entity_table": "civicrm_contact", "entity_id": contact,
                                                        "tag_id": ids["needs_login"]}})
    # an account Jane already has on the site (another case of the same email). CiviCRM's own
    # user_register hook links a new WordPress user to the contact with its email at once, so on
    # this pair she is already linked when the run starts (the emulated pair shows linked_existing)
    pair.wp("POST", "/wp/v2/users", json={"username": "jane.doe", "email": "jane.doe@example.org",
                                          "password": "x-Unused-9f3b2a", "roles": ["subscriber"]})


@pytest.fixture
def pair(real_civicrm, airflow_db, monkeypatch, tmp_path):
    real_civicrm.reset()
    monkeypatch.setenv("AIRFLOW_CONN_CIVICRM_DEFAULT", real_civicrm.civicrm_connection())
    monkeypatch.setenv("AIRFLOW_CONN_CMS_DEFAULT", real_civicrm.wordpress_connection())
    settings = tmp_path / "cmsuser.yaml"
    settings.write_text(yaml.safe_dump(BASE_SETTINGS))
    monkeypatch.setenv("CMSUSER_SETTINGS", str(settings))
    made = Pair(real_civicrm, {})
    _seed(made)
    return made


def _run() -> tuple[str, dict[int, dict]]:
    run = local_airflow.load_dag().test()
    rows = local_airflow.xcom(run.run_id, "finalize", key="outcomes") or []
    return str(run.state), {row["contact_id"]: row for row in rows}


def test_the_nightly_run_on_a_real_civicrm_and_its_wordpress(pair):
    ids = pair.ids
    state, outcomes = _run()
    assert state.endswith("success")
    assert {k: outcomes[ids[k]]["outcome"] for k in ("ada", "grace", "alan", "jane", "nora", "ivan")} == {
        "ada": "created", "grace": "created", "alan": "created", "jane": "already_linked", "nora": "failed",
        "ivan": "created"}
    users, links = pair.users(), pair.links()
    for key, email, login in (("ada", "ada@example.org", "ada.lovelace"), ("grace", "grace@example.org",
                              "grace.hopper"), ("alan", "alan@example.org", "alan.turing"),
                              ("ivan", "ivan@example.org", "ivan.petrov")):
        assert users[email]["username"] == login and users[email]["roles"] == ["member"]
        assert links[ids[key]]["uf_id"] == users[email]["id"]  # UFMatch as CiviCRM itself shows it
    assert links[ids["jane"]]["uf_id"] == users["jane.doe@example.org"]["id"]
    assert users["jane.doe@example.org"]["roles"] == ["subscriber"]  # linked, left as it was
    assert [s for s, _ in pair.activities(ids["ada"])] == ["Completed"]
    assert pair.activities(ids["ada"])[0][1] == f"Created : ada.lovelace ({users['ada@example.org']['id']})"
    assert pair.activities(ids["nora"]) == [("Failed", "Failed to create User")]
    # history and clean-up: off the static group (kept as Removed) and the tag, into the history
    assert pair.members("new_members")[ids["ada"]] == "Removed"
    assert pair.members("new_members")[ids["nora"]] == "Added"
    assert ids["grace"] not in pair.tagged("needs_login") and ids["grace"] in pair.tagged("login_created")
    assert {ids[k] for k in ("ada", "grace", "alan", "jane", "ivan")} <= set(pair.members("has_login"))
    mails = {m["user_login"] for m in pair.site.mails()}
    assert mails == {"ada.lovelace", "grace.hopper", "alan.turing", "ivan.petrov"}  # one each, from WordPress

    before = len(users)
    state, again = _run()
    assert state.endswith("success")
    assert len(pair.users()) == before  # the second run creates nothing
    assert set(again) == {ids["nora"]} and again[ids["nora"]]["attempt"] == 2
    assert len(pair.site.mails()) == 4


def test_the_fourth_failure_takes_the_contact_off_its_triggers(pair):
    nora = pair.ids["nora"]
    for attempt in (1, 2, 3, 4):
        _, outcomes = _run()
        assert (outcomes[nora]["outcome"], outcomes[nora]["attempt"]) == ("failed", attempt)
    assert pair.members("new_members")[nora] == "Removed"
    assert [s for s, _ in pair.activities(nora)] == ["Failed"] * 4 + ["Cancelled"]
    _, outcomes = _run()
    assert nora not in outcomes


def test_password_resets_on_a_real_civicrm(pair, tmp_path, monkeypatch):
    ids = pair.ids
    ids["password_reset"] = pair.api("Group", "create", {"values": {"name": "password_reset",
                                                                    "title": "Reset website password"}})[0]["id"]
    ids["reset_password"] = pair.api("Tag", "create", {"values": {"name": "reset_password",
                                                                  "label": "Reset website password"}})[0]["id"]
    pair.api("GroupContact", "create", {"values": {"contact_id": ids["jane"], "group_id": ids["password_reset"],
                                                   "status": "Added"}})
    pair.api("EntityTag", "create", {"values": {"entity_table": "civicrm_contact", "entity_id": ids["nora"],
                                                "tag_id": ids["reset_password"]}})
    settings = tmp_path / "resets.yaml"
    settings.write_text(yaml.safe_dump({**BASE_SETTINGS, "reset_groups": ["password_reset"],
                                        "reset_tags": ["Reset website password"]}))
    monkeypatch.setenv("CMSUSER_SETTINGS", str(settings))

    run = local_airflow.load_dag().test()
    assert str(run.state).endswith("success")
    resets = {r["contact_id"]: r for r in local_airflow.xcom(run.run_id, "password_resets", key="resets")}
    jane_uid = pair.users()["jane.doe@example.org"]["id"]
    assert {cid: (r["outcome"], r["uf_id"]) for cid, r in resets.items()} == {
        ids["jane"]: ("reset_sent", jane_uid), ids["nora"]: ("reset_failed", None)}
    assert [m["user_login"] for m in pair.site.mails()].count("jane.doe") == 1  # WordPress's own reset mail
    rows = pair.api("ActivityContact", "get", {
        "select": ["contact_id", "activity_id.status_id:name", "activity_id.subject"],
        "where": [["contact_id", "IN", [ids["jane"], ids["nora"]]], ["record_type_id:name", "=", "Activity Targets"],
                  ["activity_id.activity_type_id:name", "=", "User Account Password Reset"]]})
    assert sorted((r["contact_id"], r["activity_id.status_id:name"], r["activity_id.subject"]) for r in rows) == sorted([
        (ids["jane"], "Completed", f"Password Reset email send to uid : ({jane_uid})"),
        (ids["nora"], "Failed", "Failed to send Password reset email")])
    assert pair.members("password_reset") == {ids["jane"]: "Removed"}
    assert ids["nora"] not in pair.tagged("reset_password")
    # a reset is not an account-creation attempt: Nora's creation attempts count on as before
    assert [s for s, _ in pair.activities(ids["nora"])] == ["Failed"]
