"""The run's last word: final outcomes, the activities, history and trigger clean-up in CiviCRM.

Kept apart from the Airflow task so the same code can be run twice for one run (as a cleared
finalize does) and checked to write nothing twice: every write is preceded by a look at what
this run already wrote (activities carry the run's marker) or is idempotent by nature.
"""

from __future__ import annotations

import logging

import pandas as pd

from civicrm_hooks import queries
from provisioning import outcomes, report
from provisioning.outcomes import Outcome
from provisioning.settings import Settings

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
    final = final_outcomes(civicrm, settings, pd.DataFrame(plan_rows), by_contact)
    record(civicrm, settings, triggers, final, marker=marker, stamp=stamp)
    return final, unfinished


def final_outcomes(civicrm, settings: Settings, plan_df: pd.DataFrame, by_contact: dict[int, dict]) -> pd.DataFrame:
    """Final outcome per contact: its batch's result, else CiviCRM's UFMatch state, else deferred."""
    df = plan_df.copy()
    df["mail"] = None
    missing = [cid for cid in df.loc[df["action"] != "none", "contact_id"] if cid not in by_contact]
    state = queries.linked_accounts(civicrm, missing, settings.domain_id) if missing else {}
    for i, row in df.iterrows():
        if row["action"] == "none":
            continue
        result = by_contact.get(row["contact_id"])
        if result is not None:
            for key in ("outcome", "reason", "uf_id", "username", "mail"):
                df.at[i, key] = result.get(key)
        elif row["contact_id"] in state:  # its batch died after linking it
            df.at[i, "outcome"] = str(Outcome.CREATED if row["action"] == "create" else Outcome.LINKED_EXISTING)
            df.at[i, "uf_id"] = state[row["contact_id"]]["uf_id"]
            df.at[i, "reason"] = outcomes.linked_by_earlier_try()
        else:
            df.at[i, "outcome"] = str(Outcome.DEFERRED)
            df.at[i, "reason"] = outcomes.batch_not_finished()
    # object dtype: a float column would turn 4 into 4.0 in the reset marker's subject and details
    df["attempt"] = pd.Series([int(a) + 1 if o == Outcome.FAILED else None
                               for a, o in zip(df["attempts"], df["outcome"], strict=True)],
                              index=df.index, dtype=object)
    return df


def record(civicrm, settings: Settings, triggers: queries.Triggers, df: pd.DataFrame, *, marker: str,
           stamp: str) -> None:
    """Audit lines, activities not yet written by this run, history, and taking contacts off triggers."""
    written = queries.activities_written(civicrm, df["contact_id"].tolist(), marker)
    activities, succeeded, exhausted, opt_outs = [], [], [], []
    for row in df.itertuples(index=False):
        outcome, attempt = Outcome(row.outcome), row.attempt
        log.info("%s", outcomes.audit_line(row.contact_id, outcome, uf_id=row.uf_id, username=row.username,
                                           attempt=attempt, max_attempts=settings.max_attempts,
                                           reason=row.reason))
        activity = outcomes.activity_for(outcome, username=row.username, uf_id=row.uf_id, uf_name=row.username,
                                         reason=row.reason, mail_note=row.mail)
        source = settings.activity_source_contact_id or row.contact_id
        if activity and (row.contact_id, activity["status"]) not in written:
            activities.append(_activity(row.contact_id, source, activity, stamp, marker))
        if outcome in SUCCESS:
            succeeded.append(int(row.contact_id))
        elif outcome == Outcome.FAILED and attempt >= settings.max_attempts:
            exhausted.append(int(row.contact_id))
            opt_outs += [(int(row.contact_id), int(s.split(":")[1])) for s in row.sources if s.startswith("smart:")]
            if (row.contact_id, queries.RESET_STATUS) not in written:
                activities.append(_activity(row.contact_id, source, {
                    "status": queries.RESET_STATUS, "subject": outcomes.reset_subject(attempt),
                    "details": outcomes.reset_details(attempt)}, stamp, marker))
    queries.write_activities(civicrm, activities)
    queries.add_to_history(civicrm, triggers, succeeded)
    queries.take_off_triggers(civicrm, triggers, succeeded + exhausted, opt_outs)
    log.info("wrote %d activities; %d contacts done and off their triggers; %d taken off after %d failed "
             "attempts", len(activities), len(succeeded), len(exhausted), settings.max_attempts)
    log.info("outcomes:\n%s", report.summary_table(df))


def _activity(contact_id: int, source: int, activity: dict, stamp: str, marker: str) -> dict:
    details = activity.get("details") or ""
    return {
        "activity_type_id:name": queries.ACTIVITY_TYPE,
        "status_id:name": activity["status"],
        "subject": activity["subject"],
        # the run's marker lets a second finalize of this run see what it already wrote
        "details": f"{details}\n{marker}" if details else marker,
        "activity_date_time": stamp,
        "source_contact_id": int(source),
        "target_contact_id": [int(contact_id)],
    }
