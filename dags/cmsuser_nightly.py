"""Nightly: every contact in a trigger group or with a trigger tag gets a linked CMS account.

Schedule, params and wiring only; the tasks live in plugins/cms_operators/tasks.py. The
settings file is read here for the schedule and retry delay (a bad file shows as this DAG's
import error, naming the field at fault); nothing else is read or called at parse time.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from cms_operators import tasks
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
    def limits(task_id: str) -> dict:
        return {"retry_delay": tasks.retry_delay(settings),
                "execution_timeout": tasks.execution_timeout(settings, task_id)}

    triggers = tasks.preflight.override(**limits("preflight"))()
    extracted = tasks.extract.override(**limits("extract"))(triggers)
    batches = tasks.plan.override(**limits("plan"))(extracted)
    created = tasks.create_accounts.override(**limits(tasks.CREATE_TASK_ID)).expand(batch=batches)
    created >> tasks.finalize.override(**limits("finalize"))()
