"""Near-real-time: a contact who joins a static trigger group or gets a trigger tag has its account within a minute.

Event-driven: the asset `civicrm://trigger-joins` has a watcher (civicrm_hooks/triggers.py) that asks
CiviCRM every `watch_interval_seconds` for new joins to the static trigger and reset groups and new
trigger and reset tags, while this DAG is unpaused; each event starts a run (events that come before the
scheduler looks are merged into one). Sites that push start runs through the REST API instead, with
`conf = {"contact_ids": [...]}` (README, "Near-real-time"). Either way the run handles only the contacts it
was told about that are in a trigger, and only first attempts: a contact tried since its last give-up is
left to the nightly run (`left_to_nightly`), an id in no trigger is `not_triggered`. Smart groups are not
watched (their cache may be minutes old): the nightly run takes them. The same tasks as the nightly DAG,
with the same approval gate and creation lock; password resets are sent here too.

Schedule, params and the watcher only (the wiring is tasks.provisioning_run); the settings file is read here for the watcher, the timeouts and the
retry delay; nothing is called at parse time.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Asset, AssetWatcher, Param

from civicrm_hooks.triggers import TriggerJoinsWatcher
from pipeline import sources, tasks
from provisioning.settings import load_settings

settings = load_settings()

trigger_joins = Asset(name="civicrm_trigger_joins", uri="civicrm://trigger-joins", watchers=[AssetWatcher(
    name="civicrm_trigger_joins_watcher",
    trigger=TriggerJoinsWatcher(civicrm_conn_id=settings.civicrm_conn_id,
                                groups=[*settings.trigger_groups, *settings.reset_groups],
                                tags=[*settings.trigger_tags, *settings.reset_tags],
                                poll_interval=settings.watch_interval_seconds))])

with DAG(
    dag_id="cmsuser_realtime",
    description="Create and link CMS user accounts within a minute of a contact joining a trigger",
    schedule=[trigger_joins],
    start_date=pendulum.datetime(2026, 1, 1, tz=settings.timezone),
    catchup=False,
    # runs may overlap (a waiting approval must not hold up the next contacts): the creation lock keeps
    # them, and the nightly run, from ever making two accounts for one email
    max_active_runs=4,
    tags=["civicrm", "cms-users"],
    doc_md=__doc__,
    params={
        "contact_ids": Param([], type="array", items={"type": "integer", "minimum": 1}, title="Contact ids",
                             description="CiviCRM contact ids to handle now (those not in a trigger group or "
                                         "tag get the outcome not_triggered). Runs started by the watcher "
                                         "leave this empty."),
        "dry_run": Param(False, type="boolean", title="Dry run",
                         description="Report every contact's planned outcome and write nothing anywhere."),
        "limit": Param(None, type=["null", "integer"], minimum=1, title="Limit",
                       description="Create or link at most this many accounts; the rest are deferred."),
    },
) as dag:
    tasks.provisioning_run(settings, sources.requested())
