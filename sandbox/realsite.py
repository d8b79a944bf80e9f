"""What the real-system handles (sandbox/real_civicrm, real_drupal, real_joomla) share.

Each real system is a folder with start.sh (writes a JSON description of the running site: URL,
credentials, session folder) and stop.sh (`--purge` deletes the site); this module finds the
third-party archives, says why a site cannot start, and runs the two scripts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

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
