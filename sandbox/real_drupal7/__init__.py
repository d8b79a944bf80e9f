"""A real Drupal 7.101 + Services 7.x-3.20 (REST server, session auth), one per test session (start.sh / stop.sh).

    site = RealDrupal7.start()        # a fresh site from the archives in ../shared/thirdparty (~5 s)
    site.reset()                      # back to the state right after start (~0.1 s), between tests
    site.stop()                       # stops the server and deletes the site, database and DB user

What start.sh makes (install.php): the standard profile on MariaDB; modules libraries, ctools, services,
rest_server and locale (English and French enabled); Services' RESTServer.inc fixed for PHP 8 in the
extracted copy; the endpoint `api` (REST, session authentication, JSON) with the user resource's create,
retrieve, index, login/logout/token and resend_welcome_email/password_reset; roles `member`,
`volunteer`, `site boss` besides core's `administrator`; user fields `field_member_number` (on the
registration form) and `field_staff_note` (not on it); registration by administrators only; mails
through PHP's mail(), whose sendmail_path is sandbox/capture-mail.sh writing each message into the session's
mail folder; the API user `cmsuser_api` (uid 2), whose role holds exactly 'administer users',
'administer permissions' and 'access user profiles'.

The archives are test fixtures: extracted into the session's own folder, never into the project.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from sandbox import realsite

HERE = Path(__file__).resolve().parent
ARCHIVES = ("drupal-7.101-pressflow-3e1b003667a5.tar.gz", "services-7.x-3.20.tar.gz", "ctools-7.x-1.14.tar.gz",
            "libraries-7.x-2.3.tar.gz")
_USER_TABLES = ("users_roles", "field_data_field_member_number", "field_revision_field_member_number",
                "field_data_field_staff_note", "field_revision_field_staff_note", "authmap")


def unavailable() -> str | None:
    """Why a real Drupal 7 cannot be started here (None: it can)."""
    for archive in ARCHIVES:
        problem = realsite.unavailable(archive, "Drupal 7", "apt packages, a MariaDB database and user")
        if problem:
            return problem
    return None


@dataclass(repr=False)
class RealDrupal7(realsite.RealSite):
    """One running site (realsite.RealSite: start, stop, base_url, api_login/api_password, mails, sql)."""

    folder = HERE
    label = "Drupal 7"
    product = "Drupal"  # start.sh writes drupal_version (7.101)
    php_prefix = "REAL_DRUPAL7"

    baseline_uid: int = 0
    _changed: set = field(default_factory=set, repr=False)

    def _started(self) -> None:
        self.baseline_uid = self._max_uid()

    @property
    def endpoint(self) -> str:
        return self.state["endpoint"]

    @property
    def roles(self) -> dict[str, int]:
        """role name -> rid as installed."""
        return dict(self.state["roles"])

    def connection(self, **extra) -> str:
        """AIRFLOW_CONN_CMS_DEFAULT (type drupal7) for the API user."""
        return json.dumps({"conn_type": "drupal7", "host": self.base_url, "login": self.api_login,
                           "password": self.api_password, "extra": {"endpoint": self.endpoint, **extra}})

    # --- state --------------------------------------------------------------------------------

    def set_permissions(self, permissions: list[str]) -> None:
        """Give the API user's role exactly these permissions (reset() restores the default set)."""
        self._php("permissions", REAL_DRUPAL7_API_ROLE=self.state["api_user"]["role"],
                  REAL_DRUPAL7_API_PERMISSIONS=json.dumps(list(permissions)))
        self._changed.add("permissions")

    def set_variable(self, name: str, value) -> None:
        """One Drupal variable (e.g. user_register); reset() restores the ones it knows."""
        self._php("variable", REAL_DRUPAL7_VARIABLE=json.dumps({"name": name, "value": value}))
        self._changed.add(name)

    def expire_sessions(self) -> None:
        """End every session on the site, as expiry (or an emptied sessions table) would."""
        self.sql("DELETE FROM sessions")

    def reset(self) -> None:
        """Accounts made after start gone, sessions, flood and caches emptied, captured mails deleted, the API
        user's permissions and the registration mode back to the defaults."""
        uid = self.baseline_uid
        tables = set(self.sql("SHOW TABLES").split())
        statements = [f"DELETE FROM {t} WHERE {'entity_id' if t.startswith('field_') else 'uid'} > {uid}"
                      for t in _USER_TABLES if t in tables]
        statements += [f"DELETE FROM users WHERE uid > {uid}", "DELETE FROM flood", "DELETE FROM sessions",
                       "TRUNCATE cache_field", "DELETE FROM watchdog",
                       # uids come from the sequences table (db_next_id): start again after the baseline
                       "DELETE FROM sequences", "ALTER TABLE sequences AUTO_INCREMENT = 1"]
        self.sql("; ".join(statements))
        self.clear_mails()
        if "permissions" in self._changed:
            self.set_permissions(list(self.state["api_user"]["permissions"]))
        if "user_register" in self._changed:
            self.set_variable("user_register", 0)
        self._changed.clear()
