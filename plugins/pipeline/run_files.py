"""A run's per-contact data, kept in files between its tasks; XComs carry only references to them.

The contacts read, the plan, each batch's rows and results, the resets and the outcomes hold members'
names and emails, and grow with the run: in XCom they would sit in Airflow's database (and in its UI)
for ever and be loaded whole by every reader. Here each value is one JSON file in the run's own folder
under `run_files_url` (Airflow's ObjectStoragePath: the local disk, or a store every worker sees such
as S3). A reference is {"run_file": <url>, "rows": <count>}, safe to show and to log.

Values that grow with the run (the contacts read, the plan, the batches, the outcomes) are tables:
JSON Lines, each line one chunk of up to TABLE_CHUNK_ROWS rows as an object of column lists (every
line the same keys). A task appends to a table as it goes and a reader walks it chunk by chunk, so
neither holds more than a chunk of rows at once; `read_columns` gives whole columns for pandas. Their
references say {"table": true}; `read` of one still gives the list of row dicts (tests, harnesses).

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
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec
from airflow.sdk import ObjectStoragePath

from provisioning.settings import Settings

log = logging.getLogger(__name__)

UNFINISHED_KEEP_SECONDS = 7 * 24 * 3600
EXPIRES = "expires.json"
LOCAL = ("file", "local", "")
TABLE_CHUNK_ROWS = 10_000


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


def _plain(item):  # numpy and pandas scalars that slipped through a frame
    if hasattr(item, "item"):
        return item.item()
    raise TypeError(f"{type(item).__name__} is not JSON-serialisable")


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=_plain).encode()


# msgspec (installed with Airflow): a table chunk encodes ten times faster than with json, and decodes faster
_chunk_encoder = msgspec.json.Encoder(enc_hook=_plain)
_chunk_decoder = msgspec.json.Decoder()


class RunFiles:
    """The files of one run of one DAG."""

    def __init__(self, settings: Settings, dag_id: str, run_id: str) -> None:
        self.conn_id = settings.run_files_conn_id
        self.root = _storage_path(root_url(settings), self.conn_id)
        self.folder = self.root / dag_id / folder_name(run_id)

    # --- writing and reading ----------------------------------------------------------------

    def write(self, name: str, value: Any) -> dict:
        """Store `value` (JSON-safe) as this run's `name`; returns its reference."""
        self._stamp_unfinished()
        target = self.folder / f"{name}.json"
        self._write_bytes(target, _encode(value))
        return {"run_file": str(target), "rows": len(value) if isinstance(value, (list, dict)) else None}

    def table(self, name: str, *, chunk_rows: int = TABLE_CHUNK_ROWS) -> Table:
        """A table to append rows to, as this run's `name`: `with files.table("plan") as table: table.append(rows)`;
        `table.ref` is its reference once the block ends (the file appears whole, or not at all)."""
        self._stamp_unfinished()
        return Table(self.folder / f"{name}.jsonl", chunk_rows)

    def _stamp_unfinished(self) -> None:
        stamp = self.folder / EXPIRES
        if not stamp.exists():  # the first file of the run: it is unfinished until finalize says otherwise
            self._write_bytes(stamp, _encode({"at": time.time() + UNFINISHED_KEEP_SECONDS}))

    def iter_chunks(self, ref: dict, rows: int | None = None) -> Iterator[dict[str, list]]:
        return iter_chunks(ref, rows, conn_id=self.conn_id)

    def iter_rows(self, ref: dict) -> Iterator[dict]:
        return iter_rows(ref, conn_id=self.conn_id)

    def read_columns(self, ref: dict, columns: list[str] | None = None) -> dict[str, list]:
        return read_columns(ref, columns, conn_id=self.conn_id)

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


class Table:
    """A table being written: rows are buffered and written a chunk (one JSON line) at a time to a part
    file, renamed into place when the `with` block ends without an error (removed when it does not)."""

    def __init__(self, target: ObjectStoragePath, chunk_rows: int = TABLE_CHUNK_ROWS) -> None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
        self.target, self.chunk_rows = target, chunk_rows
        self.rows = 0
        self.columns: list[str] | None = None
        self._buffer: dict[str, list] = {}
        self._buffered = 0
        self._handle = self._part = None
        self._ref: dict | None = None

    def __enter__(self) -> Table:
        if _is_local(self.target):
            local = Path(self.target.path)
            _owner_only_dirs(local.parent)
            self._part = local.with_name(f".{local.name}.{os.getpid()}.part")
            fd = os.open(self._part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)  # a part file left by a killed writer of the same pid keeps its old mode otherwise
            self._handle = os.fdopen(fd, "wb")
        else:  # an object store writes the object when the stream closes: whole, or not at all
            self.target.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.target.open("wb")
        return self

    def append(self, rows: list[Mapping] | Mapping[str, list]) -> None:
        """Add rows: a list of dicts, or a dict of equally long column lists. Every row has the table's
        columns (those of its first rows); a row without one of them has None there."""
        if isinstance(rows, Mapping):
            columns = {str(name): list(values) for name, values in rows.items()}
            count = len(next(iter(columns.values()))) if columns else 0
            if any(len(values) != count for values in columns.values()):
                raise ValueError("the columns given to Table.append differ in length")
        else:
            count = len(rows)
            names = self.columns if self.columns is not None else list(dict.fromkeys(k for r in rows for k in r))
            columns = {name: [row.get(name) for row in rows] for name in names}
        if not count:
            return
        if self.columns is None:
            self.columns = list(columns)
            self._buffer = {name: [] for name in self.columns}
        extra = set(columns) - set(self.columns)
        if extra:
            raise ValueError(f"{sorted(extra)} are not columns of the table {self.target.name} ({self.columns})")
        for name in self.columns:
            self._buffer[name].extend(columns[name] if name in columns else [None] * count)
        self._buffered += count
        self.rows += count
        while self._buffered >= self.chunk_rows:
            self._flush(self.chunk_rows)

    def _flush(self, count: int) -> None:
        chunk = {name: values[:count] for name, values in self._buffer.items()}
        self._buffer = {name: values[count:] for name, values in self._buffer.items()}
        self._buffered -= count
        self._handle.write(_chunk_encoder.encode(chunk) + b"\n")

    def __exit__(self, kind, error, trace) -> None:
        try:
            if kind is None and self._buffered:
                self._flush(self._buffered)
        finally:
            self._handle.close()
        if self._part is not None:
            if kind is None:
                os.replace(self._part, Path(self.target.path))
            else:
                self._part.unlink(missing_ok=True)
        elif kind is not None:  # a store may have kept what the stream had when it closed: not a whole table
            try:
                self.target.unlink()
            except (OSError, ValueError):
                log.warning("could not remove the unfinished table %s", self.target)
        if kind is None:
            self._ref = {"run_file": str(self.target), "rows": self.rows, "table": True}

    @property
    def ref(self) -> dict:
        """The table's reference, once it is written."""
        if self._ref is None:
            raise RuntimeError("a table has a reference once its `with` block has ended")
        return self._ref


def _gone(ref: dict) -> RunFilesError:
    return RunFilesError(
        f"the run file {ref['run_file']} is gone: a finished run's files are deleted after keep_run_files_hours "
        "(0: when its finalize ends). Start a new run, or clear this run from its extract task to remake them.")


def is_table(ref: dict | None) -> bool:
    return bool(ref) and bool(ref.get("table"))


def read(ref: dict, *, conn_id: str | None = None) -> Any:
    """The value behind a reference (also for harnesses and tests reading a run's XComs); a table's rows as a
    list of dicts."""
    if is_table(ref):
        return list(iter_rows(ref, conn_id=conn_id))
    try:
        return json.loads(_storage_path(ref["run_file"], conn_id).read_bytes())
    except FileNotFoundError as exc:
        raise _gone(ref) from exc


def iter_chunks(ref: dict, rows: int | None = None, *, conn_id: str | None = None) -> Iterator[dict[str, list]]:
    """A table's chunks in order, each a dict of column lists (a plain JSON list value: one chunk of its rows);
    with `rows`, chunks of at most that many rows (the stored ones cut)."""
    if rows is not None:
        if rows < 1:
            raise ValueError(f"rows must be at least 1, got {rows}")
        for chunk in iter_chunks(ref, conn_id=conn_id):
            count = len(next(iter(chunk.values()))) if chunk else 0
            if count <= rows:
                yield chunk
                continue
            for start in range(0, count, rows):
                yield {name: values[start:start + rows] for name, values in chunk.items()}
        return
    if not is_table(ref):  # a JSON document of row dicts: one chunk
        rows = read(ref, conn_id=conn_id) or []
        names = list(dict.fromkeys(k for row in rows for k in row))
        if rows:
            yield {name: [row.get(name) for row in rows] for name in names}
        return
    path = _storage_path(ref["run_file"], conn_id)
    try:
        handle = open(path.path, "rb") if _is_local(path) else path.open("rb")  # noqa: SIM115
    except FileNotFoundError as exc:
        raise _gone(ref) from exc
    with handle:
        for line in handle:
            if line.strip():
                yield _chunk_decoder.decode(line)


def iter_rows(ref: dict, *, conn_id: str | None = None) -> Iterator[dict]:
    """A table's rows, one dict at a time."""
    for chunk in iter_chunks(ref, conn_id=conn_id):
        names = list(chunk)
        for values in zip(*chunk.values(), strict=True):
            yield dict(zip(names, values, strict=True))


def read_columns(ref: dict, columns: list[str] | None = None, *, conn_id: str | None = None) -> dict[str, list]:
    """A table as whole columns (its chunks' lists joined), e.g. for pd.DataFrame; only `columns` if given
    (those it lacks are left out). An empty table gives {}."""
    joined: dict[str, list] = {}
    for chunk in iter_chunks(ref, conn_id=conn_id):
        for name, values in chunk.items():
            if columns is None or name in columns:
                joined.setdefault(name, []).extend(values)
    return joined


def _storage_path(url: str, conn_id: str | None) -> ObjectStoragePath:
    return ObjectStoragePath(url, conn_id=conn_id) if conn_id else ObjectStoragePath(url)


def is_ref(value: Any) -> bool:
    return isinstance(value, dict) and "run_file" in value


def _delete(folder: ObjectStoragePath) -> None:
    if _is_local(folder):
        shutil.rmtree(folder.path, ignore_errors=True)
    elif folder.exists():
        folder.rmdir(recursive=True)
