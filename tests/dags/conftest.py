"""End-to-end harness: both emulators seeded with the demo data, connections and settings set,
and `sandbox.run()` to run the nightly DAG with `dag.test()` and read back its outcomes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from sandbox import local_airflow
from sandbox.civicrm import CiviCRMEmulator
from sandbox.sites import started_sites
from sandbox.wordpress import WordPressEmulator

BASE_SETTINGS = {
    "trigger_groups": ["new_members", "volunteers_smart"],
    "trigger_tags": ["needs_login"],
    "history_group": "has_login",
    "history_tag": "login_created",
    "username_pattern": "{first_name}.{last_name}",
    "roles": ["member"],
    "notify": True,
    "retry_delay_seconds": 0,  # dag.test waits out retry delays
    "batch_size": 5,
    "keep_run_files_hours": 1,  # the tests read each run's outcomes file after the run
}


def triggered_contacts(seed: dict) -> set[int]:
    """The seed's contacts in a trigger group (static or smart) or with a trigger tag of BASE_SETTINGS, trashed
    ones left out: the nightly run's contacts (`seed` is the CiviCRM part of a seed like the demo's)."""
    groups = {g["id"]: g for g in seed["groups"] if g["name"] in BASE_SETTINGS["trigger_groups"]}
    tags = {t["id"] for t in seed["tags"] if t["name"] in BASE_SETTINGS["trigger_tags"]}
    ids = {gc["contact_id"] for gc in seed["group_contacts"] if gc["group_id"] in groups and gc["status"] == "Added"}
    ids |= {et["entity_id"] for et in seed["entity_tags"] if et["tag_id"] in tags}
    ids |= {cid for group in groups.values() for cid in group.get("members", [])}  # smart groups' cache
    return ids - {c["id"] for c in seed["contacts"] if c.get("is_deleted")}


@dataclass
class Sandbox:
    civicrm: CiviCRMEmulator
    wordpress: WordPressEmulator
    settings_file: Path
    secrets: dict[str, str]
    settings: dict = field(default_factory=lambda: dict(BASE_SETTINGS))

    def configure(self, **overrides) -> None:
        self.settings.update(overrides)
        self.settings_file.write_text(yaml.safe_dump(self.settings))

    def run(self, conf: dict | None = None, *, logical_date=None, dag_id: str = local_airflow.DAG_ID):
        """Run a DAG (the nightly by default) once; returns (dag run, outcomes by contact id)."""
        dag = local_airflow.load_dag(dag_id)
        kwargs = {"run_conf": conf or {}}
        if logical_date is not None:
            kwargs.update(logical_date=logical_date, run_after=logical_date)
        run = dag.test(**kwargs)
        outcomes = local_airflow.xcom(run.run_id, "finalize", key="outcomes", dag_id=dag_id) or []
        return run, {row["contact_id"]: row for row in outcomes}

    # --- CiviCRM state helpers for assertions
    def membership(self, group_id: int) -> dict[int, str]:
        return {r["contact_id"]: r["status"] for r in self.civicrm.table("GroupContact") if r["group_id"] == group_id}

    def tagged(self, tag_id: int) -> set[int]:
        return {r["entity_id"] for r in self.civicrm.table("EntityTag") if r["tag_id"] == tag_id}

    def ufmatch(self) -> dict[int, dict]:
        return {r["contact_id"]: r for r in self.civicrm.table("UFMatch")}

    def activities(self, contact_id: int) -> list[dict]:
        """This contact's "User Account Creation" activities, oldest first, with their status name."""
        targets = {r["activity_id"] for r in self.civicrm.table("ActivityContact")
                   if r["contact_id"] == contact_id and r["record_type_id"] == 3}
        return [a for a in self.civicrm.table("Activity") if a["id"] in targets]


@pytest.fixture
def sandbox(airflow_db, monkeypatch, tmp_path):
    with started_sites() as sites:
        for key, value in sites.connection_env.items():
            monkeypatch.setenv(key, value)
        settings_file = tmp_path / "cmsuser.yaml"
        monkeypatch.setenv("CMSUSER_SETTINGS", str(settings_file))
        box = Sandbox(sites.civicrm, sites.cms, settings_file, sites.secrets)
        box.configure()
        yield box


@pytest.fixture(scope="session", autouse=True)
def _metadata_db(airflow_db):
    """Every DAG test here needs the migrated database, also those that only parse."""
    return airflow_db
