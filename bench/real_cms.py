"""Benchmark: the nightly pipeline against a REAL CMS, next to a bare create loop on the same site.

    .venv/bin/python -m bench.real_cms --cms joomla [--contacts 200] [--batch-size 200] [--no-notify]

In one session: starts the real CMS (its sandbox/real_<cms> handle) and a CiviCRM emulator seeded
with N new contacts in a trigger group, runs the nightly DAG once (dag.test via sandbox.local_airflow)
and times it (the whole run, and the create phase from the task timings); then resets the site and
runs the bare loop of bench/bare.py on it at concurrency 1: one backend (one API session), the same
per-account operations the pipeline makes (create_user, and send_password_mail when notify is on) for N
fresh accounts, one after the other. CMS calls are counted in this process (every HTTP request sent to the site's address,
redirect hops included), so nothing stands between the code and the site. Prints one table;
progress goes to stderr. Never part of the pass/fail suite.

A CMS plugs in with one start function in STARTERS returning a BenchSite (connection fields, the
roles new accounts get, reset, stop, mail count): Drupal (sandbox.real_drupal.RealDrupal) and
WordPress (tests/real_wordpress.py) fit the same shape.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sandbox import local_airflow

CONN_ID = "cms_default"


@dataclass
class BenchSite:
    """A started real CMS, as the benchmark needs it."""

    cms_type: str                       # the connection type (and cms_type)
    label: str                          # shown in the table
    host: str                           # the connection's host: the site's base URL
    password: str                       # the connection's password (the API credential)
    roles: list[str]                    # the `roles` setting new accounts get
    reset: Callable[[], None]           # back to the state after the install (users, mails)
    stop: Callable[[], None]
    mails: Callable[[], int]            # how many mails the site has handed to its mailer so far
    login: str = ""
    extra: dict = field(default_factory=dict)
    started_seconds: float = 0.0


def start_joomla() -> BenchSite:
    from sandbox import real_joomla

    problem = real_joomla.unavailable()
    if problem:
        raise SystemExit(f"cannot start a real Joomla: {problem}")
    site = real_joomla.RealJoomla.start()
    return BenchSite("joomla", f"Joomla {site.state.get('joomla_version', '')}".strip(), site.base_url,
                     site.api_token, ["2"], site.reset, site.stop, lambda: len(site.mails()),
                     started_seconds=site.started_seconds)


def start_drupal() -> BenchSite:
    from sandbox import real_drupal

    problem = real_drupal.unavailable()
    if problem:
        raise SystemExit(f"cannot start a real Drupal: {problem}")
    site = real_drupal.RealDrupal.start()
    return BenchSite("drupal", "Drupal 10.5", site.base_url, site.api_password, ["member"], site.reset, site.stop,
                     lambda: len(site.mails()), login=site.api_login, started_seconds=site.started_seconds)


def start_drupal7() -> BenchSite:
    from sandbox import real_drupal7

    problem = real_drupal7.unavailable()
    if problem:
        raise SystemExit(f"cannot start a real Drupal 7: {problem}")
    site = real_drupal7.RealDrupal7.start()
    return BenchSite("drupal7", f"Drupal {site.state.get('drupal_version', '7')} + Services 3.20", site.base_url,
                     site.api_password, ["member"], site.reset, site.stop, lambda: len(site.mails()),
                     login=site.api_login, extra={"endpoint": site.endpoint}, started_seconds=site.started_seconds)


def start_backdrop() -> BenchSite:
    from sandbox import real_backdrop

    problem = real_backdrop.unavailable()
    if problem:
        raise SystemExit(f"cannot start a real Backdrop: {problem}")
    site = real_backdrop.RealBackdrop.start()
    # bee over SSH: no HTTP requests to count (the calls column shows 0); the port rides in the extras
    return BenchSite("backdrop", f"Backdrop {site.state.get('backdrop_version', '1.28')} via bee over SSH",
                     site.host, "", ["member"], site.reset, site.stop, lambda: len(site.mails()),
                     login=site.ssh_user, extra={**site.extra(), "port": site.port},
                     started_seconds=site.started_seconds)


#: --cms name -> a function starting that real CMS
STARTERS: dict[str, Callable[[], BenchSite]] = {"joomla": start_joomla, "drupal": start_drupal,
                                                "drupal7": start_drupal7, "backdrop": start_backdrop}


class CallCounter:
    """Counts the HTTP requests this process sends to one origin (wraps requests.Session.send)."""

    def __init__(self, base_url: str):
        self.prefix = base_url.rstrip("/")
        self.count = 0

    @contextmanager
    def counting(self) -> Iterator[CallCounter]:
        import requests

        original = requests.Session.send
        counter = self

        def send(session, request, **kwargs):
            if request.url.startswith(counter.prefix + "/") or request.url == counter.prefix:
                counter.count += 1
            return original(session, request, **kwargs)

        requests.Session.send = send
        try:
            yield self
        finally:
            requests.Session.send = original


def synthetic_civicrm(contacts: int) -> dict:
    people = [{"id": i, "first_name": f"First{i}", "last_name": f"Last{i}", "email": f"person{i}@bench.example"}
              for i in range(2, contacts + 2)]
    return {
        "groups": [{"id": 5, "name": "new_members", "title": "New members"},
                   {"id": 6, "name": "has_login", "title": "Has a website login"}],
        "contacts": people,
        "group_contacts": [{"group_id": 5, "contact_id": p["id"], "status": "Added"} for p in people],
    }


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_pipeline(site: BenchSite, contacts: int) -> dict:
    from sandbox.civicrm import CiviCRMEmulator

    api_key, site_key = secrets.token_hex(16), secrets.token_hex(16)
    with CiviCRMEmulator(api_key=api_key, site_key=site_key) as civicrm:
        civicrm.seed(synthetic_civicrm(contacts))
        civicrm.start()
        os.environ.update(local_airflow.connection_env(civicrm.url, api_key, site_key, site.host, site.login,
                                                       site.password, cms_type=site.cms_type,
                                                       cms_extra=site.extra or None))
        mails_before = site.mails()
        counter = CallCounter(site.host)
        with counter.counting():
            started = time.monotonic()
            run = local_airflow.run_nightly()
            seconds = time.monotonic() - started
        counts = local_airflow.outcome_counts(run.run_id)
        durations = local_airflow.task_durations(run.run_id)
        return {"state": str(run.state).rpartition(".")[2], "seconds": seconds,
                "create_seconds": durations.get("create_accounts", 0.0), "calls": counter.count,
                "created": counts.get("created", 0), "outcomes": counts, "mails": site.mails() - mails_before,
                "civicrm_calls": len(civicrm.calls)}


def run_bare_loop(site: BenchSite, contacts: int, notify: bool) -> dict:
    from bench.bare import bare_loop, bare_people
    from cms_operators import registry
    from provisioning.settings import load_settings

    settings = load_settings()
    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = local_airflow.connection_env(
        "http://127.0.0.1:9", "unused", None, site.host, site.login, site.password, cms_type=site.cms_type,
        cms_extra=site.extra or None)["AIRFLOW_CONN_CMS_DEFAULT"]
    mails_before = site.mails()
    counter = CallCounter(site.host)
    with counter.counting():
        bare = bare_loop(lambda: registry.get(site.cms_type).backend(CONN_ID, settings=settings),
                         bare_people(contacts), roles=list(settings.roles), notify=notify, concurrency=1)
    return {"seconds": bare["seconds"], "calls": counter.count, "created": bare["created"],
            "mails": site.mails() - mails_before}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cms", choices=sorted(STARTERS), default="joomla")
    parser.add_argument("--contacts", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--no-notify", action="store_true", help="no password mails (pipeline and bare loop)")
    args = parser.parse_args()
    notify = not args.no_notify
    with contextlib.redirect_stdout(sys.stderr):  # what Airflow prints goes with the progress: stdout is the table
        site, piped, bare = measure(args, notify)
    print_table(site, args, notify, piped, bare)
    return 0 if piped["state"] == "success" else 1


def measure(args, notify: bool) -> tuple[BenchSite, dict, dict]:
    """Start the site, run the pipeline, reset, run the bare loop; the site is stopped at the end."""
    home = local_airflow.REPO / ".airflow" / f"bench-real-{args.cms}"
    local_airflow.configure(home, fresh=True)
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    os.environ["AIRFLOW__CORE__MAX_MAP_LENGTH"] = "100000"
    import yaml

    progress(f"starting a real {args.cms} ...")
    site = STARTERS[args.cms]()
    try:
        progress(f"{site.label} up in {site.started_seconds:.1f} s at {site.host}")
        settings = home / "cmsuser.yaml"
        settings.write_text(yaml.safe_dump({
            "trigger_groups": ["new_members"], "history_group": "has_login", "roles": site.roles,
            "batch_size": args.batch_size, "retry_delay_seconds": 0, "notify": notify,
            "keep_run_files_hours": 1}))  # the outcomes file is read after the run
        os.environ["CMSUSER_SETTINGS"] = str(settings)
        local_airflow.init_db()
        site.reset()
        progress(f"pipeline: {args.contacts} contacts ...")
        piped = run_pipeline(site, args.contacts)
        progress(f"pipeline {piped['state']} in {piped['seconds']:.1f} s; {piped['outcomes']}")
        site.reset()
        progress(f"bare loop: {args.contacts} accounts ...")
        bare = run_bare_loop(site, args.contacts, notify)
        progress(f"bare loop in {bare['seconds']:.1f} s")
        site.reset()
    finally:
        site.stop()
    return site, piped, bare


def print_table(site: BenchSite, args, notify: bool, piped: dict, bare: dict) -> None:
    n = args.contacts
    rows = [
        ("pipeline, whole run", piped["created"], piped["seconds"], piped["calls"], piped["mails"]),
        ("pipeline, create phase", piped["created"], piped["create_seconds"], None, None),
        ("bare loop", bare["created"], bare["seconds"], bare["calls"], bare["mails"]),
    ]
    print(f"{site.label}: {n} new contacts, batch size {args.batch_size}, notify {'on' if notify else 'off'}; "
          f"pipeline run {piped['state']}")
    print(f"{'':<24} {'accounts':>8} {'seconds':>8} {'accounts/s':>10} {'CMS calls':>9} {'per contact':>11} "
          f"{'mails':>5}")
    for label, accounts, seconds, calls, mails in rows:
        rate = accounts / seconds if seconds else float("nan")
        per = f"{calls / n:11.2f}" if calls is not None else f"{'':>11}"
        print(f"{label:<24} {accounts:>8} {seconds:8.1f} {rate:10.2f} {calls if calls is not None else '':>9} "
              f"{per} {mails if mails is not None else '':>5}")
    bare_rate = bare["created"] / bare["seconds"] if bare["seconds"] else float("nan")
    for label, seconds in (("whole run", piped["seconds"]), ("create phase", piped["create_seconds"])):
        rate = piped["created"] / seconds if seconds else float("nan")
        print(f"ratio pipeline ({label}) / bare loop: {rate / bare_rate:.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
