"""Joomla's account rules: logins Joomla stores unchanged, emails it accepts, its administrators."""

import re

import pytest

from cms_operators.joomla.rules import MAX_USERNAME_LENGTH, RULES, sanitize_joomla, username_problem


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Jane.Doe", "jane.doe"),
        ("Jöhn Smith", "john.smith"),
        ("Zoë  O'Brien", "zoe.obrien"),
        ("mary+tag@example.org", "mary+tag@example.org"),
        ("Anne&Marie (Jr); <b>x</b>", "annemarie.jr.bxb"),
        ("../etc/passwd", "etcpasswd"),
        ("  .Jane..Doe-  ", "jane.doe"),
        ("x", ""),          # Joomla needs 2 characters
        ("Иван Петров", "ivan.petrov"),
        ("", ""),
    ],
)
def test_sanitize_joomla(raw, expected):
    assert sanitize_joomla(raw) == expected


@pytest.mark.parametrize("raw", ["Ærøskøbing\tTown", "x%20y&amp;z", "a\\b\"c'd", "山田\u3000太郎", "😀 smile", "((()))"])
def test_sanitized_names_pass_joomlas_check_unchanged(raw):
    name = sanitize_joomla(raw)
    assert name == "" or username_problem(name) is None
    assert sanitize_joomla(name) == name


@pytest.mark.parametrize(("username", "problem"), [
    ("a", "at least 2"), ("u" * 151, "at most 150"), (" lead", "whitespace"), ("a;b", "may not contain"),
    ("a../b", "may not contain"), ("ok name", None), ("u" * MAX_USERNAME_LENGTH, None)])
def test_username_problem(username, problem):
    found = username_problem(username)
    assert (found is None) if problem is None else (problem in found)


@pytest.mark.parametrize(("email", "accepted"), [
    ("jane@example.org", True), ("mary+tag@example.org", True), ("o'brien@example.co.uk", True),
    ("m" * 64 + "@example.org", True), ("m" * 65 + "@example.org", False), (".jane@example.org", False),
    ("jane.@example.org", False), ("ja..ne@example.org", False), ("jane@localhost", False),
    ("jane@-example.org", False), ("jöhn@example.org", False), ("jane@exam_ple.org", False), ("no-at", False)])
def test_emails(email, accepted):
    assert RULES.accepts_email(email) is accepted


def test_administrators_by_core_group_id_and_title():
    for role in ("8", "7", "Super Users", "Administrator", "Super utilisateur", "ADMINISTRATEUR"):
        assert RULES.is_admin_role(role)
    for role in ("2", "Registered", "Enregistré", "Manager", "6"):
        assert not RULES.is_admin_role(role)
    assert (RULES.max_username_length, RULES.max_email_length, RULES.cms) == (150, 100, "Joomla")
    assert re.fullmatch(RULES.email_pattern, "a@b.co")
