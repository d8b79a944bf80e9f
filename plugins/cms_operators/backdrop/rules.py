"""Backdrop's account rules: what a new account may be called, which emails it stores, who administers.

Facts (Backdrop 1.28, core/modules/user/user.module and user.install, confirmed on the real site by
tests/contract/test_backdrop_contract.py):

* username: `user_validate_name()`, the same rules as Drupal's (so `username_problem` and the
  sanitiser are Drupal's, cms_operators/drupal/rules.py): 1 to 60 characters
  (USERNAME_MAX_LENGTH, `users.name` varchar(60)); no leading or trailing space, no two spaces in a
  row; ASCII letters, digits, space and `@ + _ . ' -`, plus non-ASCII letters (bytes 0x80-0xF7) less
  control, space-like, bidi, full-width and replacement characters. bee does NOT run this check
  (`bee user-create` stores `bad<name>`), so the backend checks here and its PHP checks again.
* usernames and emails are unique as Backdrop's account form checks them (LIKE, i.e. under the
  column's collation utf8mb4_general_ci: case- and accent-insensitive), and `users.name` has a
  unique key as well.
* email: `valid_email_address()` is PHP's FILTER_VALIDATE_EMAIL; `users.mail` is varchar(254).
* administrators: uid 1, holders of the site's administrator role (config `system.core`
  `user_admin_role`, `administrator` on a standard install) and of the roles in the `admin_roles`
  setting; the backend reads the site's own admin role in pre-flight.
"""

from __future__ import annotations

from cms_operators.drupal.rules import sanitize_drupal, username_problem
from cms_operators.drupal7.rules import EMAIL_PATTERN  # PHP FILTER_VALIDATE_EMAIL, as in 7
from provisioning.rules import AccountRules

MAX_USERNAME_LENGTH = 60
MAX_EMAIL_LENGTH = 254
ADMIN_ROLE = "administrator"
SUPERUSER_ID = 1
#: Roles every account has implicitly; Backdrop never stores them on an account.
IMPLICIT_ROLES = frozenset({"authenticated", "anonymous"})

RULES = AccountRules(
    cms="Backdrop",
    sanitize_username=sanitize_drupal,
    max_username_length=MAX_USERNAME_LENGTH,
    max_email_length=MAX_EMAIL_LENGTH,
    email_pattern=EMAIL_PATTERN,
    admin_roles=frozenset({ADMIN_ROLE}),
    admin_ids=frozenset({SUPERUSER_ID}),
)

__all__ = ["RULES", "username_problem", "sanitize_drupal", "MAX_EMAIL_LENGTH", "MAX_USERNAME_LENGTH"]
