"""The Airflow side of the steps: tasks with their retries, pools, timeouts and XComs.

A DAG file wires these with its own task ids; each task finds its upstream values either as
arguments (XComArgs) or, where upstream may have failed (finalize), through the ids the DAG file
hands it in `wiring`. Hooks are built here, from the run snapshot; the steps (steps.py) do the work.
Per-contact data (contacts, plan, batches, results, outcomes) goes to the run's files (run_files.py);
XComs carry references to them, labels and counts. No task logs its return value either.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections import Counter
from datetime import timedelta
from typing import TYPE_CHECKING

import pendulum
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import BaseHook, ExceptionRetryPolicy, RetryAction, RetryRule, get_current_context, task
from airflow.sdk.configuration import conf
from airflow.sdk.exceptions import AirflowFailException, AirflowTaskTimeout, DownstreamTasksSkipped

from civicrm_hooks import queries
from civicrm_hooks.hook import CiviCRMAuthError, CiviCRMHook
from cms_operators import registry
from cms_operators.backend import CmsAuthError, CmsConfigError
from lock_hooks.hook import CreationLockHook
from pipeline import sources, steps
from pipeline.run_files import RunFiles, RunFilesError
from provisioning.settings import Settings, load_settings
from provisioning.vocabulary import Action, ApprovalDecision

if TYPE_CHECKING:  # imported by the tasks that use it: it loads pandas
    from provisioning import approval

log = logging.getLogger(__name__)

CMS_POOL = "cmsuser_cms"

# Errors about the run, not about a contact: retrying cannot help, so fail at once.
RUN_LEVEL_POLICY = ExceptionRetryPolicy(rules=[
    RetryRule(exception=CmsAuthError, action=RetryAction.FAIL, reason="CMS refused the credentials"),
    RetryRule(exception=CmsConfigError, action=RetryAction.FAIL, reason="CMS configuration error"),
    RetryRule(exception=CiviCRMAuthError, action=RetryAction.FAIL, reason="CiviCRM refused the credentials"),
    RetryRule(exception=RunFilesError, action=RetryAction.FAIL, reason="the run's files are gone"),
])


def wiring(*, preflight: str, plan: str, create: str, approval: str | None = None) -> dict:
    """The task ids a DAG gave its steps, for the tasks that read upstream XComs themselves."""
    return {"preflight": preflight, "plan": plan, "create": create, "approval": approval}


def run_marker(context) -> str:
    """Names this run in every activity it writes, so a re-run can tell what it already wrote."""
    return queries.run_marker(context["dag"].dag_id, context["run_id"])


def run_stamp(context, settings: Settings) -> str:
    """The run's time in the settings' timezone, as CiviCRM stores activity dates."""
    when = context["dag_run"].run_after
    return pendulum.instance(when).in_timezone(settings.timezone).strftime("%Y-%m-%d %H:%M:%S")


def run_files(context, run: dict) -> RunFiles:
    """This run's files (where its per-contact data lives between tasks)."""
    return RunFiles(steps.settings_of(run), context["dag"].dag_id, context["run_id"])


@contextlib.contextmanager
def _cms(run: dict):
    """The run's CMS backend, closed (its HTTP or SSH session released) when the step is done."""
    kind = registry.get(run["cms_type"])
    settings = steps.settings_of(run)
    backend = kind.backend(settings.cms_conn_id, settings)
    try:
        yield backend
    finally:
        backend.close()


def stops_cleanly(function):
    """A step's RunStopped fails the task at once, with its message; a timeout names the setting to raise."""
    @functools.wraps(function)
    def run(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except steps.RunStopped as exc:
            raise AirflowFailException(exc.message) from exc
        except AirflowTaskTimeout:
            ti = get_current_context()["ti"]
            minutes = int(ti.task.execution_timeout.total_seconds() // 60) if ti.task.execution_timeout else "?"
            step = ti.task_id.split(".")[-1]
            log.error("%s did not finish within %s minutes: raise task_timeout_minutes.%s in the settings "
                      "if the work is this big, or look for a CMS or CiviCRM that stopped answering. "
                      "Everything it finished is recorded; a retry or a clear continues from there.",
                      ti.task_id, minutes, step)
            raise
    return run


@task(retries=2, retry_policy=RUN_LEVEL_POLICY, show_return_value_in_logs=False)
@stops_cleanly
def preflight(gated: bool = True, params=None) -> dict:
    """Read the settings (once per run), prove both connections, and return the run snapshot. `gated`: the
    DAG has its approval gate (a run whose settings now ask for one it lacks stops here)."""
    settings = load_settings()

    def open_cms():
        try:
            conn_type = BaseHook.get_connection(settings.cms_conn_id).conn_type
        except Exception:  # a missing connection: the backend's first call names it
            conn_type = None
        kind = registry.for_connection(conn_type, settings.cms_type, settings.cms_conn_id)
        return kind, kind.backend(settings.cms_conn_id, settings)

    return steps.preflight(settings, CiviCRMHook(settings.civicrm_conn_id), open_cms, dry_run=params["dry_run"],
                           check_lock=CreationLockHook(settings.lock_conn_id).check, gated=gated)


@task(pool=CMS_POOL, retries=3, retry_exponential_backoff=True, retry_policy=RUN_LEVEL_POLICY,
      show_return_value_in_logs=False)
@stops_cleanly
def password_resets(run: dict, params=None) -> dict:
    """Password-reset emails for the reset groups and tags; recorded, and the contacts taken off.

    Runs before the accounts are created, so a contact that is also getting a new account in this run
    never receives both emails (the second would void the first link)."""
    context = get_current_context()
    settings = steps.settings_of(run)
    with _cms(run) as backend:
        results = steps.password_resets(run, CiviCRMHook(settings.civicrm_conn_id), backend,
                                        dry_run=params["dry_run"], marker=run_marker(context),
                                        stamp=run_stamp(context, settings))
    context["ti"].xcom_push(key="resets", value=run_files(context, run).write("resets", results))
    return {"contacts": len(results), **Counter(r["outcome"] for r in results)}


@task(retries=2, retry_exponential_backoff=True, retry_policy=RUN_LEVEL_POLICY, show_return_value_in_logs=False)
@stops_cleanly
def extract(run: dict, source: dict) -> dict:
    """The contact source's contacts, with what the plan needs."""
    context = get_current_context()
    settings = steps.settings_of(run)
    if source.get("kind") == sources.REQUESTED:
        source = told_in(context, source)
    files = run_files(context, run)
    with _cms(run) as backend:  # the contacts, accounts and links go to the run's tables as they are read
        extracted = steps.extract(run, CiviCRMHook(settings.civicrm_conn_id), backend, source,
                                  marker=run_marker(context), files=files)
    return files.write("extract", extracted)


def told_in(context, source: dict) -> dict:
    """What this run was told about: `conf.contact_ids` (the REST API) and every asset event's id spans
    (the watcher's; events that came before the scheduler looked are merged into one run)."""
    spans: dict[str, list[list[int]]] = {}
    for events in (context.get("triggering_asset_events") or {}).values():
        for event in events:
            payload = (event.extra or {}).get("payload") or {}
            for name, found in (payload.get("spans") or {}).items():
                spans.setdefault(name, []).extend([int(a), int(b)] for a, b in found)
    given = (context.get("params") or {}).get("contact_ids") or []
    if spans:
        log.info("the watcher's events name row spans %s", spans)
    return sources.told(source, contact_ids=given, spans=spans)


@task(retries=2, retry_policy=RUN_LEVEL_POLICY, show_return_value_in_logs=False)
@stops_cleanly
def plan(run: dict, extracted: dict, params=None) -> list[dict]:
    """Dedupe and decide; the plan and each batch go to the run's files: returns one small descriptor per
    batch (its index, label, file and first and last contact id), which the create task is mapped over."""
    context = get_current_context()
    files = run_files(context, run)
    planned = steps.plan(run, files.read(extracted), registry.get(run["cms_type"]), dry_run=params["dry_run"],
                         limit=params.get("limit"), max_batches=conf.getint("core", "max_map_length"), files=files)
    context["ti"].xcom_push(key="plan", value=planned["plan"])
    context["ti"].xcom_push(key=PLAN_COUNTS_KEY, value=planned["counts"])
    return planned["batches"]


@task(map_index_template="{{ batch_label }}", pool=CMS_POOL, retries=3, retry_exponential_backoff=True,
      retry_policy=RUN_LEVEL_POLICY, show_return_value_in_logs=False)
@stops_cleanly
def create_accounts(run: dict, batch: dict, task_state_store=None) -> dict:
    """Create or link one batch of accounts; retried by Airflow for transient CMS errors only.
    Returns the reference to its results file (finalize reads it) with the batch's counts."""
    context = get_current_context()
    context["batch_label"] = batch["label"]
    ti = context["ti"]
    settings = steps.settings_of(run)
    files = run_files(context, run)
    rows = list(files.iter_rows(batch["rows"]))  # a batch is small
    log.info("%s: try %d of %d", batch["label"], ti.try_number, ti.max_tries + 1)
    kind = registry.get(run["cms_type"])
    with _cms(run) as backend:  # one CMS session (HTTP or SSH) for the whole batch, plus one per creating thread
        results = steps.create(run, rows, CiviCRMHook(settings.civicrm_conn_id), backend,
                               marker=run_marker(context), stamp=run_stamp(context, settings),
                               final_try=ti.try_number > ti.max_tries, state=task_state_store,
                               lock=CreationLockHook(settings.lock_conn_id).email_locks(settings.lock_wait_seconds),
                               open_backend=lambda: kind.backend(settings.cms_conn_id, settings))
    counts = dict(Counter(r["outcome"] for r in results))
    log.info("%s done: %s", batch["label"], ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return {**files.write(f"created_{batch['index']}", results), "counts": counts}


@task(trigger_rule="all_done", retries=2, retry_exponential_backoff=True, retry_policy=RUN_LEVEL_POLICY,
      show_return_value_in_logs=False)
@stops_cleanly
def finalize(wiring: dict, params=None) -> dict:
    """Outcomes from the plan plus CiviCRM's state; activities, history and clean-up; the summary.

    Runs whatever happened upstream, and may run twice: everything it writes is checked first.
    Upstream values are pulled by the ids in `wiring`, not passed as arguments: upstream may have
    failed and left nothing.
    """
    from provisioning import approval, report

    context = get_current_context()
    ti = context["ti"]
    run = ti.xcom_pull(task_ids=wiring["preflight"])
    plan_ref = ti.xcom_pull(task_ids=wiring["plan"], key="plan")
    batches = ti.xcom_pull(task_ids=wiring["plan"]) or []
    if plan_ref is None or run is None:
        raise AirflowFailException("The run stopped before it had a plan (see the pre-flight, extract or plan task "
                                   "log); nothing was written for any contact.")
    settings = steps.settings_of(run)
    files = run_files(context, run)
    dry_run = params["dry_run"]
    gate = ti.xcom_pull(task_ids=wiring["approval"], key=APPROVAL_KEY) if wiring.get("approval") else None
    if approval.is_rejected(gate):  # create_accounts was skipped: nothing was created, nothing is written
        done = steps.finalize_rejected(run, plan_ref, gate, files=files)
    else:
        # aligned with the batches; None where a batch left no result
        created = ti.xcom_pull(task_ids=wiring["create"], map_indexes=list(range(len(batches)))) if batches else []
        if len(batches) == 1 and not isinstance(created, list):
            created = [created]
        done = steps.finalize(run, CiviCRMHook(settings.civicrm_conn_id), plan_ref, batches, list(created),
                              dry_run=dry_run, marker=run_marker(context), stamp=run_stamp(context, settings),
                              files=files)
    ti.xcom_push(key="outcomes", value=done["outcomes"])
    log.info("%s", report.where_outcomes_are(dry_run=dry_run and not approval.is_rejected(gate),
                                             keep_hours=None if done["unfinished"] else settings.keep_run_files_hours))
    if not done["unfinished"]:  # a batch left to retry still needs the files; they go with its retry's finalize
        files.finished(settings.keep_run_files_hours)
    files.sweep()
    if done["unfinished"]:
        raise AirflowFailException(
            f"{len(done['unfinished'])} batch(es) did not finish: {', '.join(done['unfinished'])}. Their contacts "
            f"were recorded as deferred and get no attempt; clear the failed {wiring['create']} task(s) to retry "
            "them once the CMS is healthy.")
    return done["counts"]


def limits(settings: Settings, step: str) -> dict:
    """A task's retry delay and execution timeout from the settings (read by the DAG file at parse time)."""
    return {"retry_delay": timedelta(seconds=settings.retry_delay_seconds),
            "execution_timeout": timedelta(minutes=settings.task_timeout_minutes[step])}


# --- the approval gate (human-in-the-loop) ------------------------------------------------------

#: The gate's XCom with its decision (approval.result): a Reject ends the task by skipping, with no return value.
APPROVAL_KEY = "decision"
PLAN_COUNTS_KEY = "counts"  # the plan task's accounts to create and to link, by action


class ApprovalGate(ApprovalOperator):
    """Waits for an operator before any account is created, when the plan would create more new
    accounts than `approval_threshold` (provisioning/approval.py decides and writes the screen).

    The standard provider's ApprovalOperator: Approve lets the create task run; Reject, or no answer
    within `approval_timeout_minutes` (whose default answer is Reject), skips it, and finalize gives
    every contact `approval_rejected` and ends the run green. Under the threshold, with no threshold,
    or in a dry run it returns at once. Threshold, approvers and timeout come from the run snapshot;
    the timeouts given here at parse time are only the defaults. Its XCom `decision` is approval.result().
    Put it directly upstream of the create task and not of finalize: Reject skips its direct
    downstream tasks.
    """

    def __init__(self, *, wiring: dict, **kwargs) -> None:
        super().__init__(subject="Approve the planned CMS accounts?", defaults=self.REJECT, **kwargs)
        self.wiring = wiring
        self.show_return_value_in_logs = False  # as for every task: never log what it returns

    def _read(self, context) -> tuple[dict, Settings, approval.PlanDigest, approval.Gate]:
        """The gate, decided on the plan's counts; when the run must wait, the plan's sample for the screen,
        read a chunk of it at a time (the plan is not read otherwise: at 100,000 contacts that is seconds)."""
        import pandas as pd

        from provisioning import approval

        ti = context["ti"]
        run = ti.xcom_pull(task_ids=self.wiring["preflight"])
        counts = ti.xcom_pull(task_ids=self.wiring["plan"], key=PLAN_COUNTS_KEY)
        settings = steps.settings_of(run)
        plan = approval.PlanDigest(to_create=counts[Action.CREATE], to_link=counts[Action.LINK]) if counts else None
        if plan is None or self._gate(plan, settings, context).needed:
            ref = ti.xcom_pull(task_ids=self.wiring["plan"], key="plan")
            chunks = run_files(context, run).iter_chunks(ref) if ref else ()
            plan = approval.digest(pd.DataFrame(chunk) for chunk in chunks)
        return run, settings, plan, self._gate(plan, settings, context)

    @staticmethod
    def _gate(plan: approval.PlanDigest, settings: Settings, context) -> approval.Gate:
        from provisioning import approval

        return approval.gate(plan, settings.approval_threshold, dry_run=context["params"]["dry_run"])

    def execute(self, context):
        from provisioning import approval

        run, settings, plan, gate = self._read(context)
        log.info("%s", gate.explain())
        if not gate.needed:
            result = approval.result(gate, ApprovalDecision.NOT_NEEDED)
            context["ti"].xcom_push(key=APPROVAL_KEY, value=result)
            return result
        self.response_timeout = timedelta(minutes=settings.approval_timeout_minutes)
        deadline = pendulum.now(settings.timezone) + self.response_timeout
        self.subject = approval.subject(gate, context["dag"].dag_id)
        self.body = approval.body(plan, gate, cms_label=registry.get(run["cms_type"]).label,
                                  timeout_minutes=settings.approval_timeout_minutes,
                                  deadline=f"{deadline:%Y-%m-%d %H:%M} ({settings.timezone})",
                                  approvers=settings.approval_users, plan_task=self.wiring["plan"])
        self.assigned_users = [{"id": user, "name": user} for user in settings.approval_users] or None
        log.info("waiting for an operator's answer until %s: Airflow UI > this run > %s > Required Actions, or "
                 "PATCH /api/v2/dags/%s/dagRuns/%s/taskInstances/%s/%s/hitlDetails with "
                 '{"chosen_options": ["Approve"]} (or ["Reject"])', f"{deadline:%Y-%m-%d %H:%M %Z}", self.task_id,
                 context["dag"].dag_id, context["run_id"], self.task_id, context["ti"].map_index)
        return super().execute(context)  # parks the task (awaiting input) until answered or timed out

    def execute_complete(self, context, event):
        try:
            super().execute_complete(context=context, event=event)
        except DownstreamTasksSkipped:  # Reject: Airflow skips the create task; the decision is recorded first
            self._decided(context, event)
            raise
        return self._decided(context, event)

    def _decided(self, context, event) -> dict:
        """Log the answer and keep it (XCom `decision`) for finalize, also when the task ends by skipping."""
        from provisioning import approval

        _, settings, _, gate = self._read(context)
        responder = event.get("responded_by_user") or {}
        by = responder.get("name") or responder.get("id")
        if event["chosen_options"][0] == self.APPROVE:
            decision = ApprovalDecision.APPROVED
        elif event.get("timedout") or not by:  # the timeout sweep answers with the default, Reject
            decision = ApprovalDecision.TIMED_OUT
        else:
            decision = ApprovalDecision.REJECTED
        result = approval.result(gate, decision, by=by, timeout_minutes=settings.approval_timeout_minutes)
        (log.info if decision == ApprovalDecision.APPROVED else log.warning)("%s", approval.decided_line(result))
        context["ti"].xcom_push(key=APPROVAL_KEY, value=result)
        return result


def approval_gate(settings: Settings, *, task_id: str, wiring: dict) -> ApprovalGate:
    """The approval gate of a DAG, between its plan and create tasks (`wiring` names them and preflight).

    Its own work is reading the plan, so it has the plan's execution timeout; the wait for an answer
    is bounded by `approval_timeout_minutes` (the human-in-the-loop response timeout) instead."""
    return ApprovalGate(task_id=task_id, wiring=wiring, retries=2,
                        retry_delay=timedelta(seconds=settings.retry_delay_seconds),
                        execution_timeout=timedelta(minutes=settings.task_timeout_minutes["plan"]),
                        response_timeout=timedelta(minutes=settings.approval_timeout_minutes))


# --- a run's tasks, wired ----------------------------------------------------------------------

def provisioning_run(settings: Settings, source: dict) -> None:
    """Wire a provisioning run into the DAG being defined, for a contact source (pipeline/sources.py):
    preflight, password resets, extract, plan, the approval gate, the create batches and finalize.

    Resets run beside extract (neither reads what the other writes) and end before the plan: a contact that
    also gets a new account in this run must not receive both emails. The approval gate stands between the
    plan and the creates (a Reject skips them) when the settings set `approval_threshold`; without one there
    is no gate task, so no run pays a task's start and scheduling for a gate that never asks. Finalize runs
    whatever happened upstream and finds its inputs by the task ids given in `wiring`.
    """
    def step(function, name):
        return function.override(task_id=name, **limits(settings, name))

    gated = settings.approval_threshold is not None
    run = step(preflight, "preflight")(gated)
    resets = step(password_resets, "password_resets")(run)
    extracted = step(extract, "extract")(run, source)
    batches = step(plan, "plan")(run, extracted)
    resets >> batches
    ids = wiring(preflight="preflight", plan="plan", create="create_accounts",
                 approval="approval" if gated else None)
    created = step(create_accounts, "create_accounts").override(
        max_active_tis_per_dagrun=settings.parallel_batches).partial(run=run).expand(batch=batches)
    if gated:
        batches >> approval_gate(settings, task_id="approval", wiring=ids) >> created
    created >> step(finalize, "finalize")(ids)

