"""Session-wide test setup: a private Airflow home on SQLite, pointed at this repository's DAGs.

The environment is set at import time, before any test module imports Airflow, because Airflow
reads its configuration once on first import.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# A private home per pytest session, so two sessions never share (or delete) one database.
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="cmsuser-airflow-test-"))

os.environ.update(
    {
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }
)
# dag.test runs every task in this process: the in-process creation lock is exact here (real_airflow.py's
# scheduler gets PostgreSQL's)
from sandbox.local_airflow import IN_PROCESS_LOCK_ENV  # noqa: E402

for _key, _value in IN_PROCESS_LOCK_ENV.items():
    os.environ.setdefault(_key, _value)


def require_real() -> bool:
    """CI sets CMSUSER_REQUIRE_REAL=1: a real-system tier that cannot run fails instead of skipping."""
    return os.environ.get("CMSUSER_REQUIRE_REAL") == "1"


def need_services(tier: str, *problems: str | None) -> None:
    """Skip the tier when a service it needs is missing (each problem: None, or why a service is not there);
    fail instead under CMSUSER_REQUIRE_REAL=1."""
    problem = next((p for p in problems if p), None)
    if problem:
        if require_real():
            pytest.fail(f"{problem}; CMSUSER_REQUIRE_REAL=1 requires the {tier} tier to run")
        pytest.skip(problem)


@pytest.fixture(scope="session")
def airflow_db():
    """A migrated metadata database with the CMS pool (dag.test needs both), made once per session."""
    from sandbox import local_airflow

    local_airflow.init_db()
    return AIRFLOW_HOME / "airflow.db"


def pytest_sessionfinish(session, exitstatus):
    import shutil

    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


from sandbox.backdrop.testing import real_backdrop  # noqa: E402,F401  the session's real Backdrop behind its sshd
from sandbox.civicrm.testing import real_civicrm  # noqa: E402,F401  the session's real CiviCRM, for every tier
from sandbox.drupal.testing import real_drupal  # noqa: E402,F401  the session's real Drupal 10, for every tier
from sandbox.drupal7.testing import real_drupal7  # noqa: E402,F401  the session's real Drupal 7, for every tier
from sandbox.joomla.testing import real_joomla  # noqa: E402,F401  the session's real Joomla 5, for every tier
