"""The approval gate with dag.test() against the emulators.

Under the threshold, or in a dry run, a run goes straight through. Over it, dag.test() waits: in
Airflow 3.3 it never answers a human-in-the-loop request itself, it keeps the run alive until an
answer arrives through the REST API of an api-server on the same metadata database. Here that
api-server is Airflow's own FastAPI app, in-process (the real api-server: test_real_airflow_approval.py).
"""

from __future__ import annotations

import threading
import time

import pytest

from sandbox import local_airflow

pytestmark = pytest.mark.slow

PLANNED_CREATES = {2, 3, 4, 5, 11, 16}  # the demo seed's new accounts (test_nightly.py)


def decision(run_id: str, dag_id: str = "cmsuser_nightly") -> dict:
    return local_airflow.xcom(run_id, "approval", key="decision", dag_id=dag_id)


def test_under_the_threshold_the_run_does_not_wait(sandbox):
    sandbox.configure(approval_threshold=len(PLANNED_CREATES))  # not more than the threshold
    run, outcomes = sandbox.run()
    assert str(run.state).endswith("success")
    assert {cid for cid, row in outcomes.items() if row["outcome"] == "created"} == PLANNED_CREATES
    assert decision(run.run_id) == {"decision": "not_needed", "by": None, "to_create": len(PLANNED_CREATES),
                                    "to_link": 1, "threshold": len(PLANNED_CREATES), "timeout_minutes": None}


def test_a_dry_run_never_waits(sandbox):
    sandbox.configure(approval_threshold=0)
    run, outcomes = sandbox.run({"dry_run": True})
    assert str(run.state).endswith("success")
    assert decision(run.run_id)["decision"] == "not_needed"
    assert {row["outcome"] for row in outcomes.values()} >= {"would create"}


@pytest.fixture
def api(monkeypatch):
    """Airflow's REST API app on this session's metadata database; every request is an admin's."""
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "approval-test-" * 6)  # 84 bytes: no short-key warning
    with TestClient(create_app("core")) as client:
        yield client


def answer_when_asked(api, sandbox, option: str, seen: dict, dag_id: str = "cmsuser_nightly") -> None:
    """The operator (a thread: dag.test must run in the main thread): wait for the request, look, answer."""
    deadline = time.monotonic() + 120
    run_id = None
    try:
        while time.monotonic() < deadline:
            answer = api.get(f"/api/v2/dags/{dag_id}/dagRuns/~/hitlDetails",
                             params={"response_received": "false"})
            pending = answer.json()["hitl_details"] if answer.status_code == 200 else []
            if pending:
                (seen["request"],) = pending
                run_id = seen["request"]["task_instance"]["dag_run_id"]
                time.sleep(2)  # the run keeps waiting meanwhile; nothing is created
                seen["accounts_while_waiting"] = len(sandbox.wordpress.users)
                return
            time.sleep(0.5)
    finally:
        if run_id is not None:  # always answer once asked, or dag.test would wait for ever
            seen["answer"] = api.patch(
                f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/approval/-1/hitlDetails",
                json={"chosen_options": [option]})


@pytest.mark.parametrize("option", ["Reject", "Approve"])
def test_over_the_threshold_dag_test_waits_for_an_answer_through_the_rest_api(sandbox, api, option):
    sandbox.configure(approval_threshold=2)
    accounts_before = len(sandbox.wordpress.users)
    civicrm_before = {entity: len(sandbox.civicrm.table(entity)) for entity in ("Activity", "UFMatch", "EntityTag")}
    members_before = sandbox.membership(5)  # the static trigger group
    seen: dict = {}
    operator = threading.Thread(target=answer_when_asked, args=(api, sandbox, option, seen), daemon=True)
    operator.start()
    run, outcomes = sandbox.run()  # returns only once the operator has answered
    operator.join(timeout=10)
    request = seen["request"]
    assert request["task_instance"]["task_id"] == "approval"
    assert request["subject"] == f"cmsuser_nightly: approve creating {len(PLANNED_CREATES)} CMS accounts?"
    assert seen["accounts_while_waiting"] == accounts_before  # it waited: nothing created before the answer
    assert seen["answer"].status_code == 200, seen["answer"].text
    assert str(run.state).endswith("success")
    run_id = run.run_id
    if option == "Reject":
        assert decision(run_id)["decision"] == "rejected"
        assert {row["outcome"] for row in outcomes.values()} == {"approval_rejected"}
        assert len(sandbox.wordpress.users) == accounts_before
        assert {entity: len(sandbox.civicrm.table(entity)) for entity in civicrm_before} == civicrm_before
        assert sandbox.membership(5) == members_before  # nobody taken off: the next run asks again
    else:
        assert decision(run_id)["decision"] == "approved"
        assert {cid for cid, row in outcomes.items() if row["outcome"] == "created"} == PLANNED_CREATES
        assert len(sandbox.wordpress.users) == accounts_before + len(PLANNED_CREATES)


def test_the_realtime_dag_waits_for_the_same_threshold(sandbox, api):
    """A bulk import into a trigger group is not created within the minute: it waits like the nightly run."""
    sandbox.configure(approval_threshold=2)
    accounts_before = len(sandbox.wordpress.users)
    seen: dict = {}
    operator = threading.Thread(target=answer_when_asked, args=(api, sandbox, "Reject", seen, "cmsuser_realtime"),
                                daemon=True)
    operator.start()
    run, outcomes = sandbox.run({"contact_ids": sorted(PLANNED_CREATES)}, dag_id="cmsuser_realtime")
    operator.join(timeout=10)
    assert seen["request"]["subject"] == f"cmsuser_realtime: approve creating {len(PLANNED_CREATES)} CMS accounts?"
    assert seen["accounts_while_waiting"] == accounts_before
    assert str(run.state).endswith("success")
    assert decision(run.run_id, "cmsuser_realtime")["decision"] == "rejected"
    assert {cid: row["outcome"] for cid, row in outcomes.items()} == dict.fromkeys(PLANNED_CREATES,
                                                                                   "approval_rejected")
    assert len(sandbox.wordpress.users) == accounts_before

