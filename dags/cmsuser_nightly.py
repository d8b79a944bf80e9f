"""Nightly: every contact in a trigger group or with a trigger tag gets a linked CMS account.

Schedule, params and wiring only; the tasks live in plugins/pipeline/tasks.py and the steps they
run in plugins/pipeline/steps.py. The settings file is read here for the schedule, timeouts and
retry delay (a bad file shows as this DAG's import error, naming the field at fault); nothing else
is read or called at parse time. The run itself reads the settings once, in preflight.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from pipeline import sources, tasks
from provisioning.settings import load_settings

settings = load_settings()

with DAG(
    dag_id="cmsuser_nightly",
    description="Create and link CMS user accounts for triggered CiviCRM contacts",
    schedule=settings.schedule,
    start_date=pendulum.datetime(2026, 1, 1, tz=settings.timezone),
    catchup=False,
    max_active_runs=1,
    tags=["civicrm", "cms-users"],
    doc_md=__doc__,
    params={
        "dry_run": Param(False, type="boolean", title="Dry run",
                         description="Report every contact's planned outcome and write nothing anywhere."),
        "limit": Param(None, type=["null", "integer"], minimum=1, title="Limit",
                       description="Create or link at most this many accounts (lowest contact ids "
                                   "first); the rest are deferred to the next run. Empty: no limit."),
    },
) as dag:
    run = tasks.preflight.override(task_id="preflight", **tasks.limits(settings, "preflight"))()
    # resets first: a contact that also gets a new account in this run must not receive both emails
    resets = tasks.password_resets.override(task_id="password_resets",
                                            **tasks.limits(settings, "password_resets"))(run)
    extracted = tasks.extract.override(task_id="extract", **tasks.limits(settings, "extract"))(
        run, sources.trigger_membership())
    resets >> extracted
    batches = tasks.plan.override(task_id="plan", **tasks.limits(settings, "plan"))(run, extracted)
    ids = tasks.wiring(preflight="preflight", plan="plan", create="create_accounts", approval="approval")
    # waits for an operator when the plan creates more than approval_threshold accounts; Reject skips the creates
    approved = tasks.approval_gate(settings, task_id="approval", wiring=ids)
    created = tasks.create_accounts.override(task_id="create_accounts", **tasks.limits(settings, "create_accounts")
                                             ).partial(run=run).expand(batch=batches)
    batches >> approved >> created
    created >> tasks.finalize.override(task_id="finalize", **tasks.limits(settings, "finalize"))(ids)
