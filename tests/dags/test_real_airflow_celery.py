"""The nightly DAG on the multi-worker stack docker-compose.yaml describes, without Docker: Airflow's
CeleryExecutor on this machine's Redis and PostgreSQL, two Celery workers.

The batches of one run spread over both workers; one worker is killed (with its task processes) while it
creates a batch; the scheduler finds that task's heartbeat gone, Airflow retries it on the other worker,
and the run converges: every contact one outcome, one account per email, every account linked.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
import yaml

from sandbox.real_airflow import RealAirflow, postgres_available, redis_available
from sandbox.sites import started_sites
from tests.conftest import need_services
from tests.dags.conftest import BASE_SETTINGS

pytestmark = [pytest.mark.real_airflow, pytest.mark.slow]

DATABASE = "cmsuser_airflow_celery_test"
WORKERS = ("worker1", "worker2")
CONTACTS = 24
BATCH = 4  # six batches over four worker slots
CREATE_DELAY = 2.0  # seconds the CMS takes per create: a batch (8 s) is busy long enough to be killed in, even when
# the test sees it running a few seconds late (at 1.0 a batch once ended before the kill)


def seed() -> dict:
    people = [{"id": i, "first_name": f"First{i}", "last_name": f"Last{i}", "email": f"person{i}@celery.example"}
              for i in range(100, 100 + CONTACTS)]
    return {"civicrm": {"groups": [{"id": 5, "name": "new_members", "title": "New members"},
                                   {"id": 6, "name": "has_login", "title": "Has a website login"}],
                        "tags": [{"id": 3, "name": "needs_login", "label": "Needs login"},
                                 {"id": 4, "name": "login_created", "label": "Login created"}],
                        "contacts": people,
                        "group_contacts": [{"group_id": 5, "contact_id": p["id"], "status": "Added"} for p in people]},
            "wordpress": {"users": []}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    need_services("Celery", postgres_available(), redis_available())
    home = tmp_path_factory.mktemp("real_airflow_celery")
    settings_file = home / "cmsuser.yaml"
    settings_file.write_text(yaml.safe_dump({**BASE_SETTINGS, "trigger_groups": ["new_members"],
                                             "retry_delay_seconds": 1, "batch_size": BATCH, "notify": False}))
    with started_sites(seed()) as sites:
        sites.cms.inject(method="POST", path="/wp/v2/users", status=None, delay=CREATE_DELAY, times=10_000)
        env = {"CMSUSER_SETTINGS": str(settings_file), **sites.connection_env}
        airflow = RealAirflow(env, home=home / "airflow_home", database=DATABASE, parallelism=4, pool_slots=4,
                              executor="CeleryExecutor", celery_workers=WORKERS)
        airflow.start()
        try:
            yield airflow, sites
        finally:
            airflow.stop()


def test_batches_spread_over_two_workers_and_the_run_converges_after_one_is_killed(stack):
    airflow, sites = stack
    run_id = airflow.trigger()
    # wait until both workers are creating, then kill the first one in the middle of its batch
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        running = [ti for ti in airflow.task_instances("cmsuser_nightly", run_id)
                   if ti["task_id"] == "create_accounts" and ti["state"] == "running"]
        if {ti["hostname"] for ti in running} >= set(WORKERS):
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"the batches never ran on both workers at once: {airflow.task_instances('cmsuser_nightly', run_id)}")
    # the batch that began last on the first worker: the most of it is still to do when the kill comes
    victim = max((ti for ti in running if ti["hostname"] == WORKERS[0]), key=lambda ti: ti["start_date"] or "")
    time.sleep(CREATE_DELAY * 1.5)  # inside the batch: creates were sent, the batch is not done
    airflow.kill_component(f"celery-worker-{WORKERS[0]}")

    state = airflow.wait("cmsuser_nightly", run_id, timeout=420)
    tis = airflow.task_instances("cmsuser_nightly", run_id)
    assert state == "success", tis
    killed = next(ti for ti in tis if ti["task_id"] == "create_accounts" and ti["map_index"] == victim["map_index"])
    assert killed["try_number"] >= 2 and killed["hostname"] == WORKERS[1]  # retried on the worker still alive
    outcomes = airflow.xcom("cmsuser_nightly", run_id, "finalize", key="outcomes")
    assert Counter(row["outcome"] for row in outcomes) == {"created": CONTACTS}
    emails = Counter(u["email"].lower() for u in sites.cms.users if u["email"].endswith("@celery.example"))
    assert len(emails) == CONTACTS and set(emails.values()) == {1}  # no duplicate, whatever the kill cut
    links = {row["contact_id"]: row["uf_id"] for row in sites.civicrm.table("UFMatch")}
    assert sorted(links) == [row["contact_id"] for row in sorted(outcomes, key=lambda r: r["contact_id"])]
    print(json.dumps({"killed batch": victim["map_index"], "tries": killed["try_number"],
                      "hosts": sorted({ti["hostname"] for ti in tis if ti["task_id"] == "create_accounts"})}))
