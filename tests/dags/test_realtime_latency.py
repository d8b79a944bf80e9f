"""The near-real-time latency benchmark (bench/realtime_latency.py), run once with 10 tries: the real Airflow
with a triggerer, the session's real CiviCRM 5.76 and its real WordPress.

Checks what every try wrote, not how fast: each join made exactly one account, one link to it and one
Completed activity, through runs the watcher started. The seconds are printed (median, worst, all) for the
log; bench/results/realtime_latency.md is written only by the command line.
"""

from __future__ import annotations

import time

import pytest

from bench import realtime_latency
from sandbox.real_airflow import postgres_available
from tests.conftest import need_services

pytestmark = [pytest.mark.real_airflow, pytest.mark.real_civicrm, pytest.mark.slow]

TRIES = 10
DATABASE = "cmsuser_airflow_realtime_latency_test"


def test_every_join_gets_exactly_one_account_and_a_completed_activity(real_civicrm, tmp_path):
    need_services("real-Airflow", postgres_available())
    real_civicrm.reset()
    started = time.monotonic()
    tries, result = realtime_latency.measure(real_civicrm, TRIES, tmp_path, database=DATABASE)
    print(f"\nrealtime latency, {TRIES} tries: median {result['median']:.1f}s, worst {result['worst']:.1f}s, "
          f"all {[round(v, 1) if v is not None else None for v in result['values']]}; "
          f"wall time {time.monotonic() - started:.1f}s", flush=True)
    assert len(tries) == TRIES
    for number, done in enumerate(tries, 1):
        where = f"try {number} (contact {done.contact_id})"
        assert done.seconds is not None, f"{where}: no account within {realtime_latency.ACCOUNT_TIMEOUT}s"
        assert done.runs and {run["run_type"] for run in done.runs} == {"asset_triggered"}, (where, done.runs)
        assert {run["state"] for run in done.runs} == {"success"}, (where, done.runs)
        assert done.outcome == "created", where
        assert done.accounts == 1, where
        assert done.activities == ["Completed"], (where, done.activities)
        assert done.link is not None and done.link["uf_id"] == done.account_id, (where, done.link)
