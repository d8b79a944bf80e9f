"""The approval gate task (the standard provider's ApprovalOperator) and finalize after a rejection,
run in-process with a hand-made task context: what it asks, when it parks, what each answer does."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from types import SimpleNamespace

import pendulum
import pytest

from provisioning import report
from provisioning.settings import Settings

DAG_ID = "cmsuser_nightly"
RUN_ID = "manual__2026-03-02T02:00:00+00:00"


def plan_row(contact_id: int, action: str, outcome: str, username: str, reason: str = "new account") -> dict:
    return {"contact_id": contact_id, "action": action, "outcome": outcome, "reason": reason, "uf_id": None,
            "username": username, "email": f"private{contact_id}@example.org", "display_name": f"Private {contact_id}"}


PLAN = [plan_row(1, "create", "created", "ada.lovelace"), plan_row(2, "create", "created", "alan.turing"),
        plan_row(3, "create", "created", "grace.hopper"), plan_row(4, "none", "failed", "", "no primary email")]


class FakeTI:
    def __init__(self, xcoms: dict):
        self.xcoms, self.pushed = xcoms, {}
        self.id, self.map_index, self.task_id = uuid.uuid4(), -1, "approval"

    def xcom_pull(self, task_ids, key="return_value", **_):
        return self.xcoms.get((task_ids, key))

    def xcom_push(self, key, value):
        self.pushed[key] = value


def snapshot(**settings) -> dict:
    return {"settings": Settings(trigger_groups=["new_members"], **settings).model_dump(mode="json"),
            "cms_type": "wordpress", "triggers": {}}


@pytest.fixture(autouse=True)
def run_files_home(tmp_path, monkeypatch):
    """The runs' files go under a fresh $AIRFLOW_HOME."""
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))


def plan_file(**settings) -> dict:
    """PLAN written as the plan task writes it; returns the reference its XCom carries."""
    from pipeline.run_files import RunFiles

    return RunFiles(Settings(trigger_groups=["new_members"], **settings), DAG_ID, RUN_ID).write("plan", PLAN)


@pytest.fixture
def gate_in_dag():
    """The gate wired as the nightly DAG wires it: plan >> approval >> create_accounts >> finalize."""
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    from pipeline import tasks

    settings = Settings(trigger_groups=["new_members"], approval_timeout_minutes=45)
    ids = tasks.wiring(preflight="preflight", plan="plan", create="create_accounts", approval="approval")
    with DAG("gate_test", schedule=None, start_date=pendulum.datetime(2026, 1, 1)):
        plan = EmptyOperator(task_id="plan")
        gate = tasks.approval_gate(settings, task_id="approval", wiring=ids)
        create_accounts = EmptyOperator(task_id="create_accounts")
        finalize = EmptyOperator(task_id="finalize", trigger_rule="all_done")
        plan >> gate >> create_accounts >> finalize
    return gate


PLAN_COUNTS = {"create": 3, "link": 0}  # what the plan task pushes with PLAN


def context_for(gate, *, dry_run=False, counts=PLAN_COUNTS, **settings) -> dict:
    ti = FakeTI({("preflight", "return_value"): snapshot(**settings), ("plan", "plan"): plan_file(**settings),
                 ("plan", "counts"): counts})
    return {"ti": ti, "task_instance": ti, "params": {"dry_run": dry_run}, "dag": SimpleNamespace(dag_id=DAG_ID),
            "run_id": RUN_ID, "task": gate}


@pytest.fixture
def requests_written(monkeypatch):
    """What the gate writes as its human-in-the-loop request (instead of the Execution API)."""
    from airflow.providers.standard.operators import hitl

    written = []
    monkeypatch.setattr(hitl, "upsert_hitl_detail", lambda **request: written.append(request))
    return written


@pytest.mark.parametrize(("settings", "dry_run"), [({}, False), ({"approval_threshold": 3}, False),
                                                  ({"approval_threshold": 0}, True)])
def test_under_the_threshold_or_in_a_dry_run_it_goes_on_at_once(gate_in_dag, requests_written, settings, dry_run,
                                                                caplog):
    caplog.set_level(logging.INFO)
    context = context_for(gate_in_dag, dry_run=dry_run, **settings)
    result = gate_in_dag.execute(context)
    assert result["decision"] == "not_needed" and result["to_create"] == 3
    assert context["ti"].pushed["decision"] == result
    assert requests_written == []  # nobody is asked, nothing waits
    assert any(r.getMessage().startswith("approval: ") for r in caplog.records)


@pytest.mark.parametrize(("settings", "dry_run"), [({}, False), ({"approval_threshold": 3}, False),
                                                  ({"approval_threshold": 0}, True)])
def test_it_decides_on_the_plans_counts_and_reads_the_plan_only_to_ask(gate_in_dag, requests_written, settings,
                                                                       dry_run):
    from airflow.sdk import ObjectStoragePath

    from pipeline.run_files import RunFilesError

    context = context_for(gate_in_dag, dry_run=dry_run, **settings)
    ObjectStoragePath(context["ti"].xcoms[("plan", "plan")]["run_file"]).unlink()  # reading the plan now fails
    assert gate_in_dag.execute(context)["decision"] == "not_needed"
    asking = context_for(gate_in_dag, approval_threshold=2)
    ObjectStoragePath(asking["ti"].xcoms[("plan", "plan")]["run_file"]).unlink()
    with pytest.raises(RunFilesError):  # the screen shows a sample of the plan: asking reads it
        gate_in_dag.execute(asking)
    assert requests_written == []


def test_a_plan_without_counts_is_read_for_them(gate_in_dag, requests_written):
    from airflow.sdk.exceptions import TaskAwaitingInput

    # a run planned before the plan task pushed its counts, its approval cleared after an upgrade
    result = gate_in_dag.execute(context_for(gate_in_dag, counts=None, approval_threshold=3))
    assert result["decision"] == "not_needed" and result["to_create"] == 3
    with pytest.raises(TaskAwaitingInput):
        gate_in_dag.execute(context_for(gate_in_dag, counts=None, approval_threshold=2))
    assert "**3 new WordPress accounts**" in requests_written[0]["body"]


def test_over_the_threshold_it_asks_and_parks_until_answered(gate_in_dag, requests_written):
    from airflow.sdk.exceptions import TaskAwaitingInput

    context = context_for(gate_in_dag, approval_threshold=2, approval_users=["admin", "7"],
                          approval_timeout_minutes=90)
    with pytest.raises(TaskAwaitingInput) as parked:
        gate_in_dag.execute(context)
    assert parked.value.timeout == timedelta(minutes=90)  # the run snapshot's timeout, not the parse-time one
    (request,) = requests_written
    assert request["options"] == ["Approve", "Reject"] and request["defaults"] == ["Reject"]
    assert request["multiple"] is False
    assert request["assigned_users"] == [{"id": "admin", "name": "admin"}, {"id": "7", "name": "7"}]
    assert request["subject"] == f"{DAG_ID}: approve creating 3 CMS accounts?"
    assert "**3 new WordPress accounts**" in request["body"]
    assert report.summary_table(report.planned_outcomes(
        __import__("pandas").DataFrame(PLAN), dry_run=True)) in request["body"]
    assert "ada.lovelace" in request["body"]
    assert "private1@example.org" not in request["body"] and "Private 1" not in request["body"]


def test_without_approval_users_anyone_allowed_may_answer(gate_in_dag, requests_written):
    from airflow.sdk.exceptions import TaskAwaitingInput

    with pytest.raises(TaskAwaitingInput):
        gate_in_dag.execute(context_for(gate_in_dag, approval_threshold=0))
    assert requests_written[0]["assigned_users"] is None


def answer(option: str, *, by: str | None = "admin", timedout: bool = False) -> dict:
    return {"chosen_options": [option], "params_input": {}, "responded_at": pendulum.now("UTC"),
            "responded_by_user": {"id": by, "name": by} if by else None, "timedout": timedout}


def test_approve_lets_the_creates_run(gate_in_dag, caplog):
    caplog.set_level(logging.INFO)
    context = context_for(gate_in_dag, approval_threshold=2)
    result = gate_in_dag.execute_complete(context, answer("Approve"))
    assert context["ti"].pushed["decision"] == result
    assert result == {"decision": "approved", "by": "admin", "to_create": 3, "to_link": 0, "threshold": 2,
                      "timeout_minutes": 720}
    assert "approval: APPROVED by admin; creating 3 new accounts as planned" in caplog.messages


@pytest.mark.parametrize(("event", "decision"), [(answer("Reject", by="ops"), "rejected"),
                                                 (answer("Reject", by=None, timedout=True), "timed_out")])
def test_reject_or_no_answer_skips_the_create_task_only(gate_in_dag, event, decision, caplog):
    from airflow.sdk.exceptions import DownstreamTasksSkipped

    context = context_for(gate_in_dag, approval_threshold=2)
    with pytest.raises(DownstreamTasksSkipped) as skipped:
        gate_in_dag.execute_complete(context, event)
    assert list(skipped.value.tasks) == ["create_accounts"]  # finalize (all_done) still runs
    recorded = context["ti"].pushed["decision"]  # kept before the task ends by skipping (no return value then)
    assert (recorded["decision"], recorded["by"]) == (decision, "ops" if decision == "rejected" else None)
    assert any(r.getMessage().startswith(f"approval: {decision.upper().replace('_', ' ')}") for r in caplog.records)


def test_finalize_after_a_rejection_writes_nothing_and_does_not_fail(monkeypatch, caplog):
    from pipeline import tasks

    caplog.set_level(logging.INFO)
    gate = {"decision": "rejected", "by": "ops", "to_create": 3, "to_link": 0, "threshold": 2,
            "timeout_minutes": 720}
    ti = FakeTI({("preflight", "return_value"): snapshot(approval_threshold=2, keep_run_files_hours=1),
                 ("plan", "plan"): plan_file(),
                 ("plan", "return_value"): [{"index": 0, "label": "contacts 1-3 (3)", "rows": None}],
                 ("approval", "decision"): gate})
    monkeypatch.setattr(tasks, "get_current_context", lambda: {"ti": ti, "dag": SimpleNamespace(dag_id=DAG_ID),
                                                                "run_id": RUN_ID})

    def no_civicrm(*args, **kwargs):
        raise AssertionError("a rejected run must not touch CiviCRM")

    monkeypatch.setattr(tasks, "CiviCRMHook", no_civicrm)
    ids = tasks.wiring(preflight="preflight", plan="plan", create="create_accounts", approval="approval")
    counts = tasks.finalize.function(ids, params={"dry_run": False})
    assert counts == {"contacts": 4, "approval_rejected": 4, "approval": "rejected"}
    from pipeline import run_files

    outcomes = run_files.read(ti.pushed["outcomes"])
    assert [(row["contact_id"], row["outcome"], row["attempt"]) for row in outcomes] == [
        (cid, "approval_rejected", None) for cid in (1, 2, 3, 4)]
    assert "contact=1 outcome=approval_rejected" in [
        line for message in caplog.messages for line in message.splitlines()]  # one line per contact
    assert any(m.startswith("approval: REJECTED by ops; none of the 3 planned accounts is created") and
               "Wrote nothing to CiviCRM" in m for m in caplog.messages)
