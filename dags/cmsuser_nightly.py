"""Nightly: every contact in a trigger group or with a trigger tag gets a linked CMS account.

Schedule and params only; the tasks and their wiring live in plugins/pipeline/tasks.py and the steps they
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
    tasks.provisioning_run(settings, sources.trigger_membership())
