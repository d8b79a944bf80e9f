"""The approval gate through Airflow's real scheduler, api-server and dag-processor (PostgreSQL),
answered over the public REST API as an operator would (`PATCH .../hitlDetails`).

The demo seed plans 6 new accounts; approval_threshold is 2, so every run waits. Three runs, in
order (nothing of the first two is written, so each finds the same contacts):
1. only `ops` may answer: admin's answer is refused (403); nobody answers, the request times out
   (1 minute) and Airflow takes the default, Reject;
2. admin rejects;
3. admin approves, and the accounts are created.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

import pytest
import yaml

from sandbox.civicrm import CiviCRMEmulator
from sandbox.real_airflow import DAG_ID, RealAirflow, postgres_available
from sandbox.sites import demo_seed, started_sites
from sandbox.wordpress import WordPressEmulator
from tests.conftest import need_services
from tests.dags.conftest import BASE_SETTINGS
from tests.dags.test_real_airflow import triggered_contacts

pytestmark = [pytest.mark.real_airflow, pytest.mark.slow]

GATE, CREATE = "approval", "create_accounts"
DATABASE = "cmsuser_airflow_approval_test"
DEMO = demo_seed()
PLANNED_CREATES = {2, 3, 4, 5, 11, 16}  # the demo seed's new accounts (tests/dags/test_nightly.py)


@dataclass
class Stack:
    civicrm: CiviCRMEmulator
    wordpress: WordPressEmulator
    airflow: RealAirflow
    settings_file: object

    def configure(self, **approval) -> None:
        """The settings every run reads in its preflight: the demo's, with an approval section."""
        self.settings_file.write_text(yaml.safe_dump(
            {**BASE_SETTINGS, "retry_delay_seconds": 1, "approval": {"approval_threshold": 2, **approval}}))

    def written(self) -> tuple[int, int, int]:
        """What a run may have written: CMS accounts, CiviCRM activities, UFMatch rows."""
        return (len(self.wordpress.users), len(self.civicrm.table("Activity")), len(self.civicrm.table("UFMatch")))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    need_services("real-Airflow", postgres_available())
    started = time.monotonic()
    home = tmp_path_factory.mktemp("real_airflow_approval")
    settings_file = home / "cmsuser.yaml"
    with started_sites(DEMO) as sites:
        env = {**sites.connection_env, "CMSUSER_SETTINGS": str(settings_file)}
        # its own metadata database: never the one tests/dags/test_real_airflow.py drops and recreates
        airflow = RealAirflow(env, home=home / "airflow_home", parallelism=2, database=DATABASE)
        box = Stack(sites.civicrm, sites.cms, airflow, settings_file)
        box.configure()
        airflow.start()
        try:
            yield box
        finally:
            airflow.stop()
            print(f"\nreal-Airflow approval tier: startup {airflow.startup_seconds:.1f}s, "
                  f"wall time {time.monotonic() - started:.1f}s", flush=True)


def _states(airflow, run_id) -> dict[str, set[str]]:
    states: dict[str, set[str]] = {}
    for ti in airflow.task_instances(DAG_ID, run_id):
        states.setdefault(ti["task_id"], set()).add(ti["state"])
    return states


def _check_the_request(request: dict, users: list[str]) -> None:
    """What the operator is shown: the counts, a sample of ids and logins, the default and who may answer."""
    assert request["subject"] == f"{DAG_ID}: approve creating {len(PLANNED_CREATES)} CMS accounts?"
    assert request["options"] == ["Approve", "Reject"] and request["defaults"] == ["Reject"]
    assert [user["id"] for user in request["assigned_users"]] == users
    body = request["body"]
    assert re.search(rf"^would create +{len(PLANNED_CREATES)}$", body, re.M), body
    assert "ada.lovelace" in body and "more than `approval_threshold` (2)" in body
    assert not re.search(r"[\w.+-]+@[\w-]+\.\w+", body)  # no email on the screen


def _rejected_run(stack, run_id: str, decision: str, by: str | None) -> None:
    """A rejected run: green, nothing created or written, every contact approval_rejected."""
    airflow = stack.airflow
    states = _states(airflow, run_id)
    assert states[GATE] == {"success"}
    assert states[CREATE] <= {"skipped"}, states  # Reject skips the creates (all their instances)
    assert states["finalize"] == {"success"}
    recorded = airflow.xcom(DAG_ID, run_id, GATE, key="decision")
    assert (recorded["decision"], recorded["by"], recorded["to_create"]) == (decision, by, len(PLANNED_CREATES))
    rows = airflow.xcom(DAG_ID, run_id, "finalize", key="outcomes")
    assert {row["contact_id"] for row in rows} == triggered_contacts(DEMO["civicrm"])
    assert {row["outcome"] for row in rows} == {"approval_rejected"}
    assert all(row["attempt"] is None for row in rows)
    log = airflow.logs(DAG_ID, run_id, "finalize", -1, 1)
    assert f"approval: {decision.upper().replace('_', ' ')}" in log
    assert "Wrote nothing to CiviCRM" in log
    assert len(re.findall(r"\bcontact=\d+ outcome=approval_rejected\b", log)) == len(rows)


def test_nobody_answers_in_time_so_the_default_rejects_and_only_assigned_users_may_answer(stack):
    airflow = stack.airflow
    stack.configure(approval_users=["ops"], approval_timeout_minutes=1)
    before = stack.written()
    run_id = airflow.trigger(DAG_ID)
    request = airflow.wait_for_input(DAG_ID, run_id, GATE)
    _check_the_request(request, ["ops"])
    status, answer = airflow.respond(DAG_ID, run_id, GATE, ["Approve"], accept_status=(403,))
    assert "is not a respondent" in json.dumps(answer)  # admin is not `ops`
    assert airflow.run_state(DAG_ID, run_id) == "running" and stack.written() == before
    assert airflow.wait(DAG_ID, run_id, timeout=240) == "success"  # 1 minute, then the scheduler's sweep
    (answered,) = airflow.hitl_details(DAG_ID, run_id, pending=False)
    assert answered["chosen_options"] == ["Reject"] and answered["responded_by_user"] is None
    _rejected_run(stack, run_id, "timed_out", None)
    assert stack.written() == before


def test_a_run_above_the_threshold_waits_and_reject_creates_nothing(stack):
    airflow = stack.airflow
    stack.configure(approval_users=["admin"])
    before = stack.written()
    run_id = airflow.trigger(DAG_ID)
    request = airflow.wait_for_input(DAG_ID, run_id, GATE)
    _check_the_request(request, ["admin"])
    # it keeps waiting (wait_for_input gave it a few seconds more): no batch starts, nothing is written
    assert airflow.run_state(DAG_ID, run_id) == "running"
    assert not {"queued", "running", "success", "failed"} & _states(airflow, run_id).get(CREATE, set())
    assert stack.written() == before
    airflow.respond(DAG_ID, run_id, GATE, ["Reject"])
    airflow.respond(DAG_ID, run_id, GATE, ["Approve"], accept_status=(409,))  # answered once, for good
    assert airflow.wait(DAG_ID, run_id, timeout=180) == "success"
    _rejected_run(stack, run_id, "rejected", "admin")
    assert stack.written() == before


def test_approving_through_the_rest_api_lets_the_run_create_the_accounts(stack):
    airflow, wordpress = stack.airflow, stack.wordpress
    stack.configure(approval_users=["admin"])
    accounts_before = len(wordpress.users)
    run_id = airflow.trigger(DAG_ID)
    airflow.wait_for_input(DAG_ID, run_id, GATE)
    assert len(wordpress.users) == accounts_before
    status, answer = airflow.respond(DAG_ID, run_id, GATE, ["Approve"])
    assert answer["chosen_options"] == ["Approve"] and answer["responded_by"]["id"] == "admin"
    assert airflow.wait(DAG_ID, run_id, timeout=240) == "success"
    states = _states(airflow, run_id)
    assert states[GATE] == {"success"} and states[CREATE] == {"success"} and states["finalize"] == {"success"}
    recorded = airflow.xcom(DAG_ID, run_id, GATE, key="decision")
    assert (recorded["decision"], recorded["by"]) == ("approved", "admin")
    outcomes = {row["contact_id"]: row for row in airflow.xcom(DAG_ID, run_id, "finalize", key="outcomes")}
    assert {cid for cid, row in outcomes.items() if row["outcome"] == "created"} == PLANNED_CREATES
    assert len(wordpress.users) == accounts_before + len(PLANNED_CREATES)
    assert "approval: APPROVED by admin" in airflow.logs(DAG_ID, run_id, GATE, -1, 1)
