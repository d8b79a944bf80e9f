"""The site's users (with their logins, emails and slugs kept unique), roles and capabilities, seeding."""

from __future__ import annotations

import copy
import json
import threading
from datetime import UTC, datetime
from pathlib import Path

from .php import sanitize_title

CORE_ROLES = ("administrator", "editor", "author", "contributor", "subscriber")

# The user-management capabilities are what matters here; the rest is a representative subset.
_ROLE_CAPS: dict[str, dict[str, bool]] = {
    "administrator": {
        cap: True
        for cap in (
            "switch_themes", "edit_themes", "activate_plugins", "edit_plugins", "edit_users", "edit_files",
            "manage_options", "moderate_comments", "manage_categories", "upload_files", "unfiltered_html",
            "edit_posts", "edit_others_posts", "publish_posts", "edit_pages", "read", "level_10", "level_0",
            "delete_users", "create_users", "list_users", "remove_users", "promote_users", "export",
        )
    },
    "editor": {c: True for c in ("moderate_comments", "edit_posts", "edit_others_posts", "publish_posts",
                                 "edit_pages", "read", "level_7", "level_0", "upload_files")},
    "author": {c: True for c in ("upload_files", "edit_posts", "publish_posts", "read", "level_2", "level_0")},
    "contributor": {c: True for c in ("edit_posts", "read", "level_1", "level_0")},
    "subscriber": {"read": True, "level_0": True},
}
_DEFAULT_CUSTOM_ROLE_CAPS = {"read": True}



class UserStore:
    """WordPressEmulator's users (its __init__ in server.py sets the state); callers hold `_lock`."""

    _lock: threading.RLock
    _users: dict[int, dict]
    _by_login: dict[str, int]
    _by_email: dict[str, int]
    _slugs: set[str]
    _next_id: int

    @property
    def users(self) -> list[dict]:
        with self._lock:
            return [self._public_record(u) for u in sorted(self._users.values(), key=lambda u: u["id"])]

    def seed(self, data: dict) -> None:
        """Add users directly (no REST validation): {"users": [{id?, username, email, roles, ...}]}."""
        with self._lock:
            for entry in (data or {}).get("users", []) or []:
                self._store_user(dict(entry))

    def seed_file(self, path: str | Path) -> None:
        """Seed from YAML or JSON; a top-level `wordpress:` key is used when present."""
        text = Path(path).read_text(encoding="utf-8")
        if str(path).endswith(".json"):
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
        if isinstance(data, dict) and "wordpress" in data:
            data = data["wordpress"]
        self.seed(data or {})

    def _store_user(self, entry: dict, *, checked: bool = False) -> dict:
        """Store one user; `checked`: the caller ran WordPress's duplicate checks (a raced INSERT may then
        store a login or email that is taken by now, as WordPress's table allows)."""
        username = str(entry.get("username") or entry.get("login") or "")
        email = str(entry.get("email") or "")
        if not username:
            raise ValueError(f"seed user without username: {entry!r}")
        if not checked and username.lower() in self._by_login:
            raise ValueError(f"seed user {username!r}: login already exists")
        if not checked and email and email.lower() in self._by_email:
            raise ValueError(f"seed user {username!r}: email {email!r} already exists")
        user_id = int(entry.get("id") or self._next_id)
        if user_id in self._users:
            raise ValueError(f"seed user {username!r}: id {user_id} already exists")
        first, last = str(entry.get("first_name") or ""), str(entry.get("last_name") or "")
        name = entry.get("name") or entry.get("display_name") or (f"{first} {last}".strip() or username)
        roles = entry.get("roles")
        slug = self._unique_slug(str(entry.get("slug") or sanitize_title(username[:50])) or str(user_id))
        record = {
            "id": user_id,
            "username": username,
            "email": email,
            "name": str(name),
            "first_name": first,
            "last_name": last,
            "nickname": str(entry.get("nickname") or username),
            "slug": slug,
            "url": str(entry.get("url") or ""),
            "description": str(entry.get("description") or ""),
            "locale": str(entry.get("locale") or ""),
            "roles": list(roles) if roles is not None else ["subscriber"],
            "registered_date": str(entry.get("registered_date")
                                   or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")),
            "has_published_posts": bool(entry.get("has_published_posts", False)),
        }
        self._users[user_id] = record
        self._by_login[username.lower()] = user_id
        if email:
            self._by_email.setdefault(email.lower(), user_id)
        self._slugs.add(slug)
        self._next_id = max(self._next_id, user_id + 1)
        return record

    def _unique_slug(self, slug: str) -> str:
        if slug not in self._slugs:
            return slug
        suffix = 2
        while True:
            candidate = f"{slug[:49 - len(str(suffix))]}-{suffix}"
            if candidate not in self._slugs:
                return candidate
            suffix += 1

    def _delete_user(self, user_id: int) -> dict:
        record = self._users.pop(user_id)
        self._by_login.pop(record["username"].lower(), None)
        if record["email"] and self._by_email.get(record["email"].lower()) == user_id:
            del self._by_email[record["email"].lower()]
        self._slugs.discard(record["slug"])
        return record

    @staticmethod
    def _public_record(record: dict) -> dict:
        return {k: copy.deepcopy(v) for k, v in record.items() if k != "has_published_posts"}

    def _caps(self, record: dict) -> dict[str, bool]:
        caps: dict[str, bool] = {}
        for role in record["roles"]:
            caps.update(_ROLE_CAPS.get(role, _DEFAULT_CUSTOM_ROLE_CAPS))
            caps[role] = True
        return caps

    def _can(self, user: dict | None, cap: str) -> bool:
        return user is not None and self._caps(user).get(cap, False)
