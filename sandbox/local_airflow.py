"""Run the nightly DAG in-process with `dag.test()` against a private Airflow home on SQLite.

Used by `make demo`, the end-to-end tests and the benchmark. `configure()` must run before
anything imports Airflow: Airflow reads its configuration once, on first import.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DAG_ID = "cmsuser_nightly"
# The creation lock for a single-process Airflow (dag.test runs every task in this process): exclusive
# in this process only, and each use says so in the log. A real scheduler gets PostgreSQL's (real_airflow.py).
IN_PROCESS_LOCK_ENV = {"AIRFLOW_CONN_CMSUSER_LOCK": json.dumps({"conn_type": "generic", "extra": {"in_process": True}})}


def configure(home: Path, *, fresh: bool = False) -> None:
    """Point Airflow at `home`; with `fresh`, start from an empty home (database, WAL and logs)."""
    if fresh:
        shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True, exist_ok=True)
    # Airflow puts the plugins folder on sys.path in its own components; this process needs it too.
    if str(REPO / "plugins") not in sys.path:
        sys.path.insert(0, str(REPO / "plugins"))
    os.environ.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
    })
    for key, value in IN_PROCESS_LOCK_ENV.items():
        os.environ.setdefault(key, value)  # a lock connection of the caller's own wins


def connection_env(civicrm_url: str, api_key: str, site_key: str | None, wordpress_url: str, login: str,
                   app_password: str, *, cms_type: str = "wordpress", generic: bool = False,
                   cms_extra: dict | None = None) -> dict[str, str]:
    """AIRFLOW_CONN_* values for the two connections, in Airflow's JSON form.

    Of the project's own connection types (civicrm, and the CMS's type, which picks the CMS), or of
    the generic type http with `generic` (as documented before those types existed)."""
    civicrm = {"conn_type": "http" if generic else "civicrm", "host": civicrm_url, "password": api_key,
               "extra": {"site_key": site_key} if site_key else {}}
    cms = {"conn_type": "http" if generic else cms_type, "host": wordpress_url, "login": login,
           "password": app_password, **({"extra": cms_extra} if cms_extra else {})}
    return {"AIRFLOW_CONN_CIVICRM_DEFAULT": json.dumps(civicrm), "AIRFLOW_CONN_CMS_DEFAULT": json.dumps(cms)}


def init_db() -> None:
    from airflow.models.pool import Pool
    from airflow.utils import db

    db.initdb()
    from pipeline.tasks import CMS_POOL

    Pool.create_or_update_pool(CMS_POOL, slots=4, description="CMS user creation", include_deferred=False)


def load_dag(dag_id: str = DAG_ID):
    """A DAG (the nightly by default) as the dag-processor would parse it; import errors are raised, not hidden."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(REPO / "dags"))
    if bag.import_errors:
        raise RuntimeError("DAG import errors:\n" + "\n".join(f"{k}: {v}" for k, v in bag.import_errors.items()))
    return bag.get_dag(dag_id)


def run_nightly(conf: dict | None = None):
    """One full run; returns the DagRun (its `.state` is success or failed)."""
    return load_dag().test(run_conf=conf or {})


def xcom(run_id: str, task_id: str, key: str = "return_value", map_index: int = -1, dag_id: str = DAG_ID, *,
         resolve: bool = True):
    """One XCom value; with `resolve`, a reference to a run file (the per-contact data) is read through."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    from pipeline import run_files

    with create_session() as session:
        row = session.scalars(XComModel.get_many(run_id=run_id, key=key, task_ids=task_id, dag_ids=dag_id,
                                                 map_indexes=map_index)).first()
        value = None if row is None else XComModel.deserialize_value(row)
    return run_files.read(value) if resolve and run_files.is_ref(value) else value


def outcome_counts(run_id: str) -> dict[str, int]:
    """How many contacts finalize gave each outcome in this run."""
    counts: dict[str, int] = {}
    for row in xcom(run_id, "finalize", key="outcomes") or []:
        counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
    return counts


def task_durations(run_id: str) -> dict[str, float]:
    """Seconds per task id, mapped instances added up (for the benchmark's report)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    totals: dict[str, float] = {}
    with create_session() as session:
        rows = session.execute(select(TaskInstance.task_id, TaskInstance.duration)
                               .where(TaskInstance.dag_id == DAG_ID, TaskInstance.run_id == run_id)).all()
    for task_id, duration in rows:
        totals[task_id] = totals.get(task_id, 0.0) + (duration or 0.0)
    return totals
