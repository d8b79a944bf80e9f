"""A CMS's account rules, as the pure planning layer sees them: one object per CMS type.

The planner, the username code and the reasons know a CMS only through this object; each CMS
package (cms_operators/<cms>/rules.py) makes one, and the registry hands it out.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class AccountRules:
    """What a CMS accepts for a new account and which accounts it counts as administrators."""

    cms: str                                  # the CMS's name in messages, e.g. "WordPress"
    sanitize_username: Callable[[str], str]   # raw text -> a login the CMS accepts unchanged ('' if none)
    max_username_length: int                  # longest login the CMS stores
    max_email_length: int                     # longest email the CMS stores
    email_pattern: str                        # full-match regex of the emails the CMS accepts
    admin_roles: frozenset[str] = field(default_factory=frozenset)  # lower-case roles/groups of administrators
    admin_ids: frozenset[int] = field(default_factory=frozenset)    # user ids that are always administrators

    def __post_init__(self):
        object.__setattr__(self, "_email_re", re.compile(self.email_pattern))

    def is_admin_role(self, role: object) -> bool:
        return str(role).strip().lower() in self.admin_roles

    def is_admin(self, uf_id: object, roles: object) -> bool:
        """An account the CMS counts as an administrator: never linked to a contact automatically."""
        try:
            if int(uf_id) in self.admin_ids:
                return True
        except (TypeError, ValueError):
            pass
        if isinstance(roles, str):
            roles = [roles]
        return any(self.is_admin_role(role) for role in roles or ())

    def accepts_email(self, email: str) -> bool:
        return bool(self._email_re.fullmatch(email or ""))


def collation_key(value: str | None) -> str:
    """A name or email as MariaDB's case- and accent-insensitive collations (utf8mb4_general_ci,
    utf8mb4_unicode_ci, which CMS user tables use) compare it, after trimming: `José ` == `jose`."""
    folded = unicodedata.normalize("NFKD", (value or "").strip())
    return "".join(ch for ch in folded if not unicodedata.combining(ch)).casefold()
