"""WordPress's account rules: what its REST API accepts for a new user, and who administers the site."""

from __future__ import annotations

from provisioning.rules import AccountRules
from provisioning.usernames import LoginCleaner, LoginSanitizer

#: users.user_login is a varchar(60); longer logins fail with `user_login_too_long`.
MAX_USERNAME_LENGTH = 60
#: users.user_email is a varchar(100); longer emails crash the insert (an opaque 500).
MAX_EMAIL_LENGTH = 100
ADMIN_ROLE = "administrator"

# Mirrors WordPress' is_email(), which the REST API applies to `email`: ASCII only, one @, a local
# part of the allowed characters, and a domain of two or more labels made of letters, digits and
# inner hyphens; at least 6 characters in all.
_EMAIL_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+"
_EMAIL_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
EMAIL_PATTERN = rf"(?=.{{6,}}$){_EMAIL_LOCAL}@{_EMAIL_LABEL}(?:\.{_EMAIL_LABEL})+"

# Kept: [a-z0-9 _.@-] (the space only in principle: whitespace runs have become '.' by then).
_clean = LoginCleaner(allowed=r"a-z0-9 _.@-", edges=" ._-")

sanitize_wordpress = LoginSanitizer(_clean, "sanitize_wordpress", """Turn raw text into a login WordPress' strict `sanitize_user` accepts unchanged.

    WordPress's REST API rejects (never rewrites) a login that `sanitize_user($login, true)` would
    change. Accents are folded to ASCII, everything is lower-cased (WordPress compares logins
    case-insensitively, so mixed case only invites 'Jane.Doe' vs 'jane.doe' surprises), whitespace
    runs become one '.', characters outside [a-z0-9 _.@-] are dropped, repeated dots collapse, and
    leading/trailing separators are stripped; names without Latin letters are transliterated.
    May return ''. `sanitize_wordpress.many(texts)` does a list at once.
    """)


RULES = AccountRules(
    cms="WordPress",
    sanitize_username=sanitize_wordpress,
    max_username_length=MAX_USERNAME_LENGTH,
    max_email_length=MAX_EMAIL_LENGTH,
    email_pattern=EMAIL_PATTERN,
    admin_roles=frozenset({ADMIN_ROLE}),
)
