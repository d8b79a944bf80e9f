import json
import time

import numpy as np
import pandas as pd
import pytest

from cms_operators.wordpress.rules import RULES
from provisioning import outcomes as why
from provisioning.plan import (
    PLAN_COLUMNS,
    batch_label,
    cms_users_frame,
    contacts_frame,
    json_safe_records,
    links_frame,
    make_batches,
    plan_contacts,
    with_not_triggered,
)

ADMIN = (1, "boss", "boss@example.org", ["administrator"])


def row_of(plan: pd.DataFrame, contact_id: int) -> dict:
    return plan.loc[contact_id].to_dict()


# --- shape ---------------------------------------------------------------------------------------


def test_one_row_per_contact_sorted_with_the_plan_columns(run_plan, contact):
    plan = run_plan([contact(30), contact(10), contact(20)])
    assert list(plan.columns) == PLAN_COLUMNS
    assert PLAN_COLUMNS[PLAN_COLUMNS.index("username") + 1] == "username_base"
    assert plan["contact_id"].tolist() == [10, 20, 30]


def test_every_row_has_a_reason(run_plan, contact):
    plan = run_plan(
        [
            contact(1),
            contact(2, email=None),
            contact(3, uf_id=5, uf_name="x@example.org"),
            contact(4, email="c@x.org"),
        ],
        users=[(8, "c", "c@x.org")],
    )
    assert plan["reason"].map(lambda text: isinstance(text, str) and text != "").all()
    assert plan["outcome"].notna().all()


@pytest.mark.parametrize("frames", ["empty", "none"])
def test_empty_inputs_give_an_empty_plan(make_settings, frames):
    inputs = [contacts_frame(), cms_users_frame(), links_frame()] if frames == "empty" else [None, None, None]
    plan = plan_contacts(*inputs, make_settings(), RULES)
    assert plan.empty
    assert list(plan.columns) == PLAN_COLUMNS
    assert make_batches(plan, 10) == []


def test_inputs_without_optional_columns_still_plan(make_settings):
    contacts = pd.DataFrame(
        {"contact_id": [1], "first_name": ["Ann"], "last_name": ["Lee"], "email": ["ann@example.org"]}
    )
    plan = plan_contacts(contacts, pd.DataFrame(), pd.DataFrame(), make_settings(), RULES)
    assert plan.loc[0, "username"] == "ann.lee"
    assert plan.loc[0, "sources"] == [] and plan.loc[0, "attempts"] == 0


def test_contact_fields_are_carried_over(run_plan, contact):
    plan = run_plan(
        [contact(1, email="  Ann@Example.org ", preferred_language="de_DE", do_not_email=True, attempts=2)]
    )
    row = row_of(plan, 1)
    assert row["email"] == "Ann@Example.org"
    assert (row["locale"], row["do_not_email"], row["attempts"]) == ("de_DE", True, 2)
    assert (row["first_name"], row["last_name"], row["display_name"]) == ("Jane", "Doe", "Jane Doe")
    assert row["sources"] == ["group:1"]


def test_a_contact_listed_twice_is_planned_once_with_all_sources(run_plan, contact):
    plan = run_plan([contact(1, sources=["group:1"]), contact(1, sources=["tag:3", "group:1"])])
    assert len(plan) == 1
    assert plan.loc[1, "sources"] == ["group:1", "tag:3"]


# --- rules 1-5: the contact itself ---------------------------------------------------------------


@pytest.mark.parametrize("deceased", [True, 1, "1"])
def test_rule1_deceased_contacts_fail_before_anything_else(run_plan, contact, deceased):
    plan = run_plan([contact(1, is_deceased=deceased, uf_id=4, uf_name="x@example.org", email=None)])
    assert (plan.loc[1, "action"], plan.loc[1, "outcome"], plan.loc[1, "reason"]) == (
        "none",
        "failed",
        "contact is deceased",
    )


@pytest.mark.parametrize("alive", [False, 0, "0", None])
def test_rule1_only_true_means_deceased(run_plan, contact, alive):
    assert run_plan([contact(1, is_deceased=alive)]).loc[1, "outcome"] == "created"


def test_rule2_existing_link_wins_over_email_problems(run_plan, contact):
    plan = run_plan([contact(1, uf_id=45, uf_name="jane@example.org", email=None)])
    row = row_of(plan, 1)
    assert (row["action"], row["outcome"], row["uf_id"], row["username"]) == (
        "none",
        "already_linked",
        45,
        "jane@example.org",
    )
    assert row["reason"] == "already linked to CMS account jane@example.org (45)"


def test_rule2_a_link_found_only_in_links_counts_too(run_plan, contact):
    # The extract missed the contact's own UFMatch; creating would make CiviCRM refuse a second one.
    plan = run_plan([contact(1, email="jane@example.org")], links=[(1, 300, "jane@example.org")])
    row = row_of(plan, 1)
    assert (row["action"], row["outcome"], row["uf_id"], row["username"]) == (
        "none",
        "already_linked",
        300,
        "jane@example.org",
    )


def test_rule2a_first_attempts_only_leaves_a_contact_tried_before_to_the_nightly_run(run_plan, contact):
    contacts = [contact(1, email="a@example.org", tried=2, attempts=1), contact(2, email="b@example.org"),
                contact(3, uf_id=45, uf_name="c@example.org", tried=1)]
    plan = run_plan(contacts, first_attempts_only=True)
    assert list(plan["outcome"]) == ["left_to_nightly", "created", "already_linked"]
    assert row_of(plan, 1)["action"] == "none"
    assert row_of(plan, 1)["reason"].startswith("tried 2 times since its last give-up")
    # the nightly plan makes the next attempt
    assert list(run_plan(contacts)["outcome"]) == ["created", "created", "already_linked"]


def test_ids_in_no_trigger_are_added_as_not_triggered_rows_in_contact_order(run_plan, contact):
    plan = with_not_triggered(run_plan([contact(2, email="a@example.org")]).reset_index(drop=True),
                              {9: "no such contact in CiviCRM", 1: "the contact is in the trash"})
    assert list(plan.columns) == PLAN_COLUMNS
    assert list(zip(plan["contact_id"], plan["outcome"], plan["action"], strict=True)) == [
        (1, "not_triggered", "none"), (2, "created", "create"), (9, "not_triggered", "none")]
    assert plan.loc[2, "reason"] == "no such contact in CiviCRM" and plan.loc[2, "uf_id"] is None
    assert make_batches(plan, 10) == [[r for r in json_safe_records(plan) if r["contact_id"] == 2]]
    only = with_not_triggered(pd.DataFrame(columns=PLAN_COLUMNS), {5: "x"})
    assert list(only["outcome"]) == ["not_triggered"]


@pytest.mark.parametrize("email", [None, "", "   ", float("nan")])
def test_rule3_missing_email_fails(run_plan, contact, email):
    plan = run_plan([contact(1, email=email)])
    assert (plan.loc[1, "outcome"], plan.loc[1, "reason"], plan.loc[1, "email"]) == (
        "failed",
        "no primary email",
        None,
    )


@pytest.mark.parametrize(
    "email",
    [
        "jane.example.org",
        "jane@@example.org",
        "ja@ne@example.org",
        "@example.org",
        "jane@",
        "jane@localhost",
        "jane doe@example.org",
        "jane@example.org,bob@example.org",
        "jöhn@example.org",
        "jane@exa_mple.org",
        "jane@-example.org",
        "jane@example..org",
        "a@b.c",
    ],
)
def test_rule4_invalid_email_fails_with_the_address(run_plan, contact, email):
    plan = run_plan([contact(1, email=email)])
    assert (plan.loc[1, "outcome"], plan.loc[1, "reason"]) == ("failed", f"invalid email '{email}'")


@pytest.mark.parametrize(
    "email", ["jane@example.org", "Jane.O'Doe+news@mail.example.co.uk", "x_y-z@sub-domain.example", "a@b.co"]
)
def test_rule4_valid_emails_pass(run_plan, contact, email):
    assert run_plan([contact(1, email=email)]).loc[1, "outcome"] == "created"


@pytest.mark.parametrize(("local_length", "outcome"), [(88, "created"), (89, "failed")])
def test_rule5_email_longer_than_100_fails(run_plan, contact, local_length, outcome):
    email = "a" * local_length + "@example.org"  # 12 more characters
    plan = run_plan([contact(1, email=email)])
    assert plan.loc[1, "outcome"] == outcome
    if outcome == "failed":
        assert plan.loc[1, "reason"] == "email is longer than 100 characters, which the CMS cannot store"


def test_rule5_limit_is_a_parameter(run_plan, contact):
    plan = run_plan([contact(1, email="abcdef@example.org")], plan_options={"max_email_length": 10})
    assert plan.loc[1, "reason"] == "email is longer than 10 characters, which the CMS cannot store"


# --- rule 6: shared emails -----------------------------------------------------------------------


def test_rule6_lowest_contact_keeps_a_shared_email(run_plan, contact):
    plan = run_plan(
        [
            contact(7, email="Fam@Example.org"),
            contact(3, email=" fam@example.org"),
            contact(5, email="FAM@example.org "),
        ]
    )
    assert plan.loc[3, "outcome"] == "created"
    for other in (5, 7):
        assert plan.loc[other, "outcome"] == "failed"
        assert plan.loc[other, "reason"].startswith("email ")
        assert plan.loc[other, "reason"].endswith(
            "is shared with contact 3; give each contact its own primary email"
        )


def test_rule6_only_counts_contacts_still_undecided(run_plan, contact):
    # Contact 1 is already linked, so contact 2 may use the same email.
    plan = run_plan(
        [
            contact(1, email="fam@example.org", uf_id=9, uf_name="fam@example.org"),
            contact(2, email="fam@example.org"),
        ]
    )
    assert plan.loc[2, "outcome"] == "created"


# --- rule 7: a CMS account with the same email ---------------------------------------------------


def test_rule7_links_an_existing_account(run_plan, contact):
    plan = run_plan([contact(1, email="Jane@Example.org")], users=[(45, "jdoe", "jane@example.org")])
    row = row_of(plan, 1)
    assert (row["action"], row["outcome"], row["uf_id"], row["username"]) == (
        "link",
        "linked_existing",
        45,
        "jdoe",
    )
    assert row["reason"] == "existing account with the same email"
    assert row["roles"] == []


def test_rule7_account_linked_to_another_contact_fails(run_plan, contact):
    plan = run_plan(
        [contact(1, email="jane@example.org")],
        users=[(45, "jdoe", "jane@example.org")],
        links=[(99, 45, "jane@example.org"), (98, 45, "jane@example.org")],
    )
    assert plan.loc[1, "outcome"] == "failed"
    assert plan.loc[1, "reason"] == "CMS account jdoe (45) is already linked to contact 98"
    assert (plan.loc[1, "uf_id"], plan.loc[1, "username"]) == (None, "")


def test_rule7_account_linked_to_this_contact_is_already_linked(run_plan, contact):
    plan = run_plan(
        [contact(1, email="jane@example.org")],
        users=[(45, "jdoe", "jane@example.org")],
        links=[(1, 45, "jane@example.org")],
    )
    assert (plan.loc[1, "action"], plan.loc[1, "outcome"], plan.loc[1, "uf_id"]) == (
        "none",
        "already_linked",
        45,
    )


@pytest.mark.parametrize("roles", [["administrator"], ["editor", "Administrator"]])
def test_rule7_administrators_are_never_linked(run_plan, contact, roles):
    plan = run_plan([contact(1, email="boss@example.org")], users=[(1, "boss", "BOSS@example.org", roles)])
    assert plan.loc[1, "outcome"] == "failed"
    assert plan.loc[1, "reason"] == "CMS account boss (1) is an administrator; link it by hand if intended"


def test_rule7_linked_elsewhere_is_reported_before_administrator(run_plan, contact):
    plan = run_plan(
        [contact(1, email="boss@example.org")], users=[ADMIN], links=[(50, 1, "boss@example.org")]
    )
    assert plan.loc[1, "reason"] == "CMS account boss (1) is already linked to contact 50"


def test_rule7_fail_policy(run_plan, contact):
    plan = run_plan(
        [contact(1, email="jane@example.org")],
        users=[(45, "jdoe", "jane@example.org")],
        on_existing_email="fail",
    )
    assert plan.loc[1, "outcome"] == "failed"
    assert (
        plan.loc[1, "reason"]
        == "a CMS account with this email exists (jdoe, 45) and on_existing_email is 'fail'"
    )


def test_rule7_two_accounts_with_one_email_use_the_oldest(run_plan, contact):
    plan = run_plan(
        [contact(1, email="jane@example.org")],
        users=[(50, "newer", "jane@example.org"), (45, "older", "Jane@example.org")],
    )
    assert (plan.loc[1, "uf_id"], plan.loc[1, "username"]) == (45, "older")


# --- rule 8: the email is another contact's UFMatch login name ----------------------------------


def _journal(**fields) -> list[dict]:
    entry = {"activity_id": 70, "status": "Failed", "usernames": ["jane.doe"], "sent": "2026-03-01T02:00:05Z",
             "uf_id": None, "username": None, "mail": ""}
    entry.update(fields)
    return [entry]


def test_rule2b_attempts_used_up_earlier_fail_without_a_new_attempt(run_plan, contact):
    plan = run_plan([contact(1, attempts=4), contact(2, attempts=3), contact(3, attempts=9, uf_id=5)])
    assert (plan.at[1, "outcome"], plan.at[1, "action"], plan.at[1, "exhausted"]) == ("failed", "none", True)
    assert plan.at[1, "reason"] == why.exhausted_earlier(4)
    assert plan.at[2, "outcome"] == "created" and not plan.at[2, "exhausted"]
    assert plan.at[3, "outcome"] == "already_linked"  # a linked contact is done, whatever its history


def test_rule5b_an_account_our_journal_names_is_linked_as_created(run_plan, contact):
    plan = run_plan([contact(1, email="jane@example.org", journal=_journal())],
                    users=[(45, "jane.doe", "jane@example.org", ["subscriber"], "2026-03-01T02:00:06")])
    row = plan.loc[1]
    assert (row["action"], row["outcome"], row["uf_id"], row["username"]) == ("link", "created", 45, "jane.doe")
    assert row["reason"] == why.adopted_from_journal("2026-03-01T02:00:05Z")
    assert row["journal_activity_id"] == 70


@pytest.mark.parametrize("on_existing_email", ["link", "fail"])
def test_rule5b_ours_wins_over_on_existing_email(run_plan, contact, on_existing_email):
    plan = run_plan([contact(1, email="jane@example.org", journal=_journal(uf_id=45, username="jane.doe"))],
                    users=[(45, "jane.doe", "jane@example.org")], on_existing_email=on_existing_email)
    assert plan.at[1, "outcome"] == "created"


def test_rule5b_our_account_is_found_by_its_login_when_the_email_changed_since(run_plan, contact):
    plan = run_plan([contact(1, email="jane.new@example.org", journal=_journal())],
                    users=[(45, "jane.doe", "jane.old@example.org", ["subscriber"], "2026-03-01T02:00:06")])
    assert (plan.at[1, "outcome"], plan.at[1, "uf_id"]) == ("created", 45)


def test_rule5b_an_account_that_only_shares_the_email_stays_somebody_elses(run_plan, contact):
    users = [(45, "jane.d", "jane@example.org", ["subscriber"], "2026-03-01T02:00:06"),  # a name we never sent
             (46, "jane.doe", "other@example.org", ["subscriber"], "2020-01-01T00:00:00")]  # older than our send
    plan = run_plan([contact(1, email="jane@example.org", journal=_journal())], users=users)
    assert (plan.at[1, "outcome"], plan.at[1, "uf_id"]) == ("linked_existing", 45)


def test_rule5b_never_links_an_administrator_or_another_contacts_account(run_plan, contact):
    journal = _journal(uf_id=45, username="jane.doe")
    admin = run_plan([contact(1, journal=journal)], users=[(45, "jane.doe", "x@example.org", ["administrator"])])
    assert admin.at[1, "reason"] == why.account_is_administrator("jane.doe", 45)
    taken = run_plan([contact(1, journal=journal)], users=[(45, "jane.doe", "x@example.org")],
                     links=[(9, 45, "x@example.org")])
    assert taken.at[1, "reason"] == why.account_linked_to_other("jane.doe", 45, 9)


def test_a_note_about_two_primary_emails_reaches_the_reason(run_plan, contact):
    plan = run_plan([contact(1, email_note="has 2 primary emails; used the oldest")])
    assert plan.at[1, "reason"] == "new account; has 2 primary emails; used the oldest"


def test_already_linked_contacts_show_their_cms_login(run_plan, contact):
    plan = run_plan([contact(1, uf_id=5, uf_name="jane@example.org", cms_login="jdoe"), contact(2, uf_id=6,
                                                                                               uf_name="x@y.org")])
    assert (plan.at[1, "username"], plan.at[1, "uf_name"]) == ("jdoe", "jane@example.org")
    assert plan.at[2, "username"] == "x@y.org"  # the CMS account is gone or unread: UFMatch's name


def test_rule8_email_already_used_as_a_login_name(run_plan, contact):
    plan = run_plan([contact(1, email="Jane@example.org")], links=[(77, 300, "jane@EXAMPLE.org")])
    assert plan.loc[1, "outcome"] == "failed"
    assert (
        plan.loc[1, "reason"] == "email Jane@example.org is already the login name of contact 77's CMS link"
    )


# --- rule 9: creating --------------------------------------------------------------------------


def test_rule9_creates_with_pattern_roles_and_sanitised_name(run_plan, contact):
    plan = run_plan([contact(1, first_name="Zoë", last_name="O'Brien")], roles=["member", "author"])
    row = row_of(plan, 1)
    assert (row["action"], row["outcome"], row["reason"]) == ("create", "created", "new account")
    assert (row["username"], row["roles"], row["uf_id"]) == ("zoe.obrien", ["member", "author"], None)


def test_rule9_usernames_are_unique_against_cms_and_run(run_plan, contact):
    plan = run_plan(
        [contact(1), contact(2), contact(3, email="boss@example.org"), contact(4)],
        users=[(10, "Jane.Doe", "someone@example.org"), ADMIN],
    )
    assert plan.loc[[1, 2, 4], "username"].tolist() == ["jane.doe2", "jane.doe3", "jane.doe4"]
    # the failed contact 3 did not use up a name
    assert plan.loc[3, "username"] == ""


def test_rule9_respects_the_username_length(run_plan, contact):
    plan = run_plan([contact(1, last_name="x" * 80), contact(2, last_name="x" * 80)])
    assert [len(name) for name in plan["username"]] == [60, 60]
    assert plan.loc[2, "username"].endswith("2")


@pytest.mark.parametrize(
    ("pattern", "fields", "expected"),
    [
        ("{email_local}", {"email": "Mary.Ann@example.org"}, "mary.ann"),
        ("{contact_id}-{last_name}", {"last_name": "Núñez"}, "1-nunez"),
        ("{display_name}", {"display_name": "Acme Ltd."}, "acme.ltd"),
    ],
)
def test_rule9_pattern_tokens(run_plan, contact, pattern, fields, expected):
    assert run_plan([contact(1, **fields)], username_pattern=pattern).loc[1, "username"] == expected


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ({"first_name": "Иван", "last_name": "Петров"}, "ivan.petrov"),
        ({"first_name": "李", "last_name": "小龍"}, "li.xiao.long"),
        ({"first_name": "Γιώργος", "last_name": None}, "giorgos"),
    ],
)
def test_rule9_names_without_latin_letters_are_transliterated(run_plan, contact, names, expected):
    row = row_of(run_plan([contact(1, **names)]), 1)
    assert (row["outcome"], row["username"]) == ("created", expected)


@pytest.mark.parametrize(
    ("fields", "settings", "expected"),
    [
        # no name at all: the default fallback {email_local}
        ({"first_name": None, "last_name": None, "email": "Mary.Ann@example.org"}, {}, "mary.ann"),
        ({"first_name": "😀", "last_name": ""}, {}, "contact1"),
        ({"first_name": None}, {"username_pattern": "{first_name}"}, "contact1"),
        (
            {"first_name": None, "last_name": None},
            {"username_fallback_pattern": "member-{contact_id}"},
            "member-1",
        ),
        # the fallback is empty too: user{contact_id}
        ({"first_name": None, "last_name": None, "email": "+++@example.org"}, {}, "user1"),
        (
            {"first_name": None, "last_name": None, "display_name": None},
            {"username_fallback_pattern": "{display_name}"},
            "user1",
        ),
    ],
)
def test_rule9_empty_username_falls_back(run_plan, contact, fields, settings, expected):
    row = row_of(run_plan([contact(1, **fields)], **settings), 1)
    assert (row["action"], row["outcome"], row["username"]) == ("create", "created", expected)


def test_rule9_fallback_names_are_unique_too(run_plan, contact):
    plan = run_plan(
        [contact(1, first_name=None, last_name=None, email="+++@example.org")],
        users=[(5, "user1", "someone@example.org")],
    )
    assert (plan.loc[1, "username"], plan.loc[1, "username_base"]) == ("user12", "user1")


def test_rule9_empty_username_fails_only_when_even_user_id_is_empty(run_plan, contact):
    plan = run_plan([contact(1)], plan_options={"sanitize_username": lambda raw: ""})
    assert (plan.loc[1, "action"], plan.loc[1, "outcome"]) == ("none", "failed")
    assert plan.loc[1, "reason"] == (
        "username pattern '{first_name}.{last_name}' gives an empty username for this contact; "
        "fill in the name fields or change username_pattern"
    )
    assert plan.loc[1, "username_base"] == ""


def test_rule9_username_base_is_the_name_before_the_suffix(run_plan, contact):
    plan = run_plan(
        [
            contact(1),
            contact(2),
            contact(3, last_name="x" * 80),
            contact(4, last_name="x" * 80),
            contact(5, email=None),
            contact(6, email="boss@example.org"),
            contact(7, uf_id=70, uf_name="seven@example.org"),
        ],
        users=[(10, "Jane.Doe", "someone@example.org"), ADMIN],
    )
    assert plan.loc[[1, 2], "username"].tolist() == ["jane.doe2", "jane.doe3"]
    assert plan.loc[[1, 2], "username_base"].tolist() == ["jane.doe", "jane.doe"]
    # cut to the length limit, as the unsuffixed name would be
    assert plan.loc[3, "username_base"] == plan.loc[3, "username"] == "jane." + "x" * 55
    assert plan.loc[4, "username"] == "jane." + "x" * 54 + "2"
    assert plan.loc[4, "username_base"] == "jane." + "x" * 55
    # '' for every row that is not a create
    assert plan.loc[[5, 6, 7], "username_base"].tolist() == ["", "", ""]


def test_rule9_username_base_reaches_the_batches_and_not_the_deferred(run_plan, contact):
    plan = run_plan([contact(1), contact(2), contact(3)], users=[(10, "jane.doe", "x@example.org")], limit=1)
    assert plan.loc[[2, 3], "outcome"].tolist() == ["deferred", "deferred"]
    assert plan.loc[[2, 3], "username_base"].tolist() == ["", ""]
    [[row]] = make_batches(plan, batch_size=10)
    assert (row["username"], row["username_base"]) == ("jane.doe2", "jane.doe")


def test_rule9_sanitiser_is_pluggable(run_plan, contact):
    plan = run_plan([contact(1)], plan_options={"sanitize_username": str.upper})
    assert plan.loc[1, "username"] == "JANE.DOE"


# --- rule 10: limit ----------------------------------------------------------------------------


def test_rule10_limit_defers_the_highest_ids(run_plan, contact):
    plan = run_plan(
        [contact(1), contact(2, email=None), contact(3, email="x@example.org"), contact(4), contact(5)],
        users=[(9, "x", "x@example.org")],
        limit=2,
    )
    assert plan["outcome"].tolist() == ["created", "failed", "linked_existing", "deferred", "deferred"]
    assert plan.loc[4, "action"] == "none"
    assert plan.loc[5, "reason"] == "beyond limit 2; left for the next run"


def test_rule10_limit_zero_defers_everyone(run_plan, contact):
    assert run_plan([contact(1), contact(2)], limit=0)["outcome"].tolist() == ["deferred", "deferred"]


def test_rule10_negative_limit_is_refused(run_plan, contact):
    with pytest.raises(ValueError, match="limit"):
        run_plan([contact(1)], limit=-1)


# --- batches -----------------------------------------------------------------------------------


def test_batches_hold_create_and_link_rows_in_order(run_plan, contact):
    plan = run_plan(
        [contact(5), contact(1), contact(2, email=None), contact(4, email="x@example.org"), contact(3)],
        users=[(9, "x", "x@example.org")],
    )
    batches = make_batches(plan.sample(frac=1, random_state=3), batch_size=2)
    assert [[row["contact_id"] for row in batch] for batch in batches] == [[1, 3], [4, 5]]
    assert [row["action"] for row in batches[1]] == ["link", "create"]


def test_batches_are_json_safe(run_plan, contact):
    plan = run_plan(
        [contact(1, preferred_language=None, attempts=np.int64(3)), contact(2, email="x@example.org")],
        users=[(9, "x", "x@example.org")],
    )
    batches = make_batches(plan, batch_size=10)
    assert json.loads(json.dumps(batches, allow_nan=False)) == batches
    first, second = batches[0]
    assert type(first["contact_id"]) is int and type(first["attempts"]) is int
    assert first["locale"] is None and first["uf_id"] is None
    assert type(second["uf_id"]) is int
    assert type(first["outcome"]) is str and type(first["do_not_email"]) is bool


def test_batch_size_must_be_positive(run_plan, contact):
    with pytest.raises(ValueError, match="batch_size"):
        make_batches(run_plan([contact(1)]), 0)


@pytest.mark.parametrize(
    ("ids", "label"),
    [
        ([101, 102, 103], "contacts 101-103 (3)"),
        ([7], "contact 7 (1)"),
        ([], "no contacts (0)"),
        ([9, 4], "contacts 4-9 (2)"),
    ],
)
def test_batch_label(ids, label):
    assert batch_label([{"contact_id": contact_id} for contact_id in ids]) == label


# --- scale -------------------------------------------------------------------------------------


def test_plans_100k_contacts_quickly(make_settings):
    count = 100_000
    ids = np.arange(1, count + 1)
    rng = np.random.default_rng(7)
    contacts = pd.DataFrame(
        {
            "contact_id": ids,
            "contact_type": "Individual",
            "first_name": np.array(["Jane", "John", "Zoë", "Ann"])[rng.integers(0, 4, count)],
            "last_name": np.array(["Doe", "Smith", "Nguyễn"])[rng.integers(0, 3, count)],
            "display_name": "",
            "email": [f"person{i}@example.org" if i % 1000 else "shared@example.org" for i in ids],
            "is_deceased": ids % 997 == 0,
            "do_not_email": False,
            "preferred_language": "en_US",
            "uf_id": [i if i % 50 == 0 else None for i in ids],
            "uf_name": None,
            "sources": [["group:1"]] * count,
            "attempts": 0,
        }
    )
    users = cms_users_frame(
        {"uf_id": i, "username": f"member{i}", "email": f"person{i}@example.org", "roles": ["subscriber"]}
        for i in range(3, count, 10)
    )
    links = links_frame(
        {"contact_id": 10**7 + i, "uf_id": i, "uf_name": f"person{i}@example.org"}
        for i in range(3, count, 100)
    )

    started = time.perf_counter()
    plan = plan_contacts(contacts, users, links, make_settings(), RULES)
    elapsed = time.perf_counter() - started
    print(f"planned {count} contacts in {elapsed:.2f} s")

    assert len(plan) == count
    counts = plan["outcome"].value_counts()
    assert counts["linked_existing"] > 0 and counts["already_linked"] > 0 and counts["failed"] > 0
    created = plan[plan["action"] == "create"]
    assert created["username"].str.lower().is_unique  # speed: bench/plan_scale.py


def test_a_ufmatch_row_without_a_uf_id_stops_nothing(run_plan, contact):
    plan = run_plan([contact(1, email="jane@example.org"), contact(2, email="joe@example.org")],
                    links=[(1, None, "jane@example.org"), (2, 300, "joe@example.org")])
    # the damaged row links nothing; its uf_name still holds the email as a login, so no account is made over it
    assert list(plan["outcome"]) == ["failed", "already_linked"]
    assert "login name of contact 1's CMS link" in row_of(plan, 1)["reason"]
