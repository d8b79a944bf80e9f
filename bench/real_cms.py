"""Benchmark: the nightly pipeline against a REAL CMS, next to a bare create loop on the same site.

    .venv/bin/python -m bench.real_cms --cms joomla [--contacts 200] [--batch-size 200] [--no-notify] [--scheduler]
        [--rounds K]

In one session: starts the real CMS (its sandbox/real_<cms> handle) and a CiviCRM emulator seeded
with N new contacts in a trigger group, runs the nightly DAG once and times it (the whole run, and the create
phase from the task timings): with dag.test via sandbox.local_airflow, or with --scheduler under the real
scheduler (sandbox.real_airflow: api-server, scheduler, dag-processor, LocalExecutor, PostgreSQL, Airflow's
default timings, one pool slot), as bench/throughput.py runs it; then resets the site and
runs the bare loop of bench/bare.py on it at concurrency 1: one backend (one API session), the same
per-account operations the pipeline makes (create_user, and send_password_mail when notify is on) for N
fresh accounts, one after the other. CMS calls are counted in this process (every HTTP request sent to the site's address,
redirect hops included; for Backdrop every bee call), so nothing stands between the code and the site; under
--scheduler the pipeline's tasks run in Airflow's processes and only the bare loop's calls are counted. With
--rounds K both are measured K times, alternating which goes first, and the row holds the means (a site's pace
drifts over a session by more than the differences measured). Prints one table; progress goes to stderr. Never
part of the pass/fail suite.

Every run is appended to bench/results/real_cms.json, and the section SECTION_TITLE of docs/benchmarks.md
is rewritten from that file (the latest row per CMS and N); the rest of the page is left as it is.

A CMS plugs in with one start function in STARTERS returning a BenchSite (connection fields, the
roles new accounts get, reset, stop, mail count): Joomla, Drupal, Drupal 7 and Backdrop (sandbox.real_*)
and WordPress (Debian's package, through tests/real_wordpress.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.page import DOC, write_section
from sandbox import local_airflow
from sandbox.cli import stop_cleanly_on_sigterm

CONN_ID = "cms_default"
DATABASE = "cmsuser_airflow_real_cms_bench"  # the --scheduler stack's own PostgreSQL database
DAG_TEST, SCHEDULER = "dag.test", "scheduler"  # how a row's pipeline ran (rows without `runner`: dag.test)
RESULTS = local_airflow.REPO / "bench" / "results" / "real_cms.json"
SECTION_TITLE = "Real CMSs: the pipeline against the bare loop at 1,000 contacts"
WORDPRESS_VERSION_FILE = Path("/usr/share/wordpress/wp-includes/version.php")


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
    calls_unit: str = "HTTP requests"   # what the CMS calls column counts (Backdrop: bee calls over SSH)


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
    # bee over SSH: its calls are counted instead of HTTP requests; the port rides in the extras
    return BenchSite("backdrop", f"Backdrop {site.state.get('backdrop_version', '1.28')} via bee over SSH",
                     site.host, "", ["member"], site.reset, site.stop, lambda: len(site.mails()),
                     login=site.ssh_user, extra={**site.extra(), "port": site.port},
                     started_seconds=site.started_seconds, calls_unit="bee calls")


def wordpress_version(version_file: Path = WORDPRESS_VERSION_FILE) -> str:
    """The installed WordPress's `$wp_version` ("" when unreadable)."""
    try:
        found = re.search(r"\$wp_version\s*=\s*'([^']+)'", version_file.read_text())
    except OSError:
        return ""
    return found.group(1) if found else ""


def start_wordpress() -> BenchSite:
    from tests import real_wordpress

    was_running = real_wordpress.is_running()
    started = time.monotonic()
    try:
        state = real_wordpress.start_real_wordpress()
    except real_wordpress.RealWordPressUnavailable as exc:
        raise SystemExit(f"cannot start a real WordPress: {exc}") from None
    started_seconds = time.monotonic() - started
    # a server that was up before (someone else's) stays up, as with the test fixture
    stop = (lambda: None) if was_running else real_wordpress.stop_real_wordpress
    version = wordpress_version()
    return BenchSite("wordpress", f"WordPress {version} (Debian)" if version else "WordPress (Debian)",
                     state["url"], state["app_password"], ["member"],
                     lambda: real_wordpress.reset_real_wordpress(state), stop,
                     lambda: len(real_wordpress.read_mails(state)), login=state["login"],
                     started_seconds=started_seconds)


#: --cms name -> a function starting that real CMS
STARTERS: dict[str, Callable[[], BenchSite]] = {"joomla": start_joomla, "drupal": start_drupal,
                                                "drupal7": start_drupal7, "backdrop": start_backdrop,
                                                "wordpress": start_wordpress}


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


class BeeCallCounter(CallCounter):
    """Counts the bee calls this process makes (wraps BeeHook.run: one remote bee command each)."""

    @contextmanager
    def counting(self) -> Iterator[CallCounter]:
        from cms_operators.backdrop.hook import BeeHook

        original = BeeHook.run
        counter = self

        def run(hook, operation, arguments=None):
            counter.count += 1
            return original(hook, operation, arguments)

        BeeHook.run = run
        try:
            yield self
        finally:
            BeeHook.run = original


def call_counter(site: BenchSite) -> CallCounter:
    return BeeCallCounter(site.host) if site.calls_unit == "bee calls" else CallCounter(site.host)


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
        # dag.test's first task pays for this process's first use of Airflow's task machinery (about 3 s);
        # a deployment's stack is warm when the nightly run comes. A dry run writes nothing anywhere.
        local_airflow.run_nightly({"dry_run": True})
        civicrm.reset_calls()
        mails_before = site.mails()
        counter = call_counter(site)
        with counter.counting():
            started = time.monotonic()
            run = local_airflow.run_nightly()
            seconds = time.monotonic() - started
        counts = local_airflow.outcome_counts(run.run_id)
        durations = local_airflow.task_durations(run.run_id)
        # the run's span by Airflow's (wall) clock, next to `seconds` (monotonic): the two can drift apart here
        run_seconds = (run.end_date - run.start_date).total_seconds() if run.start_date and run.end_date else None
        return {"state": str(run.state).rpartition(".")[2], "seconds": seconds, "run_seconds": run_seconds,
                "create_seconds": durations.get("create_accounts", 0.0), "calls": counter.count,
                "created": counts.get("created", 0), "outcomes": counts, "mails": site.mails() - mails_before,
                "civicrm_calls": len(civicrm.calls), "tasks": durations, "warmed_up": True}


def run_pipeline_scheduled(site: BenchSite, contacts: int, home: Path, timeout: float,
                           idle_sleep: float | None = None) -> dict:
    """The nightly run under the real scheduler (bench.throughput's stack and measures), at one batch at a time."""
    from bench.throughput import STEPS_BEFORE_BATCHES, scheduled_run
    from sandbox.civicrm import CiviCRMEmulator
    from sandbox.real_airflow import AIRFLOW_DEFAULT_TIMINGS, RealAirflow

    api_key, site_key = secrets.token_hex(16), secrets.token_hex(16)
    with CiviCRMEmulator(api_key=api_key, site_key=site_key) as civicrm:
        civicrm.seed(synthetic_civicrm(contacts))
        civicrm.start()
        env = {**local_airflow.connection_env(civicrm.url, api_key, site_key, site.host, site.login, site.password,
                                              cms_type=site.cms_type, cms_extra=site.extra or None),
               "CMSUSER_SETTINGS": os.environ["CMSUSER_SETTINGS"], **AIRFLOW_DEFAULT_TIMINGS}
        if idle_sleep is not None:  # a deployment's choice (docker-compose.yaml sets 0.2)
            env["AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"] = str(idle_sleep)
        airflow = RealAirflow(env, home=home / "airflow_home", database=DATABASE, pool_slots=1,
                              parallelism=1 + STEPS_BEFORE_BATCHES)

        def probe():
            civicrm.reset_calls()
            mails_before = site.mails()
            return lambda: {"mails": site.mails() - mails_before}

        airflow.start()
        try:
            measured = scheduled_run(airflow, timeout=timeout, probe=probe)
        finally:
            airflow.stop()
        return {**measured, "calls": None, "civicrm_calls": len(civicrm.calls)}


def run_bare_loop(site: BenchSite, contacts: int, notify: bool) -> dict:
    from bench.bare import bare_loop, bare_people
    from cms_operators import registry
    from provisioning.settings import load_settings

    settings = load_settings()
    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = local_airflow.connection_env(
        "http://127.0.0.1:9", "unused", None, site.host, site.login, site.password, cms_type=site.cms_type,
        cms_extra=site.extra or None)["AIRFLOW_CONN_CMS_DEFAULT"]
    mails_before = site.mails()
    counter = call_counter(site)
    with counter.counting():
        bare = bare_loop(lambda: registry.get(site.cms_type).backend(CONN_ID, settings=settings),
                         bare_people(contacts), roles=list(settings.roles), notify=notify, concurrency=1)
    return {"seconds": bare["seconds"], "calls": counter.count, "created": bare["created"],
            "mails": site.mails() - mails_before}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cms", choices=sorted(STARTERS), default="joomla")
    parser.add_argument("--contacts", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--no-notify", action="store_true", help="no password mails (pipeline and bare loop)")
    parser.add_argument("--scheduler", action="store_true",
                        help="run the pipeline under the real scheduler (PostgreSQL) instead of dag.test()")
    parser.add_argument("--scheduler-idle-sleep", type=float, default=None,
                        help="with --scheduler: the scheduler's scheduler_idle_sleep_time in seconds (Airflow's: 1)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds a --scheduler run may take")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure the pipeline and the bare loop this many times each, alternating which "
                             "goes first; the row holds their means")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the JSON file every run is appended to")
    parser.add_argument("--doc", type=Path, default=DOC, help="the Markdown page whose section is rewritten")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    stop_cleanly_on_sigterm()  # a killed benchmark stops its sites and stack too
    if args.scheduler_idle_sleep is not None and not args.scheduler:
        parser.error("--scheduler-idle-sleep needs --scheduler")
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")
    notify = not args.no_notify
    with contextlib.redirect_stdout(sys.stderr):  # what Airflow prints goes with the progress: stdout is the table
        site, rounds = measure(args, notify)
    row = make_row(site, args, notify, rounds, command=command_line(argv),
                   when=datetime.now(UTC).isoformat(timespec="seconds"))
    rows = append_row(row, args.results)
    write_doc(rows, args.doc)
    progress(f"appended to {args.results}; rewrote the section '{SECTION_TITLE}' of {args.doc}")
    print_table(site, args, notify, *combine(rounds))
    return 0 if row["state"] == "success" else 1


def measure(args, notify: bool) -> tuple[BenchSite, list[tuple[dict, dict]]]:
    """Start the site, then per round run the pipeline and the bare loop (the site reset before each); returns
    the rounds' (pipeline, bare) pairs. The site is stopped at the end."""
    home = local_airflow.REPO / ".airflow" / f"bench-real-{args.cms}"
    if args.scheduler:
        from sandbox.real_airflow import postgres_available

        if problem := postgres_available():
            raise SystemExit(problem)
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
            "max_concurrency": 1, "parallel_batches": 1,  # one create at a time, as the bare loop
            "keep_run_files_hours": 1}))  # the outcomes file is read after the run
        os.environ["CMSUSER_SETTINGS"] = str(settings)
        local_airflow.init_db()
        rounds = []
        for number in range(args.rounds):
            measured = {}
            for side in round_order(number):
                site.reset()
                progress(f"round {number + 1} of {args.rounds}, {side}: {args.contacts} contacts ...")
                if side == "bare":
                    measured[side] = run_bare_loop(site, args.contacts, notify)
                    progress(f"bare loop in {measured[side]['seconds']:.1f} s")
                else:
                    measured[side] = (
                        run_pipeline_scheduled(site, args.contacts, home, args.timeout, args.scheduler_idle_sleep)
                        if args.scheduler else run_pipeline(site, args.contacts))
                    progress(f"pipeline {measured[side]['state']} in {measured[side]['seconds']:.1f} s; "
                             f"{measured[side]['outcomes']}")
            rounds.append((measured["pipeline"], measured["bare"]))
        site.reset()
    finally:
        site.stop()
    return site, rounds


def round_order(number: int) -> tuple[str, str]:
    """Which side a round measures first: the pipeline in rounds 1, 3, ..., the bare loop in rounds 2, 4, ...,
    so a site that drifts over the session (its tables, its caches, the machine's other load) weighs on both."""
    return ("pipeline", "bare") if number % 2 == 0 else ("bare", "pipeline")


# ---------------------------------------------------------------------- results (pure, tested in tests/bench)


def rate_ratio(created: int, seconds: float, bare_created: int, bare_seconds: float) -> float | None:
    """Pipeline accounts/s over bare-loop accounts/s (1.0 = as fast as the bare loop); None when undefined."""
    if not (seconds and bare_seconds and bare_created):
        return None
    return (created / seconds) / (bare_created / bare_seconds)


def command_line(argv: list[str]) -> str:
    """The command as typed from the project folder (the archives folder included when it was set)."""
    python = Path(sys.executable)
    with contextlib.suppress(ValueError):
        python = python.relative_to(local_airflow.REPO)
    thirdparty = os.environ.get("CMSUSER_THIRDPARTY", "").strip()
    prefix = f"CMSUSER_THIRDPARTY={shlex.quote(thirdparty)} " if thirdparty else ""
    return f"{prefix}{python} -m bench.real_cms {shlex.join(argv)}".rstrip()


def combine(rounds: list[tuple[dict, dict]]) -> tuple[dict, dict]:
    """The rounds' (pipeline, bare) pairs as one pair: seconds, counts and CPU are the rounds' means, outcomes
    added up over the rounds, task seconds averaged, each task's peak memory the highest, the timeline that of
    the round whose whole run took the median time, the state the first that was not success. One round is
    returned as it is."""
    if len(rounds) == 1:
        return rounds[0]
    pipelines, bares = [p for p, _ in rounds], [b for _, b in rounds]
    piped = {key: _mean(p.get(key) for p in pipelines)
             for key in ("seconds", "create_seconds", "run_seconds", "created", "mails", "calls", "civicrm_calls",
                         "cpu_seconds")}
    piped["state"] = next((p["state"] for p in pipelines if p["state"] != "success"), "success")
    outcomes: dict[str, int] = {}
    for p in pipelines:
        for outcome, count in p["outcomes"].items():
            outcomes[outcome] = outcomes.get(outcome, 0) + count
    piped["outcomes"] = outcomes
    piped["tasks"] = {task: _mean(p.get("tasks", {}).get(task) for p in pipelines)
                      for task in pipelines[0].get("tasks", {})}
    if any("peak_rss_mb" in p for p in pipelines):
        piped["peak_rss_mb"] = {task: max(p.get("peak_rss_mb", {}).get(task, 0.0) for p in pipelines)
                                for task in pipelines[0].get("peak_rss_mb", {})}
    median = sorted(pipelines, key=lambda p: p["seconds"])[(len(pipelines) - 1) // 2]
    if "timeline" in median:
        piped["timeline"] = median["timeline"]
    if piped["cpu_seconds"] is None:  # dag.test rounds do not measure Airflow's CPU
        del piped["cpu_seconds"]
    bare = {key: _mean(b.get(key) for b in bares) for key in ("seconds", "created", "mails", "calls")}
    return piped, bare


def _mean(values) -> float | int | None:
    """The mean of the values (an int when it is whole: counts stay counts), None when any is None (a measure
    some round did not take)."""
    values = list(values)
    if not values or any(value is None for value in values):
        return None
    mean = sum(values) / len(values)
    return int(mean) if all(isinstance(value, int) for value in values) and mean.is_integer() else mean


def make_row(site: BenchSite, args, notify: bool, rounds: list[tuple[dict, dict]], *, command: str,
             when: str) -> dict:
    """One invocation as stored in the results file (no credentials): the means of its rounds, and with more
    than one round each round's seconds and ratios."""
    n = args.contacts
    piped, bare = combine(rounds)

    def per_contact(calls: int | None) -> float | None:
        return round(calls / n, 3) if n and calls is not None else None

    return {
        "cms": args.cms, "label": site.label, "contacts": n, "batch_size": args.batch_size, "notify": notify,
        "state": piped["state"], "runner": SCHEDULER if args.scheduler else DAG_TEST,
        "scheduler_idle_sleep": args.scheduler_idle_sleep,
        "pipeline": {"seconds": round(piped["seconds"], 2), "create_seconds": _round(piped["create_seconds"]),
                     "run_seconds": _round(piped.get("run_seconds")),
                     "created": piped["created"], "outcomes": piped["outcomes"], "calls": piped["calls"],
                     "calls_per_contact": per_contact(piped["calls"]), "mails": piped["mails"],
                     "civicrm_calls": piped["civicrm_calls"],
                     "tasks": {task: round(seconds, 2) for task, seconds in piped.get("tasks", {}).items()},
                     **{key: piped[key] for key in ("timeline", "cpu_seconds", "peak_rss_mb") if key in piped}},
        "bare": {"seconds": round(bare["seconds"], 2), "created": bare["created"], "calls": bare["calls"],
                 "calls_per_contact": per_contact(bare["calls"]), "mails": bare["mails"], "concurrency": 1},
        "ratio_whole": rate_ratio(piped["created"], piped["seconds"], bare["created"], bare["seconds"]),
        "ratio_create": rate_ratio(piped["created"], piped["create_seconds"], bare["created"], bare["seconds"]),
        "calls_unit": site.calls_unit, "site_started_seconds": round(site.started_seconds, 1),
        "command": command, "when": when,
        **({"rounds": [round_summary(p, b, first) for (p, b), (first, _) in
                       zip(rounds, map(round_order, range(len(rounds))), strict=True)]}
           if len(rounds) > 1 else {}),
    }


def round_summary(piped: dict, bare: dict, first: str) -> dict:
    """One round of a row: which side went first, the seconds of both, and its own ratios."""
    return {"first": first, "pipeline_seconds": round(piped["seconds"], 2),
            "create_seconds": _round(piped["create_seconds"]), "bare_seconds": round(bare["seconds"], 2),
            "ratio_whole": rate_ratio(piped["created"], piped["seconds"], bare["created"], bare["seconds"]),
            "ratio_create": rate_ratio(piped["created"], piped["create_seconds"], bare["created"], bare["seconds"])}


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 2)


def append_row(row: dict, path: Path = RESULTS) -> list[dict]:
    """Append one run to the results file; returns every run in it."""
    rows = json.loads(path.read_text()) if path.exists() else []
    rows.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1) + "\n")
    return rows


def latest_rows(rows: list[dict]) -> list[dict]:
    """The latest run per CMS, N and runner (by `when`, later in the file on a tie), ordered by CMS, N, runner."""
    latest: dict[tuple, dict] = {}
    for row in rows:
        key = (row["cms"], row["contacts"], runner(row))
        if key not in latest or row["when"] >= latest[key]["when"]:
            latest[key] = row
    return [latest[key] for key in sorted(latest)]


def runner(row: dict) -> str:
    """How the row's pipeline ran: dag.test, or scheduler (with its idle sleep when one was set)."""
    idle = row.get("scheduler_idle_sleep")
    return row.get("runner", DAG_TEST) + ("" if idle is None else f", idle sleep {idle:g} s")


def _f(value, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _rate(created: int, seconds: float) -> float | None:
    return created / seconds if seconds else None


HOW_MEASURED = (
    "How measured: `bench/real_cms.py`, one CMS per invocation, on this machine (2 CPUs). The real CMS runs on "
    "PHP's built-in server and MariaDB (`sandbox/real_<cms>`; WordPress is Debian's package through "
    "`tests/real_wordpress.py`); CiviCRM is the emulator, in the benchmark's process, seeded with N new contacts "
    "in a trigger group. **Pipeline**, *run by* `dag.test`: `cmsuser_nightly` run once with `dag.test()` "
    "(`sandbox.local_airflow`, SQLite), after one dry run of it (rows since 2026-12-05 06:40 UTC; it warms this "
    "process's Airflow as a deployment's is warm): the tasks run one after another in this one process, with no "
    "scheduler between them; *whole run* is the `dag.test()` call, "
    "*create phase* the `create_accounts` task instances' durations added up (Airflow's wall-clock timestamps; "
    "the whole run and the bare loop use Python's monotonic clock, and on this VM the two clocks were seen to "
    "drift apart by up to a few per cent under load, so compare the run's start-to-end span in the details). "
    "*Run by* `scheduler` (`--scheduler`, rows since 2026-12-06): the real Airflow 3.3.2 as `bench/throughput.py` "
    "runs it (`RealAirflow`: api-server, scheduler, dag-processor, LocalExecutor, PostgreSQL, Airflow's default "
    "scheduler and heartbeat timings, one pool slot, `parallel_batches` and `max_concurrency` 1), warmed by a dry "
    "run, the run triggered over REST; *whole run* from the trigger POST to the run's `end_date`, *create phase* "
    "from the first `create_accounts` start to the last end; the pipeline's CMS calls are made in Airflow's task "
    "processes, so they are not counted (—). *Idle sleep 0.2 s* (`--scheduler-idle-sleep 0.2`): the scheduler's "
    "`scheduler_idle_sleep_time` as docker-compose.yaml sets it (Airflow's default is 1 s). "
    "**Bare loop**: `bench/bare.py` at "
    "concurrency 1 on the same site: one CMS session, per account `create_user` then `send_password_mail` "
    "(notify on), nothing else. The site is reset (users and captured mails back to the state after its "
    "install) before the pipeline, between the pipeline and the bare loop, and after. *× bare*: pipeline "
    "accounts/s divided by bare-loop accounts/s (1.0 = as fast as the bare loop). *CMS calls*: HTTP requests "
    "this process sent to the site's address (redirect hops included) per contact; Backdrop is driven by bee "
    "over SSH, so its column counts bee calls (one remote command each, `BeeHook.run`) instead, and there the "
    "pipeline sends creates and password mails in bulk (`BulkBackend`, up to 50 accounts per bee call) while the "
    "bare loop makes one call per create and per mail: its × bare compares bulk with one-by-one calls. *Mails*: "
    "mails the site handed to its mailer during the phase. Each row is one measurement on a shared machine; "
    "repeating a run moved its times by up to a fifth (both WordPress runs are in the JSON), so ratios near 1.0 "
    "show no difference. *Mean of K rounds* (`--rounds K`, rows since 2026-12-06 08:00 UTC): the pipeline and "
    "the bare loop measured K times each in one session, the pipeline first in odd rounds and the bare loop first "
    "in even ones (the site reset before each), so what drifts over a session weighs on both sides; the row holds "
    "the means (outcomes added up over the rounds, the fixed cost from the round of median length) and its "
    "details each round's own ratios.")


def section_markdown(rows: list[dict]) -> str:
    """The docs section for these runs (pass latest_rows(...)): a table, details per row, how measured."""
    from bench.throughput import fixed_cost_text

    lines = [f"## {SECTION_TITLE}", "",
             "Each row is the latest run for that CMS, N and runner, produced by the command beside it (from the project "
             "folder); `bench/results/real_cms.json` has every run. Seconds are wall clock.", "",
             "| CMS | N | batch | notify | run by | pipeline whole s | create phase s | bare s | "
             "accounts/s: whole / create / bare | × bare: whole / create | CMS calls/contact: pipeline / bare | "
             "mails: pipeline / bare | state | UTC | command |",
             "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for row in rows:
        p, b = row["pipeline"], row["bare"]
        unit = "" if row.get("calls_unit", "HTTP requests") == "HTTP requests" else f" ({row['calls_unit']})"
        lines.append(
            f"| {row['label']} | {row['contacts']} | {row['batch_size']} | {'on' if row['notify'] else 'off'} | "
            f"{runner(row)}{rounds_text(row)} | {_f(p['seconds'])} | {_f(p['create_seconds'])} | {_f(b['seconds'])} | "
            f"{_f(_rate(p['created'], p['seconds']))} / {_f(_rate(p['created'], p['create_seconds']))} / "
            f"{_f(_rate(b['created'], b['seconds']))} | "
            f"{_f(row['ratio_whole'], 2)} / {_f(row['ratio_create'], 2)} | "
            f"{_f(p['calls_per_contact'], 2)} / {_f(b['calls_per_contact'], 2)}{unit} | "
            f"{p['mails']} / {b['mails']} | {row['state']} | {row['when']} | `{row['command']}` |")
    lines += ["", "Details per row:", ""]
    for row in rows:
        p = row["pipeline"]
        tasks = ", ".join(f"{task} {seconds:.1f}" for task, seconds in p["tasks"].items()) or "—"
        rounds = len(row.get("rounds", []))
        outcomes, means = (f"outcomes of its {rounds} rounds", " (means)") if rounds else ("outcomes", "")
        lines.append(f"- {row['label']}, N {row['contacts']}, run by {runner(row)}: {outcomes} {p['outcomes']}; task "
                     f"seconds{means}: {tasks}; run start to end by Airflow's clock {_f(p.get('run_seconds'))} s"
                     + (f"; CPU of every Airflow process {p['cpu_seconds']:.1f} s" if "cpu_seconds" in p else "")
                     + fixed_cost_text(p.get("timeline"))
                     + f"; CiviCRM calls {p['civicrm_calls']}; site started in {row['site_started_seconds']:.0f} s"
                     + "".join(f"; {line}" for line in [rounds_detail(row)] if line) + ".")
    return "\n".join([*lines, "", HOW_MEASURED, ""])


def rounds_text(row: dict) -> str:
    """The table's note of a row measured in rounds ("" for one)."""
    return f", mean of {len(row['rounds'])} rounds" if row.get("rounds") else ""


def rounds_detail(row: dict) -> str:
    """Each round's seconds and ratios, in the order they ran ("" for a row of one round)."""
    return "; ".join(
        f"round {number} ({'pipeline' if r['first'] == 'pipeline' else 'bare loop'} first): pipeline "
        f"{r['pipeline_seconds']:.1f} s, create phase {_f(r['create_seconds'])} s, bare loop {r['bare_seconds']:.1f} s, "
        f"× bare {_f(r['ratio_whole'], 2)} / {_f(r['ratio_create'], 2)}"
        for number, r in enumerate(row.get("rounds", []), start=1))


def write_doc(rows: list[dict], path: Path = DOC) -> None:
    write_section(SECTION_TITLE, section_markdown(latest_rows(rows)), path)


def print_table(site: BenchSite, args, notify: bool, piped: dict, bare: dict) -> None:
    n = args.contacts
    rows = [
        ("pipeline, whole run", piped["created"], piped["seconds"], piped["calls"], piped["mails"]),
        ("pipeline, create phase", piped["created"], piped["create_seconds"], None, None),
        ("bare loop", bare["created"], bare["seconds"], bare["calls"], bare["mails"]),
    ]
    print(f"{site.label}: {n} new contacts, batch size {args.batch_size}, notify {'on' if notify else 'off'}; "
          f"pipeline run {piped['state']}" + (f"; means of {args.rounds} rounds" if args.rounds > 1 else ""))
    print(f"{'':<24} {'accounts':>8} {'seconds':>8} {'accounts/s':>10} {'CMS calls':>9} {'per contact':>11} "
          f"{'mails':>5}")
    for label, accounts, seconds, calls, mails in rows:
        rate = accounts / seconds if seconds else float("nan")
        per = f"{calls / n:11.2f}" if calls is not None else f"{'':>11}"
        print(f"{label:<24} {accounts:>8} {seconds:8.1f} {rate:10.2f} {calls if calls is not None else '':>9} "
              f"{per} {mails if mails is not None else '':>5}")
    for label, seconds in (("whole run", piped["seconds"]), ("create phase", piped["create_seconds"])):
        ratio = rate_ratio(piped["created"], seconds, bare["created"], bare["seconds"])
        print(f"ratio pipeline ({label}) / bare loop: {_f(ratio, 2)}")


if __name__ == "__main__":
    raise SystemExit(main())
