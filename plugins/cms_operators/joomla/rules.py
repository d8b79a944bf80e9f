"""Joomla's account rules: what its Web Services API accepts for a new user, and who administers the site.

Facts (Joomla 5.3.1, read in libraries/src/Table/User.php check() and the com_users user form, and
confirmed on the real site by tests/contract/test_joomla_contract.py):

* username: 2 to 150 characters (UTF-8 characters; `#__users.username` is varchar(150)), no
  leading or trailing whitespace, none of `< > " ' % ; ( ) & \\` and no `../`. Refused with 400
  "Please enter a valid username. ...", never rewritten, with one exception: the form's default
  filter strips HTML tags first, so `bad<name>` is stored as `bad` (200). Spaces inside, `+`, `@`
  and non-ASCII letters are accepted.
* usernames are unique under the database collation utf8mb4_unicode_ci: case- AND
  accent-insensitive (`jose` collides with `José`), enforced by a unique index too.
* email: the form's EmailRule regex (ASCII local part of `A-Za-z0-9.!#$%&'*+/=?^_\\`{|}~-`, domain
  labels of letters, digits and inner hyphens) after IDN domains are turned into punycode, then
  the table check's MailHelper::isEmailAddress() (local part at most 64 characters, no leading,
  trailing or doubled dot), at most 100 characters (`#__users.email` varchar(100)); duplicates
  are compared with LOWER(). A 100-character address with an 88-character local part is refused.
* administrators: the core groups Super Users (8) and Administrator (7) and every group below
  them; a site may name more (the backend's `admin_groups`). Group titles are the site's own and
  translated (this build's are French: "Super utilisateur", "Administrateur").
"""

from __future__ import annotations

import re

from provisioning.rules import AccountRules
from provisioning.usernames import LoginCleaner, LoginSanitizer

MIN_USERNAME_LENGTH = 2
MAX_USERNAME_LENGTH = 150
MAX_EMAIL_LENGTH = 100
MAX_NAME_LENGTH = 400  # #__users.name varchar(400)

SUPER_USERS_GROUP = 8
ADMINISTRATOR_GROUP = 7
REGISTERED_GROUP = 2  # com_users' default "new user group"
#: Core groups whose members administer the site (their child groups too: the backend adds those).
CORE_ADMIN_GROUPS = frozenset({SUPER_USERS_GROUP, ADMINISTRATOR_GROUP})
#: Names of the administrator groups as a fresh site titles them (English and French builds), and
#: their ids: a `roles` setting naming any of them is refused before a run starts.
ADMIN_GROUP_NAMES = frozenset({"8", "7", "super users", "administrator", "super utilisateur", "administrateur"})

# The characters Joomla's username check refuses, plus anything else we do not want in generated
# logins: we keep ASCII letters, digits and `_ . @ + -`.
_clean = LoginCleaner(allowed=r"a-z0-9_.@+-", edges=" ._-+", min_length=MIN_USERNAME_LENGTH)

# The form's EmailRule regex and Table\\User::check()'s MailHelper::isEmailAddress() together: a
# local part of 1 to 64 allowed characters without a leading, trailing or doubled dot; domain
# labels of letters, digits and inner hyphens, with at least one dot (Joomla itself takes
# `user@localhost`, which no member's mail uses).
_EMAIL_LOCAL = r"(?=[^@]{1,64}@)(?!\.)(?![^@]*\.\.)[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+(?<!\.)"
_EMAIL_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL_PATTERN = rf"{_EMAIL_LOCAL}@{_EMAIL_LABEL}(?:\.{_EMAIL_LABEL})+"

#: What Table\\User::check() refuses in a username (for checks on names we did not make).
FORBIDDEN_USERNAME_RE = re.compile(r"""[<>"'%;()&\\]|\.\./""")


sanitize_joomla = LoginSanitizer(_clean, "sanitize_joomla", """A login Joomla stores exactly as given, made of raw text.

    Accents folded to ASCII (Joomla would take them, but its collation makes 'josé' and 'jose' one
    login anyway), lower case (Joomla compares case-insensitively), whitespace runs become one '.',
    only [a-z0-9_.@+-] kept, repeated dots collapsed (so never '../'), separators stripped from
    both ends; a result shorter than Joomla's 2 characters gives '' (the next pattern is used).
    `sanitize_joomla.many(texts)` does a list at once.
    """)


def username_problem(username: str) -> str | None:
    """Why Joomla would refuse this username (None: it would store it unchanged)."""
    if len(username) < MIN_USERNAME_LENGTH:
        return f"Joomla usernames have at least {MIN_USERNAME_LENGTH} characters"
    if len(username) > MAX_USERNAME_LENGTH:
        return f"Joomla usernames have at most {MAX_USERNAME_LENGTH} characters"
    if username != username.strip():
        return "Joomla usernames may not start or end with whitespace"
    if FORBIDDEN_USERNAME_RE.search(username):
        return "Joomla usernames may not contain < > \" ' % ; ( ) & \\ or ../"
    return None


RULES = AccountRules(
    cms="Joomla",
    sanitize_username=sanitize_joomla,
    max_username_length=MAX_USERNAME_LENGTH,
    max_email_length=MAX_EMAIL_LENGTH,
    email_pattern=EMAIL_PATTERN,
    admin_roles=ADMIN_GROUP_NAMES,
)
