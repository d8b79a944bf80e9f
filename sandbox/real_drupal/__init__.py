"""A real Drupal 10.5 (core JSON:API, HTTP Basic auth), one per test session (start.sh / stop.sh here).

    site = RealDrupal.start()         # a fresh site from the archive in ../shared/thirdparty (~30 s)
    site.reset()                      # back to the state right after start (~0.1 s), between tests
    site.stop()                       # stops the server and deletes the site, database and DB user

What start.sh makes (install.php): the standard profile on MariaDB; modules serialization,
basic_auth, jsonapi (read_only off) and language (English and French enabled); roles `member`,
`volunteer` (ordinary), `site_boss` (is_admin) besides core's `administrator` (is_admin) and
`content_editor`; a user field `field_member_number` (string); registration admin-only; mails
through PHP's mail(), whose sendmail_path is capture-mail.sh writing each message into the session's
mail folder; and the API user `cmsuser_api` (uid 2), no administrator, whose role holds exactly
`administer users` and `administer permissions`.

The archive is a test fixture: extracted into the session's own folder, never into the project.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import subprocess
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


@dataclass
class RealDrupal:
    """One running site, described by the JSON start.sh writes (secrets included: never print it)."""

    state: dict
    json_path: Path
    baseline_uid: int = 0
    started_seconds: float = 0.0
    _permissions_changed: bool = field(default=False, repr=False)

    def __repr__(self) -> str:
        return f"RealDrupal(base_url={self.base_url!r})"

    @classmethod
    def start(cls, timeout: float = 900) -> RealDrupal:
        state, json_path, seconds = realsite.start(HERE, "drupal", timeout)
        site = cls(state, json_path)
        site.started_seconds = seconds
        site.baseline_uid = int(site.sql("SELECT MAX(uid) FROM users").strip() or 0)
        return site

    def stop(self) -> None:
        realsite.stop(HERE, self.state, self.json_path)

    # --- what clients need --------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self.state["base_url"]

    @property
    def api_login(self) -> str:
        return self.state["api_user"]["login"]

    @property
    def api_password(self) -> str:
        return self.state["api_user"]["password"]

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

    # --- mails captured from PHP's mail() ------------------------------------------------------

    @property
    def mail_dir(self) -> Path:
        return Path(self.state["mail_dir"])

    def mails(self) -> list[dict]:
        """Every mail the site sent since the last reset, oldest first: to, subject, body, headers."""
        found = []
        for path in sorted(self.mail_dir.glob("*.eml")):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            body = message.get_body(preferencelist=("plain",)) if message.is_multipart() else message
            found.append({"to": str(message.get("To", "")), "subject": str(message.get("Subject", "")),
                          "body": body.get_content() if body is not None else "",
                          "headers": {k: str(v) for k, v in message.items()}, "file": path.name})
        return found

    def set_mail_works(self, works: bool) -> None:
        """While the flag file exists, the capture script fails and PHP's mail() returns false."""
        flag = self.mail_dir / "fail"
        if works:
            flag.unlink(missing_ok=True)
        else:
            flag.touch()

    # --- state --------------------------------------------------------------------------------

    def sql(self, statement: str) -> str:
        db = self.state["db"]
        done = subprocess.run(["mysql", "--protocol=tcp", "-h", db["host"], "-P", str(db["port"]), "-u", "root",
                               "-N", "-B", db["name"], "-e", statement], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"mysql on {db['name']} failed: {done.stderr.strip()}")
        return done.stdout

    def _php(self, step: str, **env: str) -> dict:
        result = Path(self.state["session_dir"]) / f"step-{step}.json"
        done = subprocess.run(["php", "-d", "memory_limit=512M", str(HERE / "install.php"), step], capture_output=True,
                              text=True, timeout=120, cwd=self.state["web_dir"],
                              env={**os.environ, "REAL_DRUPAL_HOST": f"{self.state['host']}:{self.state['port']}",
                                   "REAL_DRUPAL_RESULT": str(result), "TMPDIR": str(Path(self.state["session_dir"]) / "tmp"),
                                   **env})
        if done.returncode != 0:
            raise RuntimeError(f"install.php {step} failed: {done.stderr[-2000:]}{done.stdout[-2000:]}")
        try:
            return json.loads(result.read_text())
        finally:
            result.unlink(missing_ok=True)

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
        for path in self.mail_dir.glob("*"):
            path.unlink(missing_ok=True)
        if self._permissions_changed:
            self.set_permissions(list(self.state["api_user"]["permissions"]))
            self._permissions_changed = False
