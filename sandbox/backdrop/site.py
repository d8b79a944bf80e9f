"""The emulated Backdrop site: its state in a folder, and the `bee` executable that serves it.

There is no server: the backend runs bee as a local command (a Backdrop connection without a host),
and the emulated bee (sandbox/backdrop/bee.py) reads and writes this folder's state.json under a file
lock. `BackdropEmulator` is the test's and the sandbox's handle on that folder: seed it, read
`users`, `mails` and `calls`, and `inject(...)` faults the next bee calls act on.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
STATE_DIR = ".cmsuser-emulator"
VERSION = "1.28.x-dev"
SITE_NAME = "cmsuser real Backdrop"  # what the real test site is called too (start.sh)
DEFAULT_ROLES = {"editor": "Editor", "administrator": "Administrator", "member": "Member", "volunteer": "Volunteer"}
DEFAULT_FIELDS = {"field_member_number": {"type": "text", "label": "Member number"}}


def fresh_state(site_name: str = SITE_NAME) -> dict:
    now = int(time.time())
    return {
        "site_name": site_name, "version": VERSION, "roles": dict(DEFAULT_ROLES), "admin_role": "administrator",
        "fields": json.loads(json.dumps(DEFAULT_FIELDS)), "languages": ["en", "fr"], "default_language": "en",
        "notify": True, "mail_works": True, "next_uid": 2,
        "users": [{"uid": 1, "name": "admin", "mail": "admin@example.test", "status": 1, "roles": ["administrator"],
                   "created": now, "language": "", "fields": {}}],
        "mails": [], "calls": [], "faults": [],
    }


class BackdropEmulator:
    """A Backdrop site that only our named bee operations can reach (see bee.py)."""

    def __init__(self, folder: str | Path | None = None, *, site_name: str = SITE_NAME, secret: str = ""):
        self._own = folder is None
        self.root = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="cmsuser-backdrop-emu-"))
        self.secret = secret  # the sandbox's CMS secret: nothing checks it locally (see sandbox_connection)
        self.url = ""
        (self.root / STATE_DIR).mkdir(parents=True, exist_ok=True)
        if not self.state_file.exists():
            self._write(fresh_state(site_name))
        self.bee_path = str(self._write_bee())

    def __repr__(self) -> str:
        return f"BackdropEmulator(root={str(self.root)!r})"

    # --- files -----------------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.root / STATE_DIR / "state.json"

    def _write_bee(self) -> Path:
        """A `bee` command for this site: the emulated bee with this repository on its path."""
        script = self.root / STATE_DIR / "bee"
        script.write_text("#!/bin/sh\n"
                          f"PYTHONPATH={shlex_quote(str(REPO))}${{PYTHONPATH:+:$PYTHONPATH}} "
                          f"exec {shlex_quote(sys.executable)} -m sandbox.backdrop.bee \"$@\"\n")
        script.chmod(0o755)
        return script

    @contextmanager
    def locked(self):
        """The state, read under an exclusive lock and written back on exit."""
        with open(self.root / STATE_DIR / "lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = json.loads(self.state_file.read_text())
                yield state
                self._write(state)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, state: dict) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.state_file)

    def read(self) -> dict:
        with self.locked() as state:
            return json.loads(json.dumps(state))

    # --- the sandbox's site interface -----------------------------------------------------------------

    def seed(self, data: dict | None) -> None:
        """The seed's `backdrop:` section: users (name, mail, roles, status, language, fields), roles,
        admin_role, fields (name -> type), languages."""
        data = data or {}
        with self.locked() as state:
            if "roles" in data:
                roles = data["roles"]
                state["roles"] = dict(roles) if isinstance(roles, dict) else {r: r.title() for r in roles}
            if "admin_role" in data:
                state["admin_role"] = str(data["admin_role"] or "")
            if "fields" in data:
                state["fields"] = {k: {"type": str(v), "label": k} for k, v in dict(data["fields"]).items()}
            if "languages" in data:
                state["languages"] = sorted(str(code) for code in data["languages"])
            for user in data.get("users") or []:
                uid = int(user.get("uid") or state["next_uid"])
                state["users"].append({"uid": uid, "name": user["name"], "mail": user.get("mail", ""),
                                       "status": int(user.get("status", 1)), "roles": sorted(user.get("roles") or []),
                                       "created": int(user.get("created") or time.time()),
                                       "language": user.get("language", ""), "fields": dict(user.get("fields") or {})})
                state["next_uid"] = max(state["next_uid"], uid + 1)

    def start(self, host: str = "127.0.0.1") -> BackdropEmulator:
        """Nothing listens: bee is a command. `url` names the site folder for messages."""
        self.url = f"file://{self.root}"
        return self

    def stop(self) -> None:
        if self._own:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> BackdropEmulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- what tests read and change -----------------------------------------------------------------------

    @property
    def users(self) -> list[dict]:
        return self.read()["users"]

    @property
    def mails(self) -> list[dict]:
        return self.read()["mails"]

    @property
    def calls(self) -> list[dict]:
        return self.read()["calls"]

    def user(self, name: str) -> dict | None:
        return next((u for u in self.users if u["name"] == name), None)

    def set(self, **values: Any) -> None:
        """Site settings: notify (the admin-created mail on/off), mail_works, admin_role, languages."""
        with self.locked() as state:
            state.update(values)

    def inject(self, operation: str | None = None, *, kill_after_items: int | None = None, delay: float = 0.0,
               exit_code: int | None = None, no_answer: bool = False, times: int = 1) -> None:
        """A fault for the next `times` bee calls of `operation` (None: any): the process killed after N
        item lines (a connection drop or a crash mid-call), a delay before answering (a slow site),
        bee's exit code with no answer (a site that does not bootstrap: exit 0 and only bee's text)."""
        with self.locked() as state:
            state["faults"].append({"operation": operation, "kill_after_items": kill_after_items, "delay": delay,
                                    "exit_code": exit_code, "no_answer": no_answer, "times": times})

    @property
    def pending_faults(self) -> int:
        return sum(f["times"] for f in self.read()["faults"])

    def connection(self, conn_type: str = "backdrop", **extra) -> str:
        """AIRFLOW_CONN_CMS_DEFAULT: bee as a local command (no host)."""
        fields = sandbox_fields(self)
        fields["extra"].update(extra)
        return json.dumps({"conn_type": conn_type, **fields})


def sandbox_fields(site: BackdropEmulator) -> dict:
    return {"host": "", "login": "", "password": site.secret,
            "extra": {"site_root": str(site.root), "bee_path": site.bee_path,
                      "base_url": "https://backdrop.example.test"}}


def shlex_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)
