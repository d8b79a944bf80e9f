"""The fast paths of the planning step (issue 12, "Scale") give the same answers as the plain ones.

Names are cleaned in one pass over all texts, rendered column by column, made unique with an
inline first claim, and the plan joins emails by int codes; each is compared here with the
straightforward one-at-a-time version on tricky inputs.
"""

from __future__ import annotations

import json
import random
import string

import numpy as np
import pandas as pd
import pytest

from cms_operators.drupal.rules import sanitize_drupal
from cms_operators.joomla.rules import sanitize_joomla
from cms_operators.wordpress.rules import MAX_USERNAME_LENGTH, RULES, sanitize_wordpress
from provisioning import outcomes as why
from provisioning.plan import (
    CMS_USER_COLUMNS,
    CONTACT_COLUMNS,
    LINK_COLUMNS,
    cms_users_frame,
    contacts_frame,
    json_safe_records,
    links_frame,
    plan_contacts,
)
from provisioning.usernames import (
    LAST_RESORT_PATTERN,
    LoginCleaner,
    ascii_login,
    ascii_logins,
    candidate_usernames,
    lower_texts,
    render_username,
    unique_usernames,
)
from provisioning.vocabulary import Action

SANITIZERS = [sanitize_wordpress, sanitize_drupal, sanitize_joomla]

TRICKY = [
    "", " ", ".", "..", "a", "ab", " a b ", "Jane  Doe", "Zoë Ångström", "Иван Петров", "李小龍", "Jane 李",
    "-jane-", ".j.", "a..b", "a . . b", "O'Brien", "van der Berg", "Straße", "İstanbul", "\u212aelvin",
    "ΑΣ", "ΑΣ b", "x\u00a0y", "x\u2028y", "x\x1fy", "\tjane\n", "jane+doe@example.org", "😀", "-", "_a_",
    "Þórsson", "Dvořák", "García-López", "ǅ", "a\u0301", "@@", "a@b..c", "  .  ", "A.B", "..Jane..Doe..",
]


def _random_texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = list(string.printable) + list("ëÅßæøłþıħŋİΣσςИв李😀\u0301\u0308\u00a0\u2028\x85\x1c")
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(count)]


@pytest.mark.parametrize("sanitize", SANITIZERS, ids=lambda s: s.__name__)
def test_many_gives_what_one_at_a_time_gives(sanitize):
    texts = TRICKY + _random_texts(3000, seed=12)
    assert sanitize.many(texts) == [sanitize(text) for text in texts]


@pytest.mark.parametrize("sanitize", SANITIZERS, ids=lambda s: s.__name__)
def test_many_handles_a_text_holding_its_separator(sanitize):
    texts = ["Jane\x00Doe", "Zoë", "a\x00", "\x00"]
    assert sanitize.many(texts) == [sanitize(text) for text in texts]
    assert sanitize.many([]) == []


def test_many_keeps_the_cleaners_minimum_length():
    clean = LoginCleaner(allowed=r"a-z0-9_.@+-", edges=" ._-+", min_length=2)
    texts = ["a", ".a.", "ab", " a b", "é", "a\x00"]
    assert clean.many(texts) == [clean(text) for text in texts] == ["", "", "ab", "a.b", "", ""]


def test_ascii_logins_match_ascii_login_for_any_clean():
    shout = lambda text: text.strip(" .").upper()  # noqa: E731  (a cleaner without `many`)
    raws = [*TRICKY, None, "Jane"]
    assert ascii_logins(raws, shout) == [ascii_login(raw, shout) for raw in raws]


CONTACTS = [
    {"contact_id": 1, "first_name": "Jane", "last_name": "Doe", "email": "jane@example.org"},
    {"contact_id": 2, "first_name": " Zoë ", "last_name": "Ångström", "email": "zoe@example.org"},
    {"contact_id": 3, "first_name": "Иван", "last_name": "Петров", "email": None},
    {"contact_id": 4, "first_name": None, "last_name": float("nan"), "email": "Mary.Ann@example.org"},
    {"contact_id": 5, "first_name": pd.NA, "last_name": "", "email": "😀@example.org"},
    {"contact_id": 6.0, "first_name": "..", "last_name": "--", "email": " +++@example.org "},
    {"contact_id": 7, "first_name": 42.0, "last_name": 7, "display_name": "Dr. X"},
    {"contact_id": 8, "first_name": "李", "last_name": "小龍", "email": "x@example.org"},
]
PATTERNS = ["{first_name}.{last_name}", "{email_local}"]


def _candidates_one_by_one(contacts, patterns, sanitize) -> list[str]:
    """The rule as the settings describe it, contact by contact."""
    names = []
    for contact in contacts:
        name = ""
        for pattern in [*patterns, LAST_RESORT_PATTERN]:
            name = sanitize(render_username(pattern, contact))
            if name:
                break
        names.append(name)
    return names


@pytest.mark.parametrize("sanitize", [*SANITIZERS, lambda raw: raw.strip(".").lower()],
                         ids=["wordpress", "drupal", "joomla", "plain-callable"])
@pytest.mark.parametrize("patterns", [PATTERNS, ["{display_name}", "{email}"], ["{last_name}-{contact_id}", ""]])
def test_candidates_match_one_contact_at_a_time_from_dicts_frames_and_columns(sanitize, patterns):
    expected = _candidates_one_by_one(CONTACTS, patterns, sanitize)
    frame = pd.DataFrame(CONTACTS)
    columns = {name: frame[name].to_numpy(dtype=object) for name in frame.columns}
    assert candidate_usernames(CONTACTS, patterns, sanitize) == expected
    assert candidate_usernames(frame, patterns, sanitize) == expected
    assert candidate_usernames(columns, patterns, sanitize) == expected
    assert candidate_usernames(frame.iloc[:0], patterns, sanitize) == []


def _unique_one_by_one(candidates, taken, max_length) -> list[str]:
    """Each candidate cut to max_length, then base2, base3, ... until no name so far has it."""
    used = {name.lower() for name in taken if isinstance(name, str) and name}
    names = []
    for raw in candidates:
        value = "" if raw is None or (isinstance(raw, float) and np.isnan(raw)) else str(raw).strip()
        if not value:
            names.append("")
            continue
        base, number, name = value[:max_length], 2, value[:max_length]
        if len(base) < len(value):
            base = base.rstrip(" ._-") or base
            name = base
        while name.lower() in used:
            stem = base[: max_length - len(str(number))]
            if len(stem) < len(base):
                stem = stem.rstrip(" ._-") or stem
            name, number = stem + str(number), number + 1
        used.add(name.lower())
        names.append(name)
    return names


@pytest.mark.parametrize("max_length", [MAX_USERNAME_LENGTH, 8])
def test_unique_usernames_match_one_claim_at_a_time(max_length):
    candidates = ["jane.doe", "Jane.Doe", "jane.doe2", "jane.doe", None, "", " x ", float("nan"), "jane.doe3",
                  "abcdefghij", "abcdefgh", "abcdefgh", "abcdefg.x", "abcdefg.x", "user7", "USER7", "jane.doe"]
    taken = ["JANE.DOE", "jane.doe4", "abcdefg2", "", None, "user7"]
    expected = _unique_one_by_one(candidates, taken, max_length)
    assert unique_usernames(pd.Series(candidates, dtype=object), taken, max_length).tolist() == expected
    assert unique_usernames(pd.Series(candidates, dtype=object), iter(taken), max_length).tolist() == expected


def test_records_copy_lists_the_plan_shares_and_give_plain_text():
    shared = ["subscriber"]
    frame = pd.DataFrame({
        "action": pd.Series([Action.CREATE, Action.LINK, Action.NONE], dtype=object),
        "roles": pd.Series([shared, shared, []], dtype=object),
        "uf_id": pd.Series([None, 45.0, np.int64(7)], dtype=object),
    })
    records = json_safe_records(frame)
    assert records == [{"action": "create", "roles": ["subscriber"], "uf_id": None},
                       {"action": "link", "roles": ["subscriber"], "uf_id": 45},
                       {"action": "none", "roles": [], "uf_id": 7}]
    assert [type(record["action"]) for record in records] == [str, str, str]
    assert all(record["roles"] is not shared for record in records)


# --- the plan's code joins ------------------------------------------------------------------------


def test_rule6_to_8_join_emails_whatever_their_case_and_order(run_plan, contact):
    plan = run_plan(
        [contact(9, email="Shared@Example.org"), contact(3, email="shared@example.ORG"),
         contact(4, email="taken@example.org"), contact(5, email="LOGIN@example.org"),
         contact(6, email="new@example.org")],
        users=[(80, "later", "TAKEN@example.org"), (12, "first", "taken@EXAMPLE.org")],
        links=[(30, 501, "login@example.org"), (20, 502, "Login@Example.org")],
    )
    assert (plan.at[3, "outcome"], plan.at[9, "outcome"]) == ("created", "failed")
    assert plan.at[9, "reason"] == why.email_shared("Shared@Example.org", 3)
    assert (plan.at[4, "outcome"], plan.at[4, "uf_id"], plan.at[4, "username"]) == ("linked_existing", 12, "first")
    assert plan.at[5, "reason"] == why.email_is_login_of("LOGIN@example.org", 20)
    assert plan.at[6, "outcome"] == "created"


def test_rule5b_the_first_owned_account_in_the_users_order_decides(run_plan, contact):
    journal = [{"activity_id": 70, "status": "Failed", "usernames": ["jane.doe"], "sent": "2026-03-01T02:00:05Z",
                "uf_id": None, "username": None, "mail": ""}]
    users = [(60, "JANE.DOE", "a@example.org", ["subscriber"], "2026-03-01T02:00:07"),
             (45, "jane.doe", "b@example.org", ["subscriber"], "2026-03-01T02:00:06"),
             (46, "john", "c@example.org")]
    plan = run_plan([contact(1, email="jane@example.org", journal=journal), contact(2, email="c@example.org")],
                    users=users)
    assert (plan.at[1, "outcome"], plan.at[1, "uf_id"], plan.at[1, "username"]) == ("created", 60, "JANE.DOE")
    assert (plan.at[2, "outcome"], plan.at[2, "uf_id"]) == ("linked_existing", 46)


# --- columnar inputs (run files read as column lists) ----------------------------------------------


def _columnar(rows: list[dict], columns: list[str]) -> dict[str, list]:
    """The rows as the plan task reads a columnar run file: column -> values, through JSON."""
    return json.loads(json.dumps({name: [row.get(name) for row in rows] for name in columns}))


def test_columns_and_frames_of_them_plan_as_the_list_of_dicts(make_settings):
    journal = [{"activity_id": 70, "status": "Failed", "usernames": ["ann.lee"], "sent": "2026-03-01T02:00:05Z",
                "uf_id": None, "username": None, "mail": ""}]
    contacts = [
        {"contact_id": 5, "first_name": " Zoë ", "last_name": "Ångström", "email": "Zoe@Example.org", "sources": ["g:1"]},
        {"contact_id": 3, "first_name": None, "last_name": "Lee", "email": "ann@example.org", "journal": journal},
        {"contact_id": 4, "first_name": "Jane", "last_name": "Doe", "email": "zoe@example.ORG", "is_deceased": True},
        {"contact_id": 6, "first_name": "Jo", "last_name": "Doe", "email": " taken@example.org ", "email_note": "two"},
        {"contact_id": 7, "first_name": "Иван", "last_name": "Петров", "email": None, "uf_id": 40, "uf_name": "x@y.org"},
        {"contact_id": 8, "first_name": "Jane", "last_name": "Doe", "email": "login@example.org", "attempts": 9},
        {"contact_id": 9, "first_name": "Jane", "last_name": "Doe", "email": "jane9@example.org", "attempts": 1},
        {"contact_id": 5, "sources": ["t:2"]},  # listed twice
    ]
    for contact in contacts:
        contact.setdefault("sources", ["group:1"])
        contact.setdefault("journal", [])
    users = [
        {"uf_id": 12, "username": "Taken", "email": "TAKEN@example.org", "roles": ["subscriber"], "is_admin": False},
        {"uf_id": 11, "username": "jane.doe", "email": "other@example.org", "roles": ["subscriber"], "is_admin": False},
        {"uf_id": 30, "username": "ann.lee", "email": "ann.old@example.org", "roles": [], "registered": "2026-03-01T02:00:06Z",
         "is_admin": False},
        {"uf_id": 40, "username": "ivan", "email": "x@y.org", "roles": ["administrator"], "is_admin": True},
    ]
    links = [{"contact_id": 99, "uf_id": 50, "uf_name": "Login@example.org"}, {"contact_id": 7, "uf_id": 40, "uf_name": "x@y.org"}]
    settings = make_settings(roles=["member"])
    expected = plan_contacts(contacts_frame(contacts), cms_users_frame(users), links_frame(links), settings, RULES)
    columns = [_columnar(contacts, CONTACT_COLUMNS), _columnar(users, CMS_USER_COLUMNS), _columnar(links, LINK_COLUMNS)]
    from_columns = plan_contacts(contacts_frame(columns[0]), cms_users_frame(columns[1]), links_frame(columns[2]),
                                 settings, RULES)
    from_frames = plan_contacts(*(make(pd.DataFrame(values)) for make, values
                                  in zip((contacts_frame, cms_users_frame, links_frame), columns, strict=True)),
                                settings, RULES)
    assert pd.DataFrame(columns[0])["first_name"].dtype != object  # pandas' own text dtype, NaN where missing
    for plan in (from_columns, from_frames):
        assert plan.to_dict("records") == expected.to_dict("records")
        assert [list(map(type, plan[name])) for name in plan] == [list(map(type, expected[name])) for name in expected]
    assert set(expected["outcome"]) == {"created", "failed", "linked_existing", "already_linked"}
    assert contacts_frame({}).columns.tolist() == CONTACT_COLUMNS and links_frame(pd.DataFrame()).empty


def test_lower_texts_is_str_lower_and_shares_what_is_lower_already():
    texts = [*TRICKY, "JANE", "jane", "ΑΣ b", "İ", "ǅ", "x\x00Y"]
    assert lower_texts(texts) == [text.lower() for text in texts]
    plain = ["jane.doe", "a@b.org", "", "李"]
    assert lower_texts(plain) is plain
    mixed = ["jane", "Jane"]
    assert [a is b for a, b in zip(lower_texts(mixed), mixed, strict=True)] == [True, False]


def test_unique_usernames_match_one_claim_at_a_time_on_many_collisions():
    rng = random.Random(3)
    stems = ["jane.doe", "Jane.Doe", "jane.doe2", "user7", "İa", "abcdefgh", "abcdefg.x", "x" * 9, "zoë"]
    candidates = [rng.choice(stems) + rng.choice(["", "", "2", "3", ".", "X"]) for _ in range(3000)]
    taken = [rng.choice(stems) + str(rng.randrange(6)) for _ in range(200)] + ["JANE.DOE"]
    for max_length in (MAX_USERNAME_LENGTH, 8):
        expected = _unique_one_by_one(candidates, taken, max_length)
        assert unique_usernames(pd.Series(candidates, dtype=object), taken, max_length).tolist() == expected


def test_the_plan_is_its_own_and_writable_whatever_frames_it_came_from(make_settings):
    columns = _columnar([{"contact_id": 1, "first_name": "Ann", "last_name": "Lee", "email": "ann@example.org",
                          "do_not_email": False, "attempts": 0, "sources": ["g:1"], "journal": []},
                         {"contact_id": 2, "first_name": "Bo", "last_name": "Lee", "email": "bo@example.org",
                          "do_not_email": True, "attempts": 1, "sources": ["g:1"], "journal": []}], CONTACT_COLUMNS)
    contacts = pd.DataFrame(columns)
    before = contacts.copy()
    plan = plan_contacts(contacts_frame(contacts), cms_users_frame(), links_frame(), make_settings(), RULES)
    for name in plan.columns:  # in place, as a frame of its own takes it
        plan.at[0, name] = plan.at[1, name]
    pd.testing.assert_frame_equal(contacts, before)
