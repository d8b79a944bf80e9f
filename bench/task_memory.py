"""Benchmark: peak memory of each step of a nightly run as the run grows (issue 12: every task but the plan flat
from 10,000 to 1,000,000 contacts, the plan within 2 GB).

    .venv/bin/python -m bench.task_memory --contacts 10000 100000 1000000 [--existing 0.1]

For each N: the CiviCRM and WordPress emulators in a process of their own (`serve`), seeded with N new contacts
in the trigger group `new_members` (bench/run.py's synthetic seed; with --existing 0.1 a tenth of them have a
WordPress account by the same email, so the plan links those); then the steps as the DAG's tasks run them (pipeline/steps.py,
with the hooks and run files pipeline/tasks.py gives them), each in a fresh child process (`step`): extract,
plan, one create batch (the plan's `limit` is the batch size, so there is one batch and every other contact
is deferred to a later run, as a limited run does) and finalize. A child reports its own peak resident set
(ru_maxrss: the step's process tree is this one process; creates run in its threads) and its wall time.
Preflight and resets are not measured (their memory does not depend on N).

Writes bench/results/task_memory.json (rows of other invocations kept, a row of the same N, label and
existing share replaced) and its section of docs/benchmarks.md. Progress goes to stderr. Never part of the suite.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

from bench.page import DOC, write_section

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "task_memory.json"
TITLE = "Peak memory per step (bench/task_memory.py)"
DAG_ID = "cmsuser_nightly"
RUN_ID = "bench__task_memory"
STEPS = ("extract", "plan", "create", "finalize")


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- the emulators' own process

def serve(contacts: int, existing: float) -> None:
    """Start the seeded emulators, print their connection variables as one JSON line, and serve until stdin
    closes."""
    from bench.run import synthetic_seed
    from sandbox.sites import started_sites

    civicrm_seed, wordpress_seed = synthetic_seed(contacts, existing)
    with started_sites({"civicrm": civicrm_seed, "wordpress": wordpress_seed}) as sites:
        del civicrm_seed, wordpress_seed
        print(json.dumps(sites.connection_env), flush=True)
        sys.stdin.read()


# ---------------------------------------------------------------------- one step in a fresh process

class _State:
    """The create task's task state store, in memory (one try)."""

    def __init__(self) -> None:
        self.values: dict = {}

    def get(self, key):
        return self.values.get(key)

    def set(self, key, value) -> None:
        self.values[key] = value


def step(name: str, state_path: Path) -> None:
    """Run one step with the state the earlier ones left in `state_path`; add its output and measures there."""
    sys.path.insert(0, str(REPO / "plugins"))
    from civicrm_hooks import queries
    from civicrm_hooks.hook import CiviCRMHook
    from cms_operators import registry
    from pipeline import sources, steps
    from pipeline.run_files import RunFiles
    from provisioning.settings import load_settings

    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    started = time.perf_counter()
    settings = load_settings()
    marker = queries.run_marker(DAG_ID, RUN_ID)
    stamp = "2026-12-05 02:00:00"
    if name == "preflight":
        kind = registry.get("wordpress")
        state["run"] = steps.preflight(settings, CiviCRMHook(settings.civicrm_conn_id),
                                       lambda: (kind, kind.backend(settings.cms_conn_id, settings)), dry_run=False)
    else:
        run = state["run"]
        settings = steps.settings_of(run)
        files = RunFiles(settings, DAG_ID, RUN_ID)
        kind = registry.get(run["cms_type"])
        civicrm = CiviCRMHook(settings.civicrm_conn_id)
        if name == "extract":
            backend = kind.backend(settings.cms_conn_id, settings)
            try:
                state["extract"] = files.write("extract", steps.extract(
                    run, civicrm, backend, sources.trigger_membership(), marker=marker, files=files))
            finally:
                backend.close()
        elif name == "plan":
            planned = steps.plan(run, files.read(state["extract"]), kind, dry_run=False, limit=settings.batch_size,
                                 files=files)
            state["plan"], state["batches"] = planned["plan"], planned["batches"]
        elif name == "create":
            batch = state["batches"][0]
            rows = list(files.iter_rows(batch["rows"]))
            backend = kind.backend(settings.cms_conn_id, settings)
            try:
                results = steps.create(run, rows, civicrm, backend, marker=marker, stamp=stamp, final_try=True,
                                       state=_State(),
                                       open_backend=lambda: kind.backend(settings.cms_conn_id, settings))
            finally:
                backend.close()
            state["created"] = [files.write(f"created_{batch['index']}", results)]
        elif name == "finalize":
            created = state["created"] + [None] * (len(state["batches"]) - len(state["created"]))
            done = steps.finalize(run, civicrm, state["plan"], state["batches"], created, dry_run=False,
                                  marker=marker, stamp=stamp, files=files)
            state["counts"] = done["counts"]
        else:
            raise ValueError(f"no step {name!r}")
    state.setdefault("measures", {})[name] = {
        "seconds": round(time.perf_counter() - started, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    state_path.write_text(json.dumps(state))


# ---------------------------------------------------------------------- one N

def measure(contacts: int, *, existing: float, batch_size: int, label: str) -> dict:
    home = Path(tempfile.mkdtemp(prefix=f"cmsuser-bench-memory-{contacts}-"))
    settings = home / "cmsuser.yaml"
    settings.write_text(yaml.safe_dump({
        "trigger_groups": ["new_members"], "history_group": "has_login", "roles": ["subscriber"],
        "batch_size": batch_size, "retry_delay_seconds": 0, "notify": False,
        "run_files_url": f"file://{home}/runs", "keep_run_files_hours": 1}))
    progress(f"N={contacts}: seeding the emulators ...")
    seeded = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "bench.task_memory", "serve", "--contacts", str(contacts),
                               "--existing", str(existing)], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        env = {**os.environ, **json.loads(server.stdout.readline()), "CMSUSER_SETTINGS": str(settings),
               "AIRFLOW_HOME": str(home / "airflow_home"), "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"}
        progress(f"N={contacts}: emulators up in {time.perf_counter() - seeded:.0f} s")
        state = home / "state.json"
        for name in ("preflight", *STEPS):
            subprocess.run([sys.executable, "-m", "bench.task_memory", "step", name, "--state", str(state)],
                           cwd=REPO, env=env, check=True)
            measured = json.loads(state.read_text())["measures"][name]
            progress(f"N={contacts}: {name}: {measured['peak_rss_mb']} MB peak, {measured['seconds']} s")
        done = json.loads(state.read_text())
    finally:
        server.stdin.close()
        server.wait(timeout=600)
    return {"contacts": contacts, "label": label, "batch_size": batch_size, "existing": existing,
            "when": datetime.now().astimezone().isoformat(timespec="seconds"), "cpus": os.cpu_count(),
            "steps": {name: done["measures"][name] for name in STEPS}, "counts": done.get("counts"),
            "batches": len(done.get("batches") or [])}


# ---------------------------------------------------------------------- results

def store(rows: list[dict], path: Path = RESULTS) -> list[dict]:
    kept = json.loads(path.read_text()) if path.exists() else []
    keys = {(r["contacts"], r["label"], r["existing"]) for r in rows}
    kept = [r for r in kept if (r["contacts"], r["label"], r["existing"]) not in keys] + rows
    kept.sort(key=lambda r: (r["label"], r["existing"], r["contacts"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(kept, indent=1) + "\n")
    return kept


def section(rows: list[dict]) -> str:
    lines = [f"## {TITLE}", "",
             "Peak resident set (MB) and wall time (s) of each step, each in a fresh process, against the "
             "emulators running in a process of their own; N new contacts in the trigger group, the share "
             "`existing` of them with a WordPress account by the same email (so the site grows with N: the "
             "extract keeps the site's user listing, see docs/design.md); the plan's `limit` is one batch of "
             "500, so the create step is one batch and finalize records every contact (one batch's results, "
             "the rest deferred beyond the limit).", "",
             "    .venv/bin/python -m bench.task_memory --contacts 10000 100000 1000000 [--existing 0.1]", "",
             "Before the columnar run files (one JSON document per value, extract and finalize holding the whole "
             "run) this script did not exist; the real-Airflow throughput benchmark above recorded, per task "
             "process (the task runner adds about 70 MB), extract 202 / 213 MB, plan 210 / 235 MB and finalize "
             "212 / 244 MB at 2,000 / 10,000 contacts: about 1.4 kB (extract) and 4 kB (finalize) more per "
             "contact, which is 1.4 and 4 GB at a million.", "",
             "| label | existing | N | " + " | ".join(f"{s} MB" for s in STEPS) + " | " + " | ".join(f"{s} s" for s in STEPS)
             + " |",
             "|---|---:|---:|" + "---:|" * (2 * len(STEPS))]
    for row in rows:
        measures = row["steps"]
        lines.append(f"| {row['label']} | {row['existing']:g} | {row['contacts']:,} | "
                     + " | ".join(f"{measures[s]['peak_rss_mb']:.0f}" for s in STEPS) + " | "
                     + " | ".join(f"{measures[s]['seconds']:.1f}" for s in STEPS) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    served = sub.add_parser("serve")
    served.add_argument("--contacts", type=int, required=True)
    served.add_argument("--existing", type=float, default=0.1)
    stepped = sub.add_parser("step")
    stepped.add_argument("name", choices=("preflight", *STEPS))
    stepped.add_argument("--state", type=Path, required=True)
    parser.add_argument("--contacts", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--existing", type=float, default=0.0, help="share that already has a CMS account")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--label", default="columnar", help="names the code measured (e.g. before, after)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.contacts, args.existing)
        return 0
    if args.command == "step":
        step(args.name, args.state)
        return 0
    rows = [measure(n, existing=args.existing, batch_size=args.batch_size, label=args.label) for n in args.contacts]
    kept = store(rows, args.results)
    write_section(TITLE, section(kept), args.doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
