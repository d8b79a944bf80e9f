"""The throughput benchmark's task-memory sampler: it finds a worker's task process without walking all of /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench import throughput


def test_a_process_children_are_read_from_proc():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in throughput._children(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert child.pid not in throughput._children(os.getpid())


def test_the_sampler_keeps_each_busy_workers_task_process_peak():
    """A stand-in worker: a process titled as LocalExecutor titles a busy one, with one child (its task)."""
    script = ("import setproctitle, subprocess, sys, time; setproctitle.setproctitle('airflow worker -- "
              "LocalExecutor: ti-123'); c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); "
              "time.sleep(30)")
    worker = subprocess.Popen([sys.executable, "-c", script])
    try:
        peak: dict[str, int] = {}
        for _ in range(100):
            workers = throughput._workers([os.getpid()])
            throughput._sample(workers, peak)
            if peak:
                break
            time.sleep(0.05)
        assert list(peak) == ["ti-123"] and peak["ti-123"] > 1_000_000  # a Python process's RSS
    finally:
        for child in throughput._children(worker.pid):
            os.kill(child, 9)
        worker.kill()
        worker.wait()


def test_a_rows_details_carry_the_sites_cpu_when_measured():
    import copy
    import json

    (row,) = json.loads(throughput.RESULTS.read_text())[-1:]
    row = copy.deepcopy(row)
    row["pipeline"].pop("sites_cpu_seconds", None)
    row["bare"].pop("sites_cpu_seconds", None)
    assert "the sites' CPU" not in throughput.detail_lines([row])[0]  # a row measured before it was
    row["pipeline"]["sites_cpu_seconds"] = {"civicrm": 4.25, "cms": 20.0}
    row["bare"]["sites_cpu_seconds"] = {"civicrm": 0.0, "cms": 17.5}
    (line,) = throughput.detail_lines([row])
    assert "the sites' CPU seconds (CiviCRM, CMS): pipeline 4.2 and 20.0, bare loop 0.0 and 17.5" in line


def test_a_split_run_gives_each_of_its_batch_tasks_a_share_of_the_concurrency(tmp_path):
    """--parallel-batches P: P batch tasks at once, each with c / P threads, so c creates are in flight."""
    import argparse

    import yaml

    args = argparse.Namespace(parallel_batches=2, batch_size=5000, no_notify=False)
    written = yaml.safe_load(throughput.settings_file(tmp_path, args, 8).read_text())
    assert (written["parallel_batches"], written["max_concurrency"]) == (2, 4)


def test_rows_name_their_split_and_older_rows_read_as_one_batch_or_one_thread_each():
    import copy
    import json

    (row,) = json.loads(throughput.RESULTS.read_text())[-1:]
    row["scheduler_idle_sleep"] = None  # Airflow's default: the cell names the split alone
    threads, batches, split = (copy.deepcopy(row) for _ in range(3))
    for old, mode in ((threads, "threads"), (batches, "batches")):
        old.pop("parallel_batches", None)
        old["mode"], old["concurrency"] = mode, 4
    split.pop("mode", None)
    split.update(concurrency=8, parallel_batches=2)
    assert [throughput.split(r) for r in (threads, batches, split)] == [1, 4, 2]
    cells = [line.split(" | ")[1] for line in throughput.table_lines([threads, batches, split])[2:]]
    assert cells == ["4", "4 (4×1)", "8 (2×4)"]
    assert "(max_concurrency 4, parallel_batches 2," in throughput.detail_lines([split])[0]
    assert len({throughput._key(r) for r in (threads, batches, split)}) == 3


def test_a_split_must_divide_every_concurrency():
    import pytest

    with pytest.raises(SystemExit):
        throughput.main(["--concurrency", "8", "3", "--parallel-batches", "2"])


def test_the_fixed_cost_is_read_off_the_timeline_with_overlapping_tasks_counted_once():
    timeline = [["preflight", 0.7, 0.7, 0.8, 1.1], ["password_resets", 1.8, 1.8, 1.8, 2.1],
                ["extract", 1.8, 1.8, 1.8, 2.5], ["plan", 2.9, 2.9, 2.9, 3.4],
                ["create_accounts[1]", 4.0, 4.0, 4.0, 37.3], ["create_accounts[0]", 4.0, 4.0, 4.0, 38.1],
                ["finalize", 39.1, 39.1, 39.1, 39.8], ["run end", None, None, None, 40.2]]
    cost = throughput.fixed_cost(timeline)
    # idle: 0-0.8, 1.1-1.8, 2.5-2.9, 3.4-4.0, 38.1-39.1, 39.8-40.2
    assert cost["to_first_create"] == 4.0 and round(cost["after_last_create"], 2) == 2.1
    assert cost["no_task_running"] == round(0.8 + 0.7 + 0.4 + 0.6 + 1.0 + 0.4, 2)
    assert throughput.fixed_cost(timeline[:-1]) is None  # the run has not ended
    assert throughput.fixed_cost([["preflight", 0.7, 0.7, None, None], ["run end", None, None, None, 1.0]]) is None


def test_a_row_measured_with_another_scheduler_idle_sleep_is_a_row_of_its_own_and_says_so():
    import copy
    import json

    (row,) = json.loads(throughput.RESULTS.read_text())[-1:]
    default, quick = copy.deepcopy(row), copy.deepcopy(row)
    default.pop("scheduler_idle_sleep", None)  # rows from before the option: Airflow's default
    quick["scheduler_idle_sleep"] = 0.2
    assert throughput._key(default) != throughput._key(quick)
    assert throughput._key(default) == throughput._key({**default, "scheduler_idle_sleep": None})
    cells = [line.split(" | ")[1] for line in throughput.table_lines([default, quick])[2:]]
    assert cells[1] == f"{cells[0]}, scheduler idle sleep 0.2 s" and "idle sleep" not in cells[0]
    details = throughput.detail_lines([default, quick])
    assert "but scheduler_idle_sleep_time 0.2 s" in details[1] and "scheduler_idle_sleep_time" not in details[0]


def test_storing_a_run_keeps_every_earlier_run_of_the_same_configuration(tmp_path):
    import copy
    import json

    (row,) = json.loads(throughput.RESULTS.read_text())[-1:]
    first, second, other = copy.deepcopy(row), copy.deepcopy(row), copy.deepcopy(row)
    first["when"], second["when"] = "2026-12-05T10:00:00+00:00", "2026-12-06T10:00:00+00:00"
    other["contacts"], other["when"] = 1, "2026-12-07T10:00:00+00:00"
    path = tmp_path / "throughput.json"
    throughput.store([first], path)
    throughput.store([other], path)
    rows = throughput.store([second], path)
    assert [r["when"] for r in rows] == [other["when"], first["when"], second["when"]]  # N 1 sorts first
    assert json.loads(path.read_text()) == rows
