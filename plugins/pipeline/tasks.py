"""The Airflow side of the steps: tasks with their retries, pools, timeouts and XComs.

A DAG file wires these with its own task ids; each task finds its upstream values either as
arguments (XComArgs) or, where upstream may have failed (finalize), through the ids the DAG file
hands it in `wiring`. Hooks are built here, from the run snapshot; the steps (steps.py) do the work.
No task logs its return value (`show_return_value_in_logs=False`): the values hold members' data.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from datetime import timedelta

import pandas as pd
from airflow.sdk import BaseHook, ExceptionRetryPolicy, RetryAction, RetryRule, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowTaskTimeout

from civicrm_hooks import queries
from civicrm_hooks.hook import CiviCRMAuthError, CiviCRMHook
from cms_operators import registry
from cms_operators.backend import CmsAuthError, CmsConfigError
from pipeline import steps
from provisioning import report
from provisioning.settings import Settings, load_settings

log = logging.getLogger(__name__)

CMS_POOL = "cmsuser_cms"

# Errors about the run, not about a contact: retrying cannot help, so fail at once.
RUN_LEVEL_POLICY = ExceptionRetryPolicy(rules=[
    RetryRule(exception=CmsAuthError, action=RetryAction.FAIL, reason="CMS refused the credentials"),
    RetryRule(exception=CmsConfigError, action=RetryAction.FAIL, reason="CMS configuration error"),
    RetryRule(exception=CiviCRMAuthError, action=RetryAction.FAIL, reason="CiviCRM refused the credentials"),
])


def wiring(*, preflight: str, plan: str, create: str) -> dict:
    """The task ids a DAG gave its steps, for the tasks that read upstream XComs themselves."""
    return {"preflight": preflight, "plan": plan, "create": create}


def run_marker(context) -> str:
    """Names this run in every activity it writes, so a re-run can tell what it already wrote."""
    return queries.run_marker(context["dag"].dag_id, context["run_id"])


def run_stamp(context, settings: Settings) -> str:
    """The run's time in the settings' timezone, as CiviCRM stores activity dates."""
    when = context["dag_run"].run_after
    return pd.Timestamp(when).tz_convert(settings.timezone).strftime("%Y-%m-%d %H:%M:%S")


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
def preflight(params=None) -> dict:
    """Read the settings (once per run), prove both connections, and return the run snapshot."""
    settings = load_settings()

    def open_cms():
        try:
            conn_type = BaseHook.get_connection(settings.cms_conn_id).conn_type
        except Exception:  # a missing connection: the backend's first call names it
            conn_type = None
        kind = registry.for_connection(conn_type, settings.cms_type, settings.cms_conn_id)
        return kind, kind.backend(settings.cms_conn_id, settings)

    return steps.preflight(settings, CiviCRMHook(settings.civicrm_conn_id), open_cms, dry_run=params["dry_run"])


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
    context["ti"].xcom_push(key="resets", value=results)
    return {"contacts": len(results), **pd.Series([r["outcome"] for r in results], dtype=object)
            .value_counts().to_dict()}


@task(retries=2, retry_exponential_backoff=True, retry_policy=RUN_LEVEL_POLICY, show_return_value_in_logs=False)
@stops_cleanly
def extract(run: dict, source: dict) -> dict:
    """The contact source's contacts, with what the plan needs."""
    settings = steps.settings_of(run)
    with _cms(run) as backend:
        return steps.extract(run, CiviCRMHook(settings.civicrm_conn_id), backend, source,
                             marker=run_marker(get_current_context()))


@task(retries=2, retry_policy=RUN_LEVEL_POLICY, show_return_value_in_logs=False)
@stops_cleanly
def plan(run: dict, extracted: dict, params=None) -> list[dict]:
    """Dedupe and decide; each batch goes under its own XCom key of this task, only labels are returned."""
    ti = get_current_context()["ti"]
    planned = steps.plan(run, extracted, registry.get(run["cms_type"]), dry_run=params["dry_run"], limit=params.get("limit"))
    ti.xcom_push(key="plan", value=planned["plan"])
    descriptors = []
    for index, (batch, label) in enumerate(zip(planned["batches"], planned["labels"], strict=True)):
        ti.xcom_push(key=f"batch_{index}", value=batch)
        descriptors.append({"index": index, "label": label, "plan_task": ti.task_id})
    return descriptors


@task(map_index_template="{{ batch_label }}", pool=CMS_POOL, retries=3, retry_exponential_backoff=True,
      retry_policy=RUN_LEVEL_POLICY, show_return_value_in_logs=False)
@stops_cleanly
def create_accounts(run: dict, batch: dict, task_state_store=None) -> list[dict]:
    """Create or link one batch of accounts; retried by Airflow for transient CMS errors only."""
    context = get_current_context()
    context["batch_label"] = batch["label"]
    ti = context["ti"]
    settings = steps.settings_of(run)
    rows = ti.xcom_pull(task_ids=batch["plan_task"], key=f"batch_{batch['index']}")
    log.info("%s: try %d of %d", batch["label"], ti.try_number, ti.max_tries + 1)
    with _cms(run) as backend:  # one CMS session (HTTP or SSH) for the whole batch
        results = steps.create(run, rows, CiviCRMHook(settings.civicrm_conn_id), backend,
                               marker=run_marker(context), stamp=run_stamp(context, settings),
                               final_try=ti.try_number > ti.max_tries, state=task_state_store)
    counts = pd.Series([r["outcome"] for r in results]).value_counts().to_dict()
    log.info("%s done: %s", batch["label"], ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return results


@task(trigger_rule="all_done", retries=2, retry_exponential_backoff=True, retry_policy=RUN_LEVEL_POLICY,
      show_return_value_in_logs=False)
@stops_cleanly
def finalize(wiring: dict, params=None) -> dict:
    """Outcomes from the plan plus CiviCRM's state; activities, history and clean-up; the summary.

    Runs whatever happened upstream, and may run twice: everything it writes is checked first.
    Upstream values are pulled by the ids in `wiring`, not passed as arguments: upstream may have
    failed and left nothing.
    """
    context = get_current_context()
    ti = context["ti"]
    run = ti.xcom_pull(task_ids=wiring["preflight"])
    plan_rows = ti.xcom_pull(task_ids=wiring["plan"], key="plan")
    batches = ti.xcom_pull(task_ids=wiring["plan"]) or []
    if plan_rows is None or run is None:
        raise AirflowFailException("The run stopped before it had a plan (see the pre-flight, extract or plan task "
                                   "log); nothing was written for any contact.")
    settings = steps.settings_of(run)
    dry_run = params["dry_run"]
    # aligned with the batches; None where a batch left no result
    results = ti.xcom_pull(task_ids=wiring["create"], map_indexes=list(range(len(batches)))) if batches else []
    done = steps.finalize(run, CiviCRMHook(settings.civicrm_conn_id), plan_rows, [b["label"] for b in batches],
                          results, dry_run=dry_run, marker=run_marker(context), stamp=run_stamp(context, settings))
    ti.xcom_push(key="outcomes", value=done["outcomes"])
    log.info("%s", report.where_outcomes_are(dry_run=dry_run))
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
