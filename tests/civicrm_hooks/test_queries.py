"""civicrm_hooks.queries against the CiviCRM emulator over HTTP, through the real CiviCRMHook.

The standard seed (sandbox/civicrm/testing.py): static group 5 with child group 6, smart group 7
(members 4 and 9, 9 opted out), inactive smart group 8; tags 3 (needs_login) and 4 (login_created);
contact 10 trashed, contact 7 linked to CMS user 17 in domain 1.
"""

from __future__ import annotations

import json

import pytest

from civicrm_hooks import queries
from civicrm_hooks.hook import CiviCRMAuthError, CiviCRMUnavailable
from civicrm_hooks.queries import TriggerError, Triggers
from provisioning.settings import Settings

HISTORY_GROUP = 11
MARKER = queries.run_marker("cmsuser_nightly", "scheduled__2025-01-02T02:00:00+00:00")
OTHER_RUN = queries.run_marker("cmsuser_nightly", "scheduled__2025-01-01T02:00:00+00:00")


def calls(civicrm, entity=None, action=None):
    return [c for c in civicrm.calls if entity in (None, c.entity) and action in (None, c.action)]


def settings(**fields) -> Settings:
    fields.setdefault("trigger_groups", ["new_members"])
    return Settings(**fields)


def group_contacts(civicrm, group_id: int) -> dict[int, str]:
    return {r["contact_id"]: r["status"] for r in civicrm.table("GroupContact") if r["group_id"] == group_id}


def tagged(civicrm, tag_id: int) -> list[int]:
    return sorted(r["entity_id"] for r in civicrm.table("EntityTag") if r["tag_id"] == tag_id)


@pytest.fixture
def history_group(civicrm):
    civicrm.seed({"groups": [{"id": HISTORY_GROUP, "name": "has_login", "title": "Has login"}]})
    return HISTORY_GROUP


@pytest.fixture
def options(hook):
    """The activity type and the Failed status, as pre-flight creates them."""
    queries.ensure_option_values(hook, create=True)


def activity(contact_id: int, status: str, details: str = "", *, activity_type: str = queries.ACTIVITY_TYPE,
             source: int | None = None) -> dict:
    return {"activity_type_id:name": activity_type, "status_id:name": status, "subject": f"{status} test",
            "details": details, "source_contact_id": source or contact_id, "target_contact_id": [contact_id]}


# ------------------------------------------------------------------------------- resolve_triggers


def test_triggers_resolve_from_ids_names_titles_and_labels(hook, civicrm, history_group):
    triggers = queries.resolve_triggers(hook, settings(
        trigger_groups=[5, "Volunteers (smart)"], trigger_tags=["Needs login"],
        history_group="has_login", history_tag=4))

    assert triggers.static_groups == {5: "New members"}
    assert triggers.smart_groups == {7: "Volunteers (smart)"}
    assert triggers.tags == {3: "Needs login"}
    assert (triggers.history_group, triggers.history_tag) == (HISTORY_GROUP, 4)
    # one call for the entries, one for the level of child groups below group 5
    assert len(calls(civicrm, "Group", "get")) == 2 and len(calls(civicrm, "Tag", "get")) == 1


def test_numeric_text_entries_are_ids(hook):
    triggers = queries.resolve_triggers(hook, settings(trigger_groups=["7"], trigger_tags=["3"]))
    assert (list(triggers.smart_groups), list(triggers.tags)) == ([7], [3])


def test_names_are_matched_case_insensitively(hook, civicrm):
    triggers = queries.resolve_triggers(hook, settings(trigger_groups=["NEW_MEMBERS", "new MEMBERS (child)"],
                                                       trigger_tags=["needs LOGIN"]))
    assert triggers.static_groups == {5: "New members", 6: "New members (child)"}
    assert triggers.tags == {3: "Needs login"}
    assert len(calls(civicrm, "Group", "get")) <= 2 and len(calls(civicrm, "Tag", "get")) <= 2


def test_child_groups_of_a_trigger_group_are_left_too(hook, civicrm):
    """The `groups` filter counts a child group's members as the parent's: they must leave both."""
    triggers = queries.resolve_triggers(hook, settings(trigger_groups=["new_members"]))
    assert triggers.child_groups == {6: "New members (child)"}
    members = queries.triggered_members(hook, triggers, 1)
    child_only = [c for c, src in members.items()
                  if not any(r["contact_id"] == c and r["group_id"] == 5 for r in civicrm.table("GroupContact"))]
    assert child_only, "the seed should have a contact that is in the trigger group only through its child"
    queries.take_off_triggers(hook, triggers, child_only)
    assert queries.triggered_members(hook, triggers, 1).keys().isdisjoint(child_only)
    assert {r["status"] for r in civicrm.table("GroupContact") if r["contact_id"] in child_only
            and r["group_id"] == 6} == {"Removed"}


def test_triggers_survive_the_trip_through_xcom():
    triggers = Triggers({5: "New members"}, {7: "Volunteers (smart)"}, {3: "Needs login"}, 11, 4)
    assert Triggers.from_dict(json.loads(json.dumps(triggers.to_dict()))) == triggers


@pytest.mark.parametrize(("fields", "setting", "entry"), [
    ({"trigger_groups": ["new_members", "no_such_group"]}, "trigger_groups", "no_such_group"),
    ({"trigger_groups": [99]}, "trigger_groups", "99"),
    ({"trigger_tags": ["Needs logins"]}, "trigger_tags", "Needs logins"),
    ({"history_group": "has_logins"}, "history_group", "has_logins"),
    ({"history_tag": "created_login"}, "history_tag", "created_login"),
])
def test_an_unknown_entry_names_the_setting_and_the_entry(hook, fields, setting, entry):
    with pytest.raises(TriggerError) as raised:
        queries.resolve_triggers(hook, settings(**fields))
    message = str(raised.value)
    assert message.startswith(f"{setting}:")
    assert repr(entry) in message or entry in message


def test_an_ambiguous_entry_is_refused(hook, civicrm):
    # one group's name is another group's title
    civicrm.seed({"groups": [{"id": 12, "name": "Volunteers (smart)", "title": "Other volunteers"}],
                  "tags": [{"id": 5, "name": "needs_login_too", "label": "Needs login"}]})
    with pytest.raises(TriggerError, match=r"trigger_groups: 'Volunteers \(smart\)' matches 2 groups \(ids \[7, 12\]\)"):
        queries.resolve_triggers(hook, settings(trigger_groups=["Volunteers (smart)"]))
    with pytest.raises(TriggerError, match=r"trigger_tags: 'Needs login' matches 2 tags"):
        queries.resolve_triggers(hook, settings(trigger_tags=["Needs login"]))


def test_a_disabled_trigger_group_is_refused(hook):
    with pytest.raises(TriggerError, match=r"trigger_groups: group 'Old smart group' \(8\) is disabled"):
        queries.resolve_triggers(hook, settings(trigger_groups=["new_members", "old_smart"]))


def test_a_smart_history_group_is_refused(hook):
    with pytest.raises(TriggerError, match="history_group: 'Volunteers .smart.' is a smart group"):
        queries.resolve_triggers(hook, settings(history_group="volunteers_smart"))


def test_reset_groups_and_tags_resolve_like_triggers_and_errors_name_their_setting(hook):
    resets = queries.resolve_resets(hook, settings(reset_groups=["Volunteers (smart)", 5], reset_tags=[4]))
    assert (resets.static_groups, resets.smart_groups, resets.tags) == (
        {5: "New members"}, {7: "Volunteers (smart)"}, {4: "Login created"})
    assert (resets.history_group, resets.history_tag) == (None, None)
    with pytest.raises(TriggerError, match="reset_groups: no group has the id, name or title 'nope'") as raised:
        queries.resolve_resets(hook, settings(reset_groups=["nope", "old_smart"], reset_tags=["nada"]))
    assert len(raised.value.problems) == 3 and "reset_tags: no tag" in raised.value.problems[2]


def test_reset_members_include_linked_smart_members(hook, civicrm):
    civicrm.set_smart_members(7, [4, 7])
    members = queries.reset_members(hook, Triggers(static_groups={5: "New members"},
                                                   smart_groups={7: "Volunteers (smart)"}, tags={3: "Needs login"}))
    assert {cid: sorted(sources) for cid, sources in members.items()} == {
        2: ["group:5", "tag:3"], 6: ["group:5"], 4: ["smart:7", "tag:3"], 7: ["smart:7"]}


# ------------------------------------------------------------------------------- pre-flight reads


def test_read_probe_reads_each_entity_once(hook, civicrm):
    queries.probe_read_permissions(hook)
    probes = calls(civicrm)
    assert [c.entity for c in probes] == list(queries.READ_ENTITIES)
    assert {c.action for c in probes} == {"get"} and all(c.params["limit"] == 1 for c in probes)


def test_a_missing_read_permission_names_the_entity(hook, civicrm):
    civicrm.deny("ActivityContact")
    with pytest.raises(CiviCRMAuthError) as raised:
        queries.probe_read_permissions(hook)
    assert raised.value.entity == "ActivityContact"
    assert "ActivityContact.get" in str(raised.value)


def test_option_values_are_created_once(hook, civicrm):
    wanted = [f"activity_type:{queries.ACTIVITY_TYPE}", f"activity_type:{queries.PASSWORD_RESET_TYPE}",
              f"activity_status:{queries.FAILED_STATUS}"]
    before = len(civicrm.table("OptionValue"))

    assert queries.ensure_option_values(hook, create=False) == wanted
    assert len(civicrm.table("OptionValue")) == before and not calls(civicrm, "OptionValue", "save")

    assert queries.ensure_option_values(hook, create=True) == wanted
    names = {(r["option_group_id"], r["name"]) for r in civicrm.table("OptionValue")}
    assert {(2, queries.ACTIVITY_TYPE), (2, queries.PASSWORD_RESET_TYPE), (25, queries.FAILED_STATUS)} <= names
    assert len(civicrm.table("OptionValue")) == before + 3

    assert queries.ensure_option_values(hook, create=True) == []
    assert queries.ensure_option_values(hook, create=False) == []
    assert len(calls(civicrm, "OptionValue", "save")) == 1


# ------------------------------------------------------------------------------- extract


def test_triggered_members_with_their_sources(hook, civicrm):
    civicrm.seed({"contacts": [{"id": 11, "first_name": "Dora", "last_name": "Elsewhere"}],
                  "uf_matches": [{"contact_id": 11, "uf_id": 31, "uf_name": "dora@example.org", "domain_id": 2}],
                  "group_contacts": [{"contact_id": 7, "group_id": 5, "status": "Added"}]})
    civicrm.set_smart_members(7, [4, 7, 9, 11])
    triggers = Triggers(static_groups={5: "New members"}, smart_groups={7: "Volunteers (smart)"},
                        tags={3: "Needs login"})

    members = queries.triggered_members(hook, triggers, domain_id=1)

    assert {cid: sorted(sources) for cid, sources in members.items()} == {
        2: ["group:5", "tag:3"],   # static member and tagged
        6: ["group:5"],            # through child group 6
        7: ["group:5"],            # linked, but a static member: it must still be taken off
        4: ["smart:7", "tag:3"],   # 9 opted out of the smart group; 7 is linked in this domain
        11: ["smart:7"],           # linked only in another domain
    }
    assert 3 not in members and 10 not in members  # Removed; trashed
    assert len(calls(civicrm, "Contact", "get")) == 2 and len(calls(civicrm, "EntityTag", "get")) == 1


def test_triggered_members_without_tags_makes_no_tag_query(hook, civicrm):
    members = queries.triggered_members(hook, Triggers(static_groups={5: "New members"}), domain_id=1)
    assert sorted(members) == [2, 6]
    assert not calls(civicrm, "EntityTag")


def test_triggered_members_among_given_contacts_only(hook, civicrm):
    civicrm.set_smart_members(7, [4, 9])
    triggers = Triggers(static_groups={5: "New members"}, smart_groups={7: "Volunteers (smart)"},
                        tags={3: "Needs login"})

    members = queries.triggered_members(hook, triggers, domain_id=1, contact_ids=[2, 3, 4, 8, 9])

    # 6 (child group) is a member but was not asked about; 3 was removed; 8 is in nothing; 9 opted out
    assert {cid: sorted(sources) for cid, sources in members.items()} == {
        2: ["group:5", "tag:3"], 4: ["smart:7", "tag:3"]}
    assert all(["id", "IN", [2, 3, 4, 8, 9]] in c.params["where"] for c in calls(civicrm, "Contact", "get"))


def test_not_triggered_says_why_for_each_contact(hook):
    assert queries.not_triggered(hook, [8, 10, 999999, 8]) == {
        8: "not in a trigger group and without a trigger tag (now)",
        10: "the contact is in the trash",
        999999: "no such contact in CiviCRM"}
    assert queries.not_triggered(hook, []) == {}


def test_contact_details(hook, civicrm):
    civicrm.seed({"uf_matches": [{"contact_id": 4, "uf_id": 44, "uf_name": "alan@example.org", "domain_id": 2}]})

    rows = {r["contact_id"]: r for r in queries.contact_details(hook, [2, 3, 4, 5, 6, 7, 8, 10], domain_id=1)}

    assert sorted(rows) == [2, 3, 4, 5, 6, 7, 8]  # 10 is in the trash
    assert rows[2] == {"contact_id": 2, "contact_type": "Individual", "first_name": "Ada", "last_name": "Lovelace",
                       "display_name": rows[2]["display_name"], "email": "ada@example.org", "email_note": None,
                       "is_deceased": False, "do_not_email": False, "preferred_language": "en_US", "uf_id": None,
                       "uf_name": None}
    assert "Ada" in rows[2]["display_name"]
    assert rows[3]["email"] is None and rows[3]["do_not_email"] is True
    assert rows[5]["is_deceased"] is True
    assert rows[6]["email"] == "kj@home.example"  # the primary one, not the first one
    assert (rows[7]["uf_id"], rows[7]["uf_name"]) == (17, "larry@example.org")
    assert rows[4]["uf_id"] is None  # its link is in another domain
    assert rows[8]["contact_type"] == "Organization" and rows[8]["first_name"] == ""

    other_domain = {r["contact_id"]: r for r in queries.contact_details(hook, [4, 7], domain_id=2)}
    assert other_domain[4]["uf_id"] == 44 and other_domain[7]["uf_id"] is None


def test_a_contact_with_two_primary_emails_does_not_break_the_extract(hook, civicrm):
    # imports can leave CiviCRM with two primary emails for one contact; every other contact is unaffected
    civicrm.seed({"emails": [{"id": 900, "contact_id": 2, "email": "ada.second@example.org", "is_primary": True}]})
    emails = civicrm.store.table("Email")
    (first,) = [i for i, row in emails.rows.items() if row["email"] == "ada@example.org"]
    emails.update(first, {"is_primary": True})  # past the one-primary rule, as a direct SQL import goes
    rows = {r["contact_id"]: r for r in queries.contact_details(hook, [2, 3, 4, 6], domain_id=1)}

    assert sorted(rows) == [2, 3, 4, 6]
    assert rows[2]["email"] == "ada@example.org"  # the oldest primary, every time
    assert rows[2]["email_note"] == "has 2 primary emails; used the oldest"
    assert rows[6]["email_note"] is None


def test_contact_details_of_nobody_makes_no_call(hook, civicrm):
    assert queries.contact_details(hook, [], domain_id=1) == []
    assert not civicrm.calls


def test_attempts_count_failures_since_the_last_reset_and_not_this_run(hook, civicrm, options):
    hook.call("Activity", "save", {"records": [
        activity(2, "Failed", OTHER_RUN),
        activity(2, "Failed", OTHER_RUN),
        activity(2, "Cancelled", OTHER_RUN),          # taken off the triggers: count afresh
        activity(2, "Failed", OTHER_RUN),
        activity(2, "Completed", OTHER_RUN),
        activity(2, "Failed", f"the CMS refused the account\n{MARKER}"),  # this run's own, re-run
        activity(4, "Failed", OTHER_RUN),
        activity(4, "Failed", OTHER_RUN),
        activity(4, "Failed", activity_type="Meeting"),  # another activity type
        activity(6, "Failed", OTHER_RUN, source=4),       # 4 only wrote it
    ]})

    history = queries.activity_history(hook, [2, 4, 6, 7], MARKER)

    assert history.attempts == {2: 1, 4: 2, 6: 1}
    # any status counts as tried (the near-real-time run's first-attempts rule): 2 has a Failed and a
    # Completed since its give-up; a contact given up on and added again is a first attempt again
    assert history.tried == {2: 2, 4: 2, 6: 1}


def test_a_contact_given_up_on_and_added_again_has_not_been_tried(hook, civicrm, options):
    hook.call("Activity", "save", {"records": [activity(2, "Failed", OTHER_RUN) for _ in range(4)]
                                   + [activity(2, "Cancelled", OTHER_RUN)]})
    assert queries.activity_history(hook, [2], MARKER).tried == {2: 0}


# ------------------------------------------------------------------------------- links


@pytest.fixture
def other_domain_link(civicrm):
    civicrm.seed({"uf_matches": [{"contact_id": 4, "uf_id": 17, "uf_name": "larry@example.org", "domain_id": 2}]})


def test_links_for_users_and_login_names_in_this_domain(hook, civicrm, other_domain_link):
    expected = [{"contact_id": 7, "uf_id": 17, "uf_name": "larry@example.org"}]
    assert queries.links_for(hook, 1, uf_ids=[17]) == expected
    assert queries.links_for(hook, 1, uf_names=["larry@example.org"]) == expected
    assert queries.links_for(hook, 1, uf_ids=[17, 17], uf_names=["larry@example.org"]) == expected  # once
    assert queries.links_for(hook, 2, uf_ids=[17]) == [{"contact_id": 4, "uf_id": 17, "uf_name": "larry@example.org"}]
    assert queries.links_for(hook, 1, uf_ids=[99], uf_names=["nobody@example.org"]) == []
    civicrm.reset_calls()
    assert queries.links_for(hook, 1) == []
    assert not civicrm.calls


def test_linked_accounts_of_this_domain(hook, other_domain_link):
    found = queries.linked_accounts(hook, [2, 4, 7], 1)
    assert list(found) == [7]
    assert {k: found[7][k] for k in ("contact_id", "uf_id", "uf_name")} == \
        {"contact_id": 7, "uf_id": 17, "uf_name": "larry@example.org"}
    assert list(queries.linked_accounts(hook, [2, 4, 7], 2)) == [4]


def ufmatch(civicrm, domain_id: int = 1) -> dict[int, tuple]:
    return {r["contact_id"]: (r["uf_id"], r["uf_name"]) for r in civicrm.table("UFMatch") if r["domain_id"] == domain_id}


def test_save_links_writes_all_rows_in_one_call(hook, civicrm):
    links = [{"contact_id": 2, "uf_id": 102, "uf_name": "ada@example.org"},
             {"contact_id": 4, "uf_id": 104, "uf_name": "alan@example.org"},
             {"contact_id": 6, "uf_id": 106, "uf_name": "kj@home.example"}]

    assert queries.save_links(hook, links, 1) == {}
    assert len(calls(civicrm, "UFMatch", "save")) == 1
    assert ufmatch(civicrm) == {2: (102, "ada@example.org"), 4: (104, "alan@example.org"),
                                6: (106, "kj@home.example"), 7: (17, "larry@example.org")}

    assert queries.save_links(hook, links, 1) == {}  # a repeat after a crash changes nothing
    assert len(civicrm.table("UFMatch")) == 4
    assert len(calls(civicrm, "UFMatch", "save")) == 2


def test_save_links_isolates_a_conflicting_row_and_writes_the_others(hook, civicrm):
    links = [{"contact_id": 2, "uf_id": 102, "uf_name": "ada@example.org"},
             {"contact_id": 4, "uf_id": 104, "uf_name": "larry@example.org"},  # contact 7 has that login name
             {"contact_id": 6, "uf_id": 106, "uf_name": "kj@home.example"}]

    errors = queries.save_links(hook, links, 1)

    assert list(errors) == [4]
    assert errors[4].startswith("CiviCRM refused the UFMatch link: ") and "already exists" in errors[4]
    assert ufmatch(civicrm) == {2: (102, "ada@example.org"), 6: (106, "kj@home.example"),
                                7: (17, "larry@example.org")}
    assert len(calls(civicrm, "UFMatch", "save")) == 1 + len(links)  # the batch, then one by one


def test_save_links_does_not_turn_an_outage_into_link_errors(hook, civicrm, sleeps):
    civicrm.inject(entity="UFMatch", action="save", status=503, times=100)
    with pytest.raises(CiviCRMUnavailable):
        queries.save_links(hook, [{"contact_id": 2, "uf_id": 102, "uf_name": "ada@example.org"}], 1)
    assert len(calls(civicrm, "UFMatch", "save")) == hook.max_tries  # the hook's retries, no one-by-one


def test_save_links_of_nothing_makes_no_call(hook, civicrm):
    assert queries.save_links(hook, [], 1) == {}
    assert not civicrm.calls


# ------------------------------------------------------------------------------- activities


def _written(hook, contact_ids, marker) -> set[tuple[int, str]]:
    return {(cid, a["status"]) for cid, rows in queries.run_activities(hook, contact_ids, marker).items()
            for a in rows}


def test_activities_written_by_this_run(hook, options):
    hook.call("Activity", "save", {"records": [
        activity(2, "Failed", f"reason\n{MARKER}"),
        activity(2, "Cancelled", MARKER),
        activity(4, "Completed", f"reason\n{OTHER_RUN}"),
        activity(6, "Completed", MARKER, source=4),
    ]})
    assert _written(hook, [2, 4, 6, 7], MARKER) == {(2, "Failed"), (2, "Cancelled"),
                                                                      (6, "Completed")}
    assert _written(hook, [4], OTHER_RUN) == {(4, "Completed")}


def test_write_activities_in_chunks(hook, civicrm, options, monkeypatch):
    monkeypatch.setattr(queries, "WRITE_CHUNK", 2)
    before = len(civicrm.table("Activity"))

    assert queries.write_activities(hook, [activity(c, "Completed", MARKER) for c in (2, 3, 4, 6, 7)]) == {}

    saves = calls(civicrm, "Activity", "save")
    assert [len(c.params["records"]) for c in saves] == [2, 2, 1]
    assert len(civicrm.table("Activity")) == before + 5
    assert queries.write_activities(hook, []) == {}
    assert len(calls(civicrm, "Activity", "save")) == 3


def test_a_contact_deleted_since_the_extract_is_isolated_and_the_rest_are_written(hook, civicrm, options):
    before = len(civicrm.table("Activity"))
    records = [{**activity(c, "Completed", MARKER), "_contact_id": c} for c in (2, 3, 4, 9999, 6, 7, 8)]

    refused = queries.write_activities(hook, records)

    assert refused == {9999: "DB Error: constraint violation"}
    assert len(civicrm.table("Activity")) == before + 6  # save is not atomic: nothing written twice
    sizes = [len(c.params["records"]) for c in calls(civicrm, "Activity", "save")]
    assert sizes[0] == 7 and sizes.count(1) <= 3  # halved down to the one at fault, not one call per record


def test_history_of_a_deleted_contact_is_refused_alone(hook, civicrm, history_group):
    triggers = Triggers(static_groups={5: "New members"}, history_group=history_group, history_tag=4)
    refused = queries.add_to_history(hook, triggers, [2, 9999, 4])
    assert sorted(refused) == [9999]
    assert group_contacts(civicrm, history_group) == {2: "Added", 4: "Added"}


def test_the_journal_is_written_in_one_call_and_read_back_by_any_run(hook, civicrm, options):
    from provisioning.journal import JournalEntry

    entries = [JournalEntry(contact_id=2, usernames=("ada.lovelace",), sent="2025-01-02T02:00:01Z"),
               JournalEntry(contact_id=4, usernames=("alan.turing",), sent="2025-01-02T02:00:01Z")]
    civicrm.reset_calls()
    written = queries.save_journal(hook, entries, subject={2: "Creating account ada.lovelace"},
                                   stamp="2025-01-02 02:00:00", source={2: 2, 4: 4}, marker=MARKER)
    assert len(calls(civicrm, "Activity", "save")) == 1
    assert written[2].activity_id and written[2].status == "Scheduled" and written[2].markers == (MARKER,)

    # the id and mail state are added to the same activity, by id (no second activity)
    queries.save_journal(hook, [written[2].created(45, "ada.lovelace").with_mail("sent")], subject={},
                         stamp="2025-01-02 02:00:00", source={2: 2}, marker=MARKER)
    found = queries.journal_for(hook, [2, 4, 6])
    assert [(e.activity_id, e.uf_id, e.mail, e.status) for e in found[2]] == [
        (written[2].activity_id, 45, "sent", "Scheduled")]
    assert found[4][0].pending and 6 not in found
    history = queries.activity_history(hook, [2, 4], OTHER_RUN)
    assert history.attempts == {2: 0, 4: 0}  # a journal is no failed attempt
    assert history.journal[2][0].uf_id == 45


# ------------------------------------------------------------------------------- history and clean-up


def test_add_to_history_is_idempotent(hook, civicrm, history_group):
    civicrm.seed({"group_contacts": [{"contact_id": 4, "group_id": history_group, "status": "Removed"}]})
    triggers = Triggers(static_groups={5: "New members"}, history_group=history_group, history_tag=4)

    queries.add_to_history(hook, triggers, [2, 4])
    first = (civicrm.table("GroupContact"), civicrm.table("EntityTag"))
    queries.add_to_history(hook, triggers, [2, 4])

    assert group_contacts(civicrm, history_group) == {2: "Added", 4: "Added"}
    assert tagged(civicrm, 4) == [2, 4]
    assert (civicrm.table("GroupContact"), civicrm.table("EntityTag")) == first
    assert len(calls(civicrm, "GroupContact", "save")) == 2 and len(calls(civicrm, "EntityTag", "save")) == 2


def test_no_history_configured_writes_nothing(hook, civicrm):
    queries.add_to_history(hook, Triggers(static_groups={5: "New members"}), [2, 4])
    assert not civicrm.calls


def test_take_off_triggers(hook, civicrm, history_group):
    civicrm.seed({"group_contacts": [{"contact_id": 2, "group_id": history_group, "status": "Added"}],
                  "entity_tags": [{"entity_id": 2, "tag_id": 4}]})
    triggers = Triggers(static_groups={5: "New members"}, smart_groups={7: "Volunteers (smart)"},
                        tags={3: "Needs login"}, history_group=history_group, history_tag=4)
    row_ids = {r["contact_id"]: r["id"] for r in civicrm.table("GroupContact") if r["group_id"] == 5}

    queries.take_off_triggers(hook, triggers, [2, 4], smart_opt_outs=[(4, 7), (4, 7)])

    assert group_contacts(civicrm, 5) == {2: "Removed", 3: "Removed", 10: "Added"}  # kept, as history
    assert {r["contact_id"]: r["id"] for r in civicrm.table("GroupContact") if r["group_id"] == 5} == row_ids
    assert tagged(civicrm, 3) == []
    assert tagged(civicrm, 4) == [2] and group_contacts(civicrm, history_group) == {2: "Added"}
    assert group_contacts(civicrm, 7) == {4: "Removed", 9: "Removed"}  # only the given pair is opted out
    assert sorted(queries.triggered_members(hook, triggers, 1)) == [6]  # only the contact left on
    assert [(c.entity, c.action) for c in calls(civicrm) if c.action != "get"] == [
        ("GroupContact", "update"), ("EntityTag", "delete"), ("GroupContact", "save")]


def test_take_off_triggers_without_smart_opt_outs_leaves_smart_groups_alone(hook, civicrm):
    triggers = Triggers(static_groups={5: "New members"}, smart_groups={7: "Volunteers (smart)"})
    queries.take_off_triggers(hook, triggers, [2, 4])
    assert group_contacts(civicrm, 7) == {9: "Removed"}
    assert group_contacts(civicrm, 5)[2] == "Removed"
    assert not calls(civicrm, "GroupContact", "save")


def test_members_are_held_compactly_and_read_as_a_mapping():
    from array import array

    pairs = [(9, "group:5"), (2, "group:5"), (4, "smart:7"), (2, "tag:3"), (9, "tag:4"), (9, "tag:3"), (7, "tag:3")]
    tags = ["group:5", "smart:7", "tag:3", "tag:4"]
    members = queries.Members.of(array("q", [c for c, _ in pairs]), array("i", [tags.index(t) for _, t in pairs]),
                                 tags)
    # each contact's triggers in the order found
    assert members == {2: ["group:5", "tag:3"], 4: ["smart:7"], 7: ["tag:3"], 9: ["group:5", "tag:4", "tag:3"]}
    assert list(members) == [2, 4, 7, 9] and len(members) == 4
    assert 3 not in members and "x" not in members and members.get(10) is None
    assert list(members.id_chunks(3)) == [[2, 4, 7], [9]]
    big = queries.Members.of(array("q", range(100_000, 0, -1)), array("i", [0] * 100_000), ["group:5"])
    assert big[1] is big[100_000] and big.ids.nbytes + big.codes.nbytes == 1_200_000  # one shared list
    empty = queries.Members.of(array("q"), array("i"), [])
    assert empty == {} and list(empty.id_chunks(5)) == []
