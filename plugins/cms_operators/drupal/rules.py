"""Drupal's (8 and later) account rules: what its JSON:API accepts for a new user, and who administers the site.

Facts (Drupal 10.5.5 on MariaDB 10.11, read in core's UserNameConstraintValidator, UserMailUnique and
the email field, and confirmed on the real site by tests/contract/test_drupal_contract.py):

* username: 1 to 60 characters (`mb_strlen`, `UserInterface::USERNAME_MAX_LENGTH`); no leading or
  trailing space, no two spaces in a row; ASCII letters, digits, space and `@ + _ . ' -`, plus most
  non-ASCII letters (bytes 0x80-0xF7, less control, space-like, bidi, full-width and replacement
  characters). Refused with 422, never rewritten.
* usernames are unique twice over: Drupal's own check (LIKE, then an ASCII-only case-insensitive
  compare: 422 "already taken") and the unique key `user__name` under the column's collation
  utf8mb4_general_ci (case- AND accent-insensitive): `jose` next to `José` passes the first and
  fails the second with a 500 "Integrity constraint violation", nothing stored.
* email: Drupal's EmailValidator (RFC, no DNS): a dot-atom local part and a domain with a dot
  (`a@localhost` and `a..b@x.org` are refused), domain labels of at most 63 characters (62 after
  the first: the validator counts the dot), at most 254 characters; duplicates are compared
  case-insensitively for ASCII letters only (`JÖE@x` and `jöe@x` are two accounts).
* administrators: uid 1 and every account holding a role the site marks `is_admin` (core's
  `administrator`; the backend reads the site's own list from JSON:API).
"""

from __future__ import annotations

import re

from provisioning.rules import AccountRules
from provisioning.usernames import LoginCleaner, LoginSanitizer

MAX_USERNAME_LENGTH = 60
MAX_EMAIL_LENGTH = 254
ADMIN_ROLE = "administrator"
SUPERUSER_ID = 1
#: Roles every account has implicitly; Drupal never stores them on an account.
IMPLICIT_ROLES = frozenset({"authenticated", "anonymous"})

# A dot-atom local part (no leading, trailing or doubled dots) of at most 64 characters, and a
# domain of two or more labels of letters, digits and inner hyphens.
_EMAIL_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
# Domain labels: the first at most 63 characters, every later one at most 62 (egulias/email-validator 4,
# which Drupal uses, counts the dot before a label as part of it: `a@b.<63 letters>.org` is refused).
_EMAIL_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL_NEXT_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,60}[A-Za-z0-9])?"
EMAIL_PATTERN = (rf"(?=.{{3,{MAX_EMAIL_LENGTH}}}$)(?=[^@]{{1,64}}@){_EMAIL_ATOM}(?:\.{_EMAIL_ATOM})*"
                 rf"@{_EMAIL_LABEL}(?:\.{_EMAIL_NEXT_LABEL})+")

# What UserNameConstraintValidator refuses, for checks on names we did not make.
_NAME_ASCII_RE = re.compile(r"[^\x80-\U0010ffff a-zA-Z0-9@+_.'-]")
_NAME_BAD_RE = re.compile("[\x80-\xa0\xad\u2000-\u200f\u2028-\u202f\u205f-\u206f\ufeff\uff01-\uff60\ufff9-\ufffd\x00-\x1f]")

_clean = LoginCleaner(allowed=r"a-z0-9_.@+-", edges=" ._-+")


def username_problem(username: str) -> str | None:
    """Why Drupal would refuse this username (None: it stores it unchanged)."""
    if not username:
        return "You must enter a username."
    if username.startswith(" "):
        return "The username cannot begin with a space."
    if username.endswith(" "):
        return "The username cannot end with a space."
    if "  " in username:
        return "The username cannot contain multiple spaces in a row."
    if _NAME_ASCII_RE.search(username) or _NAME_BAD_RE.search(username):
        return "The username contains an illegal character."
    if len(username) > MAX_USERNAME_LENGTH:
        return f"The username {username} is too long: it must be {MAX_USERNAME_LENGTH} characters or less."
    return None


sanitize_drupal = LoginSanitizer(_clean, "sanitize_drupal", """A username Drupal stores exactly as given, made of raw text.

    Accents folded to ASCII (Drupal would take them, but its collation makes 'josé' and 'jose' one
    name, answered with a 500), lower case, whitespace runs become one '.', only [a-z0-9_.@+-] kept,
    repeated dots collapsed, separators stripped from both ends. May return ''.
    `sanitize_drupal.many(texts)` does a list at once.
    """)


RULES = AccountRules(
    cms="Drupal",
    sanitize_username=sanitize_drupal,
    max_username_length=MAX_USERNAME_LENGTH,
    max_email_length=MAX_EMAIL_LENGTH,
    email_pattern=EMAIL_PATTERN,
    admin_roles=frozenset({ADMIN_ROLE}),
    admin_ids=frozenset({SUPERUSER_ID}),
)
