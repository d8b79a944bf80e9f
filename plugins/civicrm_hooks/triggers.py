"""The near-real-time DAG's watcher: an event trigger that asks CiviCRM who joined a trigger.

Runs in Airflow's triggerer (an AssetWatcher of the `cmsuser_realtime` DAG's asset) while that DAG is
active and unpaused. Every `poll_interval` seconds it reads the SubscriptionHistory and EntityTag rows
newer than its cursor, in one multi-call request (two primary-key range reads that find nothing while
nothing happens), and fires an event when any is a join to a watched static group (a re-add after a
removal writes a new row too) or a watched tag given to a contact. The event carries only the id spans
of those rows; the run reads the contacts from them. The cursor is kept in the asset's state store one
poll after its event (a restart in between repeats the event, which finds those contacts done), so a
restarted triggerer carries on where it stopped; the first start begins at the newest rows (what
happened before is the nightly run's). Smart groups have no history rows and are not watched.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from civicrm_hooks import queries
from civicrm_hooks.hook import CiviCRMAuthError, CiviCRMHook

CURSOR_KEY = "cursor"


class TriggerJoinsWatcher(BaseEventTrigger):
    """Fires when contacts join the watched groups or get the watched tags (setting entries: ids, names, titles)."""

    def __init__(self, *, civicrm_conn_id: str, groups: list, tags: list, poll_interval: float = 5.0,
                 max_consecutive_failures: int = 20) -> None:
        super().__init__()
        self.civicrm_conn_id = civicrm_conn_id
        self.groups = list(groups)
        self.tags = list(tags)
        self.poll_interval = float(poll_interval)
        self.max_consecutive_failures = int(max_consecutive_failures)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"civicrm_conn_id": self.civicrm_conn_id, "groups": self.groups, "tags": self.tags,
                 "poll_interval": self.poll_interval, "max_consecutive_failures": self.max_consecutive_failures})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook: CiviCRMHook | None = None
        watched: queries.Watched | None = None
        cursor = await self._load_cursor()
        failures = 0
        unsaved = False
        while True:
            if unsaved:  # a poll after the event: the triggerer has stored it by now, so a restart never loses it
                await self._save_cursor(cursor)
                unsaved = False
            try:
                if hook is None:  # also after a failure: the connection may have been corrected
                    hook = CiviCRMHook(self.civicrm_conn_id)
                if watched is None:  # names resolved where the calls are made, never at DAG-parse time
                    watched = await asyncio.to_thread(queries.resolve_watched, hook, self.groups, self.tags)
                    self.log.info("watching static groups %s and tags %s for joins every %g s",
                                  sorted(watched.groups), sorted(watched.tags), self.poll_interval)
                if cursor is None:
                    cursor = await asyncio.to_thread(queries.change_cursor, hook)
                    self.log.info("watching from SubscriptionHistory id %d, EntityTag id %d", cursor["history"],
                                  cursor["tags"])
                    await self._save_cursor(cursor)
                found, moved = await asyncio.to_thread(queries.changes_since, hook, cursor, watched)
            except Exception as exc:  # noqa: BLE001 - a watcher outlives a CiviCRM outage or a fixed setting
                failures += 1
                hook, watched = None, None
                if failures >= self.max_consecutive_failures:
                    raise  # the triggerer logs it and starts the watcher again
                self.log.warning("CiviCRM poll failed (%d of %d in a row allowed%s): %s", failures,
                                 self.max_consecutive_failures,
                                 "; check the connection and the group and tag settings"
                                 if isinstance(exc, (CiviCRMAuthError, queries.TriggerError)) else "", exc)
            else:
                failures = 0
                if moved != cursor:
                    joins = sum(len(ids) for ids in found.values())
                    if joins:
                        spans = {name: [[min(ids), max(ids)]] for name, ids in found.items() if ids}
                        self.log.info("%d joins to watched groups and tags (row ids %s)", joins, spans)
                        yield TriggerEvent({"spans": spans, "joins": joins})
                    cursor, unsaved = moved, True
            await asyncio.sleep(self.poll_interval)

    # --- the cursor, kept in the watched asset's state store (absent outside a triggerer) ---------

    async def _load_cursor(self) -> dict[str, int] | None:
        if self.asset_state_store is None:
            return None
        stored = await self.asset_state_store.aget(CURSOR_KEY)
        return {name: int(stored[name]) for name in queries.WATCHED} if isinstance(stored, dict) else None

    async def _save_cursor(self, cursor: dict[str, int]) -> None:
        if self.asset_state_store is not None:
            await self.asset_state_store.aset(CURSOR_KEY, dict(cursor))
