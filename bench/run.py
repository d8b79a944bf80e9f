"""Benchmark: one nightly run over N synthetic contacts against the emulators (speed and API economy).

    .venv/bin/python -m bench.run --contacts 10000 [--existing 0.1] [--batch-size 200]

Reports what it measured: wall time per phase (task durations), CiviCRM and WordPress calls per
contact, and the outcome counts. Never part of the pass/fail suite.
"""

from __future__ import annotations

import argparse
import os
import time

from sandbox import local_airflow


def synthetic_seed(contacts: int, existing_share: float) -> tuple[dict, dict]:
    people = [{"id": i, "first_name": f"First{i % 997}", "last_name": f"Last{i % 1009}",
               "email": f"person{i}@bench.example"} for i in range(2, contacts + 2)]
    civicrm = {
        "groups": [{"id": 5, "name": "new_members", "title": "New members"},
                   {"id": 6, "name": "has_login", "title": "Has a website login"}],
        "tags": [{"id": 3, "name": "needs_login", "label": "Needs login"}],
        "contacts": people,
        "group_contacts": [{"group_id": 5, "contact_id": p["id"], "status": "Added"} for p in people],
    }
    step = max(1, round(1 / existing_share)) if existing_share else 0
    wordpress = {"users": [{"username": f"existing{p['id']}", "email": p["email"], "roles": ["subscriber"]}
                           for p in people[::step]] if step else []}
    return civicrm, wordpress


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--existing", type=float, default=0.1, help="share that already has a CMS account")
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--no-notify", action="store_true", help="skip the password mails")
    args = parser.parse_args()

    home = local_airflow.REPO / ".airflow" / "bench"
    local_airflow.configure(home, fresh=True)
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    os.environ["AIRFLOW__CORE__MAX_MAP_LENGTH"] = "100000"

    import yaml

    from sandbox.sites import started_sites

    civicrm_seed, wordpress_seed = synthetic_seed(args.contacts, args.existing)
    settings = home / "cmsuser.yaml"
    settings.write_text(yaml.safe_dump({
        "trigger_groups": ["new_members"], "history_group": "has_login", "roles": ["subscriber"],
        "batch_size": args.batch_size, "retry_delay_seconds": 0, "notify": not args.no_notify,
        "keep_run_files_hours": 1}))  # the outcomes file is read after the run
    os.environ["CMSUSER_SETTINGS"] = str(settings)
    started = time.monotonic()
    with started_sites({"civicrm": civicrm_seed, "wordpress": wordpress_seed}) as sites:
        civicrm, wordpress = sites.civicrm, sites.cms
        print(f"seeded {args.contacts} contacts, {len(wordpress_seed['users'])} existing accounts "
              f"in {time.monotonic() - started:.1f} s", flush=True)
        os.environ.update(sites.connection_env)
        local_airflow.init_db()
        started = time.monotonic()
        run = local_airflow.run_nightly()
        elapsed = time.monotonic() - started
        counts = local_airflow.outcome_counts(run.run_id)
        durations = local_airflow.task_durations(run.run_id)
        print(f"run {run.state} in {elapsed:.1f} s for {args.contacts} contacts "
              f"({args.contacts / elapsed:.0f} contacts/s)")
        for task_id, seconds in durations.items():
            print(f"  {task_id:<16} {seconds:8.1f} s")
        print(f"outcomes: {counts}")
        print(f"CiviCRM calls: {len(civicrm.calls)} ({len(civicrm.calls) / args.contacts:.3f} per contact)")
        print(f"WordPress calls: {len(wordpress.calls)} ({len(wordpress.calls) / args.contacts:.3f} per contact), "
              f"{len(wordpress.mails)} password mails")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
