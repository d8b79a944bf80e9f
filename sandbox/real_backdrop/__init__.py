"""A real Backdrop 1.28 behind a real private sshd, one per test session (start.sh / stop.sh here).

    site = RealBackdrop.start()       # a fresh site from the archives in ../shared/thirdparty (~5 s)
    site.reset()                      # back to the state right after start (~0.1 s), between tests
    site.stop()                       # stops sshd, removes the OS user, the site, database and DB user

What start.sh makes: Backdrop's standard profile on MariaDB (install.sh); telemetry and update off
(settings.php and the modules); registration by administrators only; roles `member` and `volunteer`
besides `editor` and `administrator` (the site's admin role, config user_admin_role); a user field
`field_member_number` (text); the language module with English and French; bee beside the site; an
OS user `cmsbee_<hex>` that owns the site and logs in by key only, to a private sshd on a free
loopback port with its own host key; PHP's sendmail_path for that user (PHP_INI_SCAN_DIR, set by the
sshd) is sandbox/capture-mail.sh, writing each mail into the session's mail folder.

The archives are test fixtures: extracted into the session's own folder, never into the project.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sandbox import realsite

HERE = Path(__file__).resolve().parent
ARCHIVE = "backdrop-1.28.x-dev-266a5018c5e6.tar.gz"
BEE_ARCHIVE = "bee-1.x-c0c14fed2dc7.tar.gz"
#: The address the test connections give bee for the links in mails (bee --base-url).
BASE_URL = "https://backdrop.example.test"
_USER_TABLES = (("users_roles", "uid"), ("field_data_field_member_number", "entity_id"),
                ("field_revision_field_member_number", "entity_id"), ("users", "uid"))
_CACHE_TABLES = ("cache_entity_user", "cache_field", "cache")


def unavailable() -> str | None:
    """Why a real Backdrop cannot be started here (None: it can)."""
    problem = realsite.unavailable(ARCHIVE, "Backdrop", "apt packages, a MariaDB database, an OS user and an sshd")
    if problem is None and not (realsite.thirdparty_dir() / BEE_ARCHIVE).is_file():
        problem = f"the bee archive {BEE_ARCHIVE} is not in {realsite.thirdparty_dir()}"
    return problem


@dataclass(repr=False)
class RealBackdrop(realsite.RealSite):
    """One running site (realsite.RealSite: start, stop, mails, sql), reached by SSH: the client key is in
    its state, and it has no base_url or API user of its own."""

    folder = HERE
    label = "Backdrop"

    baseline_uid: int = 0

    def __repr__(self) -> str:
        return f"RealBackdrop(ssh={self.address!r})"

    def _started(self) -> None:
        self.baseline_uid = self._max_uid()

    def _where(self) -> str:
        return f"behind sshd {self.host}:{self.port}"

    # --- what clients need --------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{self.ssh_user}@{self.state['host']}:{self.state['port']}"

    @property
    def host(self) -> str:
        return self.state["host"]

    @property
    def port(self) -> int:
        return int(self.state["port"])

    @property
    def ssh_user(self) -> str:
        return self.state["ssh"]["user"]

    @property
    def host_key(self) -> str:
        """The sshd's public host key as ssh-keyscan shows it: 'ssh-ed25519 AAAA...'."""
        return self.state["ssh"]["host_key"]

    @property
    def private_key(self) -> str:
        return self.state["ssh"]["private_key"]

    @property
    def site_root(self) -> str:
        return self.state["site_root"]

    @property
    def bee_path(self) -> str:
        return self.state["bee_path"]

    def extra(self, **overrides) -> dict:
        extra = {"site_root": self.site_root, "bee_path": self.bee_path, "host_key": self.host_key,
                 "private_key": self.private_key, "base_url": BASE_URL}
        extra.update(overrides)
        return {k: v for k, v in extra.items() if v is not None}

    def connection(self, conn_type: str = "backdrop", **extra) -> str:
        """AIRFLOW_CONN_CMS_DEFAULT for the site's SSH user (`extra` overrides; None drops a key)."""
        return json.dumps({"conn_type": conn_type, "host": self.host, "port": self.port, "login": self.ssh_user,
                           "extra": self.extra(**extra)})

    # --- state --------------------------------------------------------------------------------

    def bee(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        """bee run locally as the site's OS user (seeding and checks, never the code under test)."""
        ini = Path(self.state["session_dir"]) / "php"
        command = ["runuser", "-u", self.ssh_user, "--", "env", f"PHP_INI_SCAN_DIR=:{ini}", "COLUMNS=200",
                   "php", self.state["bee"], f"--root={self.site_root}", *args]
        return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120, check=False)

    def php(self, code: str) -> dict:
        """Run PHP in the bootstrapped site (bee eval) and return what it json_encode()s after 'JSON:'."""
        done = self.bee("eval", code)
        for line in done.stdout.splitlines():
            if line.startswith("JSON:"):
                return json.loads(line[5:])
        raise RuntimeError(f"bee eval printed no JSON: {done.stdout[-1000:]} {done.stderr[-1000:]}")

    def create_accounts(self, accounts: list[dict]) -> dict[str, int]:
        """Accounts made with Backdrop's own API (name, mail, roles, status 1): name -> uid."""
        code = ("$made = array(); foreach (json_decode(base64_decode('%s'), TRUE) as $a) { "
                "$u = entity_create('user', array('name' => $a['name'], 'mail' => $a['mail'], 'init' => $a['mail'], "
                "'status' => 1, 'pass' => user_password(), 'roles' => isset($a['roles']) ? $a['roles'] : array())); "
                "$u->save(); $made[$a['name']] = (int) $u->uid; } echo 'JSON:' . json_encode($made) . PHP_EOL;")
        import base64

        payload = base64.b64encode(json.dumps(accounts).encode()).decode()
        return {k: int(v) for k, v in self.php(code % payload).items()}

    def users(self) -> dict[str, dict]:
        """Every account but the anonymous one, by name: uid, mail, status, language, roles, member number."""
        rows = self.sql("SELECT u.uid, u.name, u.mail, u.status, u.language, u.created, "
                        "COALESCE((SELECT GROUP_CONCAT(r.role ORDER BY r.role) FROM users_roles r WHERE r.uid = u.uid), ''), "
                        "COALESCE((SELECT f.field_member_number_value FROM field_data_field_member_number f "
                        "WHERE f.entity_type = 'user' AND f.entity_id = u.uid), '') "
                        "FROM users u WHERE u.uid > 0 ORDER BY u.uid")
        found = {}
        for line in rows.splitlines():
            uid, name, mail, status, language, created, roles, number = line.split("\t")
            found[name] = {"uid": int(uid), "name": name, "mail": mail, "status": int(status), "language": language,
                           "created": int(created), "roles": [r for r in roles.split(",") if r],
                           "member_number": number or None}
        return found

    def set_config(self, name: str, key: str, value) -> None:
        """One configuration value (e.g. system.core user_mail_register_admin_created_notify). Tests restore it."""
        self.php(f"config_set('{name}', '{key}', json_decode('{json.dumps(value)}', TRUE)); echo 'JSON:{{}}' . PHP_EOL;")

    def reset(self) -> None:
        """Accounts made after start gone, user caches emptied, captured mails deleted, mail working again."""
        uid = self.baseline_uid
        statements = [f"DELETE FROM {table} WHERE {column} > {uid}" for table, column in _USER_TABLES]
        tables = set(self.sql("SHOW TABLES").split())
        statements += [f"TRUNCATE {table}" for table in _CACHE_TABLES if table in tables]
        statements.append("DELETE FROM flood")
        self.sql("; ".join(statements))
        self.clear_mails()
