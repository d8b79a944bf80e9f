"""A real CiviCRM 5.76 inside Debian's WordPress, one per test session (start.sh / stop.sh here).

    site = RealCiviCRM.start()        # a fresh site from the archive in ../shared/thirdparty
    site.reset()                      # back to the state right after the install, between tests
    site.stop()                       # stops the server and deletes the site

The archive is a test fixture: extracted into the session's own folder, never into the project.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from sandbox import realsite

HERE = Path(__file__).resolve().parent
ARCHIVE = "civicrm-5.76.2-wordpress-4b55d645d98c.tar.gz"

# Tables whose rows tests add; reset() deletes every row above the install's own (ids grow).
_RESET_TABLES = ("civicrm_activity_contact", "civicrm_activity", "civicrm_entity_tag", "civicrm_group_contact",
                 "civicrm_subscription_history", "civicrm_group_contact_cache", "civicrm_group_nesting",
                 "civicrm_group_organization", "civicrm_group", "civicrm_saved_search", "civicrm_tag",
                 "civicrm_uf_match", "civicrm_email", "civicrm_contact", "civicrm_option_value")
# Caches CiviCRM keeps in the database (group caches, metadata): emptied so no test sees another's.
_CACHE_TABLES = ("civicrm_cache", "civicrm_acl_cache", "civicrm_acl_contact_cache")


def unavailable() -> str | None:
    """Why a real CiviCRM cannot be started here (None: it can)."""
    return realsite.unavailable(ARCHIVE, "CiviCRM", "apt packages, /etc/wordpress")


@dataclass
class RealCiviCRM:
    """One running site, described by the JSON start.sh writes (secrets included: never print it)."""

    state: dict
    json_path: Path
    baseline: dict[str, int] = field(default_factory=dict)

    @classmethod
    def start(cls, timeout: float = 600) -> RealCiviCRM:
        state, json_path, seconds = realsite.start(HERE, "civicrm", timeout)
        site = cls(state, json_path)
        site.started_seconds = seconds
        site.baseline = site._max_ids()
        return site

    def stop(self) -> None:
        realsite.stop(HERE, self.state, self.json_path)

    # --- what clients need --------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self.state["base_url"]

    @property
    def api4_url(self) -> str:
        return self.state["api4_url_template"]

    @property
    def api_key(self) -> str:
        return self.state["api_key"]

    @property
    def site_key(self) -> str:
        return self.state["site_key"]

    @property
    def admin_api_key(self) -> str:
        """For seeding only (the API user may not add contacts); never for the code under test."""
        return self.state["admin"]["api_key"]

    @property
    def permissions(self) -> list[str]:
        return list(self.state["api_user"]["permissions"])

    def civicrm_connection(self, **extra) -> str:
        """AIRFLOW_CONN_CIVICRM_DEFAULT for the API user."""
        return json.dumps({"conn_type": "http", "host": self.base_url, "password": self.api_key,
                           "extra": {"api4_url": self.api4_url, "site_key": self.site_key, **extra}})

    def wordpress_connection(self) -> str:
        """AIRFLOW_CONN_CMS_DEFAULT for the same site's WordPress (its admin's application password)."""
        return json.dumps({"conn_type": "http", "host": self.base_url, "login": self.state["admin"]["login"],
                           "password": self.state["admin"]["app_password"],
                           "extra": {"rest_url": f"{self.base_url}/?rest_route="}})

    def set_permissions(self, permissions: list[str]) -> None:
        """Give the API user's role exactly these CiviCRM permissions (install.php's `permissions` step)."""
        result = Path(self.state["session_dir"]) / "permissions.json"
        env = {**os.environ, "REAL_CIVICRM_WP_CONFIG": self.state["wp_config_name"],
               "REAL_CIVICRM_HOST": f"{self.state['host']}:{self.state['port']}",
               "REAL_CIVICRM_API_ROLE": self.state["api_user"]["role"],
               "REAL_CIVICRM_API_PERMISSIONS": json.dumps(list(permissions)), "REAL_CIVICRM_RESULT": str(result),
               "TMPDIR": str(Path(self.state["session_dir"]) / "tmp")}
        done = subprocess.run(["php", str(HERE / "install.php"), "permissions"], capture_output=True, text=True,
                              timeout=120, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"setting the API user's permissions failed: {done.stderr[-2000:]}")
        result.unlink(missing_ok=True)
        self.sql("DELETE FROM civicrm_cache")  # CiviCRM caches what a user may do

    def mails(self) -> list[dict]:
        path = Path(self.state["mail_log"])
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    # --- state --------------------------------------------------------------------------------

    def sql(self, statement: str) -> str:
        db = self.state["db"]
        done = subprocess.run(["mysql", "--protocol=tcp", "-h", db["host"], "-P", str(db["port"]), "-u", "root",
                               "-N", "-B", db["name"], "-e", statement], capture_output=True, text=True,
                              timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"mysql on {db['name']} failed: {done.stderr.strip()}")
        return done.stdout

    def _max_ids(self) -> dict[str, int]:
        query = " UNION ALL ".join(f"SELECT '{t}', COALESCE(MAX(id), 0) FROM {t}" for t in _RESET_TABLES)
        return {name: int(value) for name, value in (line.split("\t") for line in self.sql(query).splitlines())}

    def reset(self) -> None:
        """Every row tests added, gone; CiviCRM's own caches emptied; WordPress users beyond the install's."""
        statements = ["SET FOREIGN_KEY_CHECKS = 0"]
        statements += [f"DELETE FROM {t} WHERE id > {self.baseline[t]}" for t in _RESET_TABLES]
        statements += [f"DELETE FROM {t}" for t in _CACHE_TABLES]
        users = "SELECT ID FROM wp_users WHERE user_login NOT IN ('admin', 'civicrm_api')"
        statements += [f"DELETE FROM wp_usermeta WHERE user_id IN ({users})",
                       "DELETE FROM wp_users WHERE user_login NOT IN ('admin', 'civicrm_api')",
                       "SET FOREIGN_KEY_CHECKS = 1"]
        self.sql("; ".join(statements))
        mail_log = Path(self.state["mail_log"])
        if mail_log.exists():
            mail_log.unlink()
