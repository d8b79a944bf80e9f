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

The run is finalized a chunk of the plan at a time (`finalize_chunks`), in contact_id order: each chunk's
outcomes come from its contacts' batch results (only the batches it touches are read), its activities,
history and clean-up are written, its outcomes go out (the run's outcomes table), and only counts and
the first `log_attention_rows` contacts needing attention stay for the run's summary. So its memory
holds a chunk, whatever the size of the run.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from civicrm_hooks import queries
from provisioning import journal, outcomes, report
from provisioning.outcomes import Outcome
from provisioning.plan import PLAN_COLUMNS
from provisioning.settings import Settings
from provisioning.vocabulary import BATCH_ACTIONS, Action, Source, parse_source

log = logging.getLogger(__name__)

OUTCOME_COLUMNS = ["contact_id", "outcome", "username", "uf_id", "attempt", "reason", "mail"]


@dataclass
class Tally:
    """What a run's log says at its end, gathered chunk by chunk: counts, and the first `max_rows`
    contacts needing attention (in contact_id order)."""

    max_rows: int
    counts: Counter = field(default_factory=Counter)
    contacts: int = 0
    failed: int = 0
    attention: pd.DataFrame | None = None
    written: int = 0
    succeeded: int = 0
    recorded: int = 0
    exhausted: int = 0
    refused: int = 0

    def add(self, outcomes_df: pd.DataFrame, stats: dict | None = None) -> None:
        self.contacts += len(outcomes_df)
        self.counts.update(report.outcome_names(outcomes_df))
        failed = report.needing_attention(outcomes_df)
        self.failed += len(failed)
        if len(failed) and (self.attention is None or len(self.attention) < self.max_rows):
            kept = failed if self.attention is None else pd.concat([self.attention, failed])
            self.attention = kept.sort_values("contact_id", kind="stable").head(max(0, self.max_rows))
        for key, value in (stats or {}).items():
            setattr(self, key, getattr(self, key) + value)

    def summary(self) -> str:
        return report.summary_of_counts(self.counts)

    def attention_text(self) -> str:
        shown = self.attention if self.attention is not None else pd.DataFrame(columns=["contact_id", "outcome", "reason"])
        return report.attention_table(shown, self.max_rows, failed=self.failed)

    def log(self, settings: Settings) -> None:
        log.info("wrote %d activities; %d contacts done and off their triggers (%d of them recorded by their "
                 "batches); %d taken off after %d failed attempts; %d records CiviCRM refused", self.written,
                 self.succeeded + self.recorded, self.recorded, self.exhausted, settings.max_attempts, self.refused)
        log.info("outcomes:\n%s", self.summary())
        log.info("%s", self.attention_text())


def finalize_run(civicrm, settings: Settings, triggers: queries.Triggers, plan_rows: list[dict],
                 batches: list[dict], results: list | None, *, marker: str, stamp: str
                 ) -> tuple[pd.DataFrame, list[str]]:
    """Record the run from its plan and batch results in memory; returns the final outcomes (all of them: for
    tests and tools; the finalize task uses finalize_chunks) and the labels of batches that did not finish."""
    frames: list[pd.DataFrame] = []
    chunks = [pd.DataFrame(plan_rows)] if plan_rows else []
    _, unfinished = finalize_chunks(civicrm, settings, triggers, chunks, batches, results or [None] * len(batches),
                                    load=lambda result: result, sink=frames.append, marker=marker, stamp=stamp)
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0], unfinished


def plan_chunks(chunks: Iterable[dict[str, list]]) -> Iterable[pd.DataFrame]:
    """The plan's table chunks (dicts of column lists) as frames."""
    for chunk in chunks:
        yield pd.DataFrame(chunk)


def finalize_chunks(civicrm, settings: Settings, triggers: queries.Triggers, chunks: Iterable[pd.DataFrame],
                    batches: list[dict], results: list, *, load: Callable, sink: Callable[[pd.DataFrame], None],
                    marker: str, stamp: str) -> tuple[Tally, list[str]]:
    """Record the run a chunk of its plan at a time: `chunks` are frames of plan rows (in contact_id order,
    for the batches to be read once each); `results` is aligned with `batches` (None where a batch left no
    result) and `load` gives a result's rows. Each chunk's final outcomes (all plan columns) go to `sink`.
    Returns the run's tally (its summary was logged) and the labels of batches that did not finish."""
    unfinished = [descriptor["label"] for descriptor, result in zip(batches, results, strict=False)
                  if result is None]
    window = _Results(batches, results, load)
    tally = Tally(settings.log_attention_rows)
    seen = False
    # One writer thread, first in first out: a chunk's CiviCRM writes run while the next chunk's outcomes are
    # worked out and its activities read (other contacts: neither touches what the other writes), for a CiviCRM
    # that serves requests side by side. The emulator serves them one at a time: there it gains nothing.
    with ThreadPoolExecutor(1, thread_name_prefix="civicrm-writes") as writer:
        pending: _Chunk | None = None
        for chunk in chunks:
            if not len(chunk) and seen:
                continue
            seen = True
            pending = _next_chunk(writer, pending, civicrm, settings, triggers, chunk, window, tally,
                                  marker=marker, stamp=stamp, sink=sink)
        if not seen:
            # a run with no contacts still has the plan's columns (an empty trigger group, a watcher event for a
            # contact taken off since)
            pending = _next_chunk(writer, pending, civicrm, settings, triggers, pd.DataFrame(columns=PLAN_COLUMNS),
                                  window, tally, marker=marker, stamp=stamp, sink=sink)
        pending.finish(tally, sink)
    tally.log(settings)
    return tally, unfinished


def _next_chunk(writer: ThreadPoolExecutor, previous: _Chunk | None, civicrm, settings, triggers,
                chunk: pd.DataFrame, window: _Results, tally: Tally, *, marker: str, stamp: str, sink) -> _Chunk:
    """Work out the chunk's outcomes and records, queue its writes behind the previous chunk's, log its audit
    lines while they run, then finish the previous chunk (its refusals in its outcomes, out to `sink`)."""
    final = final_outcomes(civicrm, settings, chunk, window.for_contacts(chunk))
    current = _start(writer, civicrm, settings, triggers, final, marker=marker, stamp=stamp)
    if previous is not None:
        try:
            previous.finish(tally, sink)
        except BaseException:
            current.written.cancel()  # the previous chunk's writes failed: the retry does this one too
            raise
    return current


def _start(writer: ThreadPoolExecutor, civicrm, settings: Settings, triggers: queries.Triggers, final: pd.DataFrame,
           *, marker: str, stamp: str) -> _Chunk:
    """Queue the chunk's writes on the writer thread and log its audit lines while they run: the lines say what
    the run decided, the writes record it, and neither waits for the other."""
    writes = _records(civicrm, settings, final, marker=marker, stamp=stamp)
    chunk = _Chunk(final, writes, writer.submit(_write, civicrm, triggers, writes))
    for line in outcomes.audit_records(writes.lines):
        log.info("%s", line)
    return chunk


class _Results:
    """The batch results a chunk of the plan needs: those of the batches its acting contacts are in (by
    the batches' first and last contact ids), each read once while chunks go in contact_id order."""

    def __init__(self, batches: list[dict], results: list, load: Callable) -> None:
        self.batches, self.results, self.load = batches, list(results), load
        self.ranged = bool(batches) and all("first" in b and "last" in b for b in batches)
        self.loaded: dict[int, dict[int, dict]] = {}
        if self.ranged:
            order = sorted(range(len(batches)), key=lambda i: batches[i]["first"])
            self.order = np.array(order, dtype=np.int64)
            self.firsts = np.array([batches[i]["first"] for i in order], dtype=np.int64)
            self.lasts = np.array([batches[i]["last"] for i in order], dtype=np.int64)

    def for_contacts(self, chunk: pd.DataFrame) -> dict[int, dict]:
        if not len(chunk) or "action" not in chunk.columns:
            return {}
        acting = chunk.loc[chunk["action"].astype(str).isin(BATCH_ACTIONS), "contact_id"].to_numpy(dtype=np.int64)
        if not len(acting):
            return {}
        if self.ranged:
            at = np.searchsorted(self.firsts, acting, side="right") - 1
            inside = (at >= 0) & (acting <= self.lasts[np.clip(at, 0, None)])
            wanted = {int(self.order[i]) for i in np.unique(at[inside])}
        else:  # batches that do not say their contact ids (an older plan): every batch
            wanted = set(range(len(self.batches)))
        self.loaded = {i: rows for i, rows in self.loaded.items() if i in wanted}
        for index in sorted(wanted - set(self.loaded)):
            result = self.results[index] if index < len(self.results) else None
            rows = self.load(result) if result is not None else None
            self.loaded[index] = {row["contact_id"]: row for row in rows or ()}
        if len(self.loaded) == 1:
            return next(iter(self.loaded.values()))
        merged: dict[int, dict] = {}
        for rows in self.loaded.values():
            merged.update(rows)
        return merged


RESULT_COLUMNS = ("outcome", "reason", "uf_id", "username", "mail", "journal_activity_id", "recorded")


def final_outcomes(civicrm, settings: Settings, plan_df: pd.DataFrame, by_contact: dict[int, dict]) -> pd.DataFrame:
    """Final outcome per contact: its batch's result, else CiviCRM's UFMatch state, else deferred."""
    df = plan_df.copy()
    for column, default in (("mail", None), ("journal_activity_id", None), ("recorded", False), ("exhausted", False),
                            ("uf_name", None), ("display_name", "")):
        if column not in df.columns:
            df[column] = default
    # worked on as lists (a chunk is 10,000 rows: per-cell pandas access would cost about a second)
    ids, actions = df["contact_id"].tolist(), df["action"].tolist()
    columns = {key: df[key].tolist() for key in RESULT_COLUMNS}
    missing = [cid for cid, action in zip(ids, actions, strict=True)
               if action != Action.NONE and cid not in by_contact]
    state = queries.linked_accounts(civicrm, missing, settings.domain_id) if missing else {}
    for i, (cid, action) in enumerate(zip(ids, actions, strict=True)):
        if action == Action.NONE:
            continue
        result = by_contact.get(cid)
        if result is not None:
            for key in RESULT_COLUMNS:
                if key in result:
                    columns[key][i] = result[key]
        elif cid in state:  # its batch died after linking it
            columns["outcome"][i] = str(Outcome.CREATED if columns["outcome"][i] == Outcome.CREATED else
                                        Outcome.LINKED_EXISTING)
            columns["uf_id"][i] = state[cid]["uf_id"]
            columns["reason"][i] = outcomes.linked_by_earlier_try()
        else:
            columns["outcome"][i] = str(Outcome.DEFERRED)
            columns["reason"][i] = outcomes.batch_not_finished()
    # object columns: a chunk's column may hold only ints (or only None) where the run's held both, and a
    # float column would turn 4 into 4.0 in the reset marker's subject and details
    for key, values in columns.items():
        df[key] = pd.Series(values, index=df.index, dtype=object)
    # A contact whose attempts were used up before this run makes none now (`exhausted`).
    df["attempt"] = pd.Series([(int(a) if x else int(a) + 1) if o == Outcome.FAILED else None
                               for a, o, x in zip(df["attempts"], df["outcome"], df["exhausted"], strict=True)],
                              index=df.index, dtype=object)
    return df


def record(civicrm, settings: Settings, triggers: queries.Triggers, df: pd.DataFrame, *, marker: str,
           stamp: str) -> None:
    """Audit lines, each contact's activity, history, and taking contacts off their triggers; the summary."""
    tally = Tally(settings.log_attention_rows)
    with ThreadPoolExecutor(1, thread_name_prefix="civicrm-writes") as writer:
        _start(writer, civicrm, settings, triggers, df, marker=marker, stamp=stamp).finish(tally, lambda final: None)
    tally.log(settings)


@dataclass
class _Writes:
    """What one chunk writes to CiviCRM, in _write's order, and its audit lines."""

    lines: list[str] = field(default_factory=list)
    recorded: int = 0  # contacts whose batch wrote their outcome, history and take-off: nothing to write
    activities: list[dict] = field(default_factory=list)
    markers: list[dict] = field(default_factory=list)
    succeeded: list[int] = field(default_factory=list)
    exhausted: list[int] = field(default_factory=list)
    opt_outs: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class _Chunk:
    """A chunk whose writes are queued or under way."""

    final: pd.DataFrame
    writes: _Writes
    written: Future

    def finish(self, tally: Tally, sink: Callable[[pd.DataFrame], None]) -> None:
        """Wait for the writes; each record CiviCRM refused goes into its contact's reason; out to `sink`."""
        refused = self.written.result()
        df = self.final
        for cid, message in refused.items():
            at = df.index[df["contact_id"] == cid]
            df.loc[at, "reason"] = [f"{reason}; {outcomes.record_refused(message)}" for reason in df.loc[at, "reason"]]
            log.warning("contact=%s: CiviCRM refused its activity or history record (see the outcomes)", cid)
        w = self.writes
        sink(df)
        tally.add(df, {"written": len(w.activities) + len(w.markers) - len(refused), "succeeded": len(w.succeeded),
                       "recorded": w.recorded, "exhausted": len(w.exhausted), "refused": len(refused)})


def _records(civicrm, settings: Settings, df: pd.DataFrame, *, marker: str, stamp: str) -> _Writes:
    """The chunk's audit lines and what it writes: the activities this run has not written yet (read first),
    the contacts done (history, off their triggers) and those out of attempts (off everything, a marker).
    Contacts their batch recorded (`recorded`) have only their audit line."""
    recorded = [value is True for value in df["recorded"]] if "recorded" in df.columns else [False] * len(df)
    left = df.loc[~np.array(recorded, dtype=bool)]
    ids = [int(c) for c in left["contact_id"]]
    mine = queries.run_activities(civicrm, ids, marker) if ids else {}
    begun = {int(a) for a in left["journal_activity_id"] if _present(a)}
    begun -= {a["id"] for rows in mine.values() for a in rows}
    earlier = queries.activities_by_id(civicrm, begun) if begun else {}
    w = _Writes()
    for row, done in zip(df.itertuples(index=False), recorded, strict=True):
        cid, outcome, attempt = int(row.contact_id), Outcome(row.outcome), row.attempt
        # ids and outcome only: logins are mostly names, reasons can hold emails, and the log is read by many
        w.lines.append(outcomes.audit_line(cid, outcome, uf_id=row.uf_id, attempt=attempt,
                                           max_attempts=settings.max_attempts))
        if done:
            w.recorded += 1
            continue
        own = mine.get(cid, [])
        source = settings.activity_source_contact_id or cid
        due = None if row.exhausted else outcomes.activity_for(
            outcome, username=row.username, uf_id=row.uf_id, uf_name=row.uf_name or row.username,
            reason=row.reason, mail_note=row.mail)
        if due:
            attempt_activity = _attempt_activity(own, earlier, row.journal_activity_id)
            record_ = _activity_record(cid, source, due, attempt_activity, stamp, marker)
            if record_ is not None:
                w.activities.append(record_)
        if outcome in outcomes.SUCCEEDED:
            w.succeeded.append(cid)
        elif outcome == Outcome.FAILED and attempt is not None and attempt >= settings.max_attempts:
            w.exhausted.append(cid)
            w.opt_outs += [(cid, number) for kind, number in map(parse_source, row.sources) if kind == Source.SMART]
            if not any(a["status"] == queries.RESET_STATUS for a in own):
                w.markers.append(_activity_record(cid, source, {
                    "status": queries.RESET_STATUS, "subject": outcomes.reset_subject(attempt),
                    "details": outcomes.reset_details(attempt)}, None, stamp, marker))
    return w


def _write(civicrm, triggers: queries.Triggers, w: _Writes) -> dict[int, str]:
    """A chunk's writes, in their order; returns contact id -> why CiviCRM refused its record."""
    refused = queries.write_activities(civicrm, w.activities)
    refused.update(queries.add_to_history(civicrm, triggers, [c for c in w.succeeded if c not in refused]))
    queries.take_off_triggers(civicrm, triggers, w.succeeded + w.exhausted, w.opt_outs)
    # after the take-off, never before: a marker without it would restart the count of a contact
    # still in its trigger groups
    refused.update(queries.write_activities(civicrm, w.markers))
    return refused


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
