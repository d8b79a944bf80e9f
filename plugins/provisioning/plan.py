"""Decide, for every triggered contact, what the run should do: create, link, or nothing (and why).

Pure pandas: the inputs come from the extract step, the output feeds the create batches and the
dry-run report. Rules are applied in order; the first that matches decides a contact.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from provisioning import journal
from provisioning import outcomes as why
from provisioning.journal import JournalEntry
from provisioning.outcomes import Outcome
from provisioning.rules import AccountRules
from provisioning.settings import Settings
from provisioning.usernames import candidate_usernames, render_usernames, suffix_base, unique_usernames
from provisioning.vocabulary import BATCH_ACTIONS, Action, OnExistingEmail

CONTACT_COLUMNS = [
    "contact_id",
    "contact_type",
    "first_name",
    "last_name",
    "display_name",
    "email",
    "is_deceased",
    "do_not_email",
    "preferred_language",
    "uf_id",
    "uf_name",
    "sources",
    "attempts",
    "tried",
    "email_note",
    "journal",
    "cms_login",
]
CMS_USER_COLUMNS = ["uf_id", "username", "email", "roles", "registered", "is_admin"]
LINK_COLUMNS = ["contact_id", "uf_id", "uf_name"]
PLAN_COLUMNS = [
    "contact_id",
    "email",
    "action",
    "outcome",
    "reason",
    "username",
    "username_base",
    "uf_id",
    "roles",
    "first_name",
    "last_name",
    "display_name",
    "locale",
    "user_fields",
    "do_not_email",
    "sources",
    "attempts",
    "uf_name",
    "journal_activity_id",
    "exhausted",
]

CREATE, LINK, NONE = Action.CREATE, Action.LINK, Action.NONE

_FALSE_TEXTS = {"", "0", "false", "no", "off"}


# ---------------------------------------------------------------------------------------------
# Input frames


def contacts_frame(records: Iterable[Mapping] | None = None) -> pd.DataFrame:
    """A contacts frame with all CONTACT_COLUMNS from extract's list of dicts (possibly empty)."""
    return pd.DataFrame(list(records or []), columns=CONTACT_COLUMNS)


def cms_users_frame(records: Iterable[Mapping] | None = None) -> pd.DataFrame:
    return pd.DataFrame(list(records or []), columns=CMS_USER_COLUMNS)


def links_frame(records: Iterable[Mapping] | None = None) -> pd.DataFrame:
    return pd.DataFrame(list(records or []), columns=LINK_COLUMNS)


def _with_columns(frame: pd.DataFrame | None, columns: list[str]) -> pd.DataFrame:
    if frame is None:
        return pd.DataFrame(columns=columns)
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        frame = frame.assign(**{column: None for column in missing})
    return frame


def _text(series: pd.Series) -> pd.Series:
    """Trimmed text, '' for missing values, as an object column."""
    values = series.astype(object)
    return values.where(values.notna(), "").map(lambda value: str(value).strip()).astype(object)


def _optional_ids(series: pd.Series) -> pd.Series:
    """Ids as Python ints, None where missing (object column, JSON-safe)."""
    numbers = pd.to_numeric(series, errors="coerce")
    return pd.Series(
        [None if math.isnan(value) else int(value) for value in numbers.astype(float)],
        index=series.index,
        dtype=object,
    )


def _truthy(value: Any) -> bool:
    if value is None or value is pd.NA:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE_TEXTS
    return bool(value)


def _as_list(value: Any) -> list:
    if isinstance(value, (list, tuple, np.ndarray)):
        return list(value)
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return []
    return [value]


def _merge_duplicate_contacts(contacts: pd.DataFrame) -> pd.DataFrame:
    """Keep one row per contact_id (the first), with the sources of all its rows."""
    if not contacts["contact_id"].duplicated().any():
        return contacts
    sources = contacts.groupby("contact_id", sort=False)["sources"].agg(
        lambda lists: list(dict.fromkeys(item for value in lists for item in _as_list(value)))
    )
    first = contacts.drop_duplicates("contact_id", keep="first").copy()
    first["sources"] = first["contact_id"].map(sources)
    return first


# ---------------------------------------------------------------------------------------------
# Planning


def plan_contacts(
    contacts: pd.DataFrame,
    cms_users: pd.DataFrame,
    links: pd.DataFrame,
    settings: Settings,
    rules: AccountRules,
    *,
    limit: int | None = None,
    first_attempts_only: bool = False,
) -> pd.DataFrame:
    """One row per contact (sorted by contact_id) with its action, planned outcome and reason.

    `rules` are the CMS's (usernames, email limits, administrators); the plan names no CMS itself.
    `first_attempts_only` (the near-real-time run): a contact tried since its last give-up is left to
    the nightly run.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be 0 or more (or None for no limit), got {limit}")

    contacts = _with_columns(contacts, CONTACT_COLUMNS)
    contacts = contacts[contacts["contact_id"].notna()]
    contacts = contacts.astype({"contact_id": "int64"})
    contacts = _merge_duplicate_contacts(contacts)
    contacts = contacts.sort_values("contact_id", kind="stable").reset_index(drop=True)
    count = len(contacts)

    contact_ids = contacts["contact_id"].to_numpy()
    email = _text(contacts["email"])
    email_key = email.str.lower().astype(object)
    own_uf_id = _optional_ids(contacts["uf_id"])

    action = np.full(count, NONE, dtype=object)
    outcome = np.full(count, None, dtype=object)
    reason = np.full(count, None, dtype=object)
    username = np.full(count, "", dtype=object)
    uf_id = np.full(count, None, dtype=object)
    journal_activity_id = np.full(count, None, dtype=object)
    undecided = np.ones(count, dtype=bool)
    attempts = pd.to_numeric(contacts["attempts"], errors="coerce").fillna(0).astype("int64").to_numpy()

    def decide(mask, outcome_value: Outcome, reasons, *, action_value: str = NONE) -> None:
        """Settle the still-undecided rows in `mask`; `reasons` is a text or one text per row of mask."""
        rows = np.flatnonzero(np.asarray(mask, dtype=bool) & undecided)
        if not len(rows):
            return
        outcome[rows] = outcome_value.value
        action[rows] = action_value
        if isinstance(reasons, str):
            reason[rows] = reasons
        else:
            reason[rows] = [reasons(row) for row in rows]
        undecided[rows] = False

    # 1. deceased
    decide(contacts["is_deceased"].map(_truthy).to_numpy(dtype=bool), Outcome.FAILED, why.CONTACT_DECEASED)

    # 2. already linked in this domain. The extract reports the contact's own UFMatch; one that
    # only shows up in `links` counts as well, since CiviCRM would refuse a second link.
    users, taken_usernames = _prepare_cms_users(cms_users, rules)
    link_rows = _prepare_links(links)
    uf_names = _text(contacts["uf_name"])
    first_links = link_rows.sort_values("uf_id", key=lambda ids: ids.astype("int64"), kind="stable")
    first_links = first_links[first_links["uf_id"].notna()].drop_duplicates("contact_id")
    link_of = dict(
        zip(
            first_links["contact_id"],
            zip(first_links["uf_id"], first_links["uf_name"], strict=True),
            strict=True,
        )
    )
    for row in np.flatnonzero(
        own_uf_id.isna().to_numpy() & contacts["contact_id"].isin(list(link_of)).to_numpy()
    ):
        own_uf_id.iat[row], uf_names.iat[row] = link_of[contact_ids[row]]
    has_link = own_uf_id.notna().to_numpy() & undecided
    # the CMS's own login where the extract found it (UFMatch's uf_name is usually the email)
    logins = _text(contacts["cms_login"])
    username[has_link] = logins.where(logins != "", uf_names)[has_link].to_numpy()
    uf_id[has_link] = own_uf_id[has_link].to_numpy()
    decide(has_link, Outcome.ALREADY_LINKED, lambda row: why.already_linked(uf_names[row], own_uf_id[row]))

    # 2a. first attempts only: four attempts are not to be used up within minutes
    if first_attempts_only:
        tried = pd.to_numeric(contacts["tried"], errors="coerce").fillna(0).astype("int64").to_numpy()
        decide(tried > 0, Outcome.LEFT_TO_NIGHTLY, lambda row: why.tried_before(int(tried[row])))

    # 2b. attempts used up before this run: an earlier run could not finish taking the contact off
    # its triggers; finalize finishes that now, without another attempt
    exhausted = (attempts >= settings.max_attempts) & undecided
    decide(exhausted, Outcome.FAILED, lambda row: why.exhausted_earlier(int(attempts[row])))

    # 3-5. email present, valid and storable
    decide((email == "").to_numpy(), Outcome.FAILED, why.NO_PRIMARY_EMAIL)
    valid = email.str.fullmatch(rules.email_pattern).fillna(False).astype(bool)
    decide((~valid).to_numpy(), Outcome.FAILED, lambda row: why.invalid_email(email[row]))
    decide(
        (email.str.len() > rules.max_email_length).to_numpy(), Outcome.FAILED,
        why.email_too_long(rules.max_email_length),
    )

    # 5b. an account this pipeline made for the contact and never linked (its journal names it):
    # it is the contact's own, whatever its email, never just "an existing account"
    _adopt_own_accounts(contacts, cms_users, link_rows, undecided, decide, username, uf_id, journal_activity_id,
                        rules)

    # 6. one email, one contact: the lowest contact id keeps it
    open_rows = np.flatnonzero(undecided)
    lowest = (
        pd.Series(contact_ids[open_rows], index=open_rows)
        .groupby(email_key.iloc[open_rows].to_numpy())
        .transform("min")
    )
    shared = np.zeros(count, dtype=bool)
    shared[open_rows] = (lowest != contact_ids[open_rows]).to_numpy()
    decide(shared, Outcome.FAILED, lambda row: why.email_shared(email[row], lowest[row]))

    # 7. a CMS account already has this email
    open_rows = np.flatnonzero(undecided)
    matches = (
        pd.DataFrame(
            {
                "row": open_rows,
                "email_key": email_key.iloc[open_rows].to_numpy(),
                "contact_id": contact_ids[open_rows],
            }
        )
        .merge(users, on="email_key", how="inner")
        .set_index("row")
    )
    if len(matches):
        linked = (
            matches[["contact_id", "uf_id"]]
            .reset_index()
            .merge(
                link_rows[["contact_id", "uf_id"]].rename(columns={"contact_id": "linked_contact"}),
                on="uf_id",
            )
        )
        # Any link found is another contact's: a contact's own links settled it in rule 2.
        other_owner = linked.groupby("row")["linked_contact"].min()

        matched = np.zeros(count, dtype=bool)
        matched[matches.index.to_numpy()] = True
        username[matched] = matches["username"].reindex(np.flatnonzero(matched)).to_numpy()
        uf_id[matched] = matches["uf_id"].reindex(np.flatnonzero(matched)).to_numpy()

        def account(row) -> tuple[str, int]:
            return matches.at[row, "username"], matches.at[row, "uf_id"]

        decide(
            _mask(count, other_owner.index),
            Outcome.FAILED,
            lambda row: why.account_linked_to_other(*account(row), other_owner[row]),
        )
        admin_rows = matches.index[matches["is_admin"].to_numpy(dtype=bool)]
        decide(
            _mask(count, admin_rows), Outcome.FAILED, lambda row: why.account_is_administrator(*account(row))
        )
        if settings.on_existing_email == OnExistingEmail.FAIL:
            decide(matched, Outcome.FAILED, lambda row: why.existing_email_not_linked(*account(row)))
        decide(matched, Outcome.LINKED_EXISTING, why.EXISTING_ACCOUNT_SAME_EMAIL, action_value=LINK)
        # Failed rows keep the account's name and id in the reason, not as the contact's own.
        failed_here = matched & (outcome == Outcome.FAILED.value)
        username[failed_here] = ""
        uf_id[failed_here] = None

    # 8. CiviCRM would refuse a second UFMatch with the same login name (uf_name) in the domain
    open_rows = np.flatnonzero(undecided)
    login_owners = (
        pd.DataFrame(
            {
                "row": open_rows,
                "uf_name_key": email_key.iloc[open_rows].to_numpy(),
                "contact_id": contact_ids[open_rows],
            }
        )
        .merge(
            link_rows[["uf_name_key", "contact_id"]].rename(columns={"contact_id": "owner"}), on="uf_name_key"
        )
        .groupby("row")["owner"]
        .min()
    )
    decide(
        _mask(count, login_owners.index),
        Outcome.FAILED,
        lambda row: why.email_is_login_of(email[row], login_owners[row]),
    )

    # 9. create: a unique username from the pattern, else the fallback pattern, else user{contact_id}
    open_rows = np.flatnonzero(undecided)
    name_fields = contacts.iloc[open_rows][["first_name", "last_name", "display_name", "contact_id"]].assign(
        email=email.iloc[open_rows].to_numpy()
    )
    patterns = [settings.username_pattern, settings.username_fallback_pattern]
    candidates = pd.Series(
        candidate_usernames(name_fields.to_dict("records"), patterns, rules.sanitize_username), index=open_rows, dtype=object
    )
    empty = candidates == ""
    # Only a sanitiser that leaves nothing even of user{contact_id} gets here; kept for safety.
    decide(
        _mask(count, candidates.index[empty]), Outcome.FAILED, why.empty_username(settings.username_pattern)
    )
    creating = candidates.index[~empty]
    username[creating] = unique_usernames(candidates[~empty], taken_usernames, rules.max_username_length).to_numpy()
    # The name before any suffix, so a retry after a race bumps jane.doe2 to jane.doe3, not jane.doe22.
    username_base = np.full(count, "", dtype=object)
    username_base[creating] = [suffix_base(name, rules.max_username_length) for name in candidates[~empty]]
    decide(_mask(count, creating), Outcome.CREATED, why.NEW_ACCOUNT, action_value=CREATE)

    # 10. limit: the lowest contact ids go first, the rest wait for the next run
    if limit is not None:
        acting = np.flatnonzero(np.isin(action, BATCH_ACTIONS))
        later = acting[limit:]
        action[later] = NONE
        outcome[later] = Outcome.DEFERRED.value
        reason[later] = why.beyond_limit(limit)

    notes = _text(contacts["email_note"])
    reason = np.array([f"{text}; {note}" if note and text else text for text, note in zip(reason, notes,
                                                                                           strict=True)],
                      dtype=object)
    roles = [list(settings.roles) if value == CREATE else [] for value in action]
    columns = {
        "contact_id": contact_ids.astype("int64"),
        "email": _none_if_blank(email),
        "action": action,
        "outcome": outcome,
        "reason": reason,
        "username": username,
        "username_base": np.where(action == CREATE, username_base, ""),  # '' once rule 10 defers a create
        "uf_id": uf_id,
        "roles": roles,
        "first_name": _text(contacts["first_name"]),
        "last_name": _text(contacts["last_name"]),
        "display_name": _text(contacts["display_name"]),
        "locale": (_none_if_blank(_text(contacts["preferred_language"])) if settings.sync_preferred_language
                   else np.full(count, None, dtype=object)),
        "user_fields": _user_fields(contacts, action, settings.user_fields),
        "do_not_email": contacts["do_not_email"].map(_truthy).to_numpy(dtype=bool),
        "sources": contacts["sources"].map(_as_list),
        "attempts": attempts,
        "uf_name": _none_if_blank(uf_names),
        "journal_activity_id": journal_activity_id,
        "exhausted": exhausted,
    }
    # Text columns stay `object` so a missing value is None, as in the batches, not NaN.
    return pd.DataFrame(
        {
            name: values
            if isinstance(values, np.ndarray) and values.dtype != object
            else pd.Series(list(values), dtype=object)
            for name, values in columns.items()
        },
        columns=PLAN_COLUMNS,
    )


def _adopt_own_accounts(contacts, cms_users, link_rows, undecided, decide, username, uf_id,
                        journal_activity_id, rules: AccountRules) -> None:
    """Rule 5b: link (as `created`) the accounts the contacts' journal entries name."""
    rows = [row for row in np.flatnonzero(undecided) if _as_list(contacts["journal"].iat[row])]
    if not rows:
        return
    users = _with_columns(cms_users, CMS_USER_COLUMNS).to_dict("records")
    owners: dict[int, set[int]] = {}
    for link in link_rows.itertuples(index=False):
        if link.uf_id is not None:
            owners.setdefault(int(link.uf_id), set()).add(int(link.contact_id))
    adopted, admins, others = {}, {}, {}
    for row in rows:
        contact_id = int(contacts["contact_id"].iat[row])
        entries = [JournalEntry.from_dict(contact_id, e) for e in _as_list(contacts["journal"].iat[row])]
        for user in users:
            if user.get("uf_id") is None:
                continue
            entry = journal.owner_entry(entries, int(user["uf_id"]), str(user.get("username") or ""),
                                        user.get("registered"))
            if entry is None:
                continue
            account = (str(user.get("username") or ""), int(user["uf_id"]))
            other = owners.get(account[1], set()) - {contact_id}
            if _is_admin(user.get("is_admin"), user.get("uf_id"), user.get("roles"), rules):
                admins[row] = account
            elif other:
                others[row] = (*account, min(other))
            else:
                adopted[row] = (*account, entry)
            break
    decide(_mask(len(undecided), admins), Outcome.FAILED, lambda row: why.account_is_administrator(*admins[row]))
    decide(_mask(len(undecided), others), Outcome.FAILED,
           lambda row: why.account_linked_to_other(*others[row]))
    for row, (name, account_id, entry) in adopted.items():
        username[row], uf_id[row], journal_activity_id[row] = name, account_id, entry.activity_id
    decide(_mask(len(undecided), adopted), Outcome.CREATED,
           lambda row: why.adopted_from_journal(adopted[row][2].sent), action_value=LINK)


def _user_fields(contacts: pd.DataFrame, action: np.ndarray, patterns: dict[str, str]) -> list[dict | None]:
    """Per contact to create, the configured extra user fields rendered from its own fields ('' left out)."""
    if not patterns:
        return [None] * len(contacts)
    records = contacts.to_dict("records")
    rendered = {name: render_usernames(pattern, records) for name, pattern in patterns.items()}
    return [{name: values[row].strip() for name, values in rendered.items() if values[row].strip()}
            if action[row] == CREATE else None for row in range(len(contacts))]


def _none_if_blank(text: pd.Series) -> np.ndarray:
    return text.where(text != "", None).to_numpy(dtype=object)


def _mask(count: int, rows: Iterable[int]) -> np.ndarray:
    mask = np.zeros(count, dtype=bool)
    mask[np.asarray(list(rows), dtype=np.int64)] = True
    return mask


def _is_admin(flag: Any, uf_id: Any, roles: Any, rules: AccountRules) -> bool:
    """The backend says which accounts administer the site; without its word, the CMS's rules."""
    if flag is not None and not (isinstance(flag, float) and math.isnan(flag)):
        return _truthy(flag)
    return rules.is_admin(uf_id, _as_list(roles))


def _prepare_cms_users(cms_users: pd.DataFrame | None, rules: AccountRules) -> tuple[pd.DataFrame, list[str]]:
    """CMS users keyed by lower-cased email (the lowest uf_id per email), and every username."""
    users = _with_columns(cms_users, CMS_USER_COLUMNS)
    table = pd.DataFrame(
        {
            "uf_id": _optional_ids(users["uf_id"]).to_numpy(),
            "username": _text(users["username"]).to_numpy(),
            "email_key": _text(users["email"]).str.lower().to_numpy(),
            "is_admin": [_is_admin(flag, uf_id, roles, rules) for flag, uf_id, roles
                         in zip(users["is_admin"], users["uf_id"], users["roles"], strict=True)],
        },
        columns=["uf_id", "username", "email_key", "is_admin"],
    )
    taken = [name for name in table["username"] if name]
    table = table[table["uf_id"].notna() & (table["email_key"] != "")]
    table = table.sort_values("uf_id", key=lambda ids: ids.astype("int64"), kind="stable")
    return table.drop_duplicates("email_key", keep="first"), taken


def _prepare_links(links: pd.DataFrame | None) -> pd.DataFrame:
    """UFMatch rows with int ids and a lower-cased uf_name key."""
    rows = _with_columns(links, LINK_COLUMNS)
    table = pd.DataFrame(
        {
            "contact_id": _optional_ids(rows["contact_id"]).to_numpy(),
            "uf_id": _optional_ids(rows["uf_id"]).to_numpy(),
            "uf_name": _text(rows["uf_name"]).to_numpy(),
            "uf_name_key": _text(rows["uf_name"]).str.lower().to_numpy(),
        },
        columns=["contact_id", "uf_id", "uf_name", "uf_name_key"],
    )
    return table[table["contact_id"].notna()]


def with_not_triggered(plan: pd.DataFrame, reasons: Mapping[int, str]) -> pd.DataFrame:
    """The plan plus a `not_triggered` row for each contact a run was asked for that is in no trigger
    (contact id -> why): nothing is done for them, nothing is written; sorted by contact_id."""
    if not reasons:
        return plan
    extra = pd.DataFrame({
        "contact_id": pd.Series(list(reasons), dtype="int64"),
        "action": NONE, "outcome": Outcome.NOT_TRIGGERED.value,
        "reason": pd.Series(list(reasons.values()), dtype=object), "username": "", "username_base": "",
        "first_name": "", "last_name": "", "display_name": "", "do_not_email": False,
        "sources": pd.Series([[] for _ in reasons], dtype=object), "attempts": 0, "exhausted": False,
    }, columns=PLAN_COLUMNS)
    for column in PLAN_COLUMNS:  # the rest None, as a planned row without a value has it
        if extra[column].isna().all():
            extra[column] = pd.Series([None] * len(extra), dtype=object)
    frames = [frame for frame in (plan, extra) if len(frame)]
    return pd.concat(frames, ignore_index=True).sort_values("contact_id", kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Batches


def make_batches(plan: pd.DataFrame, batch_size: int) -> list[list[dict]]:
    """The create/link rows of the plan in contact_id order, cut into batches of JSON-safe dicts."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    plan = plan.reset_index(drop=True)  # an index named contact_id would make sorting ambiguous
    acting = plan[plan["action"].isin(BATCH_ACTIONS)].sort_values("contact_id", kind="stable")
    records = json_safe_records(acting)
    return [records[start : start + batch_size] for start in range(0, len(records), batch_size)]


def json_safe_records(frame: pd.DataFrame) -> list[dict]:
    """The frame's rows as dicts of plain Python values (no numpy scalars, NaN as None)."""
    # Column by column: tolist() already gives Python scalars for numeric columns.
    columns = {str(name): [_json_safe(value) for value in frame[name].tolist()] for name in frame.columns}
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def batch_label(batch: list[dict]) -> str:
    """A short human label for a batch, e.g. 'contacts 101-103 (3)'."""
    ids = [row["contact_id"] for row in batch]
    if not ids:
        return "no contacts (0)"
    if len(ids) == 1:
        return f"contact {ids[0]} (1)"
    return f"contacts {min(ids)}-{max(ids)} ({len(ids)})"


_PLAIN_TYPES = (str, int, bool)


def _json_safe(value: Any) -> Any:
    """Plain Python values only: XCom and JSON choke on numpy scalars and NaN."""
    if value is None or type(value) in _PLAIN_TYPES:
        return value
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_safe(item) for item in value]
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return None
        # Ids in a column with gaps arrive as floats (45.0); they are ids all the same.
        return int(value) if float(value).is_integer() else float(value)
    if isinstance(value, str):
        return str(value)  # also turns StrEnum members into plain text
    return value
