"""The near-real-time DAG (`cmsuser_realtime`) on Airflow's real components with a triggerer (PostgreSQL,
LocalExecutor), against the CiviCRM and WordPress emulators seeded with the demo data.

Both DAG files are in the DAGs folder; only `cmsuser_realtime` is unpaused. What only the real stack shows:
the asset watcher polls CiviCRM in the triggerer, its events become runs without anyone triggering them,
and runs posted over REST with a chosen id and `conf.contact_ids` are handled (and not twice). The demo's
own trigger members joined before the watcher started: no run ever handles them unless told.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
import yaml

from bench.realtime_latency import CiviCRMApi
from sandbox.civicrm import CiviCRMEmulator
from sandbox.real_airflow import RealAirflow, postgres_available
from sandbox.sites import demo_seed, started_sites
from sandbox.wordpress import WordPressEmulator
from tests.conftest import need_services
from tests.dags.conftest import BASE_SETTINGS

pytestmark = [pytest.mark.real_airflow, pytest.mark.slow]

DAG_ID = "cmsuser_realtime"
DATABASE = "cmsuser_airflow_realtime_test"
WATCHING = "watching from SubscriptionHistory id"  # the watcher's log line once its cursor is set
PICKED_UP = 90  # seconds: a functional bound for one join to be handled, not a speed goal
DEMO = demo_seed()
NEW_MEMBERS, NEEDS_LOGIN = 5, 3  # the demo's static trigger group and trigger tag
ADA, ZOE, TRASHED = 2, 5, 15  # demo contacts: Ada and Zoë in the trigger group, no account; 15 in the trash


@dataclass
class Stack:
    civicrm: CiviCRMEmulator
    wordpress: WordPressEmulator
    airflow: RealAirflow
    api: CiviCRMApi

    def accounts(self, email: str) -> list[dict]:
        return [u for u in self.wordpress.users if (u.get("email") or "").lower() == email.lower()]

    def runs(self) -> dict[str, dict]:
        return {run["dag_run_id"]: run for run in self.airflow.runs(DAG_ID)}

    def handled(self, contact_id: int, before: set[str], timeout: float = PICKED_UP) -> tuple[dict, list[dict]]:
        """Wait until a run started after `before` (the run ids then) has finished and reported this contact;
        returns (its outcome row, every new run, all finished)."""
        deadline = time.monotonic() + timeout
        while True:
            new = [run for run_id, run in self.runs().items() if run_id not in before]
            if new and all(run["state"] in ("success", "failed") for run in new):
                for run in new:
                    for row in self.airflow.xcom(DAG_ID, run["dag_run_id"], "finalize", key="outcomes") or []:
                        if row["contact_id"] == contact_id:
                            return row, new
            if time.monotonic() > deadline:
                self.airflow.print_component_logs()
                raise AssertionError(f"contact {contact_id} not handled within {timeout:.0f}s; runs since: "
                                     f"{[(r['dag_run_id'], r['state']) for r in new]}")
            time.sleep(1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    need_services("real-Airflow", postgres_available())
    started = time.monotonic()
    home = tmp_path_factory.mktemp("real_airflow_realtime")
    settings_file = home / "cmsuser.yaml"
    settings_file.write_text(yaml.safe_dump({**BASE_SETTINGS, "retry_delay_seconds": 1, "watch_interval_seconds": 2}))
    with started_sites(DEMO) as sites:
        env = {**sites.connection_env, "CMSUSER_SETTINGS": str(settings_file)}
        # the nightly DAG is parsed too but stays paused: only the watcher's and the posted runs happen
        airflow = RealAirflow(env, home=home / "airflow_home", parallelism=2, database=DATABASE,
                              dag_ids=(DAG_ID,), triggerer=True)
        airflow.start()
        try:
            watcher = airflow.wait_for_log("triggerer", WATCHING, timeout=120)
            print(f"watcher polling {watcher:.1f}s after the DAG was unpaused", flush=True)
            api = CiviCRMApi(sites.civicrm.endpoint_template, sites.secrets["api_key"], sites.secrets["site_key"])
            yield Stack(sites.civicrm, sites.cms, airflow, api)
        finally:
            airflow.stop()
            print(f"\nreal-Airflow realtime tier: startup {airflow.startup_seconds:.1f}s, "
                  f"wall time {time.monotonic() - started:.1f}s", flush=True)


def _created(stack: Stack, contact_id: int, email: str, row: dict) -> None:
    """One account with the email, the UFMatch link to it, one Completed activity, outcome created."""
    assert row["outcome"] == "created", row
    (account,) = stack.accounts(email)
    assert stack.api.link(contact_id)["uf_id"] == account["id"] == row["uf_id"]
    assert stack.api.activities(contact_id) == ["Completed"]


def test_a_join_to_the_trigger_group_gets_an_account_with_no_run_triggered_by_hand(stack):
    before = set(stack.runs())
    contact_id = stack.api.contact("Rita", "Realtime", "rita.realtime@example.org")
    stack.api.join(contact_id, NEW_MEMBERS)
    joined = time.monotonic()
    row, runs = stack.handled(contact_id, before)
    print(f"joined to handled: {time.monotonic() - joined:.1f}s", flush=True)
    _created(stack, contact_id, "rita.realtime@example.org", row)
    assert {run["run_type"] for run in runs} == {"asset_triggered"}
    assert {run["state"] for run in runs} == {"success"}
    # only who the events named: none of the demo's waiting trigger members was touched
    outcomes = [r for run in runs for r in stack.airflow.xcom(DAG_ID, run["dag_run_id"], "finalize",
                                                              key="outcomes") or []]
    assert [r["contact_id"] for r in outcomes] == [contact_id]
    assert stack.api.activities(ADA) == [] and stack.api.link(ADA) is None


def test_a_member_removed_and_added_again_is_picked_up(stack):
    # Ada joined before the watcher started, so nothing took her; leaving and rejoining is a new join
    before = set(stack.runs())
    stack.api.join(ADA, NEW_MEMBERS, "Removed")
    stack.api.join(ADA, NEW_MEMBERS, "Added")
    row, runs = stack.handled(ADA, before)
    _created(stack, ADA, "ada@example.org", row)
    assert {run["run_type"] for run in runs} == {"asset_triggered"}


def test_a_contact_given_the_trigger_tag_is_picked_up(stack):
    before = set(stack.runs())
    contact_id = stack.api.contact("Tom", "Tagged", "tom.tagged@example.org")
    stack.api.tag(contact_id, NEEDS_LOGIN)
    row, runs = stack.handled(contact_id, before)
    _created(stack, contact_id, "tom.tagged@example.org", row)
    assert {run["run_type"] for run in runs} == {"asset_triggered"}


def test_a_run_posted_over_rest_handles_only_triggered_ids_and_its_id_only_once(stack):
    airflow = stack.airflow
    outsider = stack.api.contact("Olly", "Outside", "olly.outside@example.org")  # in no trigger: no event
    run_id = "crm-push-0001"
    status, body = airflow.post_run(DAG_ID, run_id, {"contact_ids": [ZOE, outsider, 999999]})
    assert status in (200, 201), (status, body)
    assert airflow.wait(DAG_ID, run_id, timeout=PICKED_UP) == "success"
    rows = {r["contact_id"]: r for r in airflow.xcom(DAG_ID, run_id, "finalize", key="outcomes")}
    assert set(rows) == {ZOE, outsider, 999999}
    _created(stack, ZOE, "zoe@example.org", rows[ZOE])
    assert rows[outsider]["outcome"] == rows[999999]["outcome"] == "not_triggered"
    assert rows[outsider]["reason"] != rows[999999]["reason"], rows
    assert stack.api.activities(outsider) == [] and stack.api.link(outsider) is None
    assert not stack.accounts("olly.outside@example.org")

    runs_before, accounts_before = stack.runs(), len(stack.wordpress.users)
    status, body = airflow.post_run(DAG_ID, run_id, {"contact_ids": [outsider]})
    assert status == 409, (status, body)
    time.sleep(3)  # long enough for a wrongly started run to show up in the list
    runs_after = stack.runs()
    assert set(runs_after) == set(runs_before)
    assert runs_after[run_id]["conf"] == {"contact_ids": [ZOE, outsider, 999999]}
    assert len(stack.wordpress.users) == accounts_before


def test_a_contact_tried_since_its_last_give_up_is_left_to_the_nightly_run(stack):
    contact_id = stack.api.contact("Fay", "Failed", "fay.failed@example.org")
    # an earlier (nightly) attempt that failed, no give-up since; its type and status as preflight makes them
    stack.api("OptionValue", "save", {"records": [
        {"option_group_id:name": group, "name": name, "label": name, "is_active": True}
        for group, name in (("activity_type", "User Account Creation"), ("activity_status", "Failed"))],
        "match": ["option_group_id", "name"]})
    stack.api("Activity", "create", {"values": {
        "activity_type_id:name": "User Account Creation", "status_id:name": "Failed",
        "subject": "Failed to create User", "source_contact_id": 1, "target_contact_id": [contact_id]}})
    before = set(stack.runs())
    stack.api.join(contact_id, NEW_MEMBERS)
    row, runs = stack.handled(contact_id, before)
    assert row["outcome"] == "left_to_nightly", row
    assert {run["state"] for run in runs} == {"success"}
    assert stack.api.activities(contact_id) == ["Failed"]  # no new activity
    assert not stack.accounts("fay.failed@example.org") and stack.api.link(contact_id) is None
