"""Session-wide test setup: a private Airflow home on SQLite, pointed at this repository's DAGs.

The environment is set at import time, before any test module imports Airflow, because Airflow
reads its configuration once on first import.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
AIRFLOW_HOME = REPO / ".airflow" / "test"

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
AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)
# A fresh database each session (no runs left over from the last one); removed before Airflow opens it.
(AIRFLOW_HOME / "airflow.db").unlink(missing_ok=True)


def require_real() -> bool:
    """CI sets CMSUSER_REQUIRE_REAL=1: a real-system tier that cannot run fails instead of skipping."""
    return os.environ.get("CMSUSER_REQUIRE_REAL") == "1"


@pytest.fixture(scope="session")
def airflow_db():
    """A migrated metadata database (dag.test needs one), made once per session."""
    from airflow.utils import db

    db.initdb()
    return AIRFLOW_HOME / "airflow.db"
