"""The pipeline's steps as plain functions: a settings snapshot and hooks in, JSON-safe values out.

No Airflow import: pipeline/tasks.py calls these from tasks, and each DAG wires those tasks with
its own ids. Settings are read once per run, by the caller of `preflight`, and travel as the
run snapshot it returns (`settings_of`, `triggers_of` read it back).

pandas, and the modules built on it (plan, report, approval, finalize), are imported by the steps that
use them: the DAG file imports this module, and every task process parses the DAG file, so preflight,
extract and each create batch would otherwise pay for loading pandas (0.5-2 s a task) without using it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from civicrm_hooks import queries
from civicrm_hooks.hook import CiviCRMError, CiviCRMUnavailable
from cms_operators.backend import CmsAuthError, CmsBackend, CmsConfigError, CmsError, CmsUnavailable
from cms_operators.registry import CmsType
from pipeline import sources
from pipeline.batch import BatchContext, create_batch
from pipeline.locks import LockError, LockUnavailable
from pipeline.pacing import Pacer
from pipeline.resets import send_resets
from provisioning.outcomes import audit_line, audit_records
from provisioning.settings import Settings
from provisioning.usernames import candidate_usernames
from provisioning.vocabulary import BATCH_ACTIONS, Outcome
from transport.errors import ProvisioningError

log = logging.getLogger(__name__)

TIMED_OUT_KEY = "create_timed_out_at"


class RunStopped(ProvisioningError):
    """The run cannot go on (pre-flight problems, a CMS that refuses the connection): never retried."""


# --- the run snapshot -------------------------------------------------------------------------

def settings_of(run: dict) -> Settings:
    return Settings.model_validate(run["settings"])


def triggers_of(run: dict) -> queries.Triggers:
    return queries.Triggers.from_dict(run["triggers"])


def resets_of(run: dict) -> queries.Triggers | None:
    """The resolved reset groups and tags; None when the settings name none."""
    return queries.Triggers.from_dict(run["resets"]) if run.get("resets") else None


# --- preflight --------------------------------------------------------------------------------

class _Stop(Exception):
    """Pre-flight has found what stops the CiviCRM checks; the CMS is still checked."""


def preflight(settings: Settings, civicrm, open_cms: Callable[[], tuple[CmsType, CmsBackend]], *,
              dry_run: bool, check_lock: Callable[[], str] | None = None, gated: bool = True) -> dict:
    """Both connections authenticate and can do their job; groups, tags and roles exist.

    `open_cms` gives the CMS type (from the connection's type and `cms_type`) and its backend, or
    raises a CmsError. `gated`: the DAG has its approval gate (it has one only when its settings, read at
    parse time, set `approval_threshold`). Nothing about any contact is touched, so a failure here counts
    no attempt.
    Transient errors are raised for a retry; everything else raises RunStopped listing every problem.
    Returns the run snapshot the other steps take.
    """
    problems: dict[str, list[str]] = {}
    if settings.approval_threshold is not None and not gated:
        problems["settings"] = [ungated(settings.approval_threshold)]
    triggers = resets = None
    missing: list[str] = []
    where = f"CiviCRM (connection '{settings.civicrm_conn_id}')"
    try:
        lacking = queries.missing_permissions(civicrm)
        if lacking:
            problems.setdefault(where, []).extend(lacking)
            raise _Stop
        queries.probe_read_permissions(civicrm)
        try:
            triggers = queries.resolve_triggers(civicrm, settings)
        except queries.TriggerError as exc:
            problems.setdefault(where, []).extend(exc.problems)
        if settings.reset_groups or settings.reset_tags:
            try:
                resets = queries.resolve_resets(civicrm, settings)
            except queries.TriggerError as exc:
                problems.setdefault(where, []).extend(exc.problems)
        missing = queries.ensure_option_values(civicrm, create=not dry_run)
    except _Stop:
        pass  # without those permissions the other checks would only repeat the same refusals
    except CiviCRMUnavailable:
        raise
    except CiviCRMError as exc:
        problems.setdefault(where, []).append(exc.message)
    cms_where = f"CMS (connection '{settings.cms_conn_id}')"
    kind = cms = backend = None
    try:
        kind, backend = open_cms()
        admin_roles = [role for role in settings.roles if kind.rules.is_admin_role(role)]
        if admin_roles:
            problems.setdefault(cms_where, []).extend(
                f"role '{role}' administers {kind.label}: remove it from the roles setting" for role in admin_roles)
        else:
            cms = backend.preflight(list(settings.roles))
        problems.setdefault(cms_where, []).extend(_user_field_problems(settings, kind, backend))
        if not problems[cms_where]:
            del problems[cms_where]
    except CmsUnavailable:
        raise
    except CmsError as exc:
        problems.setdefault(cms_where, []).extend(getattr(exc, "problems", None) or [exc.message])
    finally:
        if backend is not None:
            backend.close()
    lock = None
    if check_lock is not None:  # where creates are made exclusive per email (a transient outage is retried)
        try:
            lock = check_lock()
        except LockUnavailable:
            raise
        except LockError as exc:
            problems.setdefault(f"creation lock (connection '{settings.lock_conn_id}')", []).append(exc.message)
    if problems:
        count = sum(len(items) for items in problems.values())
        text = "\n".join(f"{place}:\n" + "\n".join(f"  - {item}" for item in items)
                         for place, items in problems.items())
        raise RunStopped(f"Pre-flight found {count} problem{'s' if count != 1 else ''}; nothing was done for any "
                         f"contact:\n{text}")
    log.info("pre-flight ok: CiviCRM via %r; %s", settings.civicrm_conn_id, cms)
    if lock is not None:
        log.info("creation lock: %s", lock)
    log.info("triggers: static groups %s, smart groups %s, tags %s; history group %s, tag %s",
             triggers.static_groups, triggers.smart_groups, triggers.tags,
             triggers.history_group, triggers.history_tag)
    if missing:
        log.info("%s missing CiviCRM options: %s", "would create" if dry_run else "created", ", ".join(missing))
    if resets is not None:
        log.info("password resets: static groups %s, smart groups %s, tags %s", resets.static_groups,
                 resets.smart_groups, resets.tags)
    return {"settings": settings.model_dump(mode="json"), "cms_type": kind.name, "triggers": triggers.to_dict(),
            "resets": resets.to_dict() if resets is not None else None}


def ungated(threshold: int) -> str:
    """Why a run stops when the settings ask for an approval gate its DAG was parsed without."""
    return (f"approval_threshold is {threshold}, but this DAG was parsed before it was set, so it has no approval "
            "gate: no account is created without one. Airflow re-reads the DAG file within its "
            "min_file_process_interval (30 s by default); trigger the run again after that")


def _user_field_problems(settings: Settings, kind: CmsType, backend: CmsBackend) -> list[str]:
    """Each configured user field the site does not have (read only when user_fields is set)."""
    if not settings.user_fields:
        return []
    known = backend.user_field_names()
    if known is None:
        return [f"user_fields: {kind.label} has no user fields; remove the setting"]
    return [f"user field '{name}' does not exist on the {kind.label} site; user fields there: "
            f"{', '.join(sorted(known)) or 'none'}" for name in settings.user_fields if name not in known]


# --- extract ----------------------------------------------------------------------------------

#: Contacts read, looked up and written per step of extract: its memory holds one chunk's contacts, not the run's
#: (a multiple of CiviCRM's `IN` chunk of 500 and write chunk of 200, so the calls per contact stay the same).
EXTRACT_CHUNK = 5_000


def extract(run: dict, civicrm, backend: CmsBackend, source: dict, *, marker: str, files,
            chunk_size: int = EXTRACT_CHUNK) -> dict:
    """The source's contacts with what the plan needs, and the CMS accounts they could collide with.

    Read `chunk_size` contacts at a time; each chunk's contacts, the CMS accounts found for them (each account
    once) and the UFMatch rows pointing at those go to the run's tables `extract_contacts`, `extract_cms_users`
    and `extract_links` (`files`: the run's RunFiles). Returns their references with the small parts
    (`not_triggered`, `first_attempts_only`).
    """
    settings = settings_of(run)
    found = sources.members(source, civicrm, triggers_of(run), settings.domain_id)
    members = found.members
    requested = source.get("kind") == sources.REQUESTED  # a run told about given contacts
    if requested:
        log.info("asked about %d contacts (%d given, the rest from the watcher's events): %d in a trigger group "
                 "or with a trigger tag, %d not", len(members) + len(found.not_triggered),
                 len(source.get("contact_ids") or ()), len(members), len(found.not_triggered))
    else:
        log.info("%d contacts are in a trigger group or carry a trigger tag", len(members))
    lookup = _UserLookup(backend, contacts=len(members), chunk_size=chunk_size)
    seen_users: set[int] = set()
    seen_links: set[tuple] = set()
    live = noted = 0
    with files.table("extract_contacts") as contacts_table, files.table("extract_cms_users") as users_table, \
            files.table("extract_links") as links_table:
        for chunk_ids in _id_chunks(members, chunk_size):
            chunk = {cid: members[cid] for cid in chunk_ids}
            contacts = _contacts_of(civicrm, chunk, settings, marker)
            if requested:  # every id asked about gets an outcome, a trashed one too (its tag stays on)
                alive = {c["contact_id"] for c in contacts}
                found.not_triggered.update({cid: "the contact is in the trash" for cid in chunk if cid not in alive})
            users, links = _accounts_of(civicrm, backend, lookup, contacts, settings)
            contacts_table.append(contacts)
            live += len(contacts)
            noted += sum(1 for c in contacts if c.get("email_note"))
            new_users = [u for u in users if u["uf_id"] not in seen_users]
            seen_users.update(u["uf_id"] for u in new_users)
            users_table.append(new_users)
            keys = [(r["contact_id"], r["uf_id"], r["uf_name"]) for r in links]
            new_links = [r for r, key in zip(links, keys, strict=True) if key not in seen_links]
            seen_links.update(keys)
            links_table.append(new_links)
    log.info("%d of them are live contacts (trashed ones are left out); %d have more than one primary email",
             live, noted)
    log.info("%d existing CMS accounts share an email or username with them; %d UFMatch rows point at those",
             users_table.rows, links_table.rows)
    return {"contacts": contacts_table.ref, "cms_users": users_table.ref, "links": links_table.ref,
            "not_triggered": sorted([cid, why] for cid, why in found.not_triggered.items()),
            "first_attempts_only": found.first_attempts_only}


def _id_chunks(members, size: int):
    """The member ids in ascending order, `size` at a time."""
    if hasattr(members, "id_chunks"):  # queries.Members: no list of a million ints
        yield from members.id_chunks(size)
        return
    ids = sorted(members)
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


def _contacts_of(civicrm, chunk: dict[int, list[str]], settings: Settings, marker: str) -> list[dict]:
    """One chunk's live contacts with their triggers, attempts and journal."""
    contacts = queries.contact_details(civicrm, chunk, settings.domain_id)
    history = queries.activity_history(civicrm, chunk, marker)
    for contact in contacts:
        contact["sources"] = chunk[contact["contact_id"]]
        contact["attempts"] = history.attempts.get(contact["contact_id"], 0)
        contact["tried"] = history.tried.get(contact["contact_id"], 0)
        contact["journal"] = [entry.to_dict() for entry in history.journal.get(contact["contact_id"], [])]
    return contacts


def _accounts_of(civicrm, backend: CmsBackend, lookup: _UserLookup, contacts: list[dict],
                 settings: Settings) -> tuple[list[dict], list[dict]]:
    """The CMS accounts one chunk's contacts could collide with, their logins (`cms_login`, set on the
    contacts) and the UFMatch rows pointing at those accounts or at the chunk's emails."""
    emails = sorted({c["email"].strip() for c in contacts if c["email"] and c["email"].strip()})
    # the names the plan may give (pattern, fallback pattern, user{id}), as the CMS will see them
    candidates = sorted(set(candidate_usernames(
        contacts, [settings.username_pattern, settings.username_fallback_pattern],
        backend.rules.sanitize_username)) - {""})
    # accounts an earlier run made but never linked are found by the names its journal recorded
    journal_names = sorted({name for c in contacts if not c["uf_id"] for entry in c["journal"]
                            for name in entry["usernames"]})
    linked_ids = sorted({int(c["uf_id"]) for c in contacts if c["uf_id"]})
    try:
        users = lookup.find(emails, candidates + journal_names)
        logins = {u.uf_id: u.username for u in backend.users_by_id(linked_ids)}
    except (CmsAuthError, CmsConfigError) as exc:
        raise RunStopped(f"CMS connection {settings.cms_conn_id!r}: {exc.message}") from exc
    for contact in contacts:
        contact["cms_login"] = logins.get(int(contact["uf_id"])) if contact["uf_id"] else None
    cms_users = [{"uf_id": u.uf_id, "username": u.username, "email": u.email, "roles": list(u.roles),
                  "registered": u.registered, "is_admin": backend.is_admin(u)} for u in users]
    links = queries.links_for(civicrm, settings.domain_id, uf_ids=[u.uf_id for u in users], uf_names=emails)
    return cms_users, links


class _UserLookup:
    """`backend.find_users` for one chunk of contacts at a time, with the choice between looking each
    email and name up and listing every user made once for the run, not once per chunk.

    A backend that can list (`find_users_listing`) says whether listing beats the look-ups at the
    run's size; if so it lists once and the listing is matched against each chunk (`list_users`
    keeps only what matching needs)."""

    def __init__(self, backend: CmsBackend, *, contacts: int, chunk_size: int) -> None:
        self.backend = backend
        self.chunks = max(1, -(-contacts // max(1, chunk_size)))
        self.listing = None

    def find(self, emails: list[str], usernames: list[str]):
        if self.chunks == 1 or not hasattr(self.backend, "user_listing"):
            return self.backend.find_users(emails, usernames)
        if self.listing is None:  # decided at the first chunk, by its look-ups times the run's chunks
            self.listing = self.backend.user_listing(lookups=(len(emails) + len(usernames)) * self.chunks) or False
        if self.listing is False:  # searches it is, for every chunk: no chunk weighs a listing again
            return self.backend.find_users(emails, usernames, search_only=True)
        return self.listing.match(emails, usernames)


# --- plan -------------------------------------------------------------------------------------

def batch_size_within(count: int, batch_size: int, max_batches: int) -> int:
    """`batch_size`, grown just enough that `count` rows make at most `max_batches` batches (Airflow's
    `max_map_length`: a mapped task of more instances fails the run)."""
    return max(batch_size, -(-count // max(1, max_batches)))


def plan(run: dict, extracted: dict, kind: CmsType, *, dry_run: bool, limit: int | None, files,
         max_batches: int = 1024, chunk_rows: int | None = None) -> dict:
    """Dedupe and decide in pandas; the plan (one row per contact, in contact_id order) and each batch (the
    rows to create/link, at most `max_batches` batches) go to the run's tables `plan` and `batch_<i>`.

    `extracted` is extract's answer (references to its tables). Returns `plan` (the plan's
    reference), `batches` (per batch its index, label, table reference `rows` and first and last contact id)
    and `counts`, the accounts to create and to link: the approval gate decides on them without the plan.
    """
    from pipeline.run_files import TABLE_CHUNK_ROWS
    from provisioning import report
    from provisioning.plan import (
        batch_frames,
        batch_label,
        cms_users_frame,
        contacts_frame,
        json_safe_chunks,
        links_frame,
        plan_contacts,
        with_not_triggered,
    )

    settings = settings_of(run)
    plan_df = plan_contacts(contacts_frame(_columns(files, extracted["contacts"])),
                            cms_users_frame(_columns(files, extracted["cms_users"])),
                            links_frame(_columns(files, extracted["links"])), settings, kind.rules, limit=limit,
                            first_attempts_only=extracted.get("first_attempts_only", False))
    plan_df = with_not_triggered(plan_df, {int(cid): why for cid, why in extracted.get("not_triggered") or ()})
    plan_df = plan_df.sort_values("contact_id", kind="stable").reset_index(drop=True)  # finalize walks it in order
    actions = plan_df["action"].astype(str)
    counts = {action.value: int((actions == action).sum()) for action in BATCH_ACTIONS}
    planned = report.planned_outcomes(plan_df, dry_run=dry_run)
    log.info("plan:\n%s", report.summary_table(planned))
    if dry_run:
        log.info("dry run: nothing will be written. %s", report.where_outcomes_are(
            dry_run=True, keep_hours=settings.keep_run_files_hours))
        log.info("%s", report.attention_table(planned, settings.log_attention_rows))
        frames = []
    else:
        acting = sum(counts.values())
        size = batch_size_within(acting, settings.batch_size, max_batches)
        if size > settings.batch_size:
            log.info("batch_size %d would make more than %d batches (Airflow's [core] max_map_length): batches of "
                     "%d instead", settings.batch_size, max_batches, size)
        frames = batch_frames(plan_df, size)
        log.info("%d contacts to create or link, in %d batches of up to %d", acting, len(frames), size)
    del planned
    rows = chunk_rows or TABLE_CHUNK_ROWS
    with files.table("plan", chunk_rows=rows) as table:
        for chunk in json_safe_chunks(plan_df, rows):
            table.append(chunk)
    batches = []
    for index, frame in enumerate(frames):
        with files.table(f"batch_{index}", chunk_rows=rows) as batch:
            for chunk in json_safe_chunks(frame, rows):
                batch.append(chunk)
        ids = frame["contact_id"]
        batches.append({"index": index, "label": batch_label(frame), "rows": batch.ref,
                        "first": int(ids.iloc[0]), "last": int(ids.iloc[-1])})
    return {"plan": table.ref, "batches": batches, "counts": counts}


def _columns(files, value):
    """A table of extract's as columns (a reference), or the rows themselves (a list, as tests give them)."""
    from pipeline.run_files import is_ref

    return files.read_columns(value) if is_ref(value) else value


# --- create one batch -------------------------------------------------------------------------

def create(run: dict, rows: list[dict], civicrm, backend: CmsBackend, *, marker: str, stamp: str,
           final_try: bool, state, lock=None, open_backend: Callable[[], CmsBackend] | None = None) -> list[dict]:
    """Create or link one batch; `state` keeps values across tries (get/set, Airflow's task state store);
    `lock` holds the batch's emails (pipeline.locks.EmailLocks of the lock connection); `open_backend` gives
    each creating thread its own CMS session (`max_concurrency`)."""
    return create_batch(rows, batch_context(settings_of(run), civicrm, backend, marker=marker, stamp=stamp,
                                            final_try=final_try, state=state, lock=lock, open_backend=open_backend,
                                            triggers=triggers_of(run)))


def batch_pacer(settings: Settings) -> Pacer:
    """One batch's pace: its equal share of the run's `max_requests_per_second`, if any."""
    rate = settings.max_requests_per_second
    return Pacer(rate / settings.parallel_batches if rate else None)


def batch_context(settings: Settings, civicrm, backend: CmsBackend, *, marker: str, stamp: str, final_try: bool,
                  state, lock=None, open_backend: Callable[[], CmsBackend] | None = None,
                  triggers: queries.Triggers | None = None) -> BatchContext:
    """What a batch needs, wired to the run's hooks (without `lock`: held within this process only; without
    `triggers`: the batch leaves every contact's outcome record to finalize)."""

    def write_journal(entries, subjects, final=None):
        sources_ = {e.contact_id: settings.activity_source_contact_id or e.contact_id for e in entries}
        return queries.save_journal(civicrm, entries, subject=subjects, stamp=stamp, source=sources_,
                                    marker=marker, final=final)

    def record_done(done):
        """The completed attempts: their outcome in their last journal write (raises as any journal write
        does), then history and the trigger take-off; CiviCRM refusing those leaves them to finalize."""
        written = write_journal([entry for entry, _ in done], {}, {entry.contact_id: outcome for entry, outcome in done})
        ids = sorted(written)
        try:
            refused = queries.add_to_history(civicrm, triggers, ids)
            ids = [contact_id for contact_id in ids if contact_id not in refused]
            queries.take_off_triggers(civicrm, triggers, ids)
        except ProvisioningError as exc:
            log.warning("history and trigger take-off of %d completed contacts are left to finalize: %s",
                        len(ids), exc.message)
            return set()
        return set(ids)

    return BatchContext(
        backend=backend,
        linked_accounts=lambda ids: queries.linked_accounts(civicrm, ids, settings.domain_id),
        save_links=lambda links: queries.save_links(civicrm, links, settings.domain_id),
        read_journal=lambda ids: queries.journal_for(civicrm, ids),
        write_journal=write_journal,
        links_for=lambda uf_ids: queries.links_for(civicrm, settings.domain_id, uf_ids=uf_ids),
        marker=marker,
        notify=settings.notify,
        on_existing_email=settings.on_existing_email,
        final_try=final_try,
        client_timeout=backend.client_timeout(),
        retry_delay=settings.retry_delay_seconds,
        load_timed_out=lambda: state.get(TIMED_OUT_KEY),
        store_timed_out=lambda when: state.set(TIMED_OUT_KEY, when),
        concurrency=settings.max_concurrency,
        open_backend=open_backend,
        pacer=batch_pacer(settings),
        record_done=record_done if triggers is not None else None,
        **({"lock": lock} if lock is not None else {}),
    )


# --- finalize ---------------------------------------------------------------------------------

def finalize(run: dict, civicrm, plan_ref: dict, batches: list[dict], results: list, *, dry_run: bool,
             marker: str, stamp: str, files, chunk_rows: int | None = None) -> dict[str, Any]:
    """Outcomes from the plan plus CiviCRM's state; activities, history and clean-up.

    Walks the plan's table (`plan_ref`) a chunk at a time (`chunk_rows`: re-cut to at most that many rows);
    `results` is aligned with `batches` (references to their results, None where a batch left none). The
    outcomes go to the run's table `outcomes`. Returns `outcomes` (its reference), `unfinished` (labels of
    batches that left no result) and `counts` per outcome. May run twice for one run: everything it writes is
    checked first.
    """
    from pipeline.finalize import OUTCOME_COLUMNS, Tally, finalize_chunks, plan_chunks
    from provisioning import report
    from provisioning.plan import json_safe_columns

    settings = settings_of(run)
    chunks = plan_chunks(files.iter_chunks(plan_ref, chunk_rows))
    with files.table("outcomes") as table:
        if dry_run:
            tally = Tally(settings.log_attention_rows)
            for chunk in chunks:
                planned = report.planned_outcomes(chunk, dry_run=True)
                table.append(json_safe_columns(planned))
                tally.add(planned)
            unfinished: list[str] = []
        else:
            tally, unfinished = finalize_chunks(
                civicrm, settings, triggers_of(run), chunks, batches, results, load=files.read,
                sink=lambda final: table.append(json_safe_columns(final[OUTCOME_COLUMNS])), marker=marker,
                stamp=stamp)
    if dry_run:
        log.info("dry run: wrote nothing.\n%s", tally.summary())
        return {"outcomes": table.ref, "unfinished": [], "counts": {"dry_run": True, "contacts": tally.contacts}}
    return {"outcomes": table.ref, "unfinished": unfinished,
            "counts": {"contacts": tally.contacts, **{str(k): int(v) for k, v in tally.counts.items()}}}


def finalize_rejected(run: dict, plan_ref: dict, gate: dict, *, files, chunk_rows: int | None = None
                      ) -> dict[str, Any]:
    """Finalize of a run whose approval was refused or timed out: every contact `approval_rejected`.

    Nothing was created; nothing is written to CiviCRM (no activity, so no attempt; no history, no
    clean-up: the contacts stay triggered for the next run). The run does not fail. The plan is read a
    chunk at a time; the outcomes go to the run's table `outcomes`.
    """
    from pipeline.finalize import OUTCOME_COLUMNS, Tally, plan_chunks
    from provisioning import approval
    from provisioning.plan import json_safe_columns

    tally = Tally(settings_of(run).log_attention_rows)
    with files.table("outcomes") as table:
        for chunk in plan_chunks(files.iter_chunks(plan_ref, chunk_rows)):
            final = approval.rejected_outcomes(chunk, gate)
            lines = [audit_line(row.contact_id, row.outcome, uf_id=row.uf_id)
                     for row in final.itertuples(index=False)]
            for record in audit_records(lines):
                log.info("%s", record)
            table.append(json_safe_columns(final[OUTCOME_COLUMNS]))
            tally.add(final)
    log.warning("%s. Wrote nothing to CiviCRM: the %d contacts stay in their trigger groups and tags for the "
                "next run.", approval.decided_line(gate), tally.contacts)
    log.info("outcomes:\n%s", tally.summary())
    return {"outcomes": table.ref, "unfinished": [],
            "counts": {"contacts": tally.contacts, str(Outcome.APPROVAL_REJECTED): tally.contacts,
                       "approval": gate["decision"]}}


def password_resets(run: dict, civicrm, backend: CmsBackend, *, dry_run: bool, marker: str,
                    stamp: str) -> list[dict]:
    """The CMS's password-reset email for the contacts in the reset groups and tags (pipeline/resets.py)."""
    resets = resets_of(run)
    if resets is None:
        log.info("password resets: no reset_groups or reset_tags in the settings")
        return []
    if dry_run:
        members = queries.reset_members(civicrm, resets)
        log.info("dry run: %d contacts in the reset groups and tags would get a password-reset email if "
                 "linked; nothing sent, nothing written", len(members))
        return []
    return send_resets(civicrm, backend, settings_of(run), resets, marker=marker, stamp=stamp)
