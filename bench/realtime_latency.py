"""Benchmark: seconds from a contact joining the trigger group to its CMS account, through the watcher.

    .venv/bin/python -m bench.realtime_latency --tries 10

The real Airflow with a triggerer (sandbox/real_airflow.py, only `cmsuser_realtime` unpaused), a fresh
real CiviCRM 5.76 (sandbox/real_civicrm, ~15 s) and the real WordPress it lives in as the CMS. Each try
adds a new contact with an email, then puts it in the static trigger group through CiviCRM's API (the
site admin's key, as a person in CiviCRM's screens would), and polls WordPress until an account with
that email exists. Tries run one after another: the next starts when the runs of the last have finished.
Prints median, worst and every value with where the time went, and writes the table to
bench/results/realtime_latency.md. Never part of the pass/fail suite (tests/dags/test_realtime_latency.py
runs it once and checks what each try wrote, not its speed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import requests
import yaml

from sandbox.cli import stop_cleanly_on_sigterm
from sandbox.real_airflow import RealAirflow

DAG_ID = "cmsuser_realtime"
DATABASE = "cmsuser_airflow_realtime_bench"
RESULTS = Path(__file__).resolve().parent / "results" / "realtime_latency.md"
WATCHING = "watching from SubscriptionHistory id"  # the watcher's log line once its cursor is set
WATCH_INTERVAL = 5
ACCOUNT_TIMEOUT = 120  # seconds a try may take before it counts as lost


class CiviCRMApi:
    """APIv4 over plain HTTP with one key (the site admin's on a real site: it may add contacts)."""

    def __init__(self, template: str, api_key: str, site_key: str | None = None):
        self.template = template
        self.session = requests.Session()
        self.session.headers.update({"X-Civi-Auth": f"Bearer {api_key}", "X-Requested-With": "XMLHttpRequest",
                                     **({"X-Civi-Key": site_key} if site_key else {})})

    def __call__(self, entity: str, action: str, params: dict) -> list[dict]:
        answer = self.session.post(self.template.replace("{entity}", entity).replace("{action}", action),
                                   data={"params": json.dumps(params)}, timeout=60)
        if answer.status_code != 200:
            raise RuntimeError(f"CiviCRM {entity}.{action} answered {answer.status_code}: {answer.text[:300]}")
        return answer.json()["values"]

    def contact(self, first: str, last: str, email: str | None) -> int:
        values = {"contact_type": "Individual", "first_name": first, "last_name": last}
        contact_id = self("Contact", "create", {"values": values})[0]["id"]
        if email:
            self("Email", "create", {"values": {"contact_id": contact_id, "email": email, "is_primary": True}})
        return contact_id

    def join(self, contact_id: int, group_id: int, status: str = "Added") -> None:
        """Add to (or remove from) a static group as CiviCRM's screens do: one SubscriptionHistory row."""
        self("GroupContact", "save", {"records": [{"contact_id": contact_id, "group_id": group_id,
                                                   "status": status}], "match": ["contact_id", "group_id"]})

    def tag(self, contact_id: int, tag_id: int) -> None:
        self("EntityTag", "create", {"values": {"entity_table": "civicrm_contact", "entity_id": contact_id,
                                                "tag_id": tag_id}})

    def activities(self, contact_id: int) -> list[str]:
        """The statuses of the contact's "User Account Creation" activities, oldest first."""
        rows = self("ActivityContact", "get", {
            "select": ["activity_id", "activity_id.status_id:name"],
            "where": [["contact_id", "=", contact_id], ["record_type_id:name", "=", "Activity Targets"],
                      ["activity_id.activity_type_id:name", "=", "User Account Creation"]],
            "orderBy": {"activity_id": "ASC"}})
        return [row["activity_id.status_id:name"] for row in rows]

    def link(self, contact_id: int) -> dict | None:
        rows = self("UFMatch", "get", {"select": ["uf_id", "uf_name"], "where": [["contact_id", "=", contact_id]]})
        return rows[0] if rows else None


@dataclass
class Try:
    email: str
    contact_id: int
    seconds: float | None = None  # join -> account seen in the CMS; None: not within ACCOUNT_TIMEOUT
    runs: list[dict] = field(default_factory=list)  # the runs that started after the join
    accounts: int = 0  # CMS accounts with the email
    account_id: int | None = None
    activities: list[str] = field(default_factory=list)
    link: dict | None = None
    outcome: str | None = None
    steps: dict[str, float] = field(default_factory=dict)  # where the time went (see _steps)


def _utc(stamp: str | None) -> float | None:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else None


def _steps(airflow: RealAirflow, run: dict, joined_at: float) -> dict[str, float]:
    """The try's seconds until create_accounts ended, split up: until the watcher's event (its poll interval),
    until the scheduler started the run, until its first task started, the own time of the tasks that ended
    by then, and the rest (the scheduler queueing each task and its process starting)."""
    tis = airflow.task_instances(DAG_ID, run["dag_run_id"])
    event, run_start = _utc(run["run_after"]), _utc(run["start_date"])
    steps = {"to event": event - joined_at}
    if run_start:
        steps["event to run"] = run_start - event
    created = [_utc(ti["end_date"]) for ti in tis if ti["task_id"] == "create_accounts" and ti["end_date"]]
    starts = [_utc(ti["start_date"]) for ti in tis if ti["start_date"]]
    if starts and run_start:
        steps["run to 1st task"] = min(starts) - run_start
    if created and starts:
        done_by = max(created)
        busy = sum(ti["duration"] or 0.0 for ti in tis if ti["end_date"] and _utc(ti["end_date"]) <= done_by)
        steps["tasks busy"] = busy
        steps["between tasks"] = done_by - min(starts) - busy
        steps["join to created"] = done_by - joined_at
    for ti in tis:  # each task's own seconds, for the printout (not in the table)
        steps[f"task {ti['task_id']}"] = ti["duration"] or 0.0
    return steps


class Bench:
    """One stack (real CiviCRM site given, real Airflow with a triggerer started here) and its tries."""

    def __init__(self, site, home: Path, *, watch_interval: float = WATCH_INTERVAL, database: str = DATABASE):
        self.site = site
        self.api = CiviCRMApi(site.api4_url, site.admin_api_key, site.site_key)
        self.home = home
        self.watch_interval = watch_interval
        self.database = database
        admin = site.state["admin"]
        self.wp = requests.Session()
        self.wp.auth = (admin["login"], admin["app_password"])
        self.ids: dict[str, int] = {}
        self.airflow: RealAirflow | None = None

    def seed(self) -> None:
        for name, title in (("new_members", "New members"), ("has_login", "Has a website login")):
            self.ids[name] = self.api("Group", "create", {"values": {"name": name, "title": title}})[0]["id"]

    def start(self) -> None:
        settings = self.home / "cmsuser.yaml"
        settings.write_text(yaml.safe_dump({
            "trigger_groups": ["new_members"], "history_group": "has_login", "roles": ["subscriber"],
            "username_pattern": "{first_name}.{last_name}", "notify": False, "retry_delay_seconds": 1,
            "watch_interval_seconds": self.watch_interval,
            "keep_run_files_hours": 1}))  # the outcomes file is read after the run
        env = {"AIRFLOW_CONN_CIVICRM_DEFAULT": self.site.civicrm_connection(),
               "AIRFLOW_CONN_CMS_DEFAULT": self.site.wordpress_connection(), "CMSUSER_SETTINGS": str(settings)}
        self.airflow = RealAirflow(env, home=self.home / "airflow_home", dag_ids=(DAG_ID,), triggerer=True,
                                   database=self.database)
        self.airflow.start()
        waited = self.airflow.wait_for_log("triggerer", WATCHING, timeout=120)
        print(f"watcher polling {waited:.1f}s after the DAG was unpaused", flush=True)

    def stop(self) -> None:
        if self.airflow is not None:
            self.airflow.stop()

    def accounts(self, email: str) -> list[dict]:
        answer = self.wp.get(f"{self.site.base_url}/", timeout=30, params={
            "rest_route": "/wp/v2/users", "search": email, "context": "edit", "per_page": 100})
        answer.raise_for_status()
        return [u for u in answer.json() if (u.get("email") or "").lower() == email.lower()]

    def one_try(self, number: int) -> Try:
        airflow = self.airflow
        email = f"rt{number}.{int(time.time())}@bench.example"
        contact_id = self.api.contact(f"Rt{number}", "Latency", email)
        before = {run["dag_run_id"] for run in airflow.runs(DAG_ID)}
        joined_at = time.time()
        self.api.join(contact_id, self.ids["new_members"])
        result = Try(email, contact_id)
        started = time.monotonic()
        while time.monotonic() - started < ACCOUNT_TIMEOUT:
            if self.accounts(email):
                result.seconds = time.time() - joined_at
                break
            time.sleep(0.25)
        # let every run the join started finish before the next try (and before counting what it wrote)
        deadline = time.monotonic() + ACCOUNT_TIMEOUT
        while True:
            runs = [run for run in airflow.runs(DAG_ID) if run["dag_run_id"] not in before]
            if runs and all(run["state"] in ("success", "failed") for run in runs):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(1)
        result.runs = runs
        found = self.accounts(email)
        result.accounts, result.account_id = len(found), (found[0]["id"] if found else None)
        result.activities = self.api.activities(contact_id)
        result.link = self.api.link(contact_id)
        for run in runs:
            for row in airflow.xcom(DAG_ID, run["dag_run_id"], "finalize", key="outcomes") or []:
                if row["contact_id"] == contact_id:
                    result.outcome = row["outcome"]
        if runs:
            result.steps = _steps(airflow, runs[0], joined_at)
        shown = f"{result.seconds:5.1f}s" if result.seconds is not None else "  lost"
        print(f"try {number:2d}: {shown}  runs {len(runs)} ({', '.join(r['state'] for r in runs)}), "
              f"outcome {result.outcome}, accounts {result.accounts}, activities {result.activities}  "
              + ", ".join(f"{k} {v:.1f}s" for k, v in result.steps.items()), flush=True)
        return result


def summary(tries: list[Try]) -> dict:
    seconds = [t.seconds for t in tries if t.seconds is not None]
    return {"tries": len(tries), "measured": len(seconds),
            "median": statistics.median(seconds) if seconds else None,
            "worst": max(seconds) if seconds else None, "values": [t.seconds for t in tries]}


def write_results(tries: list[Try], result: dict, command: str, notes: list[str], path: Path = RESULTS) -> None:
    def cell(value):
        return f"{value:.1f}" if value is not None else "—"

    keys = ["to event", "event to run", "run to 1st task", "tasks busy", "between tasks", "join to created"]
    lines = ["# Near-real-time latency: trigger-group join to CMS account", "",
             f"Command: `{command}`", "",
             "The real Airflow 3.3.2 (LocalExecutor, api-server, scheduler, dag-processor, triggerer) on PostgreSQL,",
             f"a real CiviCRM 5.76 and its real WordPress; `watch_interval_seconds: {WATCH_INTERVAL}`. Seconds from the",
             "GroupContact save to the account being visible in WordPress's REST API; tries one after another.", "",
             f"**median {cell(result['median'])} s, worst {cell(result['worst'])} s** "
             f"({result['measured']} of {result['tries']} tries measured)", "",
             "| try | seconds | outcome | " + " | ".join(keys) + " |",
             "|---:|---:|---|" + "---:|" * len(keys)]
    for number, t in enumerate(tries, 1):
        lines.append(f"| {number} | {cell(t.seconds)} | {t.outcome} | "
                     + " | ".join(cell(t.steps.get(k)) for k in keys) + " |")
    lines += ["", "Columns (up to create_accounts' end): *to event* join until the watcher's event (its poll",
              "interval); *event to run* until the scheduler started the run; *run to 1st task* until preflight",
              "started; *tasks busy* the own time of the tasks that ended by then; *between tasks* the rest (the",
              "scheduler queueing each task, its process starting); *join to created* until create_accounts ended.",
              ""]
    lines += [f"- {note}" for note in notes]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).rstrip() + "\n")


def measure(site, tries: int, home: Path, *, database: str = DATABASE) -> tuple[list[Try], dict]:
    """Seed the site, start Airflow, run the tries; (the tries, the summary). The site is not stopped."""
    bench = Bench(site, home, database=database)
    bench.seed()
    bench.start()
    try:
        done = [bench.one_try(number) for number in range(1, tries + 1)]
    finally:
        bench.stop()
    result = summary(done)
    print(f"\nmedian {result['median']}, worst {result['worst']}, all "
          f"{[round(v, 1) if v is not None else None for v in result['values']]}", flush=True)
    return done, result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tries", type=int, default=10)
    args = parser.parse_args(argv)
    stop_cleanly_on_sigterm()  # a killed benchmark stops its sites and stack too
    from sandbox import real_civicrm

    problem = real_civicrm.unavailable()
    if problem:
        raise SystemExit(f"real CiviCRM: {problem}")
    site = real_civicrm.RealCiviCRM.start()
    print(f"real CiviCRM up in {site.started_seconds:.1f}s", flush=True)
    try:
        done, result = measure(site, args.tries, Path(tempfile.mkdtemp(prefix="cmsuser-bench-realtime-")))
    finally:
        site.stop()
    notes = [f"Machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end (other sessions' "
             "tests may have been running); real CiviCRM and WordPress on PHP's built-in server.",
             "The first try also pays for cold caches (PHP's, the task processes' imports)."]
    write_results(done, result, f"python -m bench.realtime_latency --tries {args.tries}", notes)
    print(f"wrote {RESULTS}")
    return result


if __name__ == "__main__":
    main()
