"""The approval gate's decision, its screen, and a rejected run's outcomes (pure)."""

from __future__ import annotations

import json
import re

import pytest

from provisioning import approval, report
from provisioning.outcomes import activity_for, audit_line
from provisioning.settings import Settings, SettingsError, parse_settings
from provisioning.vocabulary import ApprovalDecision, Outcome


@pytest.fixture
def plan_rows(run_plan, contact):
    """Four new accounts (1-3, 6), one link to an existing account (4), one failure (5), one already linked (7)."""
    plan = run_plan(
        [contact(1, first_name="Ada", last_name="Lovelace"), contact(2, first_name="Alan", last_name="Turing"),
         contact(3, first_name="Grace", last_name="Hopper"), contact(4, email="kj@home.example"),
         contact(5, email=None, display_name="Secret Person"), contact(6, first_name="Zoe", last_name="A"),
         contact(7, uf_id=9, uf_name="old@example.org")],
        users=[(44, "kj", "kj@home.example")])
    return report.to_records(plan.reset_index(drop=True))


def test_a_run_waits_only_when_it_would_create_more_accounts_than_the_threshold(plan_rows):
    assert approval.gate(plan_rows, None, dry_run=False).needed is False
    assert approval.gate(plan_rows, 4, dry_run=False).needed is False  # 4 creates, not more than 4
    assert approval.gate(plan_rows, 3, dry_run=False).needed is True
    assert approval.gate(plan_rows, 0, dry_run=False).needed is True
    assert approval.gate([], 0, dry_run=False).needed is False  # nothing to create: nothing to approve
    counted = approval.gate(plan_rows, 3, dry_run=False)
    assert (counted.to_create, counted.to_link) == (4, 1)  # links make no account and do not count


def test_links_alone_never_need_approval(plan_rows):
    links_only = [row for row in plan_rows if row["action"] != "create"]
    assert approval.gate(links_only, 0, dry_run=False).needed is False


def test_a_dry_run_never_waits_but_says_what_a_real_run_would_do(plan_rows):
    dry = approval.gate(plan_rows, 3, dry_run=True)
    assert dry.needed is False
    assert dry.explain() == ("approval: dry run, nobody is asked; a real run would wait for approval "
                             "(4 new accounts to create, approval_threshold 3)")
    assert "would not wait" in approval.gate(plan_rows, 4, dry_run=True).explain()


def test_the_log_line_says_why(plan_rows):
    assert approval.gate(plan_rows, None, dry_run=False).explain() == (
        "approval: not needed (4 new accounts to create; no approval_threshold is set)")
    assert approval.gate(plan_rows, 3, dry_run=False).explain().startswith(
        "approval: needed, 4 new accounts to create is more than approval_threshold 3; the run waits")


def _body(plan_rows, **overrides):
    arguments = {"cms_label": "WordPress", "timeout_minutes": 720, "deadline": "2026-03-02 14:00 UTC",
                 "approvers": ["admin", "7"], "plan_task": "plan", **overrides}
    return approval.body(plan_rows, approval.gate(plan_rows, 3, dry_run=False), **arguments)


def test_the_approval_screen_shows_the_dry_run_report_of_the_same_plan(plan_rows):
    text = _body(plan_rows)
    dry_run_report = report.summary_table(report.planned_outcomes(approval.plan_frame(plan_rows), dry_run=True))
    assert f"```text\n{dry_run_report}\n```" in text
    assert re.search(r"^would create +4$", dry_run_report, re.M)  # the counts per outcome
    assert "**4 new WordPress accounts** (and link 1 existing ones)" in text
    assert "more than `approval_threshold` (3)" in text
    assert "No answer by 2026-03-02 14:00 UTC (`approval_timeout_minutes`: 720): rejected." in text
    assert "Who may answer: `admin`, `7`." in text
    assert "any user allowed" in _body(plan_rows, approvers=[])


def test_the_sample_lists_ids_planned_outcome_and_username_only(plan_rows):
    text = _body(plan_rows)
    sample = text.split("Contacts to be created or linked, lowest ids first (5 of 5):", 1)[1]
    lines = [line.split() for line in sample.split("```text\n", 1)[1].split("\n```", 1)[0].splitlines()]
    assert lines[0] == ["contact_id", "outcome", "username"]
    assert [line[0] for line in lines[2:]] == ["1", "2", "3", "4", "6"]  # the acting contacts only
    assert lines[2] == ["1", "would", "create", "ada.lovelace"]
    assert lines[5] == ["4", "would", "link", "kj"]
    # personal data stays off the screen: no email, no display name, no reason
    for secret in ("@example.org", "kj@home.example", "Secret Person", "Jane Doe", "no primary email"):
        assert secret not in text


def test_the_sample_is_capped(plan_rows):
    text = _body(plan_rows, sample_rows=2)
    assert "lowest ids first (2 of 5)" in text
    assert "... and 3 more contacts" in text


@pytest.mark.parametrize("size", [1, 2, 3])
def test_a_plan_read_in_chunks_gives_the_same_gate_and_screen(plan_rows, size):
    import pandas as pd

    chunks = (pd.DataFrame(plan_rows[start:start + size]) for start in range(0, len(plan_rows), size))
    digest = approval.digest(chunks, sample_rows=2)
    assert approval.gate(digest, 3, dry_run=False) == approval.gate(plan_rows, 3, dry_run=False)
    arguments = {"cms_label": "WordPress", "timeout_minutes": 720, "deadline": "2026-03-02 14:00 UTC",
                 "approvers": [], "plan_task": "plan", "sample_rows": 2}
    gate = approval.gate(plan_rows, 3, dry_run=False)
    assert approval.body(digest, gate, **arguments) == approval.body(plan_rows, gate, **arguments)
    assert len(digest.acting) == 2 and digest.acting_count == 5  # only the sample is kept


def test_a_rejected_run_gives_every_contact_approval_rejected_and_keeps_the_plan_in_the_reason(plan_rows):
    gate = approval.gate(plan_rows, 3, dry_run=False)
    result = approval.result(gate, ApprovalDecision.REJECTED, by="admin", timeout_minutes=720)
    assert approval.is_rejected(result)
    final = approval.rejected_outcomes(plan_rows, result)
    assert list(final["contact_id"]) == [1, 2, 3, 4, 5, 6, 7]
    assert set(final["outcome"]) == {"approval_rejected"}
    assert final["attempt"].isna().all()  # no attempt counted
    reasons = dict(zip(final["contact_id"], final["reason"], strict=True))
    assert reasons[1] == ("the approval request was rejected by admin; nothing was done and no attempt counted "
                          "(planned: would create, new account); the next run plans it again")
    assert "(planned: would fail, no primary email)" in reasons[5]
    assert "planned: already linked" in reasons[7]
    assert final.loc[final["contact_id"] == 1, "username"].item() == "ada.lovelace"
    assert json.dumps(report.to_records(final), allow_nan=False)


def test_a_timed_out_request_is_a_rejection_that_says_so(plan_rows):
    result = approval.result(approval.gate(plan_rows, 3, dry_run=False), ApprovalDecision.TIMED_OUT,
                             timeout_minutes=90)
    assert approval.is_rejected(result)
    (reason, *_) = approval.rejected_outcomes(plan_rows, result)["reason"]
    assert reason.startswith("nobody answered the approval request within 90 minutes (approval_timeout_minutes), "
                             "so it was rejected; nothing was done")
    assert approval.decided_line(result) == (
        "approval: TIMED OUT after 90 minutes without an answer, so REJECTED; none of the 4 planned accounts is "
        "created, no attempt is counted")


def test_approved_and_not_needed_are_not_rejections(plan_rows):
    gate = approval.gate(plan_rows, 3, dry_run=False)
    approved = approval.result(gate, ApprovalDecision.APPROVED, by="admin")
    assert not approval.is_rejected(approved)
    assert not approval.is_rejected(approval.result(gate, ApprovalDecision.NOT_NEEDED))
    assert not approval.is_rejected(None)  # no gate in this DAG, or it left nothing
    assert approval.decided_line(approved) == "approval: APPROVED by admin; creating 4 new accounts as planned"
    assert approval.decided_line(approval.result(gate, ApprovalDecision.REJECTED, by="ops")).startswith(
        "approval: REJECTED by ops; none of the 4 planned accounts is created")


def test_approval_rejected_writes_no_activity_and_has_an_audit_line():
    assert activity_for(Outcome.APPROVAL_REJECTED, username="a", uf_id=None, uf_name=None, reason="r") is None
    assert audit_line(3, "approval_rejected") == "contact=3 outcome=approval_rejected"


def test_approval_settings_live_in_their_section():
    settings = parse_settings("trigger_groups: [new_members]\napproval:\n  approval_threshold: 50\n"
                              "  approval_users: [admin, 3, ' ops ']\n  approval_timeout_minutes: 90\n")
    assert (settings.approval_threshold, settings.approval_users, settings.approval_timeout_minutes) == (
        50, ["admin", "3", "ops"], 90)
    defaults = Settings(trigger_groups=["new_members"])
    assert (defaults.approval_threshold, defaults.approval_users, defaults.approval_timeout_minutes) == (
        None, [], 720)


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("approval:\n  approval_threshold: -1\n", "approval_threshold: input should be greater than or equal to 0"),
    ("approval:\n  approval_timeout_minutes: 0\n", "approval_timeout_minutes: input should be greater than or "
                                                   "equal to 1"),
    ("approval:\n  approval_users: [admin, '  ']\n", "approval_users: contains an empty user id"),
    ("approval:\n  threshold: 5\n", "approval.threshold: unknown setting in this section"),
])
def test_bad_approval_settings_name_the_setting(yaml_text, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        parse_settings("trigger_groups: [new_members]\n" + yaml_text)
