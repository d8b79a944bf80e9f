"""The nightly DAG end to end with dag.test(), against the CiviCRM and WordPress emulators.

The demo seed has one contact per situation (see sandbox/demo_seed.yaml); group 5 is the static
trigger group, 7 the smart one, tag 3 the trigger tag, group 6 and tag 4 the history.
"""

from __future__ import annotations

from pathlib import Path

import pendulum
import pytest

TRIGGER_GROUP, SMART_GROUP, HISTORY_GROUP = 5, 7, 6
TRIGGER_TAG, HISTORY_TAG = 3, 4

EXPECTED = {
    2: ("created", "ada.lovelace"),
    3: ("created", "grace.hopper"),
    4: ("created", "alan.turing"),
    5: ("created", "zoe.angstrom"),
    6: ("linked_existing", "jane.doe"),
    7: ("already_linked", None),
    8: ("failed", None),
    9: ("failed", None),
    10: ("failed", None),
    11: ("created", "sam.family"),
    12: ("failed", None),
    13: ("failed", None),
    14: ("failed", None),
    16: ("created", "john.smith2"),
}

pytestmark = pytest.mark.slow


def _accounts_by_email(wordpress) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for user in wordpress.users:
        found.setdefault(user["email"].lower(), []).append(user)
    return found


def test_first_run_gives_each_contact_one_outcome(sandbox):
    run, outcomes = sandbox.run()
    assert str(run.state).endswith("success")
    assert {cid: (row["outcome"], row["username"] if row["outcome"] != "failed" else None)
            for cid, row in outcomes.items() if cid != 7} == {k: v for k, v in EXPECTED.items() if k != 7}
    assert outcomes[7]["outcome"] == "already_linked"
    assert 15 not in outcomes  # trashed contacts are never extracted

    reasons = {cid: outcomes[cid]["reason"] for cid in (8, 9, 10, 12, 13, 14)}
    assert "no primary email" in reasons[8]
    assert "invalid email" in reasons[9]
    assert "longer than 100" in reasons[10]
    assert "contact 11" in reasons[12]
    assert "deceased" in reasons[13]
    assert "administrator" in reasons[14]

    # accounts really exist with the configured role, one per email, linked by UFMatch
    accounts = _accounts_by_email(sandbox.wordpress)
    links = sandbox.ufmatch()
    for cid, (outcome, username) in EXPECTED.items():
        if outcome != "created":
            continue
        (account,) = [u for u in sandbox.wordpress.users if u["username"] == username]
        assert account["roles"] == ["member"]
        assert links[cid]["uf_id"] == account["id"]
        assert links[cid]["domain_id"] == 1
        assert links[cid]["uf_name"].lower() == account["email"].lower()
    assert all(len(same) == 1 for same in accounts.values())

    # the existing account is linked and left exactly as it was
    jane = accounts["jane.doe@example.org"][0]
    assert jane["roles"] == ["subscriber"] and jane["username"] == "jane.doe"
    assert links[6]["uf_id"] == jane["id"]



def test_connections_of_type_http_work_as_documented_before_our_own_types(sandbox, monkeypatch):
    import json

    from sandbox import local_airflow

    env = local_airflow.connection_env(sandbox.civicrm.url, sandbox.secrets["api_key"], sandbox.secrets["site_key"],
                                       sandbox.wordpress.url, "admin", sandbox.secrets["app_password"], generic=True)
    assert {json.loads(value)["conn_type"] for value in env.values()} == {"http"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    run, outcomes = sandbox.run()
    assert str(run.state).endswith("success")
    assert {cid: row["outcome"] for cid, row in outcomes.items()} == {cid: o for cid, (o, _) in EXPECTED.items()}


def test_user_fields_on_a_cms_without_them_stop_the_run_in_preflight(sandbox):
    from airflow.sdk.exceptions import AirflowFailException

    from pipeline import tasks

    sandbox.configure(user_fields={"field_full_name": "{first_name} {last_name}"})
    with pytest.raises(AirflowFailException, match="user_fields: WordPress has no user fields; remove the setting"):
        tasks.preflight.function(params={"dry_run": False})
    assert not [c for c in sandbox.wordpress.calls if c.method == "POST" and c.status == 201]  # nobody created


def test_a_reset_group_that_does_not_exist_stops_the_run_in_preflight(sandbox):
    from airflow.sdk.exceptions import AirflowFailException

    from pipeline import tasks

    sandbox.configure(reset_groups=["password_reset", "pasword_reset"])
    with pytest.raises(AirflowFailException, match="reset_groups: no group has the id, name or title 'pasword_reset'"):
        tasks.preflight.function(params={"dry_run": False})
    sandbox.configure(reset_groups=["password_reset"])
    run = tasks.preflight.function(params={"dry_run": False})
    assert run["resets"]["static_groups"] == {"8": "Reset website password"}


def test_the_connection_type_picks_the_cms_and_cms_type_must_agree(sandbox, monkeypatch):
    import os

    from airflow.sdk.exceptions import AirflowFailException

    from pipeline import tasks

    assert tasks.preflight.function(params={"dry_run": True})["cms_type"] == "wordpress"  # from the connection
    sandbox.configure(cms_type="wordpress")
    assert tasks.preflight.function(params={"dry_run": True})["cms_type"] == "wordpress"
    sandbox.configure(cms_type=None)
    monkeypatch.setenv("AIRFLOW_CONN_CMS_DEFAULT",
                       os.environ["AIRFLOW_CONN_CMS_DEFAULT"].replace('"wordpress"', '"postgres"'))
    with pytest.raises(AirflowFailException, match="'cms_default' is of type 'postgres'") as failed:
        tasks.preflight.function(params={"dry_run": True})
    assert "nothing was done for any contact" in str(failed.value)

def test_activities_history_and_clean_up(sandbox):
    sandbox.run()
    subjects = {cid: [(a["subject"], a["status_id"]) for a in sandbox.activities(cid)] for cid in EXPECTED}
    assert subjects[2][0][0].startswith("Created : ada.lovelace (")
    assert subjects[6][0][0].startswith("Linked : jane.doe (")
    assert subjects[7][0][0] == "Already linked : larry@example.org (3)"
    assert subjects[8][0][0] == "Failed to create User"
    assert all(len(rows) == 1 for rows in subjects.values())
    failed_details = sandbox.activities(9)[0]["details"]
    assert "invalid email" in failed_details

    members = sandbox.membership(TRIGGER_GROUP)
    history = sandbox.membership(HISTORY_GROUP)
    for cid in (2, 5, 6, 7, 11, 16):  # done: off the trigger group (kept as Removed), into history
        assert members[cid] == "Removed"
        assert history[cid] == "Added"
    for cid in (8, 9, 10, 12, 13, 14):  # failed once: still triggered, not in history
        assert members[cid] == "Added"
        assert cid not in history
    assert 3 not in sandbox.tagged(TRIGGER_TAG) and 3 in sandbox.tagged(HISTORY_TAG)
    assert 4 in sandbox.tagged(HISTORY_TAG)
    assert 4 not in sandbox.membership(SMART_GROUP)  # a smart group is not left: its member is simply done


def test_notify_sends_one_mail_per_created_account(sandbox):
    _, outcomes = sandbox.run()
    mailed = sorted(m["user_login"] for m in sandbox.wordpress.mails)
    created = sorted(row["username"] for row in outcomes.values() if row["outcome"] == "created")
    assert "grace.hopper" in created and "grace.hopper" not in mailed  # do_not_email: account, no mail
    assert mailed == sorted(u for u in created if u != "grace.hopper")


def test_second_run_creates_nothing_new(sandbox):
    sandbox.run()
    users_before = len(sandbox.wordpress.users)
    _, outcomes = sandbox.run()
    assert len(sandbox.wordpress.users) == users_before
    assert {row["outcome"] for row in outcomes.values()} == {"failed"}
    assert all(row["attempt"] == 2 for row in outcomes.values())


def test_rerunning_the_same_run_writes_nothing_twice(sandbox):
    when = pendulum.datetime(2026, 3, 1, 2, 0, tz="UTC")
    _, first = sandbox.run(logical_date=when)
    activities = len(sandbox.civicrm.table("Activity"))
    users, links = len(sandbox.wordpress.users), len(sandbox.civicrm.table("UFMatch"))
    run, second = sandbox.run(logical_date=when)  # the same run, cleared and run again
    assert str(run.state).endswith("success")
    assert len(sandbox.civicrm.table("Activity")) == activities
    assert (len(sandbox.wordpress.users), len(sandbox.civicrm.table("UFMatch"))) == (users, links)
    assert all(row["attempt"] == 1 for row in second.values() if row["outcome"] == "failed")


def test_finalize_run_twice_writes_nothing_twice(sandbox):
    from civicrm_hooks import queries
    from civicrm_hooks.hook import CiviCRMHook
    from pipeline.finalize import finalize_run
    from provisioning.settings import load_settings
    from sandbox import local_airflow

    run, first = sandbox.run()
    state = {e: sandbox.civicrm.table(e) for e in ("Activity", "ActivityContact", "UFMatch", "GroupContact",
                                                    "EntityTag")}
    calls_before = len(sandbox.civicrm.calls)
    # finalize's work again, for the same run, from that run's own XComs (as a cleared finalize would)
    batches = local_airflow.xcom(run.run_id, "plan")
    final, unfinished = finalize_run(
        CiviCRMHook(), load_settings(), queries.Triggers.from_dict(local_airflow.xcom(run.run_id, "preflight")["triggers"]),
        local_airflow.xcom(run.run_id, "plan", key="plan"), batches,
        [local_airflow.xcom(run.run_id, "create_accounts", map_index=i) for i in range(len(batches))],
        marker=queries.run_marker("cmsuser_nightly", run.run_id), stamp="2026-01-01 02:00:00")
    assert unfinished == []
    assert dict(zip(final["contact_id"], final["outcome"], strict=True)) == {
        cid: row["outcome"] for cid, row in first.items()}
    later = sandbox.civicrm.calls[calls_before:]
    assert [c for c in later if c.entity == "ActivityContact" and c.action == "get"]  # it looked first
    assert not [c for c in later if c.entity == "Activity" and c.action != "get"]
    assert {e: sandbox.civicrm.table(e) for e in state} == state


def test_dry_run_writes_nothing(sandbox):
    before = {e: sandbox.civicrm.table(e) for e in ("Activity", "UFMatch", "GroupContact", "EntityTag",
                                                     "OptionValue")}
    users = sandbox.wordpress.users
    run, outcomes = sandbox.run({"dry_run": True})
    assert str(run.state).endswith("success")
    # a dry run says what would happen, never "created"
    labels = {"created": "would create", "linked_existing": "would link", "already_linked": "already linked",
              "failed": "would fail"}
    assert {cid: row["outcome"] for cid, row in outcomes.items()} == {k: labels[v[0]] for k, v in EXPECTED.items()}
    assert {e: sandbox.civicrm.table(e) for e in before} == before
    assert sandbox.wordpress.users == users
    assert sandbox.wordpress.mails == []
    assert not [c for c in sandbox.wordpress.calls if c.method == "POST" and "lostpassword" in c.path]


def test_limit_defers_the_rest(sandbox):
    _, outcomes = sandbox.run({"limit": 3})
    deferred = sorted(cid for cid, row in outcomes.items() if row["outcome"] == "deferred")
    assert deferred == [5, 6, 11, 16]  # the first 3 contacts that need the CMS go ahead
    assert all("limit" in outcomes[cid]["reason"] for cid in deferred)
    assert all(sandbox.activities(cid) == [] for cid in deferred)
    assert all(sandbox.membership(TRIGGER_GROUP)[cid] == "Added" for cid in deferred)


def _creates_for(wordpress, email: str) -> list:
    return [c for c in wordpress.calls
            if c.method == "POST" and c.path.endswith("/wp/v2/users") and (c.body or {}).get("email") == email]


def test_transient_cms_failure_succeeds_on_retry(sandbox):
    # Ada's first create answers 503: her batch finishes the others, links them, and retries
    sandbox.wordpress.inject(method="POST", path="/wp/v2/users", status=503, times=1,
                             body_contains="ada@example.org")
    run, outcomes = sandbox.run()
    assert str(run.state).endswith("success")
    assert outcomes[2]["outcome"] == "created"
    assert [c.status for c in _creates_for(sandbox.wordpress, "ada@example.org")] == [503, 201]
    assert len(_creates_for(sandbox.wordpress, "alan@example.org")) == 1  # done on the first try, not redone
    assert all(len(same) == 1 for same in _accounts_by_email(sandbox.wordpress).values())
    assert sandbox.activities(2)[0]["subject"].startswith("Created : ada.lovelace")


def test_lost_create_answer_makes_no_duplicate(sandbox):
    # WordPress creates Ada's account but the answer never arrives
    sandbox.wordpress.inject(method="POST", path="/wp/v2/users", lose_answer=True, times=1,
                             body_contains="ada@example.org")
    run, outcomes = sandbox.run()
    assert str(run.state).endswith("success")
    assert outcomes[2]["outcome"] == "created"
    (ada,) = [u for u in sandbox.wordpress.users if u["email"] == "ada@example.org"]
    assert len(_creates_for(sandbox.wordpress, "ada@example.org")) == 1
    assert sandbox.ufmatch()[2]["uf_id"] == ada["id"]
    assert [m["user_login"] for m in sandbox.wordpress.mails].count("ada.lovelace") == 1


def test_cms_down_for_every_try_fails_the_run_and_counts_no_attempt(sandbox):
    sandbox.configure(batch_size=50)
    sandbox.wordpress.inject(method="POST", path="/wp/v2/users", status=503, times=1000,
                             body_contains="@example.org")
    run, outcomes = sandbox.run()
    assert str(run.state).endswith("failed")
    assert {cid for cid, row in outcomes.items() if row["outcome"] == "deferred"} == {2, 3, 4, 5, 11, 16}
    assert all("did not finish" in outcomes[cid]["reason"] for cid in (2, 3, 4, 5, 11, 16))
    # no attempt: only the open attempt that holds the journal of the creates sent (status Scheduled)
    [open_attempt] = sandbox.activities(2)
    assert (open_attempt["status_id"], open_attempt["subject"]) == (1, "Creating account ada.lovelace")
    assert sandbox.membership(TRIGGER_GROUP)[2] == "Added"
    assert outcomes[6]["outcome"] == "linked_existing"  # linking needs no create: done before the batch gave up
    assert outcomes[8]["outcome"] == "failed"  # contact-level failures are still recorded
    assert len(_creates_for(sandbox.wordpress, "ada@example.org")) == 4  # one per try


def test_permanent_failure_until_off_triggers_then_fresh_attempts(sandbox):
    sandbox.configure(trigger_groups=["new_members"], trigger_tags=["needs_login"])
    # Nora (8) has no email and is also tagged: both triggers go at the 4th attempt
    sandbox.civicrm.seed({"entity_tags": [{"entity_id": 8, "tag_id": TRIGGER_TAG}]})
    for attempt in (1, 2, 3, 4):
        _, outcomes = sandbox.run()
        assert outcomes[8]["outcome"] == "failed" and outcomes[8]["attempt"] == attempt
    assert sandbox.membership(TRIGGER_GROUP)[8] == "Removed"
    assert 8 not in sandbox.tagged(TRIGGER_TAG)
    statuses = [a["status_id"] for a in sandbox.activities(8)]
    assert len(statuses) == 5  # 4 Failed + the reset marker
    _, outcomes = sandbox.run()
    assert 8 not in outcomes

    # staff re-add the contact: it gets fresh attempts
    import requests

    requests.post(f"{sandbox.civicrm.url}/civicrm/ajax/api4/GroupContact/save",
                  data={"params": '{"records":[{"contact_id":8,"group_id":5,"status":"Added"}],'
                                  '"match":["contact_id","group_id"]}'},
                  headers={"X-Civi-Auth": f"Bearer {sandbox.secrets['api_key']}",
                           "X-Civi-Key": sandbox.secrets["site_key"],
                           "X-Requested-With": "XMLHttpRequest"}, timeout=10).raise_for_status()
    _, outcomes = sandbox.run()
    assert outcomes[8]["attempt"] == 1


def test_wrong_cms_password_fails_preflight_and_counts_no_attempt(sandbox, monkeypatch):
    import json
    import os

    cms = json.loads(os.environ["AIRFLOW_CONN_CMS_DEFAULT"])
    cms["password"] = "wrong wrong wrong wrong"
    monkeypatch.setenv("AIRFLOW_CONN_CMS_DEFAULT", json.dumps(cms))
    run, outcomes = sandbox.run()
    assert str(run.state).endswith("failed")
    assert outcomes == {}
    assert sandbox.civicrm.table("Activity") == []
    assert not [u for u in sandbox.wordpress.users if u["id"] > 4]


def test_password_resets_go_first_and_never_count_as_attempts(sandbox):
    from civicrm_hooks.hook import CiviCRMHook
    from sandbox import local_airflow

    sandbox.configure(reset_groups=["password_reset"], reset_tags=["reset_password"])
    # Ada gets a new account in this run: she must get its own mail only, never a reset on top
    CiviCRMHook("civicrm_default").call("GroupContact", "create", {"values": {"group_id": 8, "contact_id": 2,
                                                                              "status": "Added"}})
    run, outcomes = sandbox.run()
    assert str(run.state).endswith("success")
    resets = {r["contact_id"]: r for r in local_airflow.xcom(run.run_id, "password_resets", key="resets")}
    assert {cid: r["outcome"] for cid, r in resets.items()} == {2: "reset_failed", 7: "reset_sent",
                                                               13: "reset_failed"}
    assert outcomes[2]["outcome"] == "created" and outcomes[7]["outcome"] == "already_linked"
    assert outcomes[13]["attempt"] == 1  # the reset's Failed activity is not an account-creation attempt
    mailed = [m["user_login"] for m in sandbox.wordpress.mails]
    assert mailed.count("ada.lovelace") == 1 and mailed.count("larry") == 1
    assert {cid: status for cid, status in sandbox.membership(8).items()} == {2: "Removed", 7: "Removed",
                                                                             13: "Removed"}
    assert 7 not in sandbox.tagged(5)

    run, _ = sandbox.run()  # nobody is left to reset
    assert local_airflow.xcom(run.run_id, "password_resets", key="resets") == []
    assert [m["user_login"] for m in sandbox.wordpress.mails].count("larry") == 1


def test_a_dry_run_sends_no_reset(sandbox):
    sandbox.configure(reset_groups=["password_reset"], reset_tags=["reset_password"])
    before = {e: sandbox.civicrm.table(e) for e in ("Activity", "GroupContact", "EntityTag")}
    run, _ = sandbox.run({"dry_run": True})
    assert str(run.state).endswith("success")
    assert sandbox.wordpress.mails == [] and {e: sandbox.civicrm.table(e) for e in before} == before


def test_xcoms_carry_no_member_data_and_the_files_go_when_the_run_is_done(sandbox):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    from sandbox import local_airflow

    sandbox.configure(keep_run_files_hours=0)
    run = local_airflow.load_dag().test()  # not sandbox.run(): it reads the outcomes file, gone by now
    assert str(run.state).endswith("success")
    with create_session() as session:
        stored = {(row.task_id, row.map_index, row.key): XComModel.deserialize_value(row)
                  for row in session.scalars(XComModel.get_many(run_id=run.run_id, dag_ids="cmsuser_nightly"))}
    text = repr(stored)
    emails = [c["email"] for c in sandbox.civicrm.table("Email") if c.get("email")]
    names = [c["display_name"] for c in sandbox.civicrm.table("Contact") if c.get("display_name")]
    assert emails and not [e for e in emails if e in text] and not [n for n in names if n in text]
    # references, labels and counts (the run snapshot is the settings, whatever the number of contacts)
    assert max(len(repr(v)) for k, v in stored.items() if k[0] != "preflight") < 1000
    refs = [value for value in stored.values() if isinstance(value, dict) and "run_file" in value]
    refs += [item["rows"] for value in stored.values() if isinstance(value, list) for item in value]
    assert {"plan", "outcomes", "extract"} <= {ref["run_file"].rsplit("/", 1)[1].split(".")[0] for ref in refs}
    # keep_run_files_hours 0: the run's folder went as finalize ended
    assert not any(Path(ref["run_file"].removeprefix("file://")).parent.exists() for ref in refs)
    assert local_airflow.xcom(run.run_id, "finalize", key="outcomes", resolve=False)["rows"] == len(EXPECTED)
