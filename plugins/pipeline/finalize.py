"""The run's last word: final outcomes, the activities, history and trigger clean-up in CiviCRM.

Kept apart from the Airflow task so the same code can be run twice for one run (as a cleared or
retried finalize does) and checked to write nothing twice: every write is preceded by a look at
what this run already wrote (activities carry the run's marker) or is idempotent by nature.

Each contact has one "User Account Creation" activity per attempt. A batch that created for the
contact began it (status Scheduled, holding the account journal); finalize gives it its outcome.
Contacts the plan settled, or whose batch never began one, get a new activity.

Giving up is ordered so that no failure in between loses count: the contact is taken off its
triggers first and the give-up marker (which restarts the count) is written after. A run that
dies between the two leaves the contact off its triggers; one that dies before leaves it
triggered with its attempts used up, and the next run finishes the give-up without a new attempt.
"""

from __future__ import annotations

import logging

import pandas as pd

from civicrm_hooks import queries
from provisioning import journal, outcomes, report
from provisioning.outcomes import Outcome
from provisioning.plan import PLAN_COLUMNS
from provisioning.settings import Settings
from provisioning.vocabulary import Action, Source, parse_source

log = logging.getLogger(__name__)

SUCCESS = {Outcome.CREATED, Outcome.LINKED_EXISTING, Outcome.ALREADY_LINKED}
OUTCOME_COLUMNS = ["contact_id", "outcome", "username", "uf_id", "attempt", "reason", "mail"]


def finalize_run(civicrm, settings: Settings, triggers: queries.Triggers, plan_rows: list[dict],
                 batches: list[dict], results: list | None, *, marker: str, stamp: str
                 ) -> tuple[pd.DataFrame, list[str]]:
    """Record the run; returns the final outcomes and the labels of batches that did not finish."""
    by_contact: dict[int, dict] = {}
    unfinished: list[str] = []
    for descriptor, result in zip(batches, results or [None] * len(batches), strict=False):
        if result is None:
            unfinished.append(descriptor["label"])
            continue
        for row in result:
            by_contact[row["contact_id"]] = row
    # a run with no contacts still has the plan's columns (an empty trigger group, a watcher event for a contact
    # taken off since)
    plan_df = pd.DataFrame(plan_rows) if plan_rows else pd.DataFrame(columns=PLAN_COLUMNS)
    final = final_outcomes(civicrm, settings, plan_df, by_contact)
    record(civicrm, settings, triggers, final, marker=marker, stamp=stamp)
    return final, unfinished


def final_outcomes(civicrm, settings: Settings, plan_df: pd.DataFrame, by_contact: dict[int, dict]) -> pd.DataFrame:
    """Final outcome per contact: its batch's result, else CiviCRM's UFMatch state, else deferred."""
    df = plan_df.copy()
    for column, default in (("mail", None), ("journal_activity_id", None), ("exhausted", False),
                            ("uf_name", None), ("display_name", "")):
        if column not in df.columns:
            df[column] = default
    df["mail"] = df["mail"].astype(object)
    df["journal_activity_id"] = df["journal_activity_id"].astype(object)
    missing = [cid for cid in df.loc[df["action"] != Action.NONE, "contact_id"] if cid not in by_contact]
    state = queries.linked_accounts(civicrm, missing, settings.domain_id) if missing else {}
    for i, row in df.iterrows():
        if row["action"] == Action.NONE:
            continue
        result = by_contact.get(row["contact_id"])
        if result is not None:
            for key in ("outcome", "reason", "uf_id", "username", "mail", "journal_activity_id"):
                if key in result:
                    df.at[i, key] = result.get(key)
        elif row["contact_id"] in state:  # its batch died after linking it
            df.at[i, "outcome"] = str(Outcome.CREATED if row["outcome"] == Outcome.CREATED else
                                      Outcome.LINKED_EXISTING)
            df.at[i, "uf_id"] = state[row["contact_id"]]["uf_id"]
            df.at[i, "reason"] = outcomes.linked_by_earlier_try()
        else:
            df.at[i, "outcome"] = str(Outcome.DEFERRED)
            df.at[i, "reason"] = outcomes.batch_not_finished()
    # object dtype: a float column would turn 4 into 4.0 in the reset marker's subject and details.
    # A contact whose attempts were used up before this run makes none now (`exhausted`).
    df["attempt"] = pd.Series([(int(a) if x else int(a) + 1) if o == Outcome.FAILED else None
                               for a, o, x in zip(df["attempts"], df["outcome"], df["exhausted"], strict=True)],
                              index=df.index, dtype=object)
    return df


def record(civicrm, settings: Settings, triggers: queries.Triggers, df: pd.DataFrame, *, marker: str,
           stamp: str) -> None:
    """Audit lines, each contact's activity, history, and taking contacts off their triggers."""
    ids = [int(c) for c in df["contact_id"]]
    mine = queries.run_activities(civicrm, ids, marker)
    begun = {int(a) for a in df["journal_activity_id"] if _present(a)}
    begun -= {a["id"] for rows in mine.values() for a in rows}
    earlier = queries.activities_by_id(civicrm, begun) if begun else {}
    activities, markers, succeeded, exhausted, opt_outs = [], [], [], [], []
    for row in df.itertuples(index=False):
        cid, outcome, attempt = int(row.contact_id), Outcome(row.outcome), row.attempt
        # ids, outcome and login only: reasons can hold emails, and the log is read by many
        log.info("%s", outcomes.audit_line(cid, outcome, uf_id=row.uf_id, username=row.username,
                                           attempt=attempt, max_attempts=settings.max_attempts))
        own = mine.get(cid, [])
        source = settings.activity_source_contact_id or cid
        due = None if row.exhausted else outcomes.activity_for(
            outcome, username=row.username, uf_id=row.uf_id, uf_name=row.uf_name or row.username,
            reason=row.reason, mail_note=row.mail)
        if due:
            attempt_activity = _attempt_activity(own, earlier, row.journal_activity_id)
            record_ = _activity_record(cid, source, due, attempt_activity, stamp, marker)
            if record_ is not None:
                activities.append(record_)
        if outcome in SUCCESS:
            succeeded.append(cid)
        elif outcome == Outcome.FAILED and attempt is not None and attempt >= settings.max_attempts:
            exhausted.append(cid)
            opt_outs += [(cid, number) for kind, number in map(parse_source, row.sources) if kind == Source.SMART]
            if not any(a["status"] == queries.RESET_STATUS for a in own):
                markers.append(_activity_record(cid, source, {
                    "status": queries.RESET_STATUS, "subject": outcomes.reset_subject(attempt),
                    "details": outcomes.reset_details(attempt)}, None, stamp, marker))
    refused = queries.write_activities(civicrm, activities)
    refused.update(queries.add_to_history(civicrm, triggers, [c for c in succeeded if c not in refused]))
    queries.take_off_triggers(civicrm, triggers, succeeded + exhausted, opt_outs)
    # after the take-off, never before: a marker without it would restart the count of a contact
    # still in its trigger groups
    refused.update(queries.write_activities(civicrm, markers))
    for cid, message in refused.items():
        at = df.index[df["contact_id"] == cid]
        df.loc[at, "reason"] = [f"{reason}; {outcomes.record_refused(message)}" for reason in df.loc[at, "reason"]]
        log.warning("contact=%s: CiviCRM refused its activity or history record (see the outcomes)", cid)
    log.info("wrote %d activities; %d contacts done and off their triggers; %d taken off after %d failed "
             "attempts; %d records CiviCRM refused", len(activities) + len(markers) - len(refused),
             len(succeeded), len(exhausted), settings.max_attempts, len(refused))
    log.info("outcomes:\n%s", report.summary_table(df))
    log.info("%s", report.attention_table(df, settings.log_attention_rows))


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and value != value)


def _attempt_activity(own: list[dict], earlier: dict[int, dict], journal_activity_id) -> dict | None:
    """The activity this attempt began (this run's, or an earlier run's the batch carried on)."""
    attempts = [a for a in own if a["status"] != queries.RESET_STATUS]
    if _present(journal_activity_id):
        wanted = int(journal_activity_id)
        for activity in attempts:
            if activity["id"] == wanted:
                return activity
        if wanted in earlier:
            return earlier[wanted]
    return attempts[0] if attempts else None


def _activity_record(contact_id: int, source: int, activity: dict, existing: dict | None, stamp: str,
                     marker: str) -> dict | None:
    """The `save` record that gives the contact this activity; None when this run already wrote it."""
    if existing is not None:
        if existing["status"] == activity["status"] and marker in existing["details"]:
            return None
        entry = journal.parse(contact_id, existing["details"])
        return {"id": existing["id"], "status_id:name": activity["status"], "subject": activity["subject"],
                "details": journal.details_text(activity.get("details"), entry,
                                                [*journal.markers_in(existing["details"]), marker]),
                "_contact_id": contact_id}
    return {
        "activity_type_id:name": queries.ACTIVITY_TYPE,
        "status_id:name": activity["status"],
        "subject": activity["subject"],
        # the run's marker lets a second finalize of this run see what it already wrote
        "details": journal.details_text(activity.get("details"), None, [marker]),
        "activity_date_time": stamp,
        "source_contact_id": int(source),
        "target_contact_id": [int(contact_id)],
        "_contact_id": contact_id,
    }
