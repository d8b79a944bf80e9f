"""Benchmark: one nightly run of N contacts against a real CiviCRM 5.76 (the WordPress emulator as CMS).

    .venv/bin/python -m bench.real_civicrm --contacts 1000 [--batch-size 200] [--latency 0.05]

Starts a fresh real CiviCRM (sandbox/real_civicrm, ~15 s), seeds N contacts in a trigger group
with the site admin's key, puts a counting proxy (sandbox.faultproxy) in front of it, and runs the
DAG with the pipeline's API user (the README's permissions). Reports what it measured: wall time
per task, CiviCRM calls per contact, and the same for the emulated CiviCRM on the same data.
Never part of the pass/fail suite.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import requests

from sandbox import local_airflow
from sandbox.cli import stop_cleanly_on_sigterm


def _api(site, entity: str, action: str, params: dict) -> list[dict]:
    answer = requests.post(site.api4_url.replace("{entity}", entity).replace("{action}", action), timeout=300,
                           data={"params": json.dumps(params)},
                           headers={"X-Civi-Auth": f"Bearer {site.admin_api_key}", "X-Requested-With": "XMLHttpRequest"})
    answer.raise_for_status()
    return answer.json()["values"]


def seed(site, contacts: int) -> None:
    group = _api(site, "Group", "create", {"values": {"name": "new_members", "title": "New members"}})[0]["id"]
    _api(site, "Group", "create", {"values": {"name": "has_login", "title": "Has a website login"}})
    for start in range(0, contacts, 200):
        people = [{"contact_type": "Individual", "first_name": f"First{i}", "last_name": f"Last{i}",
                   "email_primary.email": f"person{i}@bench.example"} for i in range(start, min(contacts, start + 200))]
        made = _api(site, "Contact", "save", {"records": people})
        _api(site, "GroupContact", "save", {"records": [{"contact_id": c["id"], "group_id": group, "status": "Added"}
                                                       for c in made]})


def run_once(label: str, civicrm_env: str, wordpress, calls) -> dict:
    os.environ["AIRFLOW_CONN_CIVICRM_DEFAULT"] = civicrm_env
    os.environ.update({k: v for k, v in wordpress.items()})
    started = time.monotonic()
    run = local_airflow.run_nightly()
    elapsed = time.monotonic() - started
    counts = local_airflow.outcome_counts(run.run_id)
    return {"label": label, "state": str(run.state), "seconds": elapsed, "calls": calls(),
            "durations": local_airflow.task_durations(run.run_id), "outcomes": counts}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.0,
                        help="seconds every create waits in the emulated WordPress (a real one takes 50-70 ms)")
    args = parser.parse_args()
    stop_cleanly_on_sigterm()  # a killed benchmark stops its sites and stack too

    home = local_airflow.REPO / ".airflow" / "bench-real-civicrm"
    local_airflow.configure(home, fresh=True)
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    import yaml

    from bench.throughput import slow_creates
    from sandbox.civicrm import CiviCRMEmulator
    from sandbox.faultproxy import FaultProxy
    from sandbox.real_civicrm import RealCiviCRM
    from sandbox.wordpress import WordPressEmulator

    settings = home / "cmsuser.yaml"
    settings.write_text(yaml.safe_dump({"trigger_groups": ["new_members"], "history_group": "has_login",
                                        "roles": ["subscriber"], "batch_size": args.batch_size,
                                        "retry_delay_seconds": 0, "notify": True,
                                        "keep_run_files_hours": 1}))  # outcomes are read after the run
    os.environ["CMSUSER_SETTINGS"] = str(settings)
    local_airflow.init_db()
    site = RealCiviCRM.start()
    results = []
    try:
        started = time.monotonic()
        seed(site, args.contacts)
        print(f"real CiviCRM up in {site.started_seconds:.1f} s; seeded {args.contacts} contacts in "
              f"{time.monotonic() - started:.1f} s", flush=True)
        with FaultProxy(site.base_url) as proxy, WordPressEmulator(app_password="bench bench bench") as wp:
            slow_creates(wp, args.latency)
            cms = {"AIRFLOW_CONN_CMS_DEFAULT": json.dumps({"conn_type": "http", "host": wp.url, "login": "admin",
                                                           "password": "bench bench bench"})}
            real_env = json.dumps({"conn_type": "http", "host": proxy.url, "password": site.api_key,
                                   "extra": {"api4_url": site.api4_url.replace(site.base_url, proxy.url)}})
            results.append(run_once("real CiviCRM 5.76", real_env, cms, lambda: len(proxy.calls)))
        # the same contacts on the emulator, for the figures side by side
        emulator_seed = {"groups": [{"id": 5, "name": "new_members", "title": "New members"},
                                    {"id": 6, "name": "has_login", "title": "Has a website login"}],
                         "contacts": [{"id": i + 2, "first_name": f"First{i}", "last_name": f"Last{i}",
                                       "email": f"person{i}@bench.example"} for i in range(args.contacts)],
                         "group_contacts": [{"group_id": 5, "contact_id": i + 2, "status": "Added"}
                                            for i in range(args.contacts)]}
        with CiviCRMEmulator(api_key="bench-key") as civicrm, WordPressEmulator(app_password="bench bench bench") as wp:
            slow_creates(wp, args.latency)
            civicrm.seed(emulator_seed)
            cms = {"AIRFLOW_CONN_CMS_DEFAULT": json.dumps({"conn_type": "http", "host": wp.url, "login": "admin",
                                                           "password": "bench bench bench"})}
            emulated = json.dumps({"conn_type": "http", "host": civicrm.url, "password": "bench-key"})
            results.append(run_once("CiviCRM emulator", emulated, cms, lambda: len(civicrm.calls)))
    finally:
        site.stop()
    print(f"\n{'target':<20} {'state':<10} {'wall':>8} {'CiviCRM calls':>14} {'per contact':>12}  tasks")
    for r in results:
        tasks = ", ".join(f"{t} {s:.1f}s" for t, s in r["durations"].items())
        print(f"{r['label']:<20} {r['state']:<10} {r['seconds']:7.1f}s {r['calls']:>14} "
              f"{r['calls'] / args.contacts:>12.3f}  {tasks}  {r['outcomes']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
