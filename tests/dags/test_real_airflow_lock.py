"""The nightly and the near-real-time DAG creating the same contacts at the same moment under Airflow's real
scheduler (PostgreSQL, LocalExecutor: every task its own process), against the WordPress emulator with its
duplicate-check window widened. The nightly run takes every triggered contact; the near-real-time run is
started over REST with all of them in conf.contact_ids, as a pushing site would (no triggerer runs, so
its asset watcher is inert and that run is the only one).

With the creation lock kept in each task's process (extra.in_process, the sandbox's) nothing is shared
between the task processes, and the two runs make two accounts for an email: the race is real here and
the in-process lock is no protection outside one process, as its warning says. (CiviCRM is made slow
to store activities, so neither run's journal shows the other coming: a re-check is not exclusion.) With the lock in
PostgreSQL, the same two runs make exactly one account per email, and both end green.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime

import pytest
import yaml

from sandbox.real_airflow import PG_HOST, PG_PORT, PG_USER, REPO, RealAirflow, postgres_available
from sandbox.sites import demo_seed, started_sites
from tests.conftest import need_services
from tests.dags.conftest import BASE_SETTINGS, triggered_contacts

pytestmark = [pytest.mark.real_airflow, pytest.mark.slow]

NIGHTLY, REALTIME = DAGS = ("cmsuser_nightly", "cmsuser_realtime")
DATABASE = "cmsuser_airflow_lock_test"
# The scheduler starts the two runs' batches a few seconds apart (2.3 s seen in CI on 2 cores, 0-2.8 s for
# the nightly and near-real-time runs here, more under load). A run that reads the other's journal entry first waits and looks instead of racing, so the
# journal must land later than that offset, and the emulator's check-to-INSERT gap must be longer still.
GAP = 10.0  # seconds between the emulator's duplicate checks and its INSERT
LOCK_CONN = "race_lock"
JOURNAL_DELAY = 8.0  # seconds CiviCRM takes to store an activity: longer than the runs' offset
DEMO = demo_seed()


# the nightly run's contacts, given to the near-real-time run as conf.contact_ids
TRIGGERED = sorted(triggered_contacts(DEMO["civicrm"]))


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    need_services("real-Airflow", postgres_available())
    home = tmp_path_factory.mktemp("real_airflow_lock")
    settings_file = home / "cmsuser.yaml"
    # BASE_SETTINGS names no reset group or tag: password_resets has nothing to do in either DAG
    settings_file.write_text(yaml.safe_dump({**BASE_SETTINGS, "retry_delay_seconds": 1, "batch_size": 5,
                                             "notify": False, "lock_conn_id": LOCK_CONN, "lock_wait_seconds": 120}))
    # the sites' connections are set per race, through the REST API, so each race gets fresh sites
    stack = RealAirflow({"CMSUSER_SETTINGS": str(settings_file)}, dags_folder=REPO / "dags",
                        dag_ids=DAGS, parallelism=4, pool_slots=4, home=home / "airflow_home", database=DATABASE)
    started = time.monotonic()
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()
        print(f"\nreal-Airflow lock tier: wall time {time.monotonic() - started:.1f}s", flush=True)


def race(airflow: RealAirflow, lock: dict) -> dict:
    """Both DAGs at once over the demo contacts, on fresh sites; what the CMS and the runs ended with.

    Fresh sites hold no "User Account Creation" activity, and the slow journal keeps the nightly's from
    showing in time, so the near-real-time run leaves no contact to the nightly (left_to_nightly)."""
    with started_sites(DEMO) as sites:
        sites.cms.widen_duplicate_check(GAP)
        # CiviCRM is slow to store activities (the account journal): both runs read the journal before the
        # other's "sending" entry lands, so no re-check can see the other run coming, only a lock
        sites.civicrm.inject(entity="Activity", action="save", status=None, delay=JOURNAL_DELAY, times=1000)
        for variable, value in sites.connection_env.items():
            airflow.set_connection(variable.removeprefix("AIRFLOW_CONN_").lower(), json.loads(value))
        airflow.set_connection(LOCK_CONN, lock)
        runs = {NIGHTLY: airflow.trigger(NIGHTLY),
                REALTIME: airflow.trigger(REALTIME, {"contact_ids": TRIGGERED})}
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


def batch_offset(timeline: list[tuple]) -> float:
    """Seconds between the two runs' first create_accounts batch starts (for the GAP / JOURNAL_DELAY margin)."""
    first = {dag_id: min(datetime.fromisoformat(start) for start, _, dag, task, _, _ in timeline
                         if dag == dag_id and task == "create_accounts" and start) for dag_id in DAGS}
    return abs((first[NIGHTLY] - first[REALTIME]).total_seconds())


def test_two_dags_at_once_make_duplicates_without_a_shared_lock_and_never_with_postgresql(airflow):
    unshared = race(airflow, {"conn_type": "generic", "extra": {"in_process": True}})
    duplicated = sorted(email for email, n in unshared["accounts"].items() if n > 1)
    assert duplicated, (f"the runs never raced, so this test proves nothing: {unshared['accounts']}, "
                        f"{unshared['states']}, {unshared['timeline']}")
    assert all("NO protection between workers" in log for log in unshared["logs"].values())
    # the near-real-time run raced over the nightly's very contacts: none left to the nightly, none unknown
    assert {dag_id: sorted(rows) for dag_id, rows in unshared["outcomes"].items()} == dict.fromkeys(DAGS, TRIGGERED)
    assert not [row for row in unshared["outcomes"][REALTIME].values()
                if row["outcome"] in ("left_to_nightly", "not_triggered")]
    print(f"without a shared lock: {len(duplicated)} emails with two accounts; batches started "
          f"{batch_offset(unshared['timeline']):.1f}s apart", flush=True)

    shared = race(airflow, {"conn_type": "postgres", "host": PG_HOST, "port": PG_PORT, "login": PG_USER,
                            "schema": DATABASE})
    assert shared["states"] == dict.fromkeys(DAGS, "success"), shared["states"]
    assert [email for email, n in shared["accounts"].items() if n > 1] == []
    a, b = (shared["outcomes"][dag_id] for dag_id in DAGS)
    assert sorted(a) == sorted(b) == TRIGGERED, (sorted(a), sorted(b))
    print(f"with the PostgreSQL lock: batches started {batch_offset(shared['timeline']):.1f}s apart", flush=True)
    assert not [cid for cid, row in b.items() if row["outcome"] in ("left_to_nightly", "not_triggered")], b
    made = [cid for cid, row in a.items() if row["outcome"] == "created"]
    assert made, a
    for cid in made:  # the other run found the account made (and linked) by the first, or made it itself
        assert b[cid]["outcome"] in ("created", "already_linked") and a[cid]["uf_id"] == b[cid]["uf_id"], (a[cid], b[cid])
    links = Counter(row["contact_id"] for row in shared["links"])
    assert [cid for cid, n in links.items() if n > 1] == []
    assert any("creation lock: PostgreSQL advisory locks at" in log for log in shared["logs"].values())
