"""Drupal's account rules: usernames, emails, administrators (pure, no network)."""

from __future__ import annotations

import pytest

from cms_operators.drupal.rules import MAX_EMAIL_LENGTH, RULES, sanitize_drupal, username_problem
from cms_operators.registry import get


def test_registered_as_drupal():
    kind = get("Drupal")
    assert kind.name == "drupal" and kind.rules is RULES
    assert kind.hook_class.endswith("DrupalHook") and kind.backend_class.endswith("DrupalBackend")
    assert set(kind.connection["conn-fields"]) == {"jsonapi_path", "verify", "timeout"}


@pytest.mark.parametrize("raw, expected", [
    ("Jane Doe", "jane.doe"),
    ("  José  Müller-Łukasz ", "jose.muller-lukasz"),
    ("O'Brien", "obrien"),
    ("a..b", "a.b"),
    ("+tag+", "tag"),
    ("名字", "ming.zi"),
    ("!!!", ""),
])
def test_sanitize(raw, expected):
    assert sanitize_drupal(raw) == expected
    if expected:
        assert username_problem(expected) is None


@pytest.mark.parametrize("name, problem", [
    ("", "You must enter a username."),
    (" x", "The username cannot begin with a space."),
    ("x ", "The username cannot end with a space."),
    ("a  b", "The username cannot contain multiple spaces in a row."),
    ("bad!", "The username contains an illegal character."),
    ("zero\u200bwidth", "The username contains an illegal character."),
    ("full\uff21width", "The username contains an illegal character."),
    ("u" * 61, f"The username {'u' * 61} is too long: it must be 60 characters or less."),
])
def test_username_problems(name, problem):
    assert username_problem(name) == problem


@pytest.mark.parametrize("name", ["Mary Ann.o'k_+x@y-z", "Zoë Øster", "u" * 60])
def test_usernames_drupal_keeps(name):
    assert username_problem(name) is None


@pytest.mark.parametrize("email, ok", [
    ("jane@example.org", True),
    ("o'brien+tag@example.test", True),
    ("e" * 64 + "@" + "d" * 63 + "." + "d" * 62 + "." + "d" * 57 + ".test", True),
    ("e" * 65 + "@" + "d" * 63 + "." + "d" * 62 + "." + "d" * 56 + ".test", False),
    ("e" * 64 + "@" + "d" * 63 + "." + "d" * 62 + "." + "d" * 58 + ".test", False),
    ("e@a." + "d" * 63 + ".test", False),
    ("e@" + "d" * 64 + ".test", False),
    ("a..b@example.org", False),
    (".a@example.org", False),
    ("a@localhost", False),
    ("no-at.example.org", False),
])
def test_emails(email, ok):
    assert RULES.accepts_email(email) is ok
    assert RULES.max_email_length == MAX_EMAIL_LENGTH == 254


def test_administrators():
    assert RULES.is_admin(1, [])
    assert RULES.is_admin(5, ["member", "Administrator"])
    assert not RULES.is_admin(5, ["member"])
    assert RULES.max_username_length == 60
