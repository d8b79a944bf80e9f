import time

import pandas as pd
import pytest

from cms_operators.wordpress.rules import MAX_USERNAME_LENGTH, sanitize_wordpress
from provisioning.usernames import (
    PatternError,
    candidate_usernames,
    next_candidate,
    render_username,
    render_usernames,
    unique_usernames,
)

JANE = {
    "first_name": "Jane",
    "last_name": "Doe",
    "display_name": "Dr. Jane Doe",
    "contact_id": 123,
    "email": "Jane.Doe@Example.org",
}



# --- rendering -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("{first_name}.{last_name}", "Jane.Doe"),
        ("{display_name}", "Dr. Jane Doe"),
        ("{contact_id}", "123"),
        ("{email}", "Jane.Doe@Example.org"),
        ("{email_local}", "Jane.Doe"),
        ("user-{contact_id}-{last_name}", "user-123-Doe"),
        ("{ first_name }", "Jane"),
    ],
)
def test_render_fills_tokens(pattern, expected):
    assert render_username(pattern, JANE) == expected


@pytest.mark.parametrize(
    "contact",
    [
        {"contact_id": 7},
        {"contact_id": 7, "first_name": None, "last_name": float("nan"), "email": None},
        {"contact_id": 7, "first_name": pd.NA, "last_name": "", "email": ""},
    ],
)
def test_render_missing_fields_become_empty(contact):
    assert render_username("{first_name}.{last_name}|{email_local}|{email}", contact) == ".||"


def test_render_ids_from_float_columns_have_no_decimal_point():
    assert render_username("{contact_id}", {"contact_id": 42.0}) == "42"


def test_render_many_matches_render_one():
    contacts = [JANE, {"contact_id": 9, "first_name": "Al"}]
    assert render_usernames("{first_name}-{contact_id}", contacts) == ["Jane-123", "Al-9"]


@pytest.mark.parametrize("pattern", ["{nick}", "{first_name", "x}", "{{first_name}}"])
def test_render_rejects_bad_patterns(pattern):
    with pytest.raises(PatternError):
        render_username(pattern, JANE)


# --- sanitising ----------------------------------------------------------------------------------


# --- candidates: pattern, fallback pattern, user{contact_id} -----------------------------------

PATTERNS = ["{first_name}.{last_name}", "{email_local}"]


def test_candidates_use_the_first_pattern_that_gives_a_name():
    contacts = [
        JANE,
        {"contact_id": 8, "email": "Mary.Ann@example.org"},
        {"contact_id": 9, "first_name": "Иван", "last_name": "Петров", "email": "x@example.org"},
    ]
    assert candidate_usernames(contacts, PATTERNS, sanitize_wordpress) == ["jane.doe", "mary.ann", "ivan.petrov"]


@pytest.mark.parametrize("email", [None, "+++@example.org", "😀@example.org"])
def test_candidates_end_with_user_and_the_contact_id(email):
    assert candidate_usernames([{"contact_id": 42, "email": email}], PATTERNS, sanitize_wordpress) == ["user42"]


def test_candidates_use_the_given_sanitiser_and_may_stay_empty():
    contacts = [{"contact_id": 1}, {"contact_id": 2, "first_name": "Al", "last_name": "Bo"}]
    shout = lambda raw: raw.strip(".").upper()  # noqa: E731
    assert candidate_usernames(contacts, PATTERNS, sanitize=shout) == ["USER1", "AL.BO"]
    assert candidate_usernames(contacts, PATTERNS, sanitize=lambda raw: "") == ["", ""]


# --- uniqueness ----------------------------------------------------------------------------------


def test_unique_leaves_distinct_names_alone():
    result = unique_usernames(pd.Series(["jane.doe", "john.smith"]), taken=["admin"], max_length=MAX_USERNAME_LENGTH)
    assert result.tolist() == ["jane.doe", "john.smith"]


def test_unique_suffixes_collisions_within_the_series():
    result = unique_usernames(pd.Series(["jane.doe"] * 3), taken=[], max_length=MAX_USERNAME_LENGTH)
    assert result.tolist() == ["jane.doe", "jane.doe2", "jane.doe3"]


def test_unique_checks_taken_names_case_insensitively():
    result = unique_usernames(pd.Series(["jane.doe", "jane.doe"]), taken=["Jane.Doe", "JANE.DOE2"], max_length=MAX_USERNAME_LENGTH)
    assert result.tolist() == ["jane.doe3", "jane.doe4"]


def test_unique_does_not_reuse_a_suffix_a_literal_candidate_took():
    result = unique_usernames(pd.Series(["jane.doe2", "jane.doe", "jane.doe"]), taken=[], max_length=MAX_USERNAME_LENGTH)
    assert result.tolist() == ["jane.doe2", "jane.doe", "jane.doe3"]


def test_unique_keeps_empty_candidates_empty_and_the_index():
    candidates = pd.Series(["", "x.y", None, "x.y"], index=[10, 11, 12, 13])
    result = unique_usernames(candidates, taken=[""], max_length=MAX_USERNAME_LENGTH)
    assert result.to_dict() == {10: "", 11: "x.y", 12: "", 13: "x.y2"}


def test_unique_truncates_the_base_to_fit_the_suffix():
    long_name = "a" * 50 + "b" * 20
    result = unique_usernames(pd.Series([long_name] * 12), taken=[], max_length=60).tolist()
    assert result[0] == long_name[:60]
    assert result[1] == long_name[:59] + "2"
    assert result[11] == long_name[:58] + "12"
    assert all(len(name) <= 60 for name in result)
    assert len(set(result)) == 12


def test_unique_drops_a_separator_left_at_the_cut():
    result = unique_usernames(pd.Series(["abcd.efg"] * 2), taken=[], max_length=6).tolist()
    assert result == ["abcd.e", "abcd2"]


def test_unique_is_linear_for_many_identical_names():
    # Quadratic suffix probing would take minutes here; a dict of next suffixes takes ~0.1 s.
    started = time.perf_counter()
    result = unique_usernames(pd.Series(["john.smith"] * 100_000), taken=["john.smith"], max_length=MAX_USERNAME_LENGTH)
    elapsed = time.perf_counter() - started
    assert result.iloc[0] == "john.smith2"
    assert result.iloc[-1] == "john.smith100001"
    assert result.nunique() == 100_000
    print(f"\n100,000 identical names made unique in {elapsed:.2f} s")  # speed: bench/plan_scale.py


# --- retry after a race --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "taken", "expected"),
    [
        ("jane.doe", {"jane.doe"}, "jane.doe2"),
        ("jane.doe", {"jane.doe2"}, "jane.doe3"),
        ("jane.doe", {"JANE.DOE2", "jane.doe3"}, "jane.doe4"),
        # the planned jane.doe3 was refused: jane.doe2 was taken when the plan was made
        ("jane.doe", {"Jane.Doe3"}, "jane.doe4"),
        ("jane.doe", set(), "jane.doe2"),
        ("jane.doe", ["jane.doe", "jane.doe2"], "jane.doe3"),
        # a number the pattern made is part of the base, never bumped
        ("user12", {"user12"}, "user122"),
        ("user12", {"user122"}, "user123"),
        # cut to fit, like unique_usernames: the suffix is found behind a cut base too
        ("x" * 60, {"x" * 60}, "x" * 59 + "2"),
        ("x" * 60, {"x" * 59 + "9"}, "x" * 58 + "10"),
        ("abcd.efg", {"abcd.e", "abcd2"}, "abcd3"),
        # a plan without username_base passes the username: its suffix then goes on that name
        ("jane.doe2", {"jane.doe2"}, "jane.doe22"),
    ],
)
def test_next_candidate(base, taken, expected):
    max_length = 6 if base == "abcd.efg" else 60
    assert next_candidate(base, taken, max_length) == expected


def test_next_candidate_in_a_retry_loop_skips_names_taken_since_the_plan():
    # The create loop: try the planned name; on 'exists' add it to `taken` and ask for the next.
    at_plan = {"jane.doe", "jane.doe2"}
    planned = unique_usernames(pd.Series(["jane.doe"]), taken=at_plan, max_length=MAX_USERNAME_LENGTH).iloc[0]
    cms = at_plan | {"jane.doe3", "jane.doe4", "jane.doe5"}  # taken since the plan
    tried, taken, username = [], set(), planned
    while username in cms:
        tried.append(username)
        taken.add(username)
        username = next_candidate("jane.doe", taken, MAX_USERNAME_LENGTH)
    assert planned == "jane.doe3"
    assert tried == ["jane.doe3", "jane.doe4", "jane.doe5"]
    assert username == "jane.doe6"


def test_next_candidate_needs_room_for_a_suffix():
    with pytest.raises(ValueError, match="max_length"):
        next_candidate("jane.doe", set(), 1)
