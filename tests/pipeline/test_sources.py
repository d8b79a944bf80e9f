"""Contact sources: what a near-real-time run is told (the watcher's merged events, conf ids)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pipeline import sources
from pipeline.tasks import told_in


def event(spans):
    return SimpleNamespace(extra={"from_trigger": True, "payload": {"spans": spans, "joins": 1}})


def test_a_run_reads_every_merged_event_and_the_conf_ids():
    context = {"triggering_asset_events": {"civicrm_trigger_joins": [
        event({"history": [[10, 12]]}), event({"history": [[15, 15]], "tags": [[4, 6]]})]},
        "params": {"contact_ids": [7, 3, 7]}}
    assert told_in(context, sources.requested()) == {
        "kind": "requested", "contact_ids": [3, 7], "spans": {"history": [[10, 12], [15, 15]], "tags": [[4, 6]]}}


def test_a_run_started_by_hand_or_over_rest_has_no_events():
    assert told_in({"triggering_asset_events": {}, "params": {"contact_ids": []}}, sources.requested()) == {
        "kind": "requested", "contact_ids": [], "spans": {}}
    assert told_in({"params": {}}, sources.requested())["contact_ids"] == []


def test_an_unknown_source_names_the_known_ones():
    with pytest.raises(ValueError, match="trigger_membership, requested"):
        sources.members({"kind": "recent"}, None, None, 1)
