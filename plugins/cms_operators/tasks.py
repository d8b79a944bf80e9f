"""The nightly DAG's tasks. They orchestrate: hooks do the I/O, `provisioning` decides.

preflight -> extract -> plan -> create_accounts (mapped over batches) -> finalize

No task logs its return value (`show_return_value_in_logs=False`): the values hold members' data.
"""

from __future__ import annotations

import functools
import logging
from datetime import timedelta

import pandas as pd
from airflow.sdk import ExceptionRetryPolicy, RetryAction, RetryRule, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowTaskTimeout

from civicrm_hooks import queries
from civicrm_hooks.hook import CiviCRMAuthError, CiviCRMError, CiviCRMHook, CiviCRMUnavailable
from cms_operators.backend import CmsAuthError, CmsConfigError, CmsError, CmsUnavailable, get_backend
from cms_operators.batch import BatchContext, create_batch
from cms_operators.finalize import OUTCOME_COLUMNS, finalize_run
from provisioning import report
from provisioning.plan import (
    batch_label,
    cms_users_frame,
    contacts_frame,
    links_frame,
    make_batches,
    plan_contacts,
)
from provisioning.settings import Settings, load_settings
from provisioning.usernames import candidate_usernames

log = logging.getLogger(__name__)

CMS_POOL = "cmsuser_cms"
CREATE_TASK_ID = "create_accounts"
TIMED_OUT_KEY = "create_timed_out_at"

# Errors about the run, not about a contact: retrying cannot help, so fail at once.
RUN_LEVEL_POLICY = ExceptionRetryPolicy(rules=[
    RetryRule(exception=CmsAuthError, action=RetryAction.FAIL, reason="CMS refused the credentials"),
    RetryRule(exception=CmsConfigError, action=RetryAction.FAIL, reason="CMS configuration error"),
    RetryRule(exception=CiviCRMAuthError, action=RetryAction.FAIL, reason="CiviCRM refused the credentials"),
])


def run_marker(context) -> str:
    """Names this run in every activity it writes, so a re-run can tell what it already wrote."""
    return queries.run_marker(context["dag"].dag_id, context["run_id"])


def run_stamp(context, settings: Settings) -> str:
    """The run's time in the settings' timezone, as CiviCRM stores activity dates."""
    when = context["dag_run"].run_after
    return pd.Timestamp(when).tz_convert(settings.timezone).strftime("%Y-%m-%d %H:%M:%S")


def _fail(message: str, exc: Exception | None = None):
    raise AirflowFailException(message) from exc


class _Stop(Exception):
    """Pre-flight has found what stops the CiviCRM checks; the CMS is still checked."""


def explains_timeout(task_id: str):
    """Say which setting to raise when a task hits its execution_timeout (Airflow only says 'Timeout')."""
    def wrap(function):
        @functools.wraps(function)
        def run(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except AirflowTaskTimeout:
                minutes = load_settings().task_timeout_minutes[task_id]
                log.error("%s did not finish within %d minutes: raise task_timeout_minutes.%s in the settings "
                          "if the work is this big, or look for a CMS or CiviCRM that stopped answering. "
                          "Everything it finished is recorded; a retry or a clear continues from there.",
                          task_id, minutes, task_id)
                raise
        return run
    return wrap


@task(task_id="preflight", retries=2, retry_policy=RUN_LEVEL_POLICY, show_return_value_in_logs=False)
@explains_timeout("preflight")
def preflight(params=None) -> dict:
    """Both connections authenticate and can do their job; groups, tags and roles exist.

    Nothing about any contact is touched, so a failure here counts no attempt. A site that is
    briefly unreachable is retried; anything else fails the run at once, listing every problem.
    """
    settings = load_settings()
    civicrm = CiviCRMHook(settings.civicrm_conn_id)
    problems: dict[str, list[str]] = {}
    triggers = None
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
        missing = queries.ensure_option_values(civicrm, create=not params["dry_run"])
    except _Stop:
        pass  # without those permissions the other checks would only repeat the same refusals
    except CiviCRMUnavailable:
        raise
    except CiviCRMError as exc:
        problems.setdefault(where, []).append(exc.message)
    cms = None
    try:
        cms = get_backend(settings.cms_type, settings.cms_conn_id).preflight(list(settings.roles))
    except CmsUnavailable:
        raise
    except CmsError as exc:
        problems.setdefault(f"CMS (connection '{settings.cms_conn_id}')", []).extend(
            getattr(exc, "problems", None) or [exc.message])
    if problems:
        count = sum(len(items) for items in problems.values())
        text = "\n".join(f"{where}:\n" + "\n".join(f"  - {item}" for item in items)
                         for where, items in problems.items())
        _fail(f"Pre-flight found {count} problem{'s' if count != 1 else ''}; nothing was done for any "
              f"contact:\n{text}")
    log.info("pre-flight ok: CiviCRM via %r; %s", settings.civicrm_conn_id, cms)
    log.info("triggers: static groups %s, smart groups %s, tags %s; history group %s, tag %s",
             triggers.static_groups, triggers.smart_groups, triggers.tags,
             triggers.history_group, triggers.history_tag)
    if missing:
        verb = "would create" if params["dry_run"] else "created"
        log.info("%s missing CiviCRM options: %s", verb, ", ".join(missing))
    return triggers.to_dict()


@task(task_id="extract", retries=2, retry_exponential_backoff=True, retry_policy=RUN_LEVEL_POLICY,
      show_return_value_in_logs=False)
@explains_timeout("extract")
def extract(triggers: dict) -> dict:
    """Every triggered contact with what the plan needs, and the CMS accounts it could collide with."""
    settings = load_settings()
    context = get_current_context()
    civicrm = CiviCRMHook(settings.civicrm_conn_id)
    resolved = queries.Triggers.from_dict(triggers)
    members = queries.triggered_members(civicrm, resolved, settings.domain_id)
    log.info("%d contacts are in a trigger group or carry a trigger tag", len(members))
    contacts = queries.contact_details(civicrm, members, settings.domain_id)
    history = queries.activity_history(civicrm, members, run_marker(context))
    for contact in contacts:
        contact["sources"] = members[contact["contact_id"]]
        contact["attempts"] = history.attempts.get(contact["contact_id"], 0)
        contact["journal"] = [entry.to_dict() for entry in history.journal.get(contact["contact_id"], [])]
    log.info("%d of them are live contacts (trashed ones are left out); %d have more than one primary email",
             len(contacts), sum(1 for c in contacts if c.get("email_note")))

    emails = sorted({c["email"].strip() for c in contacts if c["email"] and c["email"].strip()})
    backend = get_backend(settings.cms_type, settings.cms_conn_id)
    # the names the plan may give (pattern, fallback pattern, user{id}), as the CMS will see them
    candidates = sorted(set(candidate_usernames(
        contacts, [settings.username_pattern, settings.username_fallback_pattern], backend.sanitize_username)) - {""})
    # accounts an earlier run made but never linked are found by the names its journal recorded
    journal_names = sorted({name for c in contacts if not c["uf_id"] for entry in c["journal"]
                            for name in entry["usernames"]})
    linked_ids = sorted({int(c["uf_id"]) for c in contacts if c["uf_id"]})
    try:
        users = backend.find_users(emails, candidates + journal_names)
        logins = {u.uf_id: u.username for u in backend.users_by_id(linked_ids)}
    except (CmsAuthError, CmsConfigError) as exc:
        _fail(f"CMS connection {settings.cms_conn_id!r}: {exc.message}", exc)
    for contact in contacts:
        contact["cms_login"] = logins.get(int(contact["uf_id"])) if contact["uf_id"] else None
    cms_users = [{"uf_id": u.uf_id, "username": u.username, "email": u.email, "roles": list(u.roles),
                  "registered": u.registered, "is_admin": backend.is_admin(u)} for u in users]
    links = queries.links_for(civicrm, settings.domain_id, uf_ids=[u.uf_id for u in users], uf_names=emails)
    log.info("%d existing CMS accounts share an email or username with them; %d UFMatch rows point at those",
             len(cms_users), len(links))
    return {"contacts": contacts, "cms_users": cms_users, "links": links}


@task(task_id="plan", retries=2, retry_policy=RUN_LEVEL_POLICY, show_return_value_in_logs=False)
@explains_timeout("plan")
def plan(extracted: dict, params=None) -> list[dict]:
    """Dedupe and decide in pandas; each batch goes under its own XCom key, only labels are returned."""
    settings = load_settings()
    context = get_current_context()
    backend = get_backend(settings.cms_type, settings.cms_conn_id)
    plan_df = plan_contacts(
        contacts_frame(extracted["contacts"]),
        cms_users_frame(extracted["cms_users"]),
        links_frame(extracted["links"]),
        settings, sanitize=backend.sanitize_username, max_email_length=backend.max_email_length,
        max_username_length=backend.max_username_length, limit=params.get("limit"))
    rows = report.to_records(plan_df)
    ti = context["ti"]
    ti.xcom_push(key="plan", value=rows)
    planned = report.planned_outcomes(plan_df, dry_run=params["dry_run"])
    log.info("plan:\n%s", report.summary_table(planned))
    if params["dry_run"]:
        log.info("dry run: nothing will be written. %s", report.where_outcomes_are(dry_run=True))
        log.info("%s", report.attention_table(planned, settings.log_attention_rows))
        return []
    batches = make_batches(plan_df, settings.batch_size)
    descriptors = []
    for index, batch in enumerate(batches):
        ti.xcom_push(key=f"batch_{index}", value=batch)
        descriptors.append({"index": index, "label": batch_label(batch)})
    log.info("%d contacts to create or link, in %d batches of up to %d",
             sum(len(b) for b in batches), len(batches), settings.batch_size)
    return descriptors


@task(task_id=CREATE_TASK_ID, map_index_template="{{ batch_label }}", pool=CMS_POOL,
      retries=3, retry_exponential_backoff=True, retry_policy=RUN_LEVEL_POLICY, show_return_value_in_logs=False)
@explains_timeout(CREATE_TASK_ID)
def create_accounts(batch: dict, task_state_store=None) -> list[dict]:
    """Create or link one batch of accounts; retried by Airflow for transient CMS errors only."""
    settings = load_settings()
    context = get_current_context()
    context["batch_label"] = batch["label"]
    ti = context["ti"]
    rows = ti.xcom_pull(task_ids="plan", key=f"batch_{batch['index']}")
    ctx = batch_context(settings, marker=run_marker(context), stamp=run_stamp(context, settings),
                        final_try=ti.try_number > ti.max_tries, state=task_state_store)
    log.info("%s: try %d of %d", batch["label"], ti.try_number, ti.max_tries + 1)
    results = create_batch(rows, ctx)
    counts = pd.Series([r["outcome"] for r in results]).value_counts().to_dict()
    log.info("%s done: %s", batch["label"], ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return results


def batch_context(settings: Settings, *, marker: str, stamp: str, final_try: bool, state) -> BatchContext:
    """What a batch needs, wired to the run's hooks; `state` is the task state store (or any get/set)."""
    civicrm = CiviCRMHook(settings.civicrm_conn_id)
    backend = get_backend(settings.cms_type, settings.cms_conn_id)

    def write_journal(entries, subjects):
        sources = {e.contact_id: settings.activity_source_contact_id or e.contact_id for e in entries}
        return queries.save_journal(civicrm, entries, subject=subjects, stamp=stamp, source=sources,
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
    )


@task(task_id="finalize", trigger_rule="all_done", retries=2, retry_exponential_backoff=True,
      retry_policy=RUN_LEVEL_POLICY, show_return_value_in_logs=False)
@explains_timeout("finalize")
def finalize(params=None) -> dict:
    """Outcomes from the plan plus CiviCRM's state; activities, history and clean-up; the summary.

    Runs whatever happened upstream, and may run twice: everything it writes is checked first.
    """
    settings = load_settings()
    context = get_current_context()
    ti = context["ti"]
    # Pulled, not passed as arguments: upstream may have failed and left nothing.
    triggers = ti.xcom_pull(task_ids="preflight")
    plan_rows = ti.xcom_pull(task_ids="plan", key="plan")
    batches = ti.xcom_pull(task_ids="plan") or []
    if plan_rows is None or triggers is None:
        _fail("The run stopped before it had a plan (see the pre-flight, extract or plan task log); "
              "nothing was written for any contact.")
    if params["dry_run"]:
        planned = report.planned_outcomes(pd.DataFrame(plan_rows), dry_run=True)
        log.info("dry run: wrote nothing.\n%s", report.summary_table(planned))
        ti.xcom_push(key="outcomes", value=report.to_records(planned))
        log.info("%s", report.where_outcomes_are(dry_run=True))
        return {"dry_run": True, "contacts": len(planned)}

    # aligned with the batches; None where a batch left no result
    results = ti.xcom_pull(task_ids=CREATE_TASK_ID, map_indexes=list(range(len(batches)))) if batches else []
    final, unfinished = finalize_run(
        CiviCRMHook(settings.civicrm_conn_id), settings, queries.Triggers.from_dict(triggers), plan_rows,
        batches, results, marker=run_marker(context), stamp=run_stamp(context, settings))
    ti.xcom_push(key="outcomes", value=report.to_records(final[OUTCOME_COLUMNS]))
    log.info("%s", report.where_outcomes_are(dry_run=False))
    if unfinished:
        _fail(f"{len(unfinished)} batch(es) did not finish: {', '.join(unfinished)}. Their contacts were "
              "recorded as deferred and get no attempt; clear the failed create_accounts task(s) to retry "
              "them once the CMS is healthy.")
    counts = final["outcome"].value_counts().to_dict()
    return {"contacts": len(final), **{str(k): int(v) for k, v in counts.items()}}


def retry_delay(settings: Settings) -> timedelta:
    return timedelta(seconds=settings.retry_delay_seconds)


def execution_timeout(settings: Settings, task_id: str) -> timedelta:
    return timedelta(minutes=settings.task_timeout_minutes[task_id])
