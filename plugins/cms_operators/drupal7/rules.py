"""Drupal 7's account rules: what Services' user create (core's user_register_form) accepts, and who
administers the site.

Facts (Drupal 7.101, modules/user/user.module and user.install; confirmed on the real site by
tests/contract/test_drupal7_contract.py):

* username: `user_validate_name()`: 1 to 60 characters (USERNAME_MAX_LENGTH, counted with
  drupal_strlen), no leading or trailing space, no two spaces in a row, ASCII letters, digits, space and
  `@ + _ . ' -`, plus non-ASCII letters except control, space-like and full-width characters. The same
  checks as Drupal 8+ (whose validator was ported from this function), so they are shared.
* usernames and emails are unique under `LIKE` (`user_account_form_validate()`), which MariaDB's
  utf8 general_ci collation makes case- and accent-insensitive; a duplicate is a 406 `form_errors`.
* email: `valid_email_address()` (PHP's FILTER_VALIDATE_EMAIL) and at most 254 characters
  (EMAIL_MAX_LENGTH; users.mail is varchar(254)).
* administrators: uid 1 and the holders of the site's administrator role (`administrator` in the
  standard profile) or of a role named in the `admin_roles` setting. Drupal 7 has no is_admin flag on
  roles and Services lists no roles, so the names are the setting's.
"""

from __future__ import annotations

from cms_operators.drupal.rules import sanitize_drupal, username_problem
from provisioning.rules import AccountRules

MAX_USERNAME_LENGTH = 60
MAX_EMAIL_LENGTH = 254
ADMIN_ROLE = "administrator"
SUPERUSER_ID = 1
#: Roles every account has implicitly (rids 1 and 2); never sent.
IMPLICIT_ROLES = frozenset({"anonymous user", "authenticated user"})

_EMAIL_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_EMAIL_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL_PATTERN = (rf"(?=.{{3,{MAX_EMAIL_LENGTH}}}$)(?=[^@]{{1,64}}@){_EMAIL_ATOM}(?:\.{_EMAIL_ATOM})*"
                 rf"@{_EMAIL_LABEL}(?:\.{_EMAIL_LABEL})+")

__all__ = ["RULES", "username_problem", "sanitize_drupal", "MAX_EMAIL_LENGTH", "MAX_USERNAME_LENGTH"]

RULES = AccountRules(
    cms="Drupal 7",
    sanitize_username=sanitize_drupal,
    max_username_length=MAX_USERNAME_LENGTH,
    max_email_length=MAX_EMAIL_LENGTH,
    email_pattern=EMAIL_PATTERN,
    admin_roles=frozenset({ADMIN_ROLE}),
    admin_ids=frozenset({SUPERUSER_ID}),
)
