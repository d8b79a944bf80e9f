"""The nightly DAG's tasks. They orchestrate: hooks do the I/O, `provisioning` decides.

preflight -> extract -> plan -> create_accounts (mapped over batches) -> finalize
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pandas as pd
from airflow.sdk import ExceptionRetryPolicy, RetryAction, RetryRule, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from civicrm_hooks import queries
from civicrm_hooks.hook import CiviCRMAuthError, CiviCRMError, CiviCRMHook, CiviCRMUnavailable
from cms_operators.backend import CmsAuthError, CmsConfigError, CmsError, CmsUnavailable, get_backend
from cms_operators.batch import BatchContext, MailLedger, create_batch
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
from provisioning.usernames import render_username

log = logging.getLogger(__name__)

CMS_POOL = "cmsuser_cms"
CREATE_TASK_ID = "create_accounts"

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


@task(task_id="preflight", retries=2, retry_policy=RUN_LEVEL_POLICY)
def preflight(params=None) -> dict:
    """Both connections authenticate and can do their job; groups, tags and roles exist.

    Nothing about any contact is touched, so a failure here counts no attempt. A site that is
    briefly unreachable is retried; anything else fails the run at once with what to fix.
    """
    settings = load_settings()
    civicrm = CiviCRMHook(settings.civicrm_conn_id)
    try:
        queries.probe_read_permissions(civicrm)
        triggers = queries.resolve_triggers(civicrm, settings)
        missing = queries.ensure_option_values(civicrm, create=not params["dry_run"])
    except queries.TriggerError as exc:
        _fail(f"Pre-flight: {exc}", exc)
    except CiviCRMUnavailable:
        raise
    except CiviCRMError as exc:
        _fail(f"Pre-flight: CiviCRM connection {settings.civicrm_conn_id!r}: {exc}", exc)
    try:
        cms = get_backend(settings.cms_type, settings.cms_conn_id).preflight(list(settings.roles))
    except CmsUnavailable:
        raise
    except CmsError as exc:
        _fail(f"Pre-flight: CMS connection {settings.cms_conn_id!r}: {exc.message}", exc)
    log.info("pre-flight ok: CiviCRM via %r; %s", settings.civicrm_conn_id, cms)
    log.info("triggers: static groups %s, smart groups %s, tags %s; history group %s, tag %s",
             triggers.static_groups, triggers.smart_groups, triggers.tags,
             triggers.history_group, triggers.history_tag)
    if missing:
        verb = "would create" if params["dry_run"] else "created"
        log.info("%s missing CiviCRM options: %s", verb, ", ".join(missing))
    return triggers.to_dict()


@task(task_id="extract")
def extract(triggers: dict) -> dict:
    """Every triggered contact with what the plan needs, and the CMS accounts it could collide with."""
    settings = load_settings()
    context = get_current_context()
    civicrm = CiviCRMHook(settings.civicrm_conn_id)
    resolved = queries.Triggers.from_dict(triggers)
    members = queries.triggered_members(civicrm, resolved, settings.domain_id)
    log.info("%d contacts are in a trigger group or carry a trigger tag", len(members))
    contacts = queries.contact_details(civicrm, members, settings.domain_id)
    attempts = queries.attempt_history(civicrm, members, run_marker(context))
    for contact in contacts:
        contact["sources"] = members[contact["contact_id"]]
        contact["attempts"] = attempts.get(contact["contact_id"], 0)
    log.info("%d of them are live contacts (trashed ones are left out)", len(contacts))

    emails = sorted({c["email"].strip() for c in contacts if c["email"] and c["email"].strip()})
    candidates = sorted({render_username(settings.username_pattern, c) for c in contacts} - {""})
    backend = get_backend(settings.cms_type, settings.cms_conn_id)
    try:
        users = backend.find_users(emails, [backend.sanitize_username(u) for u in candidates])
    except (CmsAuthError, CmsConfigError) as exc:
        _fail(f"CMS connection {settings.cms_conn_id!r}: {exc.message}", exc)
    cms_users = [{"uf_id": u.uf_id, "username": u.username, "email": u.email, "roles": list(u.roles)}
                 for u in users]
    links = queries.links_for(civicrm, settings.domain_id, uf_ids=[u.uf_id for u in users], uf_names=emails)
    log.info("%d existing CMS accounts share an email or username with them; %d UFMatch rows point at those",
             len(cms_users), len(links))
    return {"contacts": contacts, "cms_users": cms_users, "links": links}


@task(task_id="plan")
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
    log.info("plan:\n%s", report.summary_table(report.planned_outcomes(plan_df)))
    if params["dry_run"]:
        log.info("dry run: nothing will be written; planned outcomes:\n%s",
                 report.outcome_table(report.planned_outcomes(plan_df), max_rows=len(plan_df)))
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
      retries=3, retry_exponential_backoff=True, retry_policy=RUN_LEVEL_POLICY)
def create_accounts(batch: dict, task_state_store=None) -> list[dict]:
    """Create or link one batch of accounts; retried by Airflow for transient CMS errors only."""
    settings = load_settings()
    context = get_current_context()
    context["batch_label"] = batch["label"]
    ti = context["ti"]
    rows = ti.xcom_pull(task_ids="plan", key=f"batch_{batch['index']}")
    civicrm = CiviCRMHook(settings.civicrm_conn_id)
    ledger = MailLedger(load=lambda: task_state_store.get("mail_ledger"),
                        store=lambda state: task_state_store.set("mail_ledger", state))
    ctx = BatchContext(
        backend=get_backend(settings.cms_type, settings.cms_conn_id),
        linked_accounts=lambda ids: queries.linked_accounts(civicrm, ids, settings.domain_id),
        save_links=lambda links: queries.save_links(civicrm, links, settings.domain_id),
        mail_ledger=ledger,
        notify=settings.notify,
        retried=ti.try_number > 1,
        final_try=ti.try_number > ti.max_tries,
    )
    log.info("%s: try %d of %d", batch["label"], ti.try_number, ti.max_tries + 1)
    results = create_batch(rows, ctx)
    counts = pd.Series([r["outcome"] for r in results]).value_counts().to_dict()
    log.info("%s done: %s", batch["label"], ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return results


@task(task_id="finalize", trigger_rule="all_done")
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
        planned = report.planned_outcomes(pd.DataFrame(plan_rows))
        log.info("dry run: wrote nothing.\n%s", report.summary_table(planned))
        ti.xcom_push(key="outcomes", value=report.to_records(planned))
        return {"dry_run": True, "contacts": len(planned)}

    # aligned with the batches; None where a batch left no result
    results = ti.xcom_pull(task_ids=CREATE_TASK_ID, map_indexes=list(range(len(batches)))) if batches else []
    final, unfinished = finalize_run(
        CiviCRMHook(settings.civicrm_conn_id), settings, queries.Triggers.from_dict(triggers), plan_rows,
        batches, results, marker=run_marker(context), stamp=run_stamp(context, settings))
    ti.xcom_push(key="outcomes", value=report.to_records(final[OUTCOME_COLUMNS]))
    if unfinished:
        _fail(f"{len(unfinished)} batch(es) did not finish: {', '.join(unfinished)}. Their contacts were "
              "recorded as deferred and get no attempt; clear the failed create_accounts task(s) to retry "
              "them once the CMS is healthy.")
    counts = final["outcome"].value_counts().to_dict()
    return {"contacts": len(final), **{str(k): int(v) for k, v in counts.items()}}


def retry_delay(settings: Settings) -> timedelta:
    return timedelta(seconds=settings.retry_delay_seconds)
