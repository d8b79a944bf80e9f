"""A real Joomla 5.3 on PHP's built-in server and MariaDB, one per test session (start.sh / stop.sh).

    site = RealJoomla.start()      # a fresh site from the archive in ../shared/thirdparty (~3 s)
    site.reset()                   # back to the state right after the install, between tests
    site.stop()                    # stops the server and deletes the site

What start.sh sets up (install.php): the "User - Joomla!" plugin's mail_to_user off, an "API
clients" group with API Login on the site and Create on com_users (nothing else), that group in
the token plugin's allowed groups, the API user in it with a token, a token for the Super User
(seeding only). Mails are captured by PHP's sendmail_path (sandbox/capture-mail.sh) into the session's
mail folder; `mails()` reads them back. The archive is a test fixture, extracted into the
session's own folder, never into the project.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from sandbox import realsite

HERE = Path(__file__).resolve().parent
ARCHIVE = "joomla-5.3.1-b38a0b456105.tar.gz"

# Tables whose rows tests add, by their id column; reset() deletes the rows above the install's.
_RESET_BY_ID = {"users": "id", "action_logs": "id", "user_notes": "id", "usergroups": "id"}
# Rows that belong to users: deleted for every user above the install's.
_USER_TABLES = ("user_usergroup_map", "user_profiles", "user_keys", "user_mfa", "session")


def unavailable() -> str | None:
    """Why a real Joomla cannot be started here (None: it can)."""
    return realsite.unavailable(ARCHIVE, "Joomla", "apt packages, a MariaDB database and user")


@dataclass(repr=False)
class RealJoomla(realsite.RealSite):
    """One running site (realsite.RealSite: start, stop, base_url, mails, sql); tokens in its state."""

    folder = HERE
    label = "Joomla"
    start_timeout = 600
    mail_body_types = ("plain", "html")

    baseline: dict[str, int] = field(default_factory=dict)

    def _started(self) -> None:
        self.baseline = self._max_ids()

    # --- what clients need --------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """The API root: <site>/api/index.php (routes like /v1/users follow)."""
        return self.state["api_url"]

    @property
    def api_token(self) -> str:
        return self.state["api_token"]

    @property
    def admin_token(self) -> str:
        """The Super User's token: for seeding only (e.g. Super User accounts), never for the code under test."""
        return self.state["admin"]["token"]

    @property
    def api_user(self) -> dict:
        """{"id", "login", "email", "group", "group_id"} of the API user."""
        return dict(self.state["api_user"])

    @property
    def admin_user_id(self) -> int:
        return int(self.state["admin"]["id"])

    def connection(self, **extra) -> str:
        """AIRFLOW_CONN_CMS_DEFAULT for the API user (connection type joomla)."""
        return json.dumps({"conn_type": "joomla", "host": self.base_url, "password": self.api_token,
                           "extra": extra})

    # --- mails -------------------------------------------------------------------------------

    def _mail_fields(self, path: Path, raw: bytes, message) -> dict:
        """mails() gives {"to", "subject", "body", "raw"}: the message as Joomla handed it to sendmail."""
        return {"raw": raw.decode("utf-8", "replace")}

    def clear_mails(self) -> None:
        """Captured mails deleted; a mail being written (a dot-name .tmp) is left to finish."""
        for path in self.mail_dir.glob("*.eml"):
            path.unlink(missing_ok=True)

    # --- switches tests use ------------------------------------------------------------------

    def set_mail_to_user(self, on: bool) -> None:
        """The "User - Joomla!" plugin option mail_to_user (Joomla's default is on)."""
        self._plugin_param("user", "joomla", "mail_to_user", "1" if on else "0")

    def set_api_can_create(self, allowed: bool) -> None:
        """Give or take the API group's Create permission on com_users."""
        group = str(self.state["api_user"]["group_id"])
        p = self.prefix
        path = f'$."core.create"."{group}"'
        change = f"JSON_SET(rules, '{path}', 1)" if allowed else f"JSON_REMOVE(rules, '{path}')"
        self.sql(f"UPDATE {p}assets SET rules = {change} WHERE name = 'com_users'")

    def set_token_enabled(self, enabled: bool) -> None:
        user_id = int(self.state["api_user"]["id"])
        self.sql(f"UPDATE {self.prefix}user_profiles SET profile_value = '{1 if enabled else 0}' "
                 f"WHERE user_id = {user_id} AND profile_key = 'joomlatoken.enabled'")

    def set_api_language(self, tag: str | None) -> None:
        """Answer the API in another installed language (configuration.php `$language`), or the default."""
        config = Path(self.state["site_dir"]) / "configuration.php"
        lines = [line for line in config.read_text().splitlines() if "public $language = " not in line]
        if tag:
            lines.insert(lines.index("class JConfig {") + 1, f"\tpublic $language = '{tag}';")
        config.write_text("\n".join(lines) + "\n")

    def add_group(self, title: str, parent_id: int = 1) -> int:
        """A user group below `parent_id`, placed in Joomla's nested set as its own code would; its id."""
        p = self.prefix
        quoted = title.replace("\\", "\\\\").replace("'", "''")
        out = self.sql(
            f"SELECT @r := rgt FROM {p}usergroups WHERE id = {int(parent_id)}; "
            f"UPDATE {p}usergroups SET rgt = rgt + 2 WHERE rgt >= @r; "
            f"UPDATE {p}usergroups SET lft = lft + 2 WHERE lft > @r; "
            f"INSERT INTO {p}usergroups (parent_id, lft, rgt, title) VALUES ({int(parent_id)}, @r, @r + 1, '{quoted}'); "
            "SELECT LAST_INSERT_ID()")
        return int(out.split()[-1])

    def _plugin_param(self, folder: str, element: str, name: str, value: str) -> None:
        self.sql(f"UPDATE {self.prefix}extensions SET params = JSON_SET(params, '$.{name}', '{value}') "
                 f"WHERE type = 'plugin' AND folder = '{folder}' AND element = '{element}'")

    # --- state --------------------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        return self.state["db"]["prefix"]

    def _max_ids(self) -> dict[str, int]:
        query = " UNION ALL ".join(f"SELECT '{t}', COALESCE(MAX({c}), 0) FROM {self.prefix}{t}"
                                   for t, c in _RESET_BY_ID.items())
        return {name: int(value) for name, value in (line.split("\t") for line in self.sql(query).splitlines())}

    def reset(self) -> None:
        """Users, groups and logs tests added gone; mails gone; the install's switches back."""
        p = self.prefix
        users = self.baseline["users"]
        statements = [f"DELETE FROM {p}{t} WHERE {'userid' if t == 'session' else 'user_id'} > {users}"
                      for t in _USER_TABLES]
        statements += [f"DELETE FROM {p}{t} WHERE {c} > {self.baseline[t]}" for t, c in _RESET_BY_ID.items()]
        self.sql("; ".join(statements))
        self.set_mail_to_user(False)
        self.set_api_can_create(True)
        self.set_token_enabled(True)
        self.set_api_language(None)
        self.clear_mails()
