"""Two DAGs creating the same contacts at the same moment under Airflow's real scheduler (PostgreSQL,
LocalExecutor: every task its own process), against the WordPress emulator with its duplicate-check
window widened.

With the creation lock kept in each task's process (extra.in_process, the sandbox's) nothing is shared
between the task processes, and the two runs make two accounts for an email: the race is real here and
the in-process lock is no protection outside one process, as its warning says. (CiviCRM is made slow
to store activities, so neither run's journal shows the other coming: a re-check is not exclusion.) With the lock in
PostgreSQL, the same two runs make exactly one account per email, and both end green.

The DAGs are stand-ins (tests/dags/lock_twins) for the nightly and the near-real-time DAG, which does not
exist yet; both run the pipeline's own tasks.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
import yaml

from sandbox.real_airflow import PG_HOST, PG_PORT, PG_USER, REPO, RealAirflow, postgres_available
from sandbox.sites import demo_seed, started_sites
from tests.conftest import require_real
from tests.dags.conftest import BASE_SETTINGS

pytestmark = [pytest.mark.real_airflow, pytest.mark.slow]

TWINS = ("cmsuser_twin_a", "cmsuser_twin_b")
DATABASE = "cmsuser_airflow_lock_test"
# The scheduler starts the twins' batches a few seconds apart (2.3 s seen in CI on 2 cores, more under
# load). A run that reads the other's journal entry first waits and looks instead of racing, so the
# journal must land later than that offset, and the emulator's check-to-INSERT gap must be longer still.
GAP = 10.0  # seconds between the emulator's duplicate checks and its INSERT
LOCK_CONN = "twin_lock"
JOURNAL_DELAY = 8.0  # seconds CiviCRM takes to store an activity: longer than the runs' offset
DEMO = demo_seed()


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    problem = postgres_available()
    if problem:
        if require_real():
            pytest.fail(f"{problem}; CMSUSER_REQUIRE_REAL=1 requires the real-Airflow tier to run")
        pytest.skip(problem)
    home = tmp_path_factory.mktemp("real_airflow_lock")
    settings_file = home / "cmsuser.yaml"
    settings_file.write_text(yaml.safe_dump({**BASE_SETTINGS, "retry_delay_seconds": 1, "batch_size": 5,
                                             "notify": False, "lock_conn_id": LOCK_CONN, "lock_wait_seconds": 120}))
    # the sites' connections are set per race, through the REST API, so each race gets fresh sites
    stack = RealAirflow({"CMSUSER_SETTINGS": str(settings_file)}, dags_folder=REPO / "tests" / "dags" / "lock_twins",
                        dag_ids=TWINS, parallelism=4, pool_slots=4, home=home / "airflow_home", database=DATABASE)
    started = time.monotonic()
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()
        print(f"\nreal-Airflow lock tier: wall time {time.monotonic() - started:.1f}s", flush=True)


def race(airflow: RealAirflow, lock: dict) -> dict:
    """Both DAGs at once over the demo contacts, on fresh sites; what the CMS and the runs ended with."""
    with started_sites(DEMO) as sites:
        sites.cms.widen_duplicate_check(GAP)
        # CiviCRM is slow to store activities (the account journal): both runs read the journal before the
        # other's "sending" entry lands, so no re-check can see the other run coming, only a lock
        sites.civicrm.inject(entity="Activity", action="save", status=None, delay=JOURNAL_DELAY, times=1000)
        for variable, value in sites.connection_env.items():
            airflow.set_connection(variable.removeprefix("AIRFLOW_CONN_").lower(), json.loads(value))
        airflow.set_connection(LOCK_CONN, lock)
        runs = {dag_id: airflow.trigger(dag_id) for dag_id in TWINS}
        states = {dag_id: airflow.wait(dag_id, run_id, timeout=420) for dag_id, run_id in runs.items()}
        outcomes = {dag_id: {row["contact_id"]: row for row in
                             airflow.xcom(dag_id, run_id, "finalize", key="outcomes") or []}
                    for dag_id, run_id in runs.items()}
        logs = {dag_id: "\n".join(airflow.all_logs(dag_id, run_id).values()) for dag_id, run_id in runs.items()}
        timeline = sorted((ti["start_date"], ti["end_date"], dag_id, ti["task_id"], ti["map_index"], ti["state"])
                          for dag_id, run_id in runs.items() for ti in airflow.task_instances(dag_id, run_id))
        return {"accounts": Counter(u["email"].strip().lower() for u in sites.cms.users), "states": states,
                "outcomes": outcomes, "logs": logs, "links": sites.civicrm.table("UFMatch"),
                "timeline": timeline}


def test_two_dags_at_once_make_duplicates_without_a_shared_lock_and_never_with_postgresql(airflow):
    unshared = race(airflow, {"conn_type": "generic", "extra": {"in_process": True}})
    duplicated = sorted(email for email, n in unshared["accounts"].items() if n > 1)
    assert duplicated, (f"the runs never raced, so this test proves nothing: {unshared['accounts']}, "
                        f"{unshared['states']}, {unshared['timeline']}")
    assert all("NO protection between workers" in log for log in unshared["logs"].values())

    shared = race(airflow, {"conn_type": "postgres", "host": PG_HOST, "port": PG_PORT, "login": PG_USER,
                            "schema": DATABASE})
    assert shared["states"] == dict.fromkeys(TWINS, "success"), shared["states"]
    assert [email for email, n in shared["accounts"].items() if n > 1] == []
    a, b = (shared["outcomes"][dag_id] for dag_id in TWINS)
    assert a.keys() == b.keys() and a
    made = [cid for cid, row in a.items() if row["outcome"] == "created"]
    assert made, a
    for cid in made:  # the other run found the account made (and linked) by the first, or made it itself
        assert b[cid]["outcome"] in ("created", "already_linked") and a[cid]["uf_id"] == b[cid]["uf_id"], (a[cid], b[cid])
    links = Counter(row["contact_id"] for row in shared["links"])
    assert [cid for cid, n in links.items() if n > 1] == []
    assert any("creation lock: PostgreSQL advisory locks at" in log for log in shared["logs"].values())
