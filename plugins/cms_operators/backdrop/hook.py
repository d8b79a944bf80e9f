"""BeeHook: run the backend's named PHP operations (bee_ops.php) through `bee eval` on a Backdrop site.

Two runners, one protocol:

* over SSH (the connection has a host): built on Airflow's SSHHook (apache-airflow-providers-ssh),
  which reads the connection (host, port, login, password, extras `private_key`, `key_file`,
  `private_key_passphrase`, `host_key`). Unlike SSHHook, an unknown host key is REFUSED: the
  server's key must be pinned in extra `host_key` (as `ssh-keyscan` prints it) or be in the
  worker's ~/.ssh/known_hosts; `no_host_key_check` and `allow_host_key_change` are refused. One SSH
  session per hook, opened on the first call, reused for every call, closed by close().
* locally (no host): bee runs on the worker's own machine (a site on the same server; the sandbox's
  emulator is such a bee).

The command line is fixed: `<bee_path> --root=<site_root> [--site=<site>] eval '<bootstrap>'`; the
program and the call's JSON go on stdin (personal data never shows in `ps`). The answer is read
between markers (bee prints its own messages, in colour, and exits 0 on errors: its text is never
parsed) and the exit code is the program's own. Nothing a call sends or receives is logged: the
task log carries operations and counts only.
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from airflow.providers.ssh.hooks.ssh import SSHHook
from airflow.sdk import BaseHook

from cms_operators.backend import CmsAuthError, CmsConfigError, CmsError, CmsUnavailable

log = logging.getLogger(__name__)

PROGRAM_FILE = Path(__file__).with_name("bee_ops.php")
#: What the command line carries: read the call from stdin and run its program. No personal data.
BOOTSTRAP = ('$cmsuser_call = json_decode(stream_get_contents(STDIN), TRUE); '
             'if (!is_array($cmsuser_call) || empty($cmsuser_call["program"])) '
             '{ echo "\\n@@cmsuser:answer@@ {\\"error\\":\\"no_input\\"}\\n"; exit(2); } '
             'eval($cmsuser_call["program"]);')
ITEM_MARK = "@@cmsuser:item@@ "
ANSWER_MARK = "@@cmsuser:answer@@ "
DEFAULT_TIMEOUT = 120.0
CONNECT_TIMEOUT = 20


def program_text() -> str:
    """bee_ops.php without its `<?php` line: what `eval` runs."""
    text = PROGRAM_FILE.read_text()
    return text.split("\n", 1)[1] if text.startswith("<?php") else text


@dataclass
class BeeResult:
    """One bee call: its exit status (None: the process or the connection died), the marked answer
    (None: none arrived) and the item lines that did."""

    status: int | None
    answer: dict | None
    items: list[dict] = field(default_factory=list)
    stderr_tail: str = ""


def parse_output(stdout: str) -> tuple[dict | None, list[dict]]:
    """The answer and item lines of a call's output; everything else (bee's own text) is ignored."""
    answer, items = None, []
    for line in stdout.splitlines():
        for mark, is_answer in ((ANSWER_MARK, True), (ITEM_MARK, False)):
            at = line.find(mark)
            if at < 0:
                continue
            try:
                value = json.loads(line[at + len(mark):])
            except ValueError:
                continue
            if not isinstance(value, dict):
                continue
            if is_answer:
                answer = value
            else:
                items.append(value)
    return answer, items


class PinnedSSHHook(SSHHook):
    """Airflow's SSHHook with host keys checked: pinned (extra host_key) or known, never accepted blindly."""

    def __init__(self, ssh_conn_id: str, *, timeout: float, **kwargs):
        super().__init__(ssh_conn_id=ssh_conn_id, conn_retry_attempts=1, conn_timeout=CONNECT_TIMEOUT,
                         cmd_timeout=timeout, keepalive_interval=15, no_host_key_check=False, **kwargs)
        if self.allow_host_key_change:
            raise CmsConfigError(None, "host_key_change_allowed",
                                 f"connection '{ssh_conn_id}' sets allow_host_key_change: remove it; the Backdrop "
                                 "backend only talks to a server whose host key is pinned (extra host_key)")

    def __repr__(self) -> str:
        return f"PinnedSSHHook(conn_id={self.ssh_conn_id!r}, host={self.remote_host!r}, port={self.port!r})"

    def get_conn(self):
        import paramiko

        if self.client is not None:
            transport = self.client.get_transport()
            if transport is not None and transport.is_active():
                return self.client
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        if self.host_key is not None:
            name = self.remote_host if self.port == 22 else f"[{self.remote_host}]:{self.port}"
            client.get_host_keys().add(name, self.host_key.get_name(), self.host_key)
        else:
            client.load_system_host_keys()
        kwargs: dict[str, Any] = {"hostname": self.remote_host, "port": self.port, "username": self.username,
                                  "timeout": self.conn_timeout, "banner_timeout": self.banner_timeout,
                                  "auth_timeout": self.auth_timeout or self.conn_timeout,
                                  "look_for_keys": False, "allow_agent": False, "compress": False}
        if self.password:
            kwargs["password"] = self.password.strip()
        if self.pkey:
            kwargs["pkey"] = self.pkey
        if self.key_file:
            kwargs["key_filename"] = self.key_file
        client.connect(**kwargs)
        transport = client.get_transport()
        if transport is not None and self.keepalive_interval:
            transport.set_keepalive(self.keepalive_interval)
        self.client = client
        return client

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            finally:
                self.client = None


class BeeHook(BaseHook):
    """Runs bee on a Backdrop site (see the module doc). `call(operation, arguments)` -> the answer."""

    conn_name_attr = "cms_conn_id"
    default_conn_name = "cms_default"
    conn_type = "backdrop"
    hook_name = "Backdrop"

    #: Called with each item line as it arrives (tests drop the connection here); None: nothing.
    on_item: Callable[[BeeHook, dict], None] | None = None

    def __init__(self, cms_conn_id: str = default_conn_name, **kwargs):
        super().__init__(**kwargs)
        self.cms_conn_id = cms_conn_id
        self._ssh: PinnedSSHHook | None = None
        self.calls = 0            # bee calls made (for the log and the bench)
        self.sessions = 0         # SSH sessions opened

    def __repr__(self) -> str:
        return f"BeeHook(conn_id={self.cms_conn_id!r})"

    # ------------------------------------------------------------------ the connection

    @cached_property
    def connection(self):
        try:
            return self.get_connection(self.cms_conn_id)
        except Exception as exc:  # AirflowNotFoundException and friends
            raise CmsConfigError(None, "no_connection", f"Airflow connection '{self.cms_conn_id}' for the Backdrop "
                                                        f"site could not be read: {type(exc).__name__}") from None

    @cached_property
    def extra(self) -> dict:
        try:
            value = self.connection.extra_dejson
        except Exception:
            value = None
        value = value if isinstance(value, dict) else {}
        self._mask_secrets(value)
        return value

    def _mask_secrets(self, extra: dict) -> None:
        """The key, its passphrase and the password never reach a log, however they are printed."""
        from airflow.sdk.log import mask_secret

        for secret in (self.connection.password, extra.get("private_key"), extra.get("private_key_passphrase")):
            if isinstance(secret, str) and secret.strip():
                mask_secret(secret)
                for line in secret.splitlines():  # a PEM key printed line by line
                    if len(line.strip()) >= 8 and not line.startswith("-----"):
                        mask_secret(line.strip())

    @property
    def is_remote(self) -> bool:
        return bool((self.connection.host or "").strip())

    @property
    def where(self) -> str:
        """The site as messages name it: user@host:port:root (no secret), or local:root."""
        root = self.site_root or "?"
        if not self.is_remote:
            return f"local:{root}"
        port = self.connection.port or self.extra.get("port") or 22
        user = self.connection.login or "?"
        return f"{user}@{self.connection.host}:{port}:{root}"

    @property
    def site_root(self) -> str:
        return str(self.extra.get("site_root") or "").strip()

    @property
    def bee_path(self) -> str:
        return str(self.extra.get("bee_path") or "").strip() or "bee"

    @property
    def timeout(self) -> float:
        raw = self.extra.get("timeout")
        try:
            value = float(raw) if raw not in (None, "") else DEFAULT_TIMEOUT
        except (TypeError, ValueError):
            raise CmsConfigError(None, "bad_timeout", f"extra timeout of connection '{self.cms_conn_id}' must be a "
                                                      f"number of seconds, not {raw!r}") from None
        return max(1.0, value)

    def check(self) -> None:
        """Required fields, and no setting that would turn the host key check off."""
        if not self.site_root:
            raise CmsConfigError(None, "no_site_root", f"connection '{self.cms_conn_id}' has no extra site_root: set "
                                                       "it to the Backdrop folder on the site's server (bee --root)")
        for name in ("no_host_key_check", "ignore_hostkey_verification", "allow_host_key_change"):
            if self.is_remote and str(self.extra.get(name, "")).strip().lower() == "true":
                raise CmsConfigError(None, "host_key_check_off",
                                     f"connection '{self.cms_conn_id}' sets {name}: remove it and pin the server's "
                                     f"host key instead (extra host_key: {self.keyscan_hint()})")

    def keyscan_hint(self) -> str:
        host = self.connection.host or "<host>"
        port = int(self.connection.port or self.extra.get("port") or 22)
        option = f"-p {port} " if port != 22 else ""
        return (f"run `ssh-keyscan {option}-t ed25519 {host}` (check the key with the server's administrator) and "
                "copy the part after the host name, `ssh-ed25519 AAAA...`")

    def command(self) -> list[str]:
        args = [f"--root={self.site_root}"]
        site = str(self.extra.get("site") or "").strip()
        if site:
            args.append(f"--site={site}")
        base_url = str(self.extra.get("base_url") or "").strip()
        if base_url:  # PHP CLI knows no host: the mails' links need the site's address
            args.append(f"--base-url={base_url}")
        return [*args, "eval", BOOTSTRAP]

    # ------------------------------------------------------------------ SSH

    def _ssh_client(self):
        if self._ssh is None:
            try:
                port = None if self.connection.port else self.extra.get("port")  # a form without a port field
                self._ssh = PinnedSSHHook(self.cms_conn_id, timeout=self.timeout, port=int(port) if port else None)
            except CmsError:
                raise
            except Exception as exc:  # a bad private key, a bad host_key: never the key's text
                raise CmsConfigError(None, "bad_ssh_settings", f"connection '{self.cms_conn_id}': the SSH settings "
                                                               f"cannot be used ({type(exc).__name__}: "
                                                               f"{_safe(str(exc))})") from None
        import paramiko

        fresh = self._ssh.client is None or not (self._ssh.client.get_transport() and
                                                 self._ssh.client.get_transport().is_active())
        try:
            client = self._ssh.get_conn()
        except paramiko.BadHostKeyException:
            self.close()
            raise CmsConfigError(None, "host_key_mismatch",
                                 f"the SSH server {self.where} (connection '{self.cms_conn_id}') showed a host key "
                                 "that is not the pinned one: refused. If the server's key really changed, pin the "
                                 f"new one in extra host_key: {self.keyscan_hint()}") from None
        except paramiko.AuthenticationException:
            self.close()
            raise CmsAuthError(None, "ssh_auth", f"the SSH server {self.where} refused the key of connection "
                                                 f"'{self.cms_conn_id}': check the login and the private key, and "
                                                 "that the key's public half is in the user's authorized_keys") from None
        except paramiko.SSHException as exc:
            self.close()
            if "known_hosts" in str(exc) or "not found in" in str(exc):
                raise CmsConfigError(None, "unknown_host_key",
                                     f"the SSH server {self.where} (connection '{self.cms_conn_id}') has a host key "
                                     f"that is not pinned: refused. Pin it in extra host_key: {self.keyscan_hint()}"
                                     ) from None
            raise CmsUnavailable(None, "ssh_failed", f"SSH to {self.where} (connection '{self.cms_conn_id}') "
                                                     f"failed: {_safe(str(exc))}") from None
        except (OSError, EOFError) as exc:
            self.close()
            raise CmsUnavailable(None, "ssh_connect", f"cannot reach the SSH server {self.where} (connection "
                                                      f"'{self.cms_conn_id}'): {type(exc).__name__}: "
                                                      f"{_safe(str(exc))}") from None
        if fresh:
            self.sessions += 1
            log.info("Backdrop: SSH session %d opened to %s", self.sessions, self.where)
        return client

    def _run_ssh(self, stdin_data: bytes) -> BeeResult:
        client = self._ssh_client()
        line = " ".join([self.bee_path, *(shlex.quote(a) for a in self.command())])
        stdout, stderr, pending = b"", b"", b""
        items: list[dict] = []
        deadline = time.monotonic() + self.timeout
        try:
            channel = client.get_transport().open_session(timeout=CONNECT_TIMEOUT)
            channel.settimeout(0.5)
            channel.exec_command(line)
            channel.sendall(stdin_data)
            channel.shutdown_write()
            while True:
                while channel.recv_stderr_ready():
                    stderr = (stderr + channel.recv_stderr(65536))[-4000:]
                try:
                    chunk = channel.recv(65536)
                except TimeoutError:
                    transport = client.get_transport()
                    if transport is None or not transport.is_active():
                        break
                    if time.monotonic() > deadline:
                        channel.close()
                        raise CmsUnavailable(None, "timeout", f"bee on {self.where} gave no answer within "
                                                              f"{self.timeout:g} s (connection '{self.cms_conn_id}')") from None
                    continue
                if not chunk:
                    break  # end of output: bee exited, or the connection is gone
                stdout += chunk
                *lines, pending = (pending + chunk).split(b"\n")
                for raw in lines:
                    self._item_line(raw, items)
            channel.status_event.wait(10)
            status = channel.exit_status if channel.status_event.is_set() else -1
        except CmsError:
            raise
        except Exception as exc:  # paramiko's SSHException, a dropped transport, a reset socket
            if not _is_ssh_error(exc):
                raise
            self.close()
            answer, _ = parse_output(stdout.decode("utf-8", "replace"))
            return BeeResult(None, answer, items, _safe(str(exc)))
        if status < 0:
            self.close()  # the session died with the command: the next call opens a fresh one
        answer, all_items = parse_output(stdout.decode("utf-8", "replace"))
        return BeeResult(status if status >= 0 else None, answer, all_items or items,
                         stderr.decode("utf-8", "replace")[-500:])

    def _item_line(self, raw: bytes, items: list[dict]) -> None:
        _, found = parse_output(raw.decode("utf-8", "replace"))
        for item in found:
            items.append(item)
            if type(self).on_item is not None:
                type(self).on_item(self, item)

    def drop_connection(self) -> None:
        """Close the SSH transport under a running call (what a network failure does; for tests)."""
        if self._ssh is not None and self._ssh.client is not None:
            transport = self._ssh.client.get_transport()
            if transport is not None:
                transport.close()

    # ------------------------------------------------------------------ local

    def _run_local(self, stdin_data: bytes) -> BeeResult:
        argv = [*shlex.split(self.bee_path), *self.command()]
        try:
            done = subprocess.run(argv, input=stdin_data, capture_output=True, timeout=self.timeout, check=False)
        except FileNotFoundError:
            raise CmsConfigError(None, "no_bee", f"bee was not found at {self.bee_path!r} (connection "
                                                 f"'{self.cms_conn_id}'): set extra bee_path") from None
        except subprocess.TimeoutExpired as exc:
            answer, items = parse_output((exc.stdout or b"").decode("utf-8", "replace"))
            return BeeResult(None, answer, items, "timeout")
        stdout = done.stdout.decode("utf-8", "replace")
        answer, items = parse_output(stdout)
        for item in items:
            if type(self).on_item is not None:
                type(self).on_item(self, item)
        status = done.returncode if done.returncode >= 0 else None
        return BeeResult(status, answer, items, done.stderr.decode("utf-8", "replace")[-500:])

    # ------------------------------------------------------------------ calls

    def run(self, operation: str, arguments: dict | None = None) -> BeeResult:
        """One bee call, whatever it answered (see call() for the checked form)."""
        self.check()
        payload = json.dumps({"program": program_text(), "operation": operation, "arguments": arguments or {}},
                             ensure_ascii=False).encode("utf-8")
        self.calls += 1
        started = time.monotonic()
        result = self._run_ssh(payload) if self.is_remote else self._run_local(payload)
        log.info("Backdrop: bee %s on %s: exit %s, %d item(s), %.2f s", operation, self.where, result.status,
                 len(result.items), time.monotonic() - started)
        return result

    def call(self, operation: str, arguments: dict | None = None) -> dict:
        """The answer of one named operation; every failure as a CmsError naming the connection."""
        return self.checked(operation, self.run(operation, arguments))

    def checked(self, operation: str, result: BeeResult) -> dict:
        if result.status == 0 and result.answer is not None and "error" not in result.answer:
            return result.answer
        if result.status == 127:
            raise CmsConfigError(127, "no_bee", f"bee was not found at {self.bee_path!r} on {self.where} "
                                                f"(connection '{self.cms_conn_id}'): set extra bee_path")
        message = str((result.answer or {}).get("message") or "")
        if result.status == 2:
            raise CmsConfigError(2, str((result.answer or {}).get("error") or "refused"),
                                 f"bee on {self.where} refused operation {operation}: {message or 'no reason'} "
                                 f"(connection '{self.cms_conn_id}'; is bee_ops.php the one this backend ships?)")
        if result.status == 3:
            raise CmsUnavailable(3, "site_error", f"the Backdrop site {self.where} failed in {operation}: {message}")
        if result.status is None:
            raise CmsUnavailable(None, "connection_lost", f"the bee call {operation} on {self.where} ended without "
                                                          f"an answer (connection '{self.cms_conn_id}' lost or bee "
                                                          f"killed: {_safe(result.stderr_tail)[:200]})")
        # bee ran but our program never answered: the site did not bootstrap (wrong root, database down)
        raise CmsConfigError(result.status, "no_answer",
                             f"bee on {self.where} gave no answer to {operation} (exit {result.status}): check "
                             f"extra site_root (the Backdrop folder) and bee_path of connection "
                             f"'{self.cms_conn_id}', and that the site's database is up")

    def close(self) -> None:
        if self._ssh is not None:
            ssh, self._ssh = self._ssh, None
            try:
                ssh.close()
            except Exception:  # closing a dead transport
                pass
            log.info("Backdrop: SSH session to %s closed", self.where)

    def test_connection(self) -> tuple[bool, str]:
        try:
            facts = self.call("facts")["facts"]
        except CmsError as exc:
            return False, exc.message
        finally:
            self.close()
        return True, f"Backdrop {facts.get('version')} at {self.where}: bee answers"


def _is_ssh_error(exc: BaseException) -> bool:
    import paramiko

    return isinstance(exc, (OSError, EOFError, paramiko.SSHException))


def _safe(text: str) -> str:
    """Error text as it may be shown: one line, short (never a key: we never put one in)."""
    return " ".join(str(text).split())[:300]
