import re
import time

import pandas as pd
import pytest

from provisioning.usernames import (
    PatternError,
    next_candidate,
    render_username,
    render_usernames,
    sanitize_wordpress,
    unique_usernames,
)

JANE = {
    "first_name": "Jane",
    "last_name": "Doe",
    "display_name": "Dr. Jane Doe",
    "contact_id": 123,
    "email": "Jane.Doe@Example.org",
}

# What WordPress' strict sanitize_user leaves alone (after our lower-casing).
WORDPRESS_SAFE = re.compile(r"^[a-z0-9_.@-]*$")


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


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Jane.Doe", "jane.doe"),
        ("Jöhn Smith", "john.smith"),
        ("Zoë  O'Brien", "zoe.obrien"),
        ("Straße", "strasse"),
        ("Łukasz.Żółć", "lukasz.zolc"),
        ("ØRSTED", "orsted"),
        ("François-Xavier_Dupont", "francois-xavier_dupont"),
        ("  .Jane..Doe-  ", "jane.doe"),
        ("a . b", "a.b"),
        ("mary+tag@example.org", "marytag@example.org"),
        ("Anne&Marie (Jr)", "annemarie.jr"),
        ("Dr. Jane Doe", "dr.jane.doe"),
        ("李小龍", ""),
        ("...", ""),
        ("", ""),
    ],
)
def test_sanitize_wordpress(raw, expected):
    assert sanitize_wordpress(raw) == expected


@pytest.mark.parametrize(
    "raw", ["Ærøskøbing\tTown", "x%20y&amp;z", " -_lead", "trail_- ", "ﬁnance Ⅻ", "😀 smile"]
)
def test_sanitized_names_are_accepted_by_wordpress_unchanged(raw):
    name = sanitize_wordpress(raw)
    assert WORDPRESS_SAFE.match(name)
    assert not name.startswith((".", "_", "-")) and not name.endswith((".", "_", "-"))
    assert ".." not in name
    assert sanitize_wordpress(name) == name


# --- uniqueness ----------------------------------------------------------------------------------


def test_unique_leaves_distinct_names_alone():
    result = unique_usernames(pd.Series(["jane.doe", "john.smith"]), taken=["admin"])
    assert result.tolist() == ["jane.doe", "john.smith"]


def test_unique_suffixes_collisions_within_the_series():
    result = unique_usernames(pd.Series(["jane.doe"] * 3), taken=[])
    assert result.tolist() == ["jane.doe", "jane.doe2", "jane.doe3"]


def test_unique_checks_taken_names_case_insensitively():
    result = unique_usernames(pd.Series(["jane.doe", "jane.doe"]), taken=["Jane.Doe", "JANE.DOE2"])
    assert result.tolist() == ["jane.doe3", "jane.doe4"]


def test_unique_does_not_reuse_a_suffix_a_literal_candidate_took():
    result = unique_usernames(pd.Series(["jane.doe2", "jane.doe", "jane.doe"]), taken=[])
    assert result.tolist() == ["jane.doe2", "jane.doe", "jane.doe3"]


def test_unique_keeps_empty_candidates_empty_and_the_index():
    candidates = pd.Series(["", "x.y", None, "x.y"], index=[10, 11, 12, 13])
    result = unique_usernames(candidates, taken=[""])
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
    result = unique_usernames(pd.Series(["john.smith"] * 100_000), taken=["john.smith"])
    elapsed = time.perf_counter() - started
    assert result.iloc[0] == "john.smith2"
    assert result.iloc[-1] == "john.smith100001"
    assert result.nunique() == 100_000
    assert elapsed < 10, f"took {elapsed:.1f} s"


# --- retry after a race --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "taken", "expected"),
    [
        ("jane.doe", set(), "jane.doe2"),
        ("jane.doe", {"JANE.DOE2", "jane.doe3"}, "jane.doe4"),
        ("jane.doe2", set(), "jane.doe22"),
        ("x" * 60, set(), "x" * 59 + "2"),
    ],
)
def test_next_candidate(username, taken, expected):
    assert next_candidate(username, taken) == expected
