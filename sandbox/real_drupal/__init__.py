"""A real Drupal 10.5 (core JSON:API, HTTP Basic auth), one per test session (start.sh / stop.sh here).

    site = RealDrupal.start()         # a fresh site from the archive in ../shared/thirdparty (~30 s)
    site.reset()                      # back to the state right after start (~0.1 s), between tests
    site.stop()                       # stops the server and deletes the site, database and DB user

What start.sh makes (install.php): the standard profile on MariaDB; modules serialization,
basic_auth, jsonapi (read_only off) and language (English and French enabled); roles `member`,
`volunteer` (ordinary), `site_boss` (is_admin) besides core's `administrator` (is_admin) and
`content_editor`; a user field `field_member_number` (string); registration admin-only; mails
through PHP's mail(), whose sendmail_path is sandbox/capture-mail.sh writing each message into the session's
mail folder; and the API user `cmsuser_api` (uid 2), no administrator, whose role holds exactly
`administer users` and `administer permissions`.

The archive is a test fixture: extracted into the session's own folder, never into the project.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from sandbox import realsite

HERE = Path(__file__).resolve().parent
ARCHIVE = "drupal-10.5.5-recommended-project-0745a9761a13.tar.gz"
#: The API user's permissions on a fresh site: what the pipeline needs (see start.sh).
API_PERMISSIONS = ("administer users", "administer permissions")
_CACHE_TABLES = ("cache_entity", "cache_jsonapi_normalizations", "cache_dynamic_page_cache", "cache_page",
                 "cache_render", "cache_data")
_USER_TABLES = ("user__roles", "user__field_member_number", "user__user_picture", "users_data", "users_field_data")


def unavailable() -> str | None:
    """Why a real Drupal cannot be started here (None: it can)."""
    return realsite.unavailable(ARCHIVE, "Drupal", "apt packages, a MariaDB database and user")


@dataclass(repr=False)
class RealDrupal(realsite.RealSite):
    """One running site (realsite.RealSite: start, stop, base_url, api_login/api_password, mails, sql)."""

    folder = HERE
    label = "Drupal"
    php_prefix = "REAL_DRUPAL"

    baseline_uid: int = 0
    _permissions_changed: bool = field(default=False, repr=False)

    def _started(self) -> None:
        self.baseline_uid = self._max_uid()

    def _php_env(self) -> dict[str, str]:
        return {"TMPDIR": str(Path(self.state["session_dir"]) / "tmp")}

    # --- what clients need --------------------------------------------------------------------

    @property
    def api_auth(self) -> tuple[str, str]:
        return (self.api_login, self.api_password)

    @property
    def admin_auth(self) -> tuple[str, str]:
        """uid 1: for seeding only, never for the code under test."""
        return (self.state["admin"]["login"], self.state["admin"]["password"])

    @property
    def roles(self) -> dict[str, dict]:
        """machine name -> {"uuid", "is_admin"} as installed."""
        return dict(self.state["roles"])

    def connection(self, **extra) -> str:
        """AIRFLOW_CONN_CMS_DEFAULT (type drupal) for the API user."""
        return json.dumps({"conn_type": "drupal", "host": self.base_url, "login": self.api_login,
                           "password": self.api_password, "extra": extra})

    # --- state --------------------------------------------------------------------------------

    def set_permissions(self, permissions: list[str]) -> None:
        """Give the API user's role exactly these permissions (reset() restores the default set)."""
        self._php("permissions", REAL_DRUPAL_API_ROLE=self.state["api_user"]["role"],
                  REAL_DRUPAL_API_PERMISSIONS=json.dumps(list(permissions)))
        self._permissions_changed = True

    def set_config(self, name: str, key: str, value) -> None:
        """One configuration value (e.g. jsonapi.settings read_only); caches are rebuilt. Tests restore it."""
        self._php("config", REAL_DRUPAL_CONFIG=json.dumps({"name": name, "key": key, "value": value}))

    def reset(self) -> None:
        """Accounts made after start gone, caches emptied, captured mails deleted, mail working again,
        the API user's permissions back to the default set."""
        uid = self.baseline_uid
        statements = [f"DELETE FROM {table} WHERE {'entity_id' if table.startswith('user__') else 'uid'} > {uid}"
                      for table in _USER_TABLES]
        statements.append(f"DELETE FROM users WHERE uid > {uid}")
        tables = set(self.sql("SHOW TABLES").split())
        # what holds users (entities, JSON:API normalizations, pages); config and container stay warm
        statements += [f"TRUNCATE {table}" for table in _CACHE_TABLES if table in tables]
        if "flood" in tables:
            statements.append("DELETE FROM flood")
        self.sql("; ".join(statements))
        self.clear_mails()
        if self._permissions_changed:
            self.set_permissions(list(self.state["api_user"]["permissions"]))
            self._permissions_changed = False
