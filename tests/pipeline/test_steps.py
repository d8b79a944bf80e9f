"""The steps' own small rules (the steps end to end: tests/dags)."""

from __future__ import annotations

import pytest

from pipeline.steps import batch_size_within


@pytest.mark.parametrize(("count", "batch_size", "max_batches", "size"), [
    (0, 200, 1024, 200), (2000, 200, 1024, 200), (204_800, 200, 1024, 200),  # within the limit: as set
    (204_801, 200, 1024, 201), (1_000_000, 200, 1024, 977), (7, 1, 2, 4), (5, 1, 0, 5)])
def test_batches_grow_just_enough_to_stay_within_airflows_mapped_task_limit(count, batch_size, max_batches, size):
    assert batch_size_within(count, batch_size, max_batches) == size
    assert -(-count // size) <= max(1, max_batches) or count == 0


# ----------------------------------------------------------------------------------- extract and plan in chunks

DEMO_SETTINGS = {"trigger_groups": ["new_members", "volunteers_smart"], "trigger_tags": ["needs_login"],
                 "history_group": "has_login", "history_tag": "login_created",
                 "username_pattern": "{first_name}.{last_name}", "roles": ["member"], "batch_size": 3}


@pytest.fixture
def demo(monkeypatch):
    """The demo seed's CiviCRM and WordPress, with the connections to them."""
    from sandbox.sites import started_sites

    with started_sites() as sites:
        for name, value in sites.connection_env.items():
            monkeypatch.setenv(name, value)
        yield sites


def _preflight(tmp_path, label: str):
    """A run of the demo settings through preflight: settings, CMS type, CiviCRM hook, run snapshot, run files."""
    from civicrm_hooks.hook import CiviCRMHook
    from cms_operators import registry
    from pipeline import steps
    from pipeline.run_files import RunFiles
    from provisioning.settings import Settings

    settings = Settings(**DEMO_SETTINGS, run_files_url=f"file://{tmp_path}/runs")
    kind = registry.get("wordpress")
    civicrm = CiviCRMHook(settings.civicrm_conn_id)
    run = steps.preflight(settings, civicrm, lambda: (kind, kind.backend(settings.cms_conn_id, settings)),
                          dry_run=False)
    return settings, kind, civicrm, run, RunFiles(settings, "cmsuser_nightly", label)


def _extract_and_plan(sites, tmp_path, size: int) -> dict:
    from civicrm_hooks import queries
    from pipeline import sources, steps

    settings, kind, civicrm, run, files = _preflight(tmp_path, f"chunks_of_{size}")
    backend = kind.backend(settings.cms_conn_id, settings)
    sites.cms.reset_calls()
    try:
        extracted = steps.extract(run, civicrm, backend, sources.trigger_membership(), files=files, chunk_size=size,
                                  marker=queries.run_marker("cmsuser_nightly", "x"))
    finally:
        backend.close()
    cms_calls = len(sites.cms.calls)
    planned = steps.plan(run, extracted, kind, dry_run=False, limit=None, files=files, chunk_rows=2)
    return {"contacts": files.read(extracted["contacts"]),
            "cms_users": sorted(files.read(extracted["cms_users"]), key=lambda u: u["uf_id"]),
            "links": sorted(files.read(extracted["links"]), key=lambda r: (r["contact_id"], r["uf_id"])),
            "not_triggered": extracted["not_triggered"], "plan": files.read(planned["plan"]),
            "batches": [{**{k: v for k, v in b.items() if k != "rows"}, "rows": files.read(b["rows"])}
                        for b in planned["batches"]], "counts": planned["counts"], "cms_calls": cms_calls}


def test_extract_in_chunks_gives_what_one_chunk_gives_and_the_same_plan(demo, tmp_path):
    whole = _extract_and_plan(demo, tmp_path, 5000)
    assert len(whole["contacts"]) > 3 and whole["cms_users"] and whole["links"]  # the demo has each kind
    for size in (1, 2):
        part = _extract_and_plan(demo, tmp_path, size)
        # one count and one listing for the run, not per chunk (and the one linked account looked up once)
        assert part.pop("cms_calls") == whole["cms_calls"] == 3
        assert part == {k: v for k, v in whole.items() if k != "cms_calls"}, size
    assert [row["contact_id"] for row in whole["plan"]] == sorted(row["contact_id"] for row in whole["plan"])
    # the counts the approval gate decides on are the plan's
    assert whole["counts"] == {action: sum(row["action"] == action for row in whole["plan"])
                               for action in ("create", "link")}
    assert whole["counts"]["create"] > 0
    batch = whole["batches"][0]
    assert (batch["first"], batch["last"]) == (batch["rows"][0]["contact_id"], batch["rows"][-1]["contact_id"])


def test_a_run_whose_settings_ask_for_an_approval_gate_its_dag_lacks_stops_before_anything(demo):
    from civicrm_hooks.hook import CiviCRMHook
    from cms_operators import registry
    from pipeline import steps
    from provisioning.settings import Settings

    kind = registry.get("wordpress")

    def preflight(settings, gated):
        return steps.preflight(settings, CiviCRMHook(settings.civicrm_conn_id),
                               lambda: (kind, kind.backend(settings.cms_conn_id, settings)), dry_run=True,
                               gated=gated)

    # the DAG was parsed without a threshold; the settings have one now (set since)
    gated_now = Settings(**DEMO_SETTINGS, approval_threshold=5)
    with pytest.raises(steps.RunStopped) as stopped:
        preflight(gated_now, gated=False)
    assert "approval_threshold is 5" in stopped.value.message
    assert "nothing was done for any contact" in stopped.value.message
    assert preflight(gated_now, gated=True)["settings"]["approval_threshold"] == 5
    # no threshold: a DAG with or without the gate runs (a gate parsed earlier answers `not_needed`)
    for gated in (False, True):
        assert preflight(Settings(**DEMO_SETTINGS), gated=gated)["settings"]["approval_threshold"] is None


# ----------------------------------------------------------------------------------- who records the outcomes

class _State(dict):
    set = dict.__setitem__


def _civicrm_state(civicrm) -> dict:
    """What a run leaves in CiviCRM, without the details' times: activities (status, subject) per contact,
    memberships, tags, links."""
    statuses = {int(r["value"]): r["name"] for r in civicrm.table("OptionValue") if r["option_group_id"] == 25}
    targets = {r["activity_id"]: r["contact_id"] for r in civicrm.table("ActivityContact") if r["record_type_id"] == 3}
    return {
        "activities": sorted((targets.get(a["id"]), statuses[a["status_id"]], a["subject"])
                             for a in civicrm.table("Activity")),
        "groups": sorted((r["contact_id"], r["group_id"], r["status"]) for r in civicrm.table("GroupContact")),
        "tags": sorted((r["entity_id"], r["tag_id"]) for r in civicrm.table("EntityTag")),
        "links": sorted((r["contact_id"], r["uf_id"]) for r in civicrm.table("UFMatch")),
    }


def _run_by_steps(sites, tmp_path, *, batches_record: bool) -> dict:
    """One run step by step on the demo sites (one try per batch); what CiviCRM holds after the batches and
    after finalize, and the CiviCRM calls finalize made."""
    from civicrm_hooks import queries
    from pipeline import sources, steps
    from pipeline.batch import create_batch
    from pipeline.finalize import finalize_run

    settings, kind, civicrm, run, files = _preflight(tmp_path, f"recorded_{batches_record}")
    marker, stamp = queries.run_marker("cmsuser_nightly", "steps"), "2026-03-01 02:00:00"
    backend = kind.backend(settings.cms_conn_id, settings)
    try:
        extracted = steps.extract(run, civicrm, backend, sources.trigger_membership(), files=files, marker=marker)
        planned = steps.plan(run, extracted, kind, dry_run=False, limit=None, files=files)
        results = []
        for batch in planned["batches"]:
            rows = files.read(batch["rows"])
            if batches_record:  # as the create task does
                results.append(steps.create(run, rows, civicrm, backend, marker=marker, stamp=stamp, final_try=True,
                                            state=_State()))
            else:  # a batch that leaves every record to finalize (as a result from before this change reads)
                ctx = steps.batch_context(settings, civicrm, backend, marker=marker, stamp=stamp, final_try=True,
                                          state=_State())
                results.append(create_batch(rows, ctx))
    finally:
        backend.close()
    after_batches = _civicrm_state(sites.civicrm)
    calls_before = len(sites.civicrm.calls)
    final, unfinished = finalize_run(civicrm, settings, steps.triggers_of(run), files.read(planned["plan"]),
                                     planned["batches"], results, marker=marker, stamp=stamp)
    civicrm.close()
    targets = {r["activity_id"]: r["contact_id"] for r in sites.civicrm.table("ActivityContact")
               if r["record_type_id"] == 3}
    return {"results": {r["contact_id"]: r for rows in results for r in rows}, "after_batches": after_batches,
            "activity_targets": targets,
            "final": dict(zip(final["contact_id"], final["outcome"], strict=True)), "unfinished": unfinished,
            "end": _civicrm_state(sites.civicrm), "finalize_calls": sites.civicrm.calls[calls_before:]}


def test_batches_record_the_attempts_they_complete_and_finalize_writes_only_the_rest(tmp_path, monkeypatch):
    from sandbox.sites import started_sites

    runs = {}
    for batches_record in (True, False):
        with started_sites() as sites:
            for name, value in sites.connection_env.items():
                monkeypatch.setenv(name, value)
            runs[batches_record] = _run_by_steps(sites, tmp_path, batches_record=batches_record)
    recording, leaving = runs[True], runs[False]

    # the same run either way: the same outcomes and, in the end, the same CiviCRM
    assert recording["final"] == leaving["final"] and recording["unfinished"] == leaving["unfinished"] == []
    assert recording["end"] == leaving["end"]

    # the batches recorded every account they made (a do-not-email contact too: its mail is decided, not due)
    recorded = {cid for cid, r in recording["results"].items() if r["recorded"]}
    created = {cid for cid, outcome in recording["final"].items() if outcome == "created"}
    assert recorded == created and len(recorded) >= 5
    assert not any(r["recorded"] for r in leaving["results"].values())
    # ... before finalize: their activity has its outcome, they are in history and off their triggers
    done = recording["after_batches"]
    for cid in recorded:
        [(status, subject)] = [(s, subj) for c, s, subj in done["activities"] if c == cid]
        assert status == "Completed" and subject.startswith(f"Created : {recording['results'][cid]['username']} (")
        assert (cid, 6, "Added") in done["groups"] and (cid, 4) in done["tags"]  # history group 6, tag 4
        assert (cid, 5, "Added") not in done["groups"] and (cid, 3) not in done["tags"]  # trigger group 5, tag 3
    assert done != recording["end"]  # finalize still had the others to record

    # ... and finalize wrote nothing for them (it did for the others)
    def named(call, targets=recording["activity_targets"]) -> set[int]:
        found = set()
        for record in call.params.get("records", []):
            found |= {record.get("contact_id"), record.get("entity_id"), *record.get("target_contact_id", [])}
            if call.entity == "Activity":
                found.add(targets.get(record.get("id")))
        for clause in call.params.get("where", []):
            if clause[0] in ("contact_id", "entity_id") and clause[1] == "IN":
                found |= set(clause[2])
        return found - {None}

    writes = [call for call in recording["finalize_calls"] if call.action != "get"]
    assert writes and not set().union(*map(named, writes)) & recorded
    assert set().union(*map(named, [c for c in leaving["finalize_calls"] if c.action != "get"])) >= recorded
