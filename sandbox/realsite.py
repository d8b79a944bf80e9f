"""What the real-system handles (sandbox/real_<system>) and their session fixtures share.

Each real system is a folder with start.sh (writes a JSON description of the running site: URL,
credentials, session folder) and stop.sh (`--purge` deletes the site); this module finds the
third-party archives, says why a site cannot start, and runs the two scripts. RealSite is the
base of the CMS handles (start/stop, mails, SQL, install.php steps); session_fixture() makes the
pytest fixture that starts one for a test session.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import importlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Self

REPO = Path(__file__).resolve().parents[1]


def thirdparty_dir() -> Path:
    """Where the archives are: $CMSUSER_THIRDPARTY, else ../shared/thirdparty beside the project."""
    configured = os.environ.get("CMSUSER_THIRDPARTY", "").strip()
    return Path(configured) if configured else REPO.parent / "shared" / "thirdparty"


def unavailable(archive: str, system: str, needs: str) -> str | None:
    """Why a real `system` cannot be started here (None: it can); `needs` says what root is needed for."""
    if not (thirdparty_dir() / archive).is_file():
        return (f"the {system} archive {archive} is not in {thirdparty_dir()} (set CMSUSER_THIRDPARTY to the "
                "folder holding the third-party archives)")
    if os.geteuid() != 0:
        return f"installing a real {system} needs root ({needs})"
    return None


def start(folder: Path, name: str, timeout: float) -> tuple[dict, Path, float]:
    """Run `folder`/start.sh; returns the site's description, the JSON file holding it, and seconds taken."""
    work = Path(tempfile.mkdtemp(prefix=f"cmsuser-real-{name}-"))
    json_path = work / f"{name}.json"
    started = time.monotonic()
    done = subprocess.run([str(folder / "start.sh"), "--json", str(json_path)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "CMSUSER_THIRDPARTY": str(thirdparty_dir())})
    if done.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        raise RuntimeError(f"sandbox/{folder.name}/start.sh failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(json_path.read_text()), json_path, time.monotonic() - started


def stop(folder: Path, state: dict, json_path: Path) -> None:
    """Run `folder`/stop.sh --purge, then remove what a last in-flight request wrote (e.g. a mail)."""
    subprocess.run([str(folder / "stop.sh"), "--purge", str(json_path)], capture_output=True, text=True,
                   timeout=120, check=False)
    shutil.rmtree(state["session_dir"], ignore_errors=True)
    shutil.rmtree(json_path.parent, ignore_errors=True)


@dataclass(repr=False)  # subclasses too: the state holds secrets, so no generated repr may show it
class RealSite:
    """One running real site, described by the JSON its start.sh writes (secrets included: never print it).

    A handle subclasses this with its folder and names and keeps only what is its own: the API it
    exposes, seeding, reset(). Every site is on MariaDB and captures PHP's mail() as .eml files; not
    every one has every part here (Backdrop is reached by SSH: no base_url or API user; Joomla's API
    user has a token, no password). Mail goes through sandbox/capture-mail.sh, shared by every site.
    """

    state: dict
    json_path: Path
    started_seconds: float = 0.0

    folder: ClassVar[Path]               # sandbox/real_<cms>: start.sh, stop.sh, install.php
    label: ClassVar[str]                 # the system in messages: "Drupal 7"
    product: ClassVar[str] = ""          # the start-up line's name if not the label ("Drupal" 7.101)
    start_timeout: ClassVar[float] = 900
    php_prefix: ClassVar[str] = ""       # install.php steps read <prefix>_HOST and <prefix>_RESULT
    mail_body_types: ClassVar[tuple[str, ...]] = ("plain",)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    @classmethod
    def start(cls, timeout: float | None = None) -> Self:
        name = cls.folder.name.removeprefix("real_")
        timeout = cls.start_timeout if timeout is None else timeout
        state, json_path, seconds = start(cls.folder, name, timeout)  # the module's start() above
        site = cls(state, json_path, started_seconds=seconds)
        site._started()
        return site

    def _started(self) -> None:
        """After start.sh: note the baseline reset() returns to."""

    def stop(self) -> None:
        stop(self.folder, self.state, self.json_path)  # the module's stop() above

    def up_line(self) -> str:
        """What the session fixture prints once the site is up."""
        product = self.product or self.label
        version = self.state.get(f"{product.lower()}_version")  # start.sh writes <product>_version
        return f"real {product} {version} up in {self.started_seconds:.1f}s {self._where()}"

    def _where(self) -> str:
        return f"at {self.base_url}"

    # --- what clients need --------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self.state["base_url"]

    @property
    def api_login(self) -> str:
        """The API user's login and (below) password, where it logs in with one (Drupal, Drupal 7)."""
        return self.state["api_user"]["login"]

    @property
    def api_password(self) -> str:
        return self.state["api_user"]["password"]

    # --- mails captured from PHP's mail() ------------------------------------------------------

    @property
    def mail_dir(self) -> Path:
        return Path(self.state["mail_dir"])

    def mails(self) -> list[dict]:
        """Every mail the site sent since the last reset, oldest first: to, subject, body, headers."""
        found = []
        for path in sorted(self.mail_dir.glob("*.eml")):
            raw = path.read_bytes()
            message = email.message_from_bytes(raw, policy=email.policy.default)
            part = message.get_body(preferencelist=self.mail_body_types) if message.is_multipart() else message
            found.append({"to": str(message.get("To", "")), "subject": str(message.get("Subject", "")),
                          "body": part.get_content() if part is not None else "",
                          **self._mail_fields(path, raw, message)})
        return found

    def _mail_fields(self, path: Path, raw: bytes, message: email.message.EmailMessage) -> dict:
        """A mail's fields besides to, subject and body."""
        return {"headers": {k: str(v) for k, v in message.items()}, "file": path.name}

    def set_mail_works(self, works: bool) -> None:
        """While the flag file exists, sandbox/capture-mail.sh fails and PHP's mail() returns false."""
        flag = self.mail_dir / "fail"
        if works:
            flag.unlink(missing_ok=True)
        else:
            flag.touch()

    def clear_mails(self) -> None:
        """Captured mails deleted, and the fail flag with them: mail works again."""
        for path in self.mail_dir.glob("*"):
            path.unlink(missing_ok=True)

    # --- state --------------------------------------------------------------------------------

    def sql(self, statement: str) -> str:
        db = self.state["db"]
        done = subprocess.run(["mysql", "--protocol=tcp", "-h", db["host"], "-P", str(db["port"]), "-u", "root",
                               "-N", "-B", db["name"], "-e", statement], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"mysql on {db['name']} failed: {done.stderr.strip()}")
        return done.stdout

    def _max_uid(self) -> int:
        return int(self.sql("SELECT MAX(uid) FROM users").strip() or 0)

    def _php(self, step: str, **env: str) -> dict:
        """Run one step of the handle's install.php in the site's web folder; the JSON it wrote."""
        result = Path(self.state["session_dir"]) / f"step-{step}.json"
        prefix = self.php_prefix
        done = subprocess.run(["php", "-d", "memory_limit=512M", str(self.folder / "install.php"), step],
                              capture_output=True, text=True, timeout=120, cwd=self.state["web_dir"],
                              env={**os.environ, f"{prefix}_HOST": f"{self.state['host']}:{self.state['port']}",
                                   f"{prefix}_RESULT": str(result), **self._php_env(), **env})
        if done.returncode != 0:
            raise RuntimeError(f"install.php {step} failed: {done.stderr[-2000:]}{done.stdout[-2000:]}")
        try:
            return json.loads(result.read_text())
        finally:
            result.unlink(missing_ok=True)

    def _php_env(self) -> dict[str, str]:
        """Environment every install.php step of this handle gets besides host and result file."""
        return {}


def session_fixture(module: str, handle: str):
    """The pytest session fixture named `module` for the real site sandbox.`module`.`handle`: skipped
    with the reason when it cannot start (a failure under CMSUSER_REQUIRE_REAL=1), started once,
    stopped and deleted at the end of the session."""
    import pytest  # here, not above: the handles that import this module serve bench/ too

    def fixture():
        real = importlib.import_module(f"sandbox.{module}")  # when a test asks for it, as before
        cls = getattr(real, handle)
        require = os.environ.get("CMSUSER_REQUIRE_REAL") == "1"
        problem = real.unavailable()
        if problem:
            if require:
                pytest.fail(f"real {cls.label} tier: {problem}; CMSUSER_REQUIRE_REAL=1 requires it")
            pytest.skip(f"real {cls.label} tier: {problem}")
        try:
            site = cls.start()
        except RuntimeError as exc:
            if require:
                pytest.fail(f"real {cls.label} tier did not start: {exc}")
            pytest.skip(f"real {cls.label} tier did not start: {exc}")
        print(f"\n{site.up_line()}", flush=True)
        try:
            yield site
        finally:
            site.stop()

    fixture.__name__ = fixture.__qualname__ = module
    fixture.__doc__ = f"The session's sandbox.{module}.{handle} (started once; stopped and deleted at the end)."
    return pytest.fixture(scope="session", name=module)(fixture)
