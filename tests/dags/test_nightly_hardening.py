"""The nightly DAG end to end where members used to be lost or confused (dag.test, both emulators).

Orphaned accounts, slow creates, give-ups that stop half-way, pre-flight problems, and what the
logs and outcomes show. Contact ids are those of sandbox/demo_seed.yaml (see test_nightly.py).
"""

from __future__ import annotations

import json
import logging
import os

import pytest

from provisioning import outcomes as why

TRIGGER_GROUP, TRIGGER_TAG = 5, 3
CREATED = {2: "ada@example.org", 3: "grace@example.org", 4: "alan@example.org", 5: "zoe@example.org",
           11: "family@example.org", 16: "john.smith@example.org"}

pytestmark = pytest.mark.slow


def _accounts(wordpress, email: str) -> list[dict]:
    return [u for u in wordpress.users if u["email"].lower() == email]


def _mails_to(wordpress, login: str) -> int:
    return sum(1 for m in wordpress.mails if m["user_login"] == login)


def _ids(outcomes: dict, outcome: str) -> set[int]:
    return {cid for cid, row in outcomes.items() if row["outcome"] == outcome}


@pytest.mark.parametrize("on_existing_email", ["link", "fail"])
def test_an_account_whose_link_was_never_written_is_ours_the_next_night(sandbox, on_existing_email):
    """CiviCRM refuses every UFMatch save of night 1: the accounts exist, unlinked. Night 2 must link
    them as `created` (not somebody's existing account) and mail each member once."""
    sandbox.configure(on_existing_email=on_existing_email)
    sandbox.civicrm.inject(entity="UFMatch", action="save", status=500, times=1000)
    _, night1 = sandbox.run()
    assert _ids(night1, "failed") >= set(CREATED)
    assert all(night1[cid]["reason"].endswith("CiviCRM refused the UFMatch link: Injected failure")
               for cid in CREATED)
    assert sandbox.wordpress.mails == []  # no mail for an account whose link is not safe
    assert all(len(_accounts(sandbox.wordpress, email)) == 1 for email in CREATED.values())
    sandbox.civicrm.clear_faults()

    _, night2 = sandbox.run()

    assert _ids(night2, "created") == set(CREATED)
    assert all(night2[cid]["reason"].startswith("account made by an earlier run") for cid in CREATED)
    assert night2[6]["outcome"] == ("linked_existing" if on_existing_email == "link" else "failed")
    for cid, email in CREATED.items():
        (account,) = _accounts(sandbox.wordpress, email)  # still exactly one account each
        assert sandbox.ufmatch()[cid]["uf_id"] == account["id"]
        assert _mails_to(sandbox.wordpress, account["username"]) == (0 if cid == 3 else 1)  # 3: do_not_email
    # one activity per attempt: night 1's became night 2's "Created" (the same attempt, finished)
    subjects = [(a["status_id"], a["subject"]) for a in sandbox.activities(2)]
    assert subjects == [(2, "Created : ada.lovelace (" + str(sandbox.ufmatch()[2]["uf_id"]) + ")")]

    _, night3 = sandbox.run()  # nothing left to do, and no second mail
    assert 2 not in night3
    assert _mails_to(sandbox.wordpress, "ada.lovelace") == 1


class _Store(dict):
    set = dict.__setitem__


def test_clearing_an_old_batch_after_a_later_night_mailed_sends_no_second_mail(sandbox):
    from civicrm_hooks import queries
    from civicrm_hooks.hook import CiviCRMHook
    from cms_operators import registry
    from pipeline import run_files
    from pipeline.batch import create_batch
    from pipeline.steps import batch_context
    from provisioning.settings import load_settings
    from sandbox import local_airflow

    sandbox.civicrm.inject(entity="UFMatch", action="save", status=500, times=1000)
    run1, _ = sandbox.run()
    sandbox.civicrm.clear_faults()
    sandbox.run()  # night 2 links and mails
    assert _mails_to(sandbox.wordpress, "ada.lovelace") == 1

    # an operator clears night 1's first batch afterwards: it runs again from night 1's own plan
    rows = run_files.read(local_airflow.xcom(run1.run_id, "plan")[0]["rows"])
    ctx = batch_context(load_settings(), CiviCRMHook(), registry.get("wordpress").backend("cms_default"), marker=queries.run_marker("cmsuser_nightly", run1.run_id),
                        stamp="2026-03-01 02:00:00", final_try=False, state=_Store())
    results = {r["contact_id"]: r for r in create_batch(rows, ctx)}

    assert results[2]["outcome"] == "created"
    assert results[2]["mail"] == why.MAIL_SENT_EARLIER
    assert _mails_to(sandbox.wordpress, "ada.lovelace") == 1
    assert len(_accounts(sandbox.wordpress, "ada@example.org")) == 1


def test_a_create_slower_than_the_client_timeout_is_never_posted_twice(sandbox, monkeypatch):
    """The emulator stores Ada's account 1.8 s after the request; the client gives up after 1 s."""
    cms = json.loads(os.environ["AIRFLOW_CONN_CMS_DEFAULT"])
    cms.setdefault("extra", {})["timeout"] = 1
    monkeypatch.setenv("AIRFLOW_CONN_CMS_DEFAULT", json.dumps(cms))
    sandbox.wordpress.inject(method="POST", path="/wp/v2/users", status=None, delay=1.8,
                             body_contains="ada@example.org")

    run, outcomes = sandbox.run()

    assert str(run.state).endswith("success")
    posts = [c for c in sandbox.wordpress.calls if c.method == "POST" and c.path.endswith("/wp/v2/users")
             and (c.body or {}).get("email") == "ada@example.org"]
    assert len(posts) == 1  # the retry looked (after waiting out the timeout) and found it
    assert len(_accounts(sandbox.wordpress, "ada@example.org")) == 1
    assert outcomes[2]["outcome"] == "created" and outcomes[2]["uf_id"] == sandbox.ufmatch()[2]["uf_id"]
    assert _mails_to(sandbox.wordpress, "ada.lovelace") == 1


def test_a_give_up_that_could_not_take_the_contact_off_is_finished_without_a_fifth_attempt(sandbox):
    sandbox.configure(trigger_groups=["new_members"], trigger_tags=[])
    for _ in range(3):
        sandbox.run()
    # night 4: the last attempt is recorded, then taking Nora (8, no email) off her group fails
    sandbox.civicrm.inject(entity="GroupContact", action="update", status=500, times=1000)
    run, night4 = sandbox.run()
    assert str(run.state).endswith("failed")
    assert night4 == {} or night4[8]["attempt"] == 4
    assert sandbox.membership(TRIGGER_GROUP)[8] == "Added"
    failed = [a for a in sandbox.activities(8) if a["status_id"] != 1]
    assert len(failed) == 4 and all(a["subject"] == "Failed to create User" for a in failed)  # no marker yet
    sandbox.civicrm.clear_faults()

    _, night5 = sandbox.run()

    assert night5[8]["outcome"] == "failed"
    assert night5[8]["reason"] == why.exhausted_earlier(4)
    assert sandbox.membership(TRIGGER_GROUP)[8] == "Removed"
    subjects = [a["subject"] for a in sandbox.activities(8)]
    assert subjects.count("Failed to create User") == 4  # no fifth attempt
    assert subjects[-1] == why.reset_subject(4)


def test_preflight_reports_every_problem_at_once_naming_each_connection_once(sandbox):
    from airflow.sdk.exceptions import AirflowFailException

    from pipeline import tasks

    sandbox.configure(trigger_groups=["new_members", "no_such_group"], trigger_tags=["no_such_tag"],
                      roles=["member", "no_such_role"])
    with pytest.raises(AirflowFailException) as failed:
        tasks.preflight.function(params={"dry_run": True})
    message = str(failed.value)
    assert message.startswith("Pre-flight found 3 problems")
    assert "no_such_group" in message and "no_such_tag" in message and "role 'no_such_role'" in message
    assert message.count("'civicrm_default'") == 1 and message.count("'cms_default'") == 1


def test_task_logs_carry_ids_and_outcomes_not_member_data(sandbox, caplog):
    caplog.set_level(logging.INFO)
    sandbox.run()
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "Returned value was" in m]  # no task logs its return value
    audit = [line for m in messages if m.startswith("contact=") for line in m.splitlines()]  # one per contact
    assert len(audit) == 14
    assert not [m for m in audit if "@" in m or "reason=" in m]
    seeded_emails = {"ada@example.org", "grace@example.org", "alan@example.org", "zoe@example.org"}
    outside_attention = [m for m in messages if "need attention" not in m]
    assert not [m for m in outside_attention if any(email in m for email in seeded_emails)]


def test_outcomes_name_the_cms_login_and_why_no_mail_was_sent(sandbox, caplog):
    caplog.set_level(logging.INFO)
    _, outcomes = sandbox.run()
    assert outcomes[7]["outcome"] == "already_linked"
    assert outcomes[7]["username"] == "larry"  # the CMS login, not UFMatch's uf_name (an email)
    assert outcomes[2]["mail"] == why.MAIL_SENT
    assert outcomes[3]["mail"] == why.MAIL_DO_NOT_EMAIL
    (attention,) = [r.getMessage() for r in caplog.records if "need attention" in r.getMessage()]
    assert attention.startswith("6 contacts need attention:")
    assert "Nora Noemail" in attention and "no primary email" in attention


def test_batches_grow_to_stay_within_airflows_max_map_length(sandbox, monkeypatch):
    from sandbox import local_airflow

    monkeypatch.setenv("AIRFLOW__CORE__MAX_MAP_LENGTH", "2")  # the demo's 7 accounts in batches of 1 would be 7
    sandbox.configure(batch_size=1)
    run, outcomes = sandbox.run()
    assert str(run.state).endswith("success")
    assert [b["label"] for b in local_airflow.xcom(run.run_id, "plan")] == ["contacts 2-5 (4)", "contacts 6-16 (3)"]
    assert sum(1 for row in outcomes.values() if row["outcome"] in ("created", "linked_existing")) == 7


def test_creates_side_by_side_give_every_contact_the_same_outcome(sandbox):
    from tests.dags.test_nightly import EXPECTED

    sandbox.configure(max_concurrency=4, batch_size=20, max_requests_per_second=50)
    run, outcomes = sandbox.run()
    assert str(run.state).endswith("success")
    assert {cid: (row["outcome"], row["username"] if row["outcome"] not in ("failed", "already_linked") else None)
            for cid, row in outcomes.items()} == EXPECTED
    emails = [u["email"].lower() for u in sandbox.wordpress.users]
    assert len(emails) == len(set(emails))  # one account per email
    assert len(sandbox.ufmatch()) == len({cid for cid, row in outcomes.items() if row["uf_id"]})
