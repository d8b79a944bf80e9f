"""final_outcomes and record against the CiviCRM emulator, with a hand-made plan.

The plan covers every way a contact reaches finalize: a batch result, a batch that died after
linking (UFMatch tells), a batch that died before (deferred), and the plan's own outcomes.
"""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from civicrm_hooks import queries
from civicrm_hooks.queries import Triggers
from pipeline.finalize import final_outcomes, record
from provisioning import outcomes
from provisioning.plan import PLAN_COLUMNS
from provisioning.settings import Settings
from sandbox.civicrm import testing as civicrm_fixtures

civicrm = civicrm_fixtures.civicrm
civicrm_conn = civicrm_fixtures.civicrm_conn

HISTORY_GROUP = 11
MARKER = queries.run_marker("cmsuser_nightly", "scheduled__2025-01-02T02:00:00+00:00")
NEXT_RUN = queries.run_marker("cmsuser_nightly", "scheduled__2025-01-03T02:00:00+00:00")
STAMP = "2025-01-02 02:00:00"
TRIGGERS = Triggers(static_groups={5: "New members"}, smart_groups={7: "Volunteers (smart)"},
                    tags={3: "Needs login"}, history_group=HISTORY_GROUP, history_tag=4)
SETTINGS = Settings(trigger_groups=["new_members"], trigger_tags=["needs_login"], max_attempts=4)


@pytest.fixture
def hook(civicrm_conn):
    from civicrm_hooks.hook import CiviCRMHook

    made = CiviCRMHook(civicrm_conn, timeout=5)
    yield made
    made.close()


@pytest.fixture
def site(civicrm, hook):
    """The standard seed plus the memberships the plan below talks about, and pre-flight's options."""
    civicrm.seed({
        "groups": [{"id": HISTORY_GROUP, "name": "has_login", "title": "Has login"}],
        "group_contacts": [{"contact_id": 5, "group_id": 5, "status": "Added"},
                           {"contact_id": 7, "group_id": 5, "status": "Added"}],
        "entity_tags": [{"entity_id": 3, "tag_id": 3}, {"entity_id": 5, "tag_id": 3}, {"entity_id": 8, "tag_id": 3}],
        # a batch died after linking 4 and 6 (the link of 6 to the account it planned to link)
        "uf_matches": [{"contact_id": 4, "uf_id": 204, "uf_name": "alan@example.org", "domain_id": 1},
                       {"contact_id": 6, "uf_id": 206, "uf_name": "kj@home.example", "domain_id": 1}],
    })
    civicrm.set_smart_members(7, [4, 5, 9])
    queries.ensure_option_values(hook, create=True)
    civicrm.reset_calls()
    return civicrm


def plan_row(contact_id, action, outcome, reason, username, uf_id=None, *, sources=("group:5",), attempts=0,
             exhausted=False, journal_activity_id=None):
    row = {"contact_id": contact_id, "email": f"c{contact_id}@example.org", "action": action, "outcome": outcome,
            "reason": reason, "username": username, "username_base": username if action == "create" else "",
            "uf_id": uf_id, "roles": ["subscriber"] if action == "create"
            else [], "first_name": "", "last_name": "", "display_name": f"Contact {contact_id}", "locale": None,
            "user_fields": None,
            "do_not_email": False, "sources": list(sources), "attempts": attempts,
            "uf_name": username if outcome == "already_linked" else None,
            "journal_activity_id": journal_activity_id, "exhausted": exhausted}
    assert list(row) == PLAN_COLUMNS  # the planner's shape, so the hand-made plan stays honest
    return row


PLAN = [
    plan_row(2, "create", "created", outcomes.NEW_ACCOUNT, "ada.lovelace", sources=["group:5", "tag:3"]),
    plan_row(3, "none", "failed", outcomes.NO_PRIMARY_EMAIL, "grace.hopper", sources=["tag:3"], attempts=1),
    plan_row(4, "create", "created", outcomes.NEW_ACCOUNT, "alan.turing", sources=["smart:7"]),
    plan_row(5, "none", "failed", outcomes.CONTACT_DECEASED, "edgar.late",
             sources=["group:5", "smart:7", "tag:3"], attempts=3),
    plan_row(6, "link", "linked_existing", outcomes.EXISTING_ACCOUNT_SAME_EMAIL, "kj", 206),
    plan_row(7, "none", "already_linked", outcomes.already_linked("larry@example.org", 17), "larry@example.org", 17),
    plan_row(8, "create", "created", outcomes.NEW_ACCOUNT, "acme.ltd", sources=["tag:3"]),
    plan_row(9, "create", "created", outcomes.NEW_ACCOUNT, "olga.optout", sources=["smart:7"]),
]
# batch results for 2 and 8; the batch of 4, 6 and 9 left none
RESULTS = {
    2: {"contact_id": 2, "outcome": "created", "reason": outcomes.NEW_ACCOUNT, "uf_id": 202,
        "username": "ada.lovelace2", "mail": outcomes.MAIL_SENT},
    8: {"contact_id": 8, "outcome": "failed", "reason": outcomes.cms_rejected("Invalid parameter(s): email"),
        "uf_id": None, "username": "acme.ltd", "mail": None},
}


def plan_frame(rows=PLAN) -> pd.DataFrame:
    return pd.DataFrame(rows)  # as finalize_run builds it from the plan's XCom records


def finals(hook, results=RESULTS, rows=PLAN) -> pd.DataFrame:
    return final_outcomes(hook, SETTINGS, plan_frame(rows), dict(results))


def activities(civicrm) -> list[dict]:
    """Activity rows with their target contact and status name."""
    statuses = {int(r["value"]): r["name"] for r in civicrm.table("OptionValue") if r["option_group_id"] == 25}
    targets = {r["activity_id"]: r["contact_id"] for r in civicrm.table("ActivityContact") if r["record_type_id"] == 3}
    return [{**row, "target": targets.get(row["id"]), "status": statuses[row["status_id"]]}
            for row in civicrm.table("Activity")]


def of(civicrm, contact_id: int) -> list[tuple[str, str]]:
    return [(a["status"], a["subject"]) for a in activities(civicrm) if a["target"] == contact_id]


def group_contacts(civicrm, group_id: int) -> dict[int, str]:
    return {r["contact_id"]: r["status"] for r in civicrm.table("GroupContact") if r["group_id"] == group_id}


def tagged(civicrm, tag_id: int) -> list[int]:
    return sorted(r["entity_id"] for r in civicrm.table("EntityTag") if r["tag_id"] == tag_id)


# ----------------------------------------------------------------------------------- final_outcomes


def test_results_win_then_ufmatch_state_then_deferred(hook, site):
    final = finals(hook).set_index("contact_id")

    assert final.loc[2, "outcome"] == "created" and final.loc[2, "uf_id"] == 202
    assert final.loc[2, "username"] == "ada.lovelace2" and final.loc[2, "mail"] == outcomes.MAIL_SENT
    assert final.loc[8, "outcome"] == "failed" and final.loc[8, "reason"] == RESULTS[8]["reason"]
    # no result, but linked: the batch died after the link
    assert final.loc[4, "outcome"] == "created" and final.loc[4, "uf_id"] == 204
    assert final.loc[6, "outcome"] == "linked_existing" and final.loc[6, "uf_id"] == 206
    assert final.loc[4, "reason"] == final.loc[6, "reason"] == outcomes.linked_by_earlier_try()
    # no result, no link: the contact is tried again next run
    assert final.loc[9, "outcome"] == "deferred" and final.loc[9, "reason"] == outcomes.batch_not_finished()
    # the plan's own outcomes stand
    assert final.loc[7, "outcome"] == "already_linked" and final.loc[3, "reason"] == outcomes.NO_PRIMARY_EMAIL
    assert list(final.index) == [2, 3, 4, 5, 6, 7, 8, 9]


def test_attempt_numbers_only_for_failures(hook, site):
    final = finals(hook).set_index("contact_id")
    assert {cid: int(final.loc[cid, "attempt"]) for cid in (3, 5, 8)} == {3: 2, 5: 4, 8: 1}
    assert final.loc[[2, 4, 6, 7, 9], "attempt"].isna().all()


def test_ufmatch_is_read_once_and_only_for_contacts_without_a_result(hook, site):
    finals(hook)
    [lookup] = [c for c in site.calls if c.entity == "UFMatch"]
    assert ["contact_id", "IN", [4, 6, 9]] in lookup.params["where"]

    site.reset_calls()
    every = {**RESULTS, **{cid: {"contact_id": cid, "outcome": "deferred", "reason": "x", "uf_id": None,
                                 "username": None, "mail": None} for cid in (4, 6, 9)}}
    finals(hook, every)
    assert site.calls == []


# ----------------------------------------------------------------------------------- record


def test_record_writes_activities_history_and_takes_contacts_off(hook, site, caplog):
    caplog.set_level(logging.INFO, logger="pipeline.finalize")

    record(hook, SETTINGS, TRIGGERS, finals(hook), marker=MARKER, stamp=STAMP)

    assert of(site, 2) == [("Completed", "Created : ada.lovelace2 (202)")]
    assert of(site, 3) == [("Failed", "Failed to create User grace.hopper")]
    assert of(site, 4) == [("Completed", "Created : alan.turing (204)")]
    assert of(site, 5) == [("Failed", "Failed to create User edgar.late"),
                           ("Cancelled", outcomes.reset_subject(4))]
    [marker] = [a for a in activities(site) if a["status"] == "Cancelled"]
    assert marker["details"] == f"{outcomes.reset_details(4)}\n{MARKER}"
    assert of(site, 6) == [("Completed", "Linked : kj (206)")]
    assert of(site, 7) == [("Completed", "Already linked : larry@example.org (17)")]
    assert of(site, 8) == [("Failed", "Failed to create User acme.ltd")]
    assert of(site, 9) == []  # deferred: no attempt
    every = activities(site)
    assert all(a["details"].endswith(MARKER) and a["activity_date_time"] == STAMP for a in every)
    assert [a["details"] for a in every if a["target"] == 2] == [f"{outcomes.NEW_ACCOUNT}; {outcomes.MAIL_SENT}\n{MARKER}"]

    # succeeded: history, off static groups and tags; exhausted (5): off everything, smart opt-out
    assert group_contacts(site, HISTORY_GROUP) == {2: "Added", 4: "Added", 6: "Added", 7: "Added"}
    assert tagged(site, 4) == [2, 4, 6, 7]
    assert group_contacts(site, 5) == {2: "Removed", 3: "Removed", 5: "Removed", 7: "Removed", 10: "Added"}
    assert tagged(site, 3) == [3, 8]  # failed, attempts left: still triggered
    assert group_contacts(site, 7) == {5: "Removed", 9: "Removed"}
    members = queries.triggered_members(hook, TRIGGERS, 1)
    assert {2, 5, 7}.isdisjoint(members) and {3, 8} <= set(members)

    assert "contact=5 outcome=failed attempt=4/4" in caplog.text
    assert "edgar" not in caplog.text.lower()  # no login (a member's name) in the log
    assert "contact=9 outcome=deferred" in caplog.text


def test_every_contact_has_one_audit_line_and_the_lines_go_out_in_few_records(hook, site, caplog, monkeypatch):
    """One line per contact, grouped into log records (each record costs a task log a fraction of a ms)."""
    import pipeline.finalize as finalize

    monkeypatch.setattr(finalize.outcomes, "AUDIT_LINES_PER_RECORD", 3)
    caplog.set_level(logging.INFO, logger="pipeline.finalize")
    final = finals(hook)
    record(hook, SETTINGS, TRIGGERS, final, marker=MARKER, stamp=STAMP)
    audits = [m for m in caplog.messages if m.startswith("contact=")]
    lines = [line for m in audits for line in m.splitlines()]
    assert [int(line.split()[0].removeprefix("contact=")) for line in lines] == [int(c) for c in final["contact_id"]]
    assert [len(m.splitlines()) for m in audits] == [3] * (len(final) // 3) + ([len(final) % 3] if len(final) % 3 else [])


def test_the_audit_lines_go_to_the_log_while_civicrm_is_written(hook, site, monkeypatch):
    """Neither waits for the other: the first audit line is logged only once the writes have begun (on a
    run that logged every line before writing, it would wait in vain and the test fails)."""
    import threading

    import pipeline.finalize as finalize

    writing = threading.Event()
    write = queries.write_activities

    def write_activities(*args, **kwargs):
        writing.set()
        return write(*args, **kwargs)

    waited = []

    class FirstLineWaits(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("contact=") and not waited:
                waited.append(writing.wait(timeout=5))

    monkeypatch.setattr(finalize.queries, "write_activities", write_activities)
    handler = FirstLineWaits()
    finalize.log.addHandler(handler)
    monkeypatch.setattr(finalize.log, "level", logging.INFO)
    try:
        record(hook, SETTINGS, TRIGGERS, finals(hook), marker=MARKER, stamp=STAMP)
    finally:
        finalize.log.removeHandler(handler)
    assert waited == [True]
    assert of(site, 2) == [("Completed", "Created : ada.lovelace2 (202)")]  # and the writes all landed


def test_recording_twice_writes_no_activity_twice(hook, site):
    final = finals(hook)
    record(hook, SETTINGS, TRIGGERS, final, marker=MARKER, stamp=STAMP)
    written = activities(site)
    memberships, tags = site.table("GroupContact"), site.table("EntityTag")
    site.reset_calls()

    record(hook, SETTINGS, TRIGGERS, finals(hook), marker=MARKER, stamp=STAMP)

    assert activities(site) == written
    assert len(written) == 8  # 7 attempts and one Cancelled marker
    assert not [c for c in site.calls if c.entity == "Activity" and c.action == "save"]
    assert site.table("GroupContact") == memberships and site.table("EntityTag") == tags


def test_a_contact_its_batch_recorded_gets_its_audit_line_and_nothing_written(hook, site, caplog):
    caplog.set_level(logging.INFO, logger="pipeline.finalize")
    results = {**RESULTS, 2: {**RESULTS[2], "recorded": True}}  # its batch wrote its activity, history, take-off

    record(hook, SETTINGS, TRIGGERS, finals(hook, results), marker=MARKER, stamp=STAMP)

    assert of(site, 2) == [] and of(site, 4) == [("Completed", "Created : alan.turing (204)")]
    assert 2 not in group_contacts(site, HISTORY_GROUP) and 4 in group_contacts(site, HISTORY_GROUP)
    assert group_contacts(site, 5)[2] == "Added" and 2 in tagged(site, 3)  # as the site was: nothing written
    assert "contact=2 outcome=created uf_id=202" in [line for m in caplog.messages for line in m.splitlines()]
    assert "(1 of them recorded by their batches)" in caplog.text
    # its activity was not even looked for
    reads = [c for c in site.calls if c.entity == "ActivityContact"]
    assert reads and not any(2 in clause[2] for c in reads for clause in c.params["where"] if clause[0] == "contact_id")


def test_the_reset_marker_restarts_the_count(hook, site):
    record(hook, SETTINGS, TRIGGERS, finals(hook), marker=MARKER, stamp=STAMP)
    attempts = queries.activity_history(hook, [3, 5, 8], NEXT_RUN).attempts
    assert attempts == {3: 1, 5: 0, 8: 1}  # 3's earlier failures are not in this fresh site
    assert queries.activity_history(hook, [3, 5, 8], MARKER).attempts == {}  # a re-run of this run counts none


def test_activities_can_have_a_fixed_source_contact(hook, site):
    settings = SETTINGS.model_copy(update={"activity_source_contact_id": 1})
    record(hook, settings, TRIGGERS, finals(hook, rows=PLAN[:1]), marker=MARKER, stamp=STAMP)
    [written] = activities(site)
    sources = [r["contact_id"] for r in site.table("ActivityContact")
               if r["activity_id"] == written["id"] and r["record_type_id"] == 2]
    assert sources == [1] and written["target"] == 2


# ----------------------------------------------------------------------------------- in chunks

# the batches of PLAN's acting contacts (2, 4, 6, 8, 9) in contact_id order, as the plan cuts them: the batch of
# 4 and 6 left no result, and the last one's result lacks 9 (its batch died after creating for 8)
BATCHES = [{"index": 0, "label": "contact 2 (1)", "first": 2, "last": 2},
           {"index": 1, "label": "contacts 4-6 (2)", "first": 4, "last": 6},
           {"index": 2, "label": "contacts 8-9 (2)", "first": 8, "last": 9}]
BATCH_RESULTS = [[RESULTS[2]], None, [RESULTS[8]]]


def chunked(hook, size: int, loaded: list | None = None) -> tuple[pd.DataFrame, object, list[str]]:
    """finalize_chunks over PLAN cut into chunks of `size` rows; the outcomes it gave out, its tally, unfinished."""
    from pipeline.finalize import finalize_chunks

    frame, given = plan_frame(), []
    chunks = (frame.iloc[start:start + size].reset_index(drop=True) for start in range(0, len(frame), size))

    def load(result):
        (loaded if loaded is not None else []).append(result)
        return result

    tally, unfinished = finalize_chunks(hook, SETTINGS, TRIGGERS, chunks, BATCHES, BATCH_RESULTS, load=load,
                                        sink=given.append, marker=MARKER, stamp=STAMP)
    return pd.concat(given, ignore_index=True), tally, unfinished


@pytest.mark.parametrize("size", [1, 3, 8])
def test_a_run_in_chunks_records_what_one_chunk_does(hook, site, size, caplog):
    from pipeline.finalize import OUTCOME_COLUMNS

    caplog.set_level(logging.INFO, logger="pipeline.finalize")
    whole = finals(hook)  # reads only: the outcomes of the run in one piece
    loaded: list = []

    final, tally, unfinished = chunked(hook, size, loaded)

    assert unfinished == ["contacts 4-6 (2)"]
    pd.testing.assert_frame_equal(final[OUTCOME_COLUMNS].astype(object), whole[OUTCOME_COLUMNS].astype(object))
    assert loaded == [[RESULTS[2]], [RESULTS[8]]]  # each batch result read once, whatever the chunk size
    # what test_record_writes_activities_history_and_takes_contacts_off finds after one record()
    assert of(site, 2) == [("Completed", "Created : ada.lovelace2 (202)")]
    assert of(site, 5) == [("Failed", "Failed to create User edgar.late"), ("Cancelled", outcomes.reset_subject(4))]
    assert of(site, 9) == [] and len(activities(site)) == 8
    assert group_contacts(site, HISTORY_GROUP) == {2: "Added", 4: "Added", 6: "Added", 7: "Added"}
    assert group_contacts(site, 5) == {2: "Removed", 3: "Removed", 5: "Removed", 7: "Removed", 10: "Added"}
    assert tagged(site, 3) == [3, 8] and tagged(site, 4) == [2, 4, 6, 7]
    assert group_contacts(site, 7) == {5: "Removed", 9: "Removed"}
    # the run's summary counts every chunk; the attention list is the run's, not the last chunk's
    assert tally.contacts == 8 and tally.counts == {"created": 2, "failed": 3, "linked_existing": 1,
                                                     "already_linked": 1, "deferred": 1}
    assert "3 contacts need attention" in caplog.text and "wrote 8 activities" in caplog.text
    assert caplog.text.count("contact=5 outcome=failed") == 1


def test_a_chunks_writes_run_while_the_next_chunk_is_read(hook, site, monkeypatch):
    """The first chunk's writes wait until the second chunk's activities are being read: on a run that read
    each chunk only after the previous one's writes, they would wait in vain and the test fails."""
    import threading

    import pipeline.finalize as finalize

    reading_next = threading.Event()
    read, write = queries.run_activities, queries.write_activities
    waited = []

    def run_activities(civicrm, ids, marker):
        if 7 in ids:  # the second chunk of four contacts (6-9)
            reading_next.set()
        return read(civicrm, ids, marker)

    def write_activities(civicrm, records):
        if not waited:
            waited.append(reading_next.wait(timeout=5))
        return write(civicrm, records)

    monkeypatch.setattr(finalize.queries, "run_activities", run_activities)
    monkeypatch.setattr(finalize.queries, "write_activities", write_activities)
    final, tally, _ = chunked(hook, 4)
    assert waited == [True]
    assert tally.contacts == 8 and of(site, 2) == [("Completed", "Created : ada.lovelace2 (202)")]
    assert list(final["contact_id"]) == sorted(final["contact_id"])  # the outcomes still in contact_id order


def test_a_chunk_civicrm_refuses_stops_the_run_and_the_next_chunks_writes_do_not_begin(hook, site, monkeypatch):
    import pipeline.finalize as finalize
    from civicrm_hooks.hook import CiviCRMUnavailable

    write = queries.write_activities
    written: list[list[int]] = []

    def write_activities(civicrm, records):
        if not written:
            written.append([r["_contact_id"] for r in records])
            raise CiviCRMUnavailable("CiviCRM is down")
        written.append([r["_contact_id"] for r in records])
        return write(civicrm, records)

    monkeypatch.setattr(finalize.queries, "write_activities", write_activities)
    with pytest.raises(CiviCRMUnavailable):
        chunked(hook, 2)
    # the failed chunk (2-3), and at most the one queued behind it (4-5) was under way; none after it began
    assert written[0] == [2, 3] and {cid for call in written for cid in call} <= {2, 3, 4, 5}
    assert {a["target"] for a in activities(site)} <= {4, 5}


def test_a_run_in_chunks_twice_writes_nothing_twice(hook, site):
    chunked(hook, 3)
    written, memberships = activities(site), site.table("GroupContact")
    site.reset_calls()
    chunked(hook, 2)
    assert activities(site) == written and site.table("GroupContact") == memberships
    assert not [c for c in site.calls if c.entity == "Activity" and c.action == "save"]


def test_the_attention_list_is_capped_across_chunks(hook, site, caplog):
    from pipeline.finalize import Tally

    tally = Tally(max_rows=1)
    for cid in (3, 5, 8):
        tally.add(pd.DataFrame({"contact_id": [cid], "outcome": ["failed"], "reason": [f"r{cid}"],
                                "display_name": [f"C{cid}"]}))
    text = tally.attention_text()
    assert text.startswith("3 contacts need attention") and "r3" in text and "r5" not in text
    assert "... and 2 more (log_attention_rows = 1)" in text
