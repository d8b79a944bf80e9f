"""Drupal 7's account rules: usernames (user_validate_name), emails, administrators, and the create form parser."""

from __future__ import annotations

import pytest

from cms_operators.drupal7.backend import Drupal7Backend, langcode, parse_create_form
from cms_operators.drupal7.rules import RULES, username_problem
from cms_operators.registry import get
from provisioning.rules import collation_key


def test_registered_as_drupal7():
    kind = get("Drupal7")
    assert (kind.name, kind.label, kind.rules) == ("drupal7", "Drupal 7", RULES)
    assert "endpoint" in kind.connection["conn-fields"]


@pytest.mark.parametrize(("name", "problem"), [
    ("jane.doe", None), ("o'brien+x@y", None), ("", "You must enter a username."),
    (" jane", "The username cannot begin with a space."), ("jane ", "The username cannot end with a space."),
    ("ja  ne", "The username cannot contain multiple spaces in a row."),
    ("ja<ne", "The username contains an illegal character."), ("x" * 61, "too long")])
def test_usernames(name, problem):
    found = username_problem(name)
    assert (found is None) if problem is None else (problem in found)


def test_emails_and_administrators():
    assert RULES.max_email_length == 254 and RULES.max_username_length == 60
    assert RULES.accepts_email("a.b+c@example.org") and not RULES.accepts_email("a@localhost")
    assert not RULES.accepts_email("a..b@example.org")
    assert RULES.is_admin(1, []) and RULES.is_admin(5, ["Administrator"]) and not RULES.is_admin(5, ["member"])


def test_admin_roles_from_settings_replace_the_default():
    backend = Drupal7Backend("x", settings={"admin_roles": ["Site Boss"]})
    from cms_operators.backend import CmsUser

    assert backend.is_admin(CmsUser(1, "admin", "a@x.org"))
    assert backend.is_admin(CmsUser(9, "b", "b@x.org", roles=("site boss",)))
    assert not backend.is_admin(CmsUser(9, "b", "b@x.org", roles=("administrator",)))
    assert Drupal7Backend("x").admin_roles == frozenset({"administrator"})


def test_keys_and_languages():
    assert collation_key(" José ") == collation_key("JOSE")
    assert langcode("pt_BR") == ["pt-br", "pt"] and langcode(None) == []


def test_create_form_parser_reads_roles_languages_and_fields():
    html = ('<form id="user-register-form--2"><input type="checkbox" id="edit-roles-4" name="roles[4]" value="4" />'
            '<label class="option" for="edit-roles-4">member &amp; friends </label>'
            '<input type="radio" name="language" value="fr" /><input name="field_x[und][0][value]" /></form>'
            '<input name="field_outside[und]" />')
    form = parse_create_form(html)
    assert (form.has_form, form.roles, form.languages, form.fields) == (True, {4: "member & friends"}, ["fr"],
                                                                        {"field_x"})
