"""The nightly DAG and the creation lock (dag.test, in-process lock of the sandbox connection).

Pre-flight refuses to run without the lock connection, so creation is never left unguarded by a
forgotten connection; an email another run holds for longer than every try's wait is deferred to the
next run, with nothing sent and no attempt counted, while the rest of its batch is created.
"""

from __future__ import annotations

import pytest

from pipeline.locks import ProcessLockStore, lock_key
from provisioning import outcomes
from tests.dags.test_nightly import EXPECTED

pytestmark = pytest.mark.slow


def test_without_the_lock_connection_the_run_stops_at_preflight_and_nothing_is_created(sandbox, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    from pipeline import tasks

    monkeypatch.delenv("AIRFLOW_CONN_CMSUSER_LOCK")
    with pytest.raises(AirflowFailException) as failed:
        tasks.preflight.function(params={"dry_run": False})
    message = str(failed.value)
    assert "creation lock (connection 'cmsuser_lock')" in message
    assert "there is no Airflow connection 'cmsuser_lock'" in message and "type postgres" in message

    accounts = len(sandbox.wordpress.users)
    run, outcomes_ = sandbox.run()
    assert str(run.state).endswith("failed")
    assert len(sandbox.wordpress.users) == accounts
    assert sandbox.ufmatch().keys() == {7}  # only the seeded link


def test_an_email_another_run_keeps_locked_is_deferred_and_the_rest_created(sandbox, caplog):
    sandbox.configure(lock_wait_seconds=1)
    other_run = ProcessLockStore()  # the other run, in this process as dag.test's tasks are
    assert other_run.try_lock([lock_key("  ADA@example.org")]) == {lock_key("ada@example.org")}
    try:
        run, results = sandbox.run()
    finally:
        other_run.close()
    assert str(run.state).endswith("success")
    assert results[2]["outcome"] == "deferred"
    assert results[2]["reason"] == outcomes.email_locked_elsewhere(1.0)
    assert not any(u["email"] == "ada@example.org" for u in sandbox.wordpress.users)
    assert sandbox.activities(2) == []  # deferred: no activity, no attempt counted
    assert {cid: r["outcome"] for cid, r in results.items() if cid != 2} == {
        cid: outcome for cid, (outcome, _) in EXPECTED.items() if cid != 2}
    assert "NO protection between workers" in caplog.text  # the sandbox lock says what it is

    # the next run, with the email free, creates it
    run, results = sandbox.run()
    assert results[2]["outcome"] == "created"
    assert sum(u["email"] == "ada@example.org" for u in sandbox.wordpress.users) == 1
