"""Two DAGs with the nightly's steps over the same contacts, for the creation-lock test under the real scheduler.

Stand-ins for the nightly and the near-real-time DAG, which may run at the same moment (the real-time DAG
does not exist yet). Test-only: tests/dags/test_real_airflow_lock.py points a real Airflow at this folder.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from pipeline import sources, tasks
from provisioning.settings import load_settings

settings = load_settings()

for dag_id in ("cmsuser_twin_a", "cmsuser_twin_b"):
    with DAG(dag_id=dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False,
             max_active_runs=1, params={"dry_run": Param(False, type="boolean"),
                                        "limit": Param(None, type=["null", "integer"])}) as dag:
        run = tasks.preflight.override(task_id="preflight")()
        extracted = tasks.extract.override(task_id="extract")(run, sources.trigger_membership())
        batches = tasks.plan.override(task_id="plan")(run, extracted)
        created = tasks.create_accounts.override(task_id="create_accounts", **tasks.limits(settings, "create_accounts")
                                                 ).partial(run=run).expand(batch=batches)
        created >> tasks.finalize.override(task_id="finalize")(
            tasks.wiring(preflight="preflight", plan="plan", create="create_accounts"))
    globals()[dag_id] = dag
