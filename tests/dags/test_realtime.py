"""The near-real-time DAG end to end with dag.test(), against the CiviCRM and WordPress emulators, started
with `conf.contact_ids` as a site that pushes would start it (the watcher's path runs under the real
triggerer: tests/dags/test_real_airflow_realtime.py).

The demo seed (sandbox/demo_seed.yaml): group 5 is the static trigger group, 7 the smart one, tag 3 the
trigger tag, group 6 and tag 4 the history; contact 7 is linked already, 15 is in the trash.
"""

from __future__ import annotations

import pytest

REALTIME = "cmsuser_realtime"
TRIGGER_GROUP, HISTORY_GROUP = 5, 6
NOT_IN_A_TRIGGER = 17  # a contact the test adds outside every trigger

pytestmark = pytest.mark.slow


@pytest.fixture
def outsider(sandbox):
    sandbox.civicrm.seed({"contacts": [{"id": NOT_IN_A_TRIGGER, "first_name": "Olivia", "last_name": "Outside",
                                        "email": "olivia@example.org"}]})
    return NOT_IN_A_TRIGGER


def test_given_ids_get_one_outcome_each_and_only_triggered_ones_are_handled(sandbox, outsider):
    run, outcomes = sandbox.run({"contact_ids": [2, 7, 15, outsider, 999999]}, dag_id=REALTIME)

    assert str(run.state).endswith("success")
    assert {cid: row["outcome"] for cid, row in outcomes.items()} == {
        2: "created", 7: "already_linked", 15: "not_triggered", outsider: "not_triggered", 999999: "not_triggered"}
    assert outcomes[15]["reason"] == "the contact is in the trash"
    assert outcomes[outsider]["reason"].startswith("not in a trigger group")
    assert outcomes[999999]["reason"] == "no such contact in CiviCRM"
    # only the contacts asked about: the other members of the trigger group wait for the nightly run
    assert [u["email"] for u in sandbox.wordpress.users if u["email"] == "ada@example.org"] == ["ada@example.org"]
    assert not [u for u in sandbox.wordpress.users if u["email"] in ("zoe@example.org", "olivia@example.org")]
    assert sandbox.ufmatch()[2]["uf_id"]
    [activity] = sandbox.activities(2)
    assert activity["subject"] == f"Created : ada.lovelace ({outcomes[2]['uf_id']})"
    for cid in (15, outsider, 999999):  # no activity for what the run was not asked to do
        assert sandbox.activities(cid) == []
    assert sandbox.membership(TRIGGER_GROUP).get(2) == "Removed" and sandbox.membership(HISTORY_GROUP)[2] == "Added"
    assert sandbox.membership(TRIGGER_GROUP)[5] == "Added"  # untouched


def test_first_attempts_only_a_contact_tried_before_is_left_to_the_nightly_run(sandbox):
    _, first = sandbox.run({"contact_ids": [9]}, dag_id=REALTIME)  # Ben's email is invalid: attempt 1 fails
    assert first[9]["outcome"] == "failed"
    assert len(sandbox.activities(9)) == 1

    run, again = sandbox.run({"contact_ids": [9]}, dag_id=REALTIME)

    assert str(run.state).endswith("success")
    assert again[9]["outcome"] == "left_to_nightly"
    assert "tried 1 time since its last give-up" in again[9]["reason"]
    assert len(sandbox.activities(9)) == 1  # no attempt used: the nightly run tries again
    _, nightly = sandbox.run()
    assert nightly[9]["outcome"] == "failed" and nightly[9]["attempt"] == 2


def test_a_run_with_nothing_to_do_ends_green(sandbox):
    run, outcomes = sandbox.run({"contact_ids": []}, dag_id=REALTIME)
    assert str(run.state).endswith("success")
    assert outcomes == {}
    assert sandbox.wordpress.users and not [u for u in sandbox.wordpress.users if u["email"] == "ada@example.org"]


def test_password_resets_are_sent_by_the_realtime_dag_too(sandbox):
    from sandbox import local_airflow

    sandbox.configure(reset_groups=["password_reset"], reset_tags=["reset_password"])
    run, outcomes = sandbox.run({"contact_ids": []}, dag_id=REALTIME)  # a watcher event for a reset group join
    assert str(run.state).endswith("success")
    resets = local_airflow.xcom(run.run_id, "password_resets", key="resets", dag_id=REALTIME)
    assert {r["contact_id"]: r["outcome"] for r in resets} == {7: "reset_sent", 13: "reset_failed"}
    assert [m["user_login"] for m in sandbox.wordpress.mails] == ["larry"]
    assert sandbox.membership(8) == {7: "Removed", 13: "Removed"}
    assert outcomes == {}  # no account work was asked for
