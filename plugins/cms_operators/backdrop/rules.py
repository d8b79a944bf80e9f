"""Backdrop's account rules: what a new account may be called, which emails it stores, who administers.

Facts (Backdrop 1.28, core/modules/user/user.module and user.install, confirmed on the real site by
tests/contract/test_backdrop_contract.py):

* username: `user_validate_name()` (the same rules as Drupal): 1 to 60 characters
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

import re
import unicodedata

from provisioning.rules import AccountRules
from provisioning.usernames import ascii_login

MAX_USERNAME_LENGTH = 60
MAX_EMAIL_LENGTH = 254
ADMIN_ROLE = "administrator"
SUPERUSER_ID = 1
#: Roles every account has implicitly; Backdrop never stores them on an account.
IMPLICIT_ROLES = frozenset({"authenticated", "anonymous"})

# PHP's FILTER_VALIDATE_EMAIL, in the part our planner needs: a dot-atom local part of at most 64
# characters and a domain of two or more labels (each 1-63 letters, digits, inner hyphens).
_EMAIL_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_EMAIL_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL_PATTERN = (rf"(?=.{{3,{MAX_EMAIL_LENGTH}}}$)(?=[^@]{{1,64}}@){_EMAIL_ATOM}(?:\.{_EMAIL_ATOM})*"
                 rf"@{_EMAIL_LABEL}(?:\.{_EMAIL_LABEL})+")

_NAME_ASCII_RE = re.compile(r"[^\x80-\U0010ffff a-zA-Z0-9@+_.'-]")
_NAME_BAD_RE = re.compile("[\x80-\xa0\xad\u2000-\u200f\u2028-\u202f\u205f-\u206f\ufeff\uff01-\uff60"
                          "\ufff9-\ufffd\x00-\x1f]")

_NOT_ALLOWED_RE = re.compile(r"[^a-z0-9_.@+-]")
_WHITESPACE_RE = re.compile(r"\s+")
_DOTS_RE = re.compile(r"\.{2,}")
_EDGE_CHARS = " ._-+"


def username_problem(username: str) -> str | None:
    """Why Backdrop's user_validate_name() would refuse this username (None: it is fine)."""
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
        return f"The username is too long: it must be {MAX_USERNAME_LENGTH} characters or less."
    return None


def match_key(value: str | None) -> str:
    """A name or email as Backdrop's uniqueness checks compare it (utf8mb4_general_ci: case and
    accents ignored), after trimming."""
    folded = unicodedata.normalize("NFKD", (value or "").strip())
    return "".join(ch for ch in folded if not unicodedata.combining(ch)).casefold()


def _clean(text: str) -> str:
    text = _WHITESPACE_RE.sub(".", text.lower().strip())
    text = _NOT_ALLOWED_RE.sub("", text)
    text = _DOTS_RE.sub(".", text)
    return text.strip(_EDGE_CHARS)


def sanitize_backdrop(raw: str) -> str:
    """A username Backdrop stores exactly as given: accents folded to ASCII (its collation makes
    'josé' and 'jose' one name), lower case, whitespace runs become '.', only [a-z0-9_.@+-] kept,
    repeated dots collapsed, separators stripped from both ends. May return ''."""
    return ascii_login(raw, _clean)


RULES = AccountRules(
    cms="Backdrop",
    sanitize_username=sanitize_backdrop,
    max_username_length=MAX_USERNAME_LENGTH,
    max_email_length=MAX_EMAIL_LENGTH,
    email_pattern=EMAIL_PATTERN,
    admin_roles=frozenset({ADMIN_ROLE}),
    admin_ids=frozenset({SUPERUSER_ID}),
)
