"""A run's per-contact files: owner-only, whole or absent, found by reference, and deleted on time."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest

from pipeline import run_files
from pipeline.run_files import RunFiles, RunFilesError
from provisioning.settings import Settings

RUN_ID = "scheduled__2026-12-04T02:00:00+00:00"


def settings(tmp_path: Path, **overrides) -> Settings:
    return Settings(trigger_groups=["new_members"], run_files_url=f"file://{tmp_path}/runs", **overrides)


def local(ref: dict) -> Path:
    return Path(ref["run_file"].removeprefix("file://"))


def test_a_value_goes_to_the_run_folder_and_only_a_reference_comes_back(tmp_path):
    rows = [{"contact_id": 7, "email": "member7@example.org", "n": 1.5}]
    ref = RunFiles(settings(tmp_path), "cmsuser_nightly", RUN_ID).write("plan", rows)
    assert ref["rows"] == 1 and set(ref) == {"run_file", "rows"}
    assert "member7" not in json.dumps(ref)  # what XCom stores names a file, not a member
    assert local(ref).parent.parent == tmp_path / "runs" / "cmsuser_nightly"
    assert run_files.read(ref) == rows
    assert run_files.is_ref(ref) and not run_files.is_ref(rows)


def test_files_and_folders_are_for_their_owner_only(tmp_path):
    ref = RunFiles(settings(tmp_path), "cmsuser_nightly", RUN_ID).write("batch_0", [{"contact_id": 1}])
    path = local(ref)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for folder in (path.parent, path.parent.parent, tmp_path / "runs"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".part")]  # written whole, then renamed


def test_run_ids_become_distinct_safe_folder_names():
    names = {run_files.folder_name(r) for r in (RUN_ID, RUN_ID.replace(":", "_"), "manual__x/../../etc", "..")}
    assert len(names) == 4
    assert all(Path(n).name == n and n not in (".", "..") and ":" not in n for n in names)


def test_the_default_place_is_under_airflow_home(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    assert run_files.root_url(Settings(trigger_groups=["g"])) == f"file://{tmp_path}/cmsuser_runs"


def test_a_deleted_file_is_named_with_what_to_do(tmp_path):
    files = RunFiles(settings(tmp_path), "cmsuser_nightly", RUN_ID)
    ref = files.write("plan", [])
    files.finished(0)
    assert not local(ref).parent.exists()
    with pytest.raises(RunFilesError, match="keep_run_files_hours"):
        files.read(ref)
    assert files.read(None) is None  # an upstream task that left nothing


def test_finished_runs_go_after_their_keep_time_and_unfinished_ones_after_a_week(tmp_path, monkeypatch):
    clock = [time.time()]
    monkeypatch.setattr(run_files.time, "time", lambda: clock[0])
    kept = RunFiles(settings(tmp_path, keep_run_files_hours=2), "cmsuser_nightly", "kept")
    unfinished = RunFiles(settings(tmp_path), "cmsuser_realtime", "unfinished")
    kept_ref, unfinished_ref = kept.write("outcomes", [1]), unfinished.write("batch_0", [2])
    kept.finished(2)
    assert kept.sweep() == 0 and local(kept_ref).exists()
    clock[0] += 2 * 3600 + 1
    assert kept.sweep() == 1  # any finalize sweeps every DAG's folders
    assert not local(kept_ref).exists() and local(unfinished_ref).exists()
    clock[0] += 7 * 24 * 3600
    assert kept.sweep() == 1 and not local(unfinished_ref).exists()


def test_a_folder_without_a_stamp_is_left_alone(tmp_path):
    stranger = tmp_path / "runs" / "cmsuser_nightly" / "not-ours"
    stranger.mkdir(parents=True)
    assert RunFiles(settings(tmp_path), "cmsuser_nightly", RUN_ID).sweep() == 0 and stranger.exists()


def test_a_task_whose_run_files_are_gone_fails_at_once_instead_of_retrying():
    from airflow.sdk import RetryAction

    from pipeline import tasks

    decision = tasks.RUN_LEVEL_POLICY.evaluate(RunFilesError("gone"), 1, 3)
    assert decision.action == RetryAction.FAIL and "files" in decision.reason
    assert tasks.RUN_LEVEL_POLICY.evaluate(ValueError("other"), 1, 3).action == RetryAction.DEFAULT


# ----------------------------------------------------------------------------------- tables

def test_a_table_is_json_lines_of_column_chunks_and_reads_back_as_rows(tmp_path):
    import numpy as np

    files = RunFiles(settings(tmp_path), "cmsuser_nightly", RUN_ID)
    rows = [{"contact_id": i, "journal": [{"usernames": ["a"], "at": None}] if i % 2 else [], "uf_id": None,
             "name": f"Zoë {i}", "n": 1.5} for i in range(7)]
    with files.table("plan", chunk_rows=3) as table:
        table.append(rows[:2])                             # rows as dicts, buffered into full chunks
        table.append({"contact_id": [np.int64(2), 3], "journal": [[], rows[3]["journal"]], "uf_id": [None, None],
                      "name": ["Zoë 2", "Zoë 3"], "n": [1.5, 1.5]})  # or as columns (numpy scalars made plain)
        table.append(rows[4:])
    ref = table.ref
    assert ref["rows"] == 7 and ref["table"] is True and set(ref) == {"run_file", "rows", "table"}
    lines = local(ref).read_bytes().splitlines()
    assert [len(json.loads(line)["contact_id"]) for line in lines] == [3, 3, 1]
    assert all(list(json.loads(line)) == ["contact_id", "journal", "uf_id", "name", "n"] for line in lines)
    assert run_files.read(ref) == rows == list(files.iter_rows(ref))  # nested values and None kept
    assert [len(c["contact_id"]) for c in files.iter_chunks(ref)] == [3, 3, 1]
    assert [len(c["contact_id"]) for c in files.iter_chunks(ref, 2)] == [2, 1, 2, 1, 1]  # re-cut, never merged
    assert files.read_columns(ref) == {name: [row[name] for row in rows] for name in rows[0]}
    assert files.read_columns(ref, ["uf_id", "absent"]) == {"uf_id": [None] * 7}


def test_a_table_is_owner_only_and_appears_whole_or_not_at_all(tmp_path):
    files = RunFiles(settings(tmp_path), "cmsuser_nightly", RUN_ID)
    with files.table("batch_0", chunk_rows=2) as table:
        table.append([{"contact_id": i} for i in range(5)])
        part = next(p for p in local_mkdir(tmp_path).iterdir() if p.name.endswith(".part"))  # being written
        assert stat.S_IMODE(part.stat().st_mode) == 0o600
        assert not (part.parent / "batch_0.jsonl").exists()
    path = local(table.ref)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".part")]

    with pytest.raises(ZeroDivisionError), files.table("outcomes") as failing:  # a task dying half way
        failing.append([{"contact_id": 1}])
        1 / 0  # noqa: B018
    assert sorted(p.name for p in path.parent.iterdir()) == ["batch_0.jsonl", "expires.json"]
    with pytest.raises(RuntimeError, match="once its `with` block"):
        failing.ref  # noqa: B018


def local_mkdir(tmp_path: Path) -> Path:
    """The one run folder under tmp_path/runs."""
    [folder] = (tmp_path / "runs" / "cmsuser_nightly").iterdir()
    return folder


def test_an_empty_table_and_a_missing_one(tmp_path):
    files = RunFiles(settings(tmp_path), "cmsuser_nightly", RUN_ID)
    with files.table("extract_links") as table:
        table.append([])
    assert table.ref["rows"] == 0 and files.read(table.ref) == [] and files.read_columns(table.ref) == {}
    files.finished(0)
    for reader in (files.read, files.read_columns, lambda ref: list(files.iter_rows(ref))):
        with pytest.raises(RunFilesError, match="keep_run_files_hours"):
            reader(table.ref)


def test_table_rows_must_keep_the_tables_columns(tmp_path):
    files = RunFiles(settings(tmp_path), "cmsuser_nightly", RUN_ID)
    with files.table("plan") as table:
        table.append([{"a": 1, "b": 2}])
        table.append([{"a": 3}])  # a missing column is None
        with pytest.raises(ValueError, match="not columns"):
            table.append({"c": [1]})
        with pytest.raises(ValueError, match="differ in length"):
            table.append({"a": [1, 2], "b": [1]})
    assert files.read(table.ref) == [{"a": 1, "b": 2}, {"a": 3, "b": None}]


def test_a_json_document_reads_as_one_chunk(tmp_path):
    files = RunFiles(settings(tmp_path), "cmsuser_nightly", RUN_ID)
    ref = files.write("plan", [{"contact_id": 1, "x": None}, {"contact_id": 2}])
    assert list(files.iter_chunks(ref)) == [{"contact_id": [1, 2], "x": [None, None]}]
