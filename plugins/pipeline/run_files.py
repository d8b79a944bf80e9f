"""A run's per-contact data, kept in files between its tasks; XComs carry only references to them.

The contacts read, the plan, each batch's rows and results, the resets and the outcomes hold members'
names and emails, and grow with the run: in XCom they would sit in Airflow's database (and in its UI)
for ever and be loaded whole by every reader. Here each value is one JSON file in the run's own folder
under `run_files_url` (Airflow's ObjectStoragePath: the local disk, or a store every worker sees such
as S3). A reference is {"run_file": <url>, "rows": <count>}, safe to show and to log.

Local folders are created owner-only (0700) and files 0600, written whole then renamed into place, so
a killed task never leaves half a file. Each run folder holds an `expires` stamp: 7 days while the run
is unfinished (its retries and clears need the files), `keep_run_files_hours` once finalize is done;
every finalize deletes the folders whose stamp has passed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from airflow.sdk import ObjectStoragePath

from provisioning.settings import Settings

log = logging.getLogger(__name__)

UNFINISHED_KEEP_SECONDS = 7 * 24 * 3600
EXPIRES = "expires.json"
LOCAL = ("file", "local", "")


class RunFilesError(Exception):
    """A run file is missing or unreadable; the message says which and what to do."""


def root_url(settings: Settings) -> str:
    """`run_files_url`, or the local default under $AIRFLOW_HOME (Airflow's own default home when unset)."""
    if settings.run_files_url:
        return settings.run_files_url.rstrip("/")
    home = os.environ.get("AIRFLOW_HOME") or str(Path("~/airflow").expanduser())
    return f"file://{Path(home).resolve()}/cmsuser_runs"


def folder_name(run_id: str) -> str:
    """A run id as one safe path segment (run ids may hold ':' and '+'); the hash keeps it unique."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id)[:80]
    return f"{readable}-{hashlib.sha256(run_id.encode()).hexdigest()[:10]}"


def _is_local(path: ObjectStoragePath) -> bool:
    return path.protocol in LOCAL


def _owner_only_dirs(path: Path) -> None:
    """Create `path` and its missing parents readable by the owner only."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
        os.chmod(folder, 0o700)  # mkdir's mode is cut by the umask; this is exact


def _encode(value: Any) -> bytes:
    def plain(item):  # numpy and pandas scalars that slipped through a frame
        if hasattr(item, "item"):
            return item.item()
        raise TypeError(f"{type(item).__name__} is not JSON-serialisable")
    return json.dumps(value, separators=(",", ":"), default=plain).encode()


class RunFiles:
    """The files of one run of one DAG."""

    def __init__(self, settings: Settings, dag_id: str, run_id: str) -> None:
        self.conn_id = settings.run_files_conn_id
        self.root = _storage_path(root_url(settings), self.conn_id)
        self.folder = self.root / dag_id / folder_name(run_id)

    # --- writing and reading ----------------------------------------------------------------

    def write(self, name: str, value: Any) -> dict:
        """Store `value` (JSON-safe) as this run's `name`; returns its reference."""
        stamp = self.folder / EXPIRES
        if not stamp.exists():  # the first file of the run: it is unfinished until finalize says otherwise
            self._write_bytes(stamp, _encode({"at": time.time() + UNFINISHED_KEEP_SECONDS}))
        target = self.folder / f"{name}.json"
        self._write_bytes(target, _encode(value))
        return {"run_file": str(target), "rows": len(value) if isinstance(value, (list, dict)) else None}

    @staticmethod
    def _write_bytes(target: ObjectStoragePath, data: bytes) -> None:
        if _is_local(target):
            local = Path(target.path)
            _owner_only_dirs(local.parent)
            part = local.with_name(f".{local.name}.{os.getpid()}.part")
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(part, local)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as handle:
                handle.write(data)

    def read(self, ref: dict | None) -> Any:
        """The value a reference points at; None for no reference (an upstream task that left nothing)."""
        if ref is None:
            return None
        return read(ref, conn_id=self.conn_id)

    # --- keeping and deleting ---------------------------------------------------------------

    def finished(self, keep_hours: float) -> None:
        """The run is done: delete its files now (keep 0) or stamp them to go after `keep_hours`."""
        if not keep_hours:
            _delete(self.folder)
            log.info("deleted this run's files (keep_run_files_hours is 0)")
            return
        self._write_bytes(self.folder / EXPIRES, _encode({"at": time.time() + keep_hours * 3600}))
        log.info("this run's files stay %g hours (keep_run_files_hours) in %s", keep_hours, self.folder)

    def sweep(self) -> int:
        """Delete every run folder (of any DAG) whose expiry stamp has passed; returns how many."""
        now, deleted = time.time(), 0
        if not self.root.exists():
            return 0
        for dag_folder in self.root.iterdir():
            if not dag_folder.is_dir():
                continue
            for folder in dag_folder.iterdir():
                stamp = folder / EXPIRES
                try:
                    expires = json.loads(stamp.read_bytes())["at"]
                except (OSError, ValueError, KeyError, TypeError):
                    continue  # a folder being written, or not ours: left alone
                if expires < now:
                    _delete(folder)
                    deleted += 1
        if deleted:
            log.info("deleted the files of %d earlier run(s) whose keep time had passed", deleted)
        return deleted


def read(ref: dict, *, conn_id: str | None = None) -> Any:
    """The value behind a reference (also for harnesses and tests reading a run's XComs)."""
    try:
        return json.loads(_storage_path(ref["run_file"], conn_id).read_bytes())
    except FileNotFoundError as exc:
        raise RunFilesError(
            f"the run file {ref['run_file']} is gone: a finished run's files are deleted after keep_run_files_hours "
            "(0: when its finalize ends). Start a new run, or clear this run from its extract task to remake them."
        ) from exc


def _storage_path(url: str, conn_id: str | None) -> ObjectStoragePath:
    return ObjectStoragePath(url, conn_id=conn_id) if conn_id else ObjectStoragePath(url)


def is_ref(value: Any) -> bool:
    return isinstance(value, dict) and "run_file" in value


def _delete(folder: ObjectStoragePath) -> None:
    if _is_local(folder):
        shutil.rmtree(folder.path, ignore_errors=True)
    elif folder.exists():
        folder.rmdir(recursive=True)
