"""Benchmark: the nightly pipeline under the REAL scheduler against the bare create loop (issue 12).

    .venv/bin/python -m bench.throughput --contacts 2000 --latency 0.02 --concurrency 1 4 8

For each concurrency c, in one session: fresh CiviCRM and WordPress emulators (N synthetic contacts in a
trigger group; every POST /wp/v2/users delayed by --latency seconds), the real Airflow (sandbox/real_airflow.py:
api-server, scheduler, dag-processor, LocalExecutor, PostgreSQL database `cmsuser_airflow_throughput_bench`)
with the settings that make the pipeline's concurrency c, one nightly run triggered over REST; then the bare
loop (bench/bare.py) at concurrency c on fresh emulator sites with the same latency. Concurrency c means, by
--parallel-batches P (a divisor of c; default 1): parallel_batches=P, max_concurrency=c/P, pool slots P,
LocalExecutor parallelism P + 4 (P batch tasks at once, each with c/P creating threads: c creates in flight).
--scheduler-idle-sleep S sets the scheduler's `scheduler_idle_sleep_time` (Airflow's default: 1 s), a deployment's
choice between how soon a finished step's successor starts and the scheduler's CPU while idle.

Writes every row to bench/results/throughput.json (rows of other invocations are kept, a row of the same
N, c, latency, P, notify, batch size and scheduler idle sleep is replaced) and regenerates docs/benchmarks.md from it. Progress goes to
stderr. Never part of the pass/fail suite.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import re
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import psutil
import yaml

from bench.page import DOC, write_section
from sandbox.cli import stop_cleanly_on_sigterm

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "throughput.json"
DATABASE = "cmsuser_airflow_throughput_bench"
DAG_ID = "cmsuser_nightly"
CONN_ID = "cms_default"
ROLES = ["subscriber"]
CREATE_ROUTE = "/wp/v2/users"
FOREVER = 10**9  # "times" of the latency injection: every create of the run
SAMPLE_SECONDS = 0.1  # how often task processes' memory is sampled
WORKERS_EVERY = 20  # samples between two looks for the LocalExecutor workers (they live as long as the scheduler)
IDLE_SECONDS = 10.0  # the stack's CPU while no run is going, measured before the trigger
POLL_SECONDS = 5.0  # how often the run's state is asked for over REST (the api-server's CPU counts as the pipeline's)


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _utc(stamp: str | None) -> float | None:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else None


# ---------------------------------------------------------------------- CPU and memory of Airflow's processes

def _own_and_children(proc: psutil.Process) -> float:
    """User+system CPU of the process and of its children that exited and were waited for."""
    t = proc.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def sites_cpu(sites, since: dict[str, float] | None = None) -> dict[str, float]:
    """CPU seconds of the processes serving CiviCRM and the CMS (sites started apart), or used since `since`."""
    used = {}
    for name, site in (("civicrm", sites.civicrm), ("cms", sites.cms)):
        t = psutil.Process(site.pid).cpu_times()
        used[name] = round(t.user + t.system - (since or {}).get(name, 0.0), 2)
    return used


def tree_cpu(roots: list[int]) -> float:
    """CPU seconds so far of every process in the trees under `roots` (each component and all it started):
    the live ones' own time plus, through each live parent's children times, every descendant that exited
    and was waited for (a task process is waited for by its LocalExecutor worker)."""
    total, seen = 0.0, set()
    for pid in roots:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                if proc.pid in seen:
                    continue
                seen.add(proc.pid)
                with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
                    total += _own_and_children(proc)
    return total


class TaskMemory:
    """Samples, every SAMPLE_SECONDS, the RSS of each task process: a child of a LocalExecutor worker (the
    worker is the task's supervisor; its title names the task instance's id). Peak per task instance id.

    The sampling runs in a process of its own, and reads only the workers' titles and their children (from
    /proc/PID/task/PID/children): a walk of all of /proc every 0.1 s took 5% of a core from the machine the
    pipeline runs on, a handicap the bare loop does not have (rows before 2026-12-05 08:50 UTC)."""

    def __init__(self, roots: list[int]):
        self.roots = roots
        self.peak: dict[str, int] = {}  # task instance id -> peak RSS bytes of its task process
        self.samples = 0

    def __enter__(self) -> TaskMemory:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._answer, answer = context.Pipe(duplex=False)
        self._process = context.Process(target=_sample_until, args=(self.roots, self._stop, answer),
                                        name="task-memory", daemon=True)
        self._process.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.peak, self.samples = self._answer.recv()
        self._process.join()


def _sample_until(roots: list[int], stop, answer) -> None:
    peak: dict[str, int] = {}
    samples = 0
    workers: list[psutil.Process] = []
    while not stop.is_set():
        if samples % WORKERS_EVERY == 0:
            workers = _workers(roots)
        samples += 1
        _sample(workers, peak)
        stop.wait(SAMPLE_SECONDS)
    answer.send((peak, samples))


def _workers(roots: list[int]) -> list[psutil.Process]:
    """The LocalExecutor workers under `roots` (a walk of all of /proc: a few ms, so not every sample)."""
    found = []
    for pid in roots:
        with contextlib.suppress(psutil.NoSuchProcess):
            for proc in psutil.Process(pid).children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                    if "LocalExecutor:" in " ".join(proc.cmdline()):
                        found.append(proc)
    return found


def _children(pid: int) -> list[int]:
    """A process's children from Linux's /proc/PID/task/PID/children: no walk of every process."""
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return [child.pid for child in psutil.Process(pid).children()]


def _sample(workers: list[psutil.Process], peak: dict[str, int]) -> None:
    for worker in workers:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            title = " ".join(worker.cmdline()).strip()  # the task instance a busy worker supervises
            if title.endswith("<idle>"):
                continue
            ti_id = title.rpartition(" ")[2]
            for pid in _children(worker.pid):
                with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
                    peak[ti_id] = max(peak.get(ti_id, 0), psutil.Process(pid).memory_info().rss)


# ---------------------------------------------------------------------- the two measurements

def split(row: dict) -> int:
    """P, the batch tasks a row ran at once (rows before 2026-12-05 11:00 UTC name a mode: P 1 or c)."""
    if "parallel_batches" in row:
        return row["parallel_batches"]
    return 1 if row["mode"] == "threads" else row["concurrency"]


def settings_file(home: Path, args, concurrency: int) -> Path:
    batches = args.parallel_batches
    path = home / "cmsuser.yaml"
    path.write_text(yaml.safe_dump({
        "trigger_groups": ["new_members"], "history_group": "has_login", "roles": ROLES,
        "batch_size": args.batch_size, "retry_delay_seconds": 0, "notify": not args.no_notify,
        "max_concurrency": concurrency // batches, "parallel_batches": batches,
        "keep_run_files_hours": 1}))  # the outcomes file is read after the run
    return path


def slow_creates(wordpress, latency: float) -> None:
    """Every create waits `latency` seconds in the CMS (outside the emulator's lock: creates overlap)."""
    if latency > 0:
        wordpress.inject(method="POST", path=CREATE_ROUTE, status=None, delay=latency, times=FOREVER)


STEPS_BEFORE_BATCHES = 4  # preflight, password_resets, extract, plan


def run_pipeline(args, concurrency: int, home: Path) -> dict:
    from bench.run import synthetic_seed
    from sandbox.real_airflow import AIRFLOW_DEFAULT_TIMINGS, RealAirflow
    from sandbox.sites import started_sites

    civicrm_seed, wordpress_seed = synthetic_seed(args.contacts, 0.0)
    settings = settings_file(home, args, concurrency)
    pool = args.parallel_batches
    # A worker for each batch and for each step before the batches. In Airflow 3.3.2 about one task in four keeps
    # its LocalExecutor worker for up to [workers] min_heartbeat_interval (5 s) after it ended (docs/deploy.md,
    # "Executor slots"): with P + 1 workers (rows before 2026-12-05 19:40 UTC) a batch sometimes waited seconds
    # for one. Not Airflow's default of 32: a worker's first task starts about 0.1 s later than its next ones,
    # and with 32 workers taking tasks in turn nearly every task of the measured run was a first one, which a
    # running deployment's workers are long past (the rows of 19:40-20:23 UTC ran so).
    parallelism = pool + STEPS_BEFORE_BATCHES
    # each site in a process of its own, as real sites are (CiviCRM's writes never hold up the CMS's answers)
    with started_sites({"civicrm": civicrm_seed, "wordpress": wordpress_seed}, apart=True) as sites:
        slow_creates(sites.cms, args.latency)
        # Airflow's own scheduler and heartbeat timings, as a deployment has them (the tests' stack polls faster)
        env = {**sites.connection_env, "CMSUSER_SETTINGS": str(settings), **AIRFLOW_DEFAULT_TIMINGS}
        if args.scheduler_idle_sleep is not None:
            env["AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"] = str(args.scheduler_idle_sleep)
        airflow = RealAirflow(env, dags_folder=REPO / "dags", dag_ids=(DAG_ID,), home=home / "airflow_home",
                              database=DATABASE, pool_slots=pool, parallelism=parallelism)

        def sites_probe() -> Callable[[], dict]:
            sites.civicrm.reset_calls()
            sites.cms.reset_calls()
            mails_before, sites_before = len(sites.cms.mails), sites_cpu(sites)
            return lambda: {"sites_cpu_seconds": sites_cpu(sites, since=sites_before),
                            "mails": len(sites.cms.mails) - mails_before}

        airflow.start()
        try:
            measured = scheduled_run(airflow, timeout=args.timeout, probe=sites_probe)
            # that the setting took effect: the batch's own word on how many creates it sent side by side
            first_batch = airflow.logs(DAG_ID, measured["run_id"], "create_accounts", map_index=0)
            side_by_side = sorted({int(m) for m in re.findall(r"\((\d+) side by side\)", first_batch)})
        finally:
            airflow.stop()
        cms_calls = sites.cms.calls  # one copy from the site's process
        creates = sum(1 for call in cms_calls if call.method == "POST" and CREATE_ROUTE in (
            call.path + " " + str(call.query.get("rest_route", ""))))
        return {**measured, "pool_slots": pool, "parallelism": parallelism,
                "civicrm_calls": len(sites.civicrm.calls), "wordpress_calls": len(cms_calls),
                "wordpress_creates": creates, "side_by_side_logged": side_by_side, "sites_apart": True}


def scheduled_run(airflow, *, timeout: float, probe: Callable[[], Callable[[], dict]] | None = None) -> dict:
    """One nightly run on a started stack (`RealAirflow`), warmed first by a dry run: its state, moments (the
    run's and each task instance's), outcomes, the CPU of every Airflow process and each task's peak memory.
    `probe()` is called just before the trigger; what it returns is called right after the run and its dict
    (what the sites measured over the run) joins the result."""
    # A deployment's stack is warm when the nightly run comes: a fresh one spends about 3 s on its first task
    # (the worker's and api-server's first use). A dry run of the same DAG writes nothing anywhere.
    warm_up = airflow.trigger(DAG_ID, conf={"dry_run": True})
    airflow.wait(DAG_ID, warm_up, timeout=timeout, poll=POLL_SECONDS)
    roots = [proc.pid for proc in airflow.processes.values()]
    idle_before = tree_cpu(roots)
    time.sleep(IDLE_SECONDS)
    idle_rate = (tree_cpu(roots) - idle_before) / IDLE_SECONDS
    # each component's tree apart (their trees are disjoint: together they are the pipeline's CPU)
    cpu_before = {name: tree_cpu([proc.pid]) for name, proc in airflow.processes.items()}
    after_run = probe() if probe else dict
    with TaskMemory(roots) as memory:
        triggered = time.time()
        run_id = airflow.trigger(DAG_ID)
        state = airflow.wait(DAG_ID, run_id, timeout=timeout, poll=POLL_SECONDS)
        cpu = {name: tree_cpu([proc.pid]) - cpu_before[name] for name, proc in airflow.processes.items()}
        measured_by_probe = after_run()
    (run,) = [r for r in airflow.runs(DAG_ID) if r["dag_run_id"] == run_id]
    tis = airflow.task_instances(DAG_ID, run_id)
    outcomes = airflow.xcom(DAG_ID, run_id, "finalize", key="outcomes") or []
    ended = _utc(run["end_date"])
    create_tis = [ti for ti in tis if ti["task_id"] == "create_accounts"]
    starts = [_utc(ti["start_date"]) for ti in create_tis if ti["start_date"]]
    ends = [_utc(ti["end_date"]) for ti in create_tis if ti["end_date"]]
    tasks: dict[str, float] = {}
    for ti in tis:
        tasks[ti["task_id"]] = tasks.get(ti["task_id"], 0.0) + (ti["duration"] or 0.0)
    by_id = {ti["id"]: ti["task_id"] for ti in tis}
    peak: dict[str, int] = {}
    for ti_id, rss in memory.peak.items():
        task_id = by_id.get(ti_id, "?")
        peak[task_id] = max(peak.get(task_id, 0), rss)
    counts: dict[str, int] = {}
    for row in outcomes:
        counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
    return {
        "state": state, "run_id": run_id,
        "seconds": ended - triggered,  # trigger POST to the run's end_date
        "run_seconds": ended - _utc(run["start_date"]),
        "create_seconds": (max(ends) - min(starts)) if starts and ends else None,
        "create_batches": len(create_tis), "tasks": tasks,
        "timeline": timeline(tis, triggered, ended),
        "created": counts.get("created", 0), "outcomes": counts,
        "cpu_seconds": sum(cpu.values()),
        "cpu_seconds_by_component": {name: round(seconds, 2) for name, seconds in cpu.items()},
        "idle_cpu_per_second": idle_rate,
        "peak_rss_mb": {task: round(rss / 2**20, 1) for task, rss in sorted(peak.items())},
        "airflow_timings": "defaults", "warmed_up": True,
        "memory_samples": memory.samples, "startup_seconds": airflow.startup_seconds,
        **measured_by_probe,
    }


def timeline(tis: list[dict], triggered: float, ended: float | None) -> list[list]:
    """Each task instance's moments, in seconds after the trigger: scheduled, queued, started, ended (where the
    fixed cost of a run goes: the tasks' own time and the gaps between them); the run's end last."""
    def at(stamp):
        moment = _utc(stamp)
        return None if moment is None else round(moment - triggered, 2)

    rows = [[ti["task_id"] + (f"[{ti['map_index']}]" if ti.get("map_index", -1) >= 0 else ""),
             at(ti.get("scheduled_when")), at(ti.get("queued_when")), at(ti["start_date"]), at(ti["end_date"])]
            for ti in tis]
    rows.sort(key=lambda row: (row[3] is None, row[3] or 0.0))
    return [*rows, ["run end", None, None, None, None if ended is None else round(ended - triggered, 2)]]


def fixed_cost(timeline: list[list]) -> dict[str, float] | None:
    """From a run's timeline: seconds from the trigger to the first create, from the last create's end to the
    run's end, and how long no task was running in all (Airflow's scheduling between the steps)."""
    ran = [(row[0], row[3], row[4]) for row in timeline if row[3] is not None and row[4] is not None]
    spans = [(start, end) for _, start, end in ran]
    creates = [(start, end) for name, start, end in ran if name.startswith("create_accounts")]
    ended = timeline[-1][4] if timeline and timeline[-1][0] == "run end" else None
    if not creates or ended is None:
        return None
    idle, reached = 0.0, 0.0
    for start, end in sorted(spans):
        idle += max(0.0, start - reached)
        reached = max(reached, end)
    idle += max(0.0, ended - reached)
    return {"to_first_create": min(s for s, _ in creates), "after_last_create": ended - max(e for _, e in creates),
            "no_task_running": round(idle, 2)}


def run_bare(args, concurrency: int, settings_path: Path) -> dict:
    from bench.bare import bare_loop, bare_people
    from cms_operators import registry
    from provisioning.settings import load_settings
    from sandbox.sites import started_sites

    os.environ["CMSUSER_SETTINGS"] = str(settings_path)
    settings = load_settings()
    with started_sites({"civicrm": {}, "wordpress": {}}, apart=True) as sites:
        slow_creates(sites.cms, args.latency)
        os.environ.update(sites.connection_env)
        kind = registry.get("wordpress")
        sites.cms.reset_calls()
        sites_before = sites_cpu(sites)
        bare = bare_loop(lambda: kind.backend(CONN_ID, settings=settings), bare_people(args.contacts),
                         roles=list(settings.roles), notify=not args.no_notify, concurrency=concurrency)
        bare.update(wordpress_calls=len(sites.cms.calls), civicrm_calls=len(sites.civicrm.calls),
                    site_mails=len(sites.cms.mails), sites_apart=True, sites_cpu_seconds=sites_cpu(sites, since=sites_before))
    return bare


def measure(args, concurrency: int) -> dict:
    home = Path(tempfile.mkdtemp(prefix=f"cmsuser-bench-throughput-c{concurrency}-"))
    progress(f"c={concurrency}: pipeline over {args.contacts} contacts, latency {args.latency} s ...")
    piped = run_pipeline(args, concurrency, home)
    progress(f"c={concurrency}: pipeline {piped['state']} in {piped['seconds']:.1f} s "
             f"(create phase {piped['create_seconds']}); {piped['outcomes']}")
    progress(f"c={concurrency}: bare loop ...")
    bare = run_bare(args, concurrency, home / "cmsuser.yaml")
    progress(f"c={concurrency}: bare loop {bare['created']} in {bare['seconds']:.1f} s")
    command = (f"python -m bench.throughput --contacts {args.contacts} --latency {args.latency} "
               f"--concurrency {concurrency} --batch-size {args.batch_size}"
               + (f" --parallel-batches {args.parallel_batches}" if args.parallel_batches > 1 else "")
               + (" --no-notify" if args.no_notify else "")
               + (f" --scheduler-idle-sleep {args.scheduler_idle_sleep:g}" if args.scheduler_idle_sleep is not None
                  else ""))
    return {"contacts": args.contacts, "concurrency": concurrency, "latency": args.latency,
            "parallel_batches": args.parallel_batches, "scheduler_idle_sleep": args.scheduler_idle_sleep,
            "notify": not args.no_notify, "batch_size": args.batch_size, "command": command,
            "when": datetime.now().astimezone().isoformat(timespec="seconds"),
            "cpus": os.cpu_count(), "load_after": round(os.getloadavg()[0], 2),
            "pipeline": piped, "bare": bare}


# ---------------------------------------------------------------------- results

def _key(row: dict) -> tuple:
    idle = row.get("scheduler_idle_sleep")  # None: Airflow's default, sorted before any value set
    return (row["contacts"], row["concurrency"], row["latency"], split(row), row["notify"], row["batch_size"],
            (idle is not None, idle or 0.0))


def store(rows: list[dict], path: Path = RESULTS) -> list[dict]:
    """Add the rows to the results file, keeping every earlier run (repeats of one configuration are how its
    spread shows, and the README cites them), ordered by configuration and, within one, oldest first; returns
    all rows."""
    kept = json.loads(path.read_text()) if path.exists() else []
    merged = sorted(kept + rows, key=_key)  # stable: within a configuration, the order they were measured in
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=1) + "\n")
    return merged


def _f(value, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def table_lines(rows: list[dict]) -> list[str]:
    head = ("| N | c | latency ms | pipeline wall s | create phase s | accounts/s (whole / create) | "
            "bound N·lat/c s | bare wall s | bare accounts/s | speed × bare: whole / create | "
            "CPU ms/account: pipeline / bare | CiviCRM calls/contact | WP calls/contact: pipeline / bare | "
            "peak RSS MB: create task / any task | command |")
    lines = [head, "|" + "---:|" * 14 + "---|"]
    for row in rows:
        p, b, n = row["pipeline"], row["bare"], row["contacts"]
        created = p["created"] or n
        create_s = p["create_seconds"]
        rss = p["peak_rss_mb"]
        lines.append(
            f"| {n} | {_concurrency(row)} | "
            f"{row['latency'] * 1000:g} | {_f(p['seconds'])} | {_f(create_s)} | "
            f"{_f(p['created'] / p['seconds'])} / {_f(p['created'] / create_s if create_s else None)} | "
            f"{_f(n * row['latency'] / row['concurrency'])} | {_f(b['seconds'])} | "
            f"{_f(b['created'] / b['seconds'])} | {_f(b['seconds'] / p['seconds'], 2)} / "
            f"{_f(b['seconds'] / create_s if create_s else None, 2)} | "
            f"{_f(1000 * p['cpu_seconds'] / created)} / {_f(1000 * b['thread_cpu_seconds'] / max(1, b['created']))} | "
            f"{_f(p['civicrm_calls'] / n, 3)} | {_f(p['wordpress_calls'] / n, 3)} / "
            f"{_f(b['wordpress_calls'] / max(1, b['created']), 3)} | "
            f"{_f(rss.get('create_accounts'), 0)} / {_f(max(rss.values()) if rss else None, 0)} | "
            f"`{row['command']}` |")
    return lines


def detail_lines(rows: list[dict]) -> list[str]:
    lines = []
    for row in rows:
        p, b = row["pipeline"], row["bare"]
        tasks = ", ".join(f"{task} {seconds:.1f}" for task, seconds in p["tasks"].items())
        components = ", ".join(f"{name} {seconds:.1f}" for name, seconds in p.get("cpu_seconds_by_component", {}).items())
        if components:  # rows since 2026-12-05 06:30 UTC
            components = f"; the run's CPU seconds by component, each with all it started: {components}"
        lines.append(
            f"- N {row['contacts']}, c {row['concurrency']} (max_concurrency "
            f"{row['concurrency'] // split(row)}, parallel_batches {split(row)}, pool {p['pool_slots']}, parallelism "
            f"{p['parallelism']}, batch_size {row['batch_size']}, {p['create_batches']} batches; the first batch's log "
            f"says {p.get('side_by_side_logged') or 'nothing'} side by side), {row['when']}: "
            f"run {p['state']}, outcomes {p['outcomes']}, {p['mails']} mails; run start to end "
            f"{p['run_seconds']:.1f} s; task seconds: {tasks}; Airflow's scheduler and heartbeat timings "
            f"{TIMINGS[p.get('airflow_timings', 'tests')]}"
            + (f" but scheduler_idle_sleep_time {row['scheduler_idle_sleep']:g} s"
               if row.get("scheduler_idle_sleep") is not None else "")
            + f"{', stack warmed by a dry run' if p.get('warmed_up') else ''}; "
            "stack idle CPU "
            f"{p['idle_cpu_per_second'] * 1000:.0f} ms per second (included in the pipeline's CPU){components}; bare loop "
            f"{b['created']} accounts, {b['mails']} mails, process CPU {b['cpu_seconds']:.1f} s "
            f"({'the sites in processes of their own' if b.get('sites_apart') else 'with the in-process emulators'}), "
            f"its threads' own {b['thread_cpu_seconds']:.1f} s"
            + (f"; the sites' CPU seconds (CiviCRM, CMS): pipeline {_pair(p['sites_cpu_seconds'])}, bare loop "
               f"{_pair(b['sites_cpu_seconds'])}" if p.get("sites_cpu_seconds") and b.get("sites_cpu_seconds") else "")
            + fixed_cost_text(p.get("timeline"))
            + "; load average "
            f"{row['load_after']} on {row['cpus']} CPUs after the row.")
    return lines


def fixed_cost_text(timeline: list[list] | None) -> str:
    """What `fixed_cost` found, as a clause of a row's details (empty without a timeline)."""
    cost = fixed_cost(timeline) if timeline else None
    if cost is None:
        return ""
    return (f"; the first create began {cost['to_first_create']:.1f} s after the trigger and the run ended "
            f"{cost['after_last_create']:.1f} s after the last; no task ran for {cost['no_task_running']:.1f} s of the "
            "run (Airflow's scheduling between its steps)")


def _concurrency(row: dict) -> str:
    """c, with the split over batch tasks when there is one: "8 (2×4)" is 2 batch tasks of 4 threads."""
    batches = split(row)
    cell = str(row["concurrency"]) if batches == 1 else f"{row['concurrency']} ({batches}×{row['concurrency'] // batches})"
    idle = row.get("scheduler_idle_sleep")
    return cell if idle is None else f"{cell}, scheduler idle sleep {idle:g} s"


def _pair(cpu: dict[str, float]) -> str:
    return f"{cpu['civicrm']:.1f} and {cpu['cms']:.1f}"


TIMINGS = {"defaults": "Airflow's defaults",
           "tests": "the tests' faster ones (rows before 2026-12-05 03:30 UTC, REST polled every 2 s)"}


HOW_MEASURED = """\
### How measured

`bench/throughput.py`, one row per concurrency c, pipeline first, then the bare loop, in one session on this
machine. **Sites**: the CiviCRM and WordPress emulators (`sandbox.sites.started_sites(apart=True)`), each in
a process of its own, as real sites are (rows since 2026-12-05 08:40 UTC; earlier rows served both from the
benchmark's process, where the pipeline's CiviCRM writes held up the CMS's answers and the bare loop's threads
shared one interpreter lock with the CMS they called), seeded with N new contacts in a trigger group and no
existing accounts. The WordPress emulator keeps connections alive, as a real site's web server does (rows
since 2026-12-05 17:10 UTC; earlier rows answered each request with `Connection: close`, so every request of
both sides paid a new connection and the emulator a new thread, about twice its CPU). Every `POST /wp/v2/users`
waits `latency` in the emulator before answering (`inject(delay=...)`, outside its lock, so creates overlap);
fresh sites for the pipeline and for the bare loop. **Pipeline**: the real Airflow 3.3.2 (`RealAirflow`:
api-server, scheduler, dag-processor, LocalExecutor, PostgreSQL) with Airflow's default scheduler and
heartbeat timings (`AIRFLOW_DEFAULT_TIMINGS`: what a deployment has; the tests' stack polls faster),
`cmsuser_nightly` triggered over REST, notify on, after one dry run of it (rows since 2026-12-05 06:40 UTC: a
deployment's stack is warm, while a fresh one spends about 3 s on its first task); c creates in flight: P
batch tasks at once (`parallel_batches` P, pool slots P, LocalExecutor parallelism P + 4: a worker for each batch
and for each step before them, since Airflow 3.3.2's supervisor keeps about one worker in four up to 5 s after its
task ended; rows before 2026-12-05 19:40 UTC ran P + 1, and a batch sometimes waited seconds for a worker; rows
of 19:40-20:23 UTC ran Airflow's default of 32, where nearly every task was its worker's first, about 0.1 s slower
to start than a warm worker's; rows since 19:40 UTC also ran with the project's modules compiled before the stack
started, as a deployment has them, and the creation lock confirmed on an answer of the last quarter second
instead of a round trip before every create), each with c / P
threads (`max_concurrency`). A row whose c reads *c (P×c/P)* ran P > 1 (`--parallel-batches P`; the rows of
2026-12-04 shown as *4 (4×1)* ran one thread in each of 4 batch tasks); the others ran one batch task of c
threads at a time. *Pipeline wall*:
from the trigger POST to the run's `end_date`; *create phase*: first `create_accounts` start to last end (task
instances over REST; each one's moments are in the results file, `timeline`, and the details say how long
no task was running). **Bare loop**: `bench/bare.py`, c threads, each its own WordPress session, one shared
queue, per account `create_user` then `send_password_mail`: nothing else. *Speed × bare*: bare-loop seconds
divided by the pipeline's (1.0 = as fast as the bare loop; issue 12 asks for 0.9). *Bound*: N × latency / c, what the injected latency
alone costs at that concurrency. **CPU, pipeline**: psutil `cpu_times` (user + system + children_user +
children_system) summed over the process trees of the api-server, scheduler and dag-processor, sampled
just before the trigger and right after the run ended; task processes and LocalExecutor workers are in
those trees, and a task process that exited is counted in its waiting parent's children times. It includes
the benchmark's own REST polling (every 5 s) and the stack's idle work during the run (its idle rate, measured over 10 s before the trigger, is in the
details) but not PostgreSQL's server processes nor the emulators. **CPU, bare loop**: the loop threads' own
CPU (`time.thread_time`; in earlier rows the emulators served from the same process); the process's total is in
the details. **Calls**: the emulators' call records (every request received, preflight and extract included).
**Peak RSS**: psutil `memory_info().rss` of each task process (the child of a LocalExecutor worker), sampled
every 0.1 s from a process of its own (rows before 2026-12-05 04:20 UTC sampled from a thread beside the
emulators, taking their GIL a few ms in every 100), the highest per task; RSS counts pages still shared with the forking worker, and a task shorter
than the sampling interval may be missed.
"""


SECTION_TITLE = "Throughput: the nightly pipeline under the real scheduler against the bare create loop"


def write_doc(rows: list[dict], path: Path = DOC) -> None:
    lines = [f"## {SECTION_TITLE}", "",
             "Issue 12. Each row was produced by the command beside it (from the project folder, with "
             "`.venv/bin/python`); `bench/results/throughput.json` has every measured value. Seconds are wall "
             "clock; accounts/s count accounts created.", "",
             *table_lines(rows), "", "Details per row:", "", *detail_lines(rows), "", HOW_MEASURED]
    write_section(SECTION_TITLE, "\n".join(lines), path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.02, help="seconds every create waits in the CMS")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--parallel-batches", type=int, default=1,
                        help="batch tasks at once, each with c / this many creating threads (a divisor of every c)")
    parser.add_argument("--no-notify", action="store_true")
    parser.add_argument("--scheduler-idle-sleep", type=float, default=None,
                        help="the scheduler's scheduler_idle_sleep_time in seconds (default: Airflow's, 1)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds a pipeline run may take")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the JSON file of every row")
    parser.add_argument("--doc", type=Path, default=DOC, help="the Markdown page written from it")
    args = parser.parse_args(argv)
    stop_cleanly_on_sigterm()  # a killed benchmark stops its sites and stack too
    if any(c % args.parallel_batches for c in args.concurrency):
        parser.error("--parallel-batches must divide every --concurrency")
    from sandbox import local_airflow
    from sandbox.real_airflow import postgres_available

    problem = postgres_available()
    if problem:
        raise SystemExit(problem)
    # this process only opens CMS sessions (the bare loop): Airflow's config points at a throwaway home
    local_airflow.configure(Path(tempfile.mkdtemp(prefix="cmsuser-bench-throughput-")), fresh=True)
    progress(f"bench.throughput {shlex.join(argv if argv is not None else sys.argv[1:])}")
    failed = False
    for concurrency in args.concurrency:
        with contextlib.redirect_stdout(sys.stderr):  # the harness's progress; stdout gets the table
            row = measure(args, concurrency)
        rows = store([row], args.results)
        write_doc(rows, args.doc)
        failed |= row["pipeline"]["state"] != "success"
        progress(f"wrote {args.results} and {args.doc}")
    print("\n".join(table_lines([r for r in rows if r["contacts"] == args.contacts])))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
