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
from provisioning.outcomes import audit_line
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
              dry_run: bool, check_lock: Callable[[], str] | None = None) -> dict:
    """Both connections authenticate and can do their job; groups, tags and roles exist.

    `open_cms` gives the CMS type (from the connection's type and `cms_type`) and its backend, or
    raises a CmsError. Nothing about any contact is touched, so a failure here counts no attempt.
    Transient errors are raised for a retry; everything else raises RunStopped listing every problem.
    Returns the run snapshot the other steps take.
    """
    problems: dict[str, list[str]] = {}
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

def extract(run: dict, civicrm, backend: CmsBackend, source: dict, *, marker: str) -> dict:
    """The source's contacts with what the plan needs, and the CMS accounts they could collide with."""
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
    contacts = queries.contact_details(civicrm, members, settings.domain_id)
    history = queries.activity_history(civicrm, members, marker)
    for contact in contacts:
        contact["sources"] = members[contact["contact_id"]]
        contact["attempts"] = history.attempts.get(contact["contact_id"], 0)
        contact["tried"] = history.tried.get(contact["contact_id"], 0)
        contact["journal"] = [entry.to_dict() for entry in history.journal.get(contact["contact_id"], [])]
    if requested:  # every id asked about gets an outcome, a trashed one too (its tag stays on)
        live = {c["contact_id"] for c in contacts}
        found.not_triggered.update({cid: "the contact is in the trash" for cid in members if cid not in live})
    log.info("%d of them are live contacts (trashed ones are left out); %d have more than one primary email",
             len(contacts), sum(1 for c in contacts if c.get("email_note")))

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
        users = backend.find_users(emails, candidates + journal_names)
        logins = {u.uf_id: u.username for u in backend.users_by_id(linked_ids)}
    except (CmsAuthError, CmsConfigError) as exc:
        raise RunStopped(f"CMS connection {settings.cms_conn_id!r}: {exc.message}") from exc
    for contact in contacts:
        contact["cms_login"] = logins.get(int(contact["uf_id"])) if contact["uf_id"] else None
    cms_users = [{"uf_id": u.uf_id, "username": u.username, "email": u.email, "roles": list(u.roles),
                  "registered": u.registered, "is_admin": backend.is_admin(u)} for u in users]
    links = queries.links_for(civicrm, settings.domain_id, uf_ids=[u.uf_id for u in users], uf_names=emails)
    log.info("%d existing CMS accounts share an email or username with them; %d UFMatch rows point at those",
             len(cms_users), len(links))
    return {"contacts": contacts, "cms_users": cms_users, "links": links,
            "not_triggered": sorted([cid, why] for cid, why in found.not_triggered.items()),
            "first_attempts_only": found.first_attempts_only}


# --- plan -------------------------------------------------------------------------------------

def batch_size_within(count: int, batch_size: int, max_batches: int) -> int:
    """`batch_size`, grown just enough that `count` rows make at most `max_batches` batches (Airflow's
    `max_map_length`: a mapped task of more instances fails the run)."""
    return max(batch_size, -(-count // max(1, max_batches)))


def plan(run: dict, extracted: dict, kind: CmsType, *, dry_run: bool, limit: int | None,
         max_batches: int = 1024) -> dict:
    """Dedupe and decide in pandas: `plan` (one row per contact) and `batches` (the rows to create/link),
    at most `max_batches` of them."""
    from provisioning import report
    from provisioning.plan import (
        batch_label,
        cms_users_frame,
        contacts_frame,
        links_frame,
        make_batches,
        plan_contacts,
        with_not_triggered,
    )

    settings = settings_of(run)
    plan_df = plan_contacts(contacts_frame(extracted["contacts"]), cms_users_frame(extracted["cms_users"]),
                            links_frame(extracted["links"]), settings, kind.rules, limit=limit,
                            first_attempts_only=extracted.get("first_attempts_only", False))
    plan_df = with_not_triggered(plan_df, {int(cid): why for cid, why in extracted.get("not_triggered") or ()})
    planned = report.planned_outcomes(plan_df, dry_run=dry_run)
    log.info("plan:\n%s", report.summary_table(planned))
    if dry_run:
        log.info("dry run: nothing will be written. %s", report.where_outcomes_are(
            dry_run=True, keep_hours=settings.keep_run_files_hours))
        log.info("%s", report.attention_table(planned, settings.log_attention_rows))
        batches = []
    else:
        acting = int(plan_df["action"].isin(BATCH_ACTIONS).sum())
        size = batch_size_within(acting, settings.batch_size, max_batches)
        if size > settings.batch_size:
            log.info("batch_size %d would make more than %d batches (Airflow's [core] max_map_length): batches of "
                     "%d instead", settings.batch_size, max_batches, size)
        batches = make_batches(plan_df, size)
        log.info("%d contacts to create or link, in %d batches of up to %d", acting, len(batches), size)
    return {"plan": report.to_records(plan_df), "batches": batches,
            "labels": [batch_label(batch) for batch in batches]}


# --- create one batch -------------------------------------------------------------------------

def create(run: dict, rows: list[dict], civicrm, backend: CmsBackend, *, marker: str, stamp: str,
           final_try: bool, state, lock=None, open_backend: Callable[[], CmsBackend] | None = None) -> list[dict]:
    """Create or link one batch; `state` keeps values across tries (get/set, Airflow's task state store);
    `lock` holds the batch's emails (pipeline.locks.EmailLocks of the lock connection); `open_backend` gives
    each creating thread its own CMS session (`max_concurrency`)."""
    return create_batch(rows, batch_context(settings_of(run), civicrm, backend, marker=marker, stamp=stamp,
                                            final_try=final_try, state=state, lock=lock, open_backend=open_backend))


def batch_pacer(settings: Settings) -> Pacer:
    """One batch's pace: its equal share of the run's `max_requests_per_second`, if any."""
    rate = settings.max_requests_per_second
    return Pacer(rate / settings.parallel_batches if rate else None)


def batch_context(settings: Settings, civicrm, backend: CmsBackend, *, marker: str, stamp: str, final_try: bool,
                  state, lock=None, open_backend: Callable[[], CmsBackend] | None = None) -> BatchContext:
    """What a batch needs, wired to the run's hooks (without `lock`: held within this process only)."""

    def write_journal(entries, subjects):
        sources_ = {e.contact_id: settings.activity_source_contact_id or e.contact_id for e in entries}
        return queries.save_journal(civicrm, entries, subject=subjects, stamp=stamp, source=sources_,
                                    marker=marker)

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
        **({"lock": lock} if lock is not None else {}),
    )


# --- finalize ---------------------------------------------------------------------------------

def finalize(run: dict, civicrm, plan_rows: list[dict], labels: list[str], results: list | None, *,
             dry_run: bool, marker: str, stamp: str) -> dict[str, Any]:
    """Outcomes from the plan plus CiviCRM's state; activities, history and clean-up.

    Returns `outcomes` (the per-contact table), `unfinished` (labels of batches that left no result)
    and `counts` per outcome. May run twice for one run: everything it writes is checked first.
    """
    import pandas as pd

    from pipeline.finalize import OUTCOME_COLUMNS, finalize_run
    from provisioning import report

    if dry_run:
        planned = report.planned_outcomes(pd.DataFrame(plan_rows), dry_run=True)
        log.info("dry run: wrote nothing.\n%s", report.summary_table(planned))
        return {"outcomes": report.to_records(planned), "unfinished": [],
                "counts": {"dry_run": True, "contacts": len(planned)}}
    batches = [{"index": index, "label": label} for index, label in enumerate(labels)]
    final, unfinished = finalize_run(civicrm, settings_of(run), triggers_of(run), plan_rows, batches, results,
                                     marker=marker, stamp=stamp)
    counts = final["outcome"].value_counts().to_dict()
    return {"outcomes": report.to_records(final[OUTCOME_COLUMNS]), "unfinished": unfinished,
            "counts": {"contacts": len(final), **{str(k): int(v) for k, v in counts.items()}}}


def finalize_rejected(run: dict, plan_rows: list[dict], gate: dict) -> dict[str, Any]:
    """Finalize of a run whose approval was refused or timed out: every contact `approval_rejected`.

    Nothing was created; nothing is written to CiviCRM (no activity, so no attempt; no history, no
    clean-up: the contacts stay triggered for the next run). The run does not fail.
    """
    from pipeline.finalize import OUTCOME_COLUMNS
    from provisioning import approval, report

    final = approval.rejected_outcomes(plan_rows, gate)
    for row in final.itertuples(index=False):
        log.info("%s", audit_line(row.contact_id, row.outcome, uf_id=row.uf_id, username=row.username))
    log.warning("%s. Wrote nothing to CiviCRM: the %d contacts stay in their trigger groups and tags for the "
                "next run.", approval.decided_line(gate), len(final))
    log.info("outcomes:\n%s", report.summary_table(final))
    return {"outcomes": report.to_records(final[OUTCOME_COLUMNS]), "unfinished": [],
            "counts": {"contacts": len(final), str(Outcome.APPROVAL_REJECTED): len(final),
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
