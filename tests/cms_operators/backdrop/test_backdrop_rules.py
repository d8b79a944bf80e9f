"""Backdrop's account rules (rules.py): usernames as user_validate_name sees them, emails, administrators."""

from __future__ import annotations

import pytest

from cms_operators import registry
from cms_operators.backdrop.rules import RULES, sanitize_drupal, username_problem
from provisioning.rules import collation_key


@pytest.mark.parametrize("name, problem", [
    ("jane.doe", None), ("o'brien+x@home", None), ("josé", None), ("n" * 60, None),
    ("", "You must enter a username."), (" jane", "cannot begin with a space"), ("jane ", "cannot end with a space"),
    ("ja  ne", "multiple spaces"), ("bad<name>", "illegal character"), ("tab\there", "illegal character"),
    ("full\uff21width", "illegal character"), ("n" * 61, "too long"),
])
def test_username_problem_follows_user_validate_name(name, problem):
    found = username_problem(name)
    assert (found is None) if problem is None else (problem in found)


def test_sanitized_names_are_accepted_unchanged():
    for raw in ["José  García", "Zoë Ångström", "  ..weird--name..  ", "李小龙", "a" * 80]:
        name = sanitize_drupal(raw)
        assert name == "" or username_problem(name[:60]) is None
    assert sanitize_drupal("José  García") == "jose.garcia"


def test_collation_key_ignores_case_and_accents_as_the_collation_does():
    assert collation_key(" Adá.Lovelace ") == collation_key("ada.lovelace")
    assert collation_key("JANE@Example.org") == "jane@example.org"


def test_emails_and_administrators():
    assert RULES.accepts_email("ada+tag@example.org")
    assert not RULES.accepts_email("ada@localhost") and not RULES.accepts_email("a..b@example.org")
    assert RULES.max_email_length == 254 and RULES.max_username_length == 60
    assert RULES.is_admin(1, []) and RULES.is_admin(7, ["Administrator"]) and not RULES.is_admin(7, ["member"])


def test_registered_with_ssh_as_a_generic_connection_type():
    kind = registry.get("backdrop")
    assert kind.label == "Backdrop" and kind.generic_connection_types == ("ssh",)
    assert registry.for_connection("ssh", "backdrop", "cms_default").name == "backdrop"
    assert registry.for_connection("backdrop", None, "cms_default").name == "backdrop"
    assert {"site_root", "bee_path", "host_key", "base_url"} <= set(kind.connection["conn-fields"])
