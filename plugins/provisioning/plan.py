"""Decide, for every triggered contact, what the run should do: create, link, or nothing (and why).

Pure pandas: the inputs come from the extract step, the output feeds the create batches and the
dry-run report. Rules are applied in order; the first that matches decides a contact.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from itertools import chain
from typing import Any

import numpy as np
import pandas as pd

from provisioning import journal
from provisioning import outcomes as why
from provisioning.journal import JournalEntry
from provisioning.outcomes import Outcome
from provisioning.rules import AccountRules
from provisioning.settings import Settings
from provisioning.usernames import (
    candidate_usernames,
    lower_texts,
    pattern_parts,
    render_usernames,
    suffix_base,
    unique_usernames,
)
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


Rows = pd.DataFrame | Mapping[str, Any] | Iterable[Mapping] | None


def contacts_frame(records: Rows = None) -> pd.DataFrame:
    """A contacts frame with all CONTACT_COLUMNS (possibly empty) from extract's contacts: a frame, a
    dict of columns (name -> values, as a columnar run file is read) or a list of dicts."""
    return _input_frame(records, CONTACT_COLUMNS)


def cms_users_frame(records: Rows = None) -> pd.DataFrame:
    return _input_frame(records, CMS_USER_COLUMNS)


def links_frame(records: Rows = None) -> pd.DataFrame:
    return _input_frame(records, LINK_COLUMNS)


def _input_frame(records: Rows, columns: list[str]) -> pd.DataFrame:
    if records is None:
        return pd.DataFrame(columns=columns)
    if isinstance(records, Mapping):
        records = pd.DataFrame(dict(records))
    if isinstance(records, pd.DataFrame):
        return _with_columns(records, columns)[columns]
    return pd.DataFrame(list(records), columns=columns)


def _with_columns(frame: pd.DataFrame | None, columns: list[str]) -> pd.DataFrame:
    if frame is None:
        return pd.DataFrame(columns=columns)
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        frame = frame.assign(**{column: None for column in missing})
    return frame


def _text(series: pd.Series) -> pd.Series:
    """Trimmed text, '' for missing values, as an object column."""
    return pd.Series(_text_array(series), index=series.index, dtype=object, copy=False)


def _text_array(series: pd.Series) -> np.ndarray:
    """_text's values: a new (writable) object array."""
    values = series.to_numpy(dtype=object)
    present = series.notna().to_numpy()
    everywhere = present.all()
    present_values = values.tolist() if everywhere else values[present].tolist()  # a login column is mostly empty
    if isinstance(series.dtype, pd.StringDtype) or set(map(type, present_values)) <= {str}:
        stripped = list(map(str.strip, present_values))  # in C; a text without spaces at its ends is itself
    else:
        stripped = [value.strip() if type(value) is str else str(value).strip() for value in present_values]
    if everywhere:
        texts = _objects(stripped)
    else:
        texts = np.full(len(values), "", dtype=object)
        texts[present] = _objects(stripped)
    return texts


def _objects(values: list) -> np.ndarray:
    """A 1-d object array of the values as they are."""
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _lower(texts: pd.Series | np.ndarray) -> np.ndarray:
    """Lower-cased texts (all `str`), as an object array; a text already in lower case is itself, not a
    copy (at a million emails, 75 MB)."""
    values = texts.to_numpy() if isinstance(texts, pd.Series) else texts
    listed = values.tolist()
    lowered = lower_texts(listed)
    return values if lowered is listed else _objects(lowered)


def _optional_ids(series: pd.Series) -> pd.Series:
    """Ids as Python ints, None where missing (object column, JSON-safe)."""
    numbers = pd.to_numeric(series, errors="coerce").astype(float).to_numpy()
    ids = np.full(len(numbers), None, dtype=object)
    present = ~np.isnan(numbers)
    ids[present] = numbers[present].astype(np.int64).tolist()  # int() of each: Python ints
    return pd.Series(ids, index=series.index, dtype=object, copy=False)


def _flags(series: pd.Series) -> np.ndarray:
    """_truthy of each value, as a bool array (a bool column as it is)."""
    if series.dtype == bool:
        return series.to_numpy()
    return np.fromiter((value if type(value) is bool else _truthy(value) for value in series.tolist()),
                       dtype=bool, count=len(series))


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
    # each step only when needed: each copies every column of a million rows
    if contacts["contact_id"].isna().any():
        contacts = contacts[contacts["contact_id"].notna()]
    if contacts["contact_id"].dtype != np.int64:
        contacts = contacts.astype({"contact_id": "int64"})
    contacts = _merge_duplicate_contacts(contacts)
    if not contacts["contact_id"].is_monotonic_increasing:
        contacts = contacts.sort_values("contact_id", kind="stable")
    contacts = contacts.reset_index(drop=True)
    count = len(contacts)

    contact_ids = contacts["contact_id"].to_numpy()
    email = _text(contacts["email"])
    email_key = _lower(email)
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
    decide(_flags(contacts["is_deceased"]), Outcome.FAILED, why.CONTACT_DECEASED)

    # 2. already linked in this domain. The extract reports the contact's own UFMatch; one that
    # only shows up in `links` counts as well, since CiviCRM would refuse a second link.
    users, taken_usernames = _prepare_cms_users(cms_users, rules)
    link_rows = _prepare_links(links)
    uf_names = _text(contacts["uf_name"])
    # a UFMatch row without a uf_id links nothing (CiviCRM requires one; a damaged row must not stop the plan)
    first_links = link_rows[link_rows["uf_id"].notna()]
    first_links = first_links.sort_values("uf_id", key=lambda ids: ids.astype("int64"), kind="stable")
    first_links = first_links.drop_duplicates("contact_id")
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
    email_text = email.to_numpy()
    email_length = np.fromiter(map(len, email_text), dtype=np.int64, count=count)
    decide(email_length == 0, Outcome.FAILED, why.NO_PRIMARY_EMAIL)
    fullmatch = re.compile(rules.email_pattern).fullmatch
    checked = np.flatnonzero(undecided)  # a decided row's email is never looked at again
    valid = np.fromiter(map(bool, map(fullmatch, email_text[checked].tolist())), dtype=bool,
                        count=len(checked))  # a match is truthy
    decide(_mask(count, checked[~valid]), Outcome.FAILED, lambda row: why.invalid_email(email[row]))
    decide(email_length > rules.max_email_length, Outcome.FAILED, why.email_too_long(rules.max_email_length))

    # 5b. an account this pipeline made for the contact and never linked (its journal names it):
    # it is the contact's own, whatever its email, never just "an existing account"
    _adopt_own_accounts(contacts, cms_users, link_rows, undecided, decide, username, uf_id, journal_activity_id,
                        rules)

    # Rules 6-8 compare lower-cased emails. Sets and dicts of the keys find the few rows that meet
    # another (a shared email, an account's, a login's); only those are looked at one by one (at a
    # million rows the merges on text were seconds, one factorize of every key a second).

    # 6. one email, one contact: the lowest contact id keeps it (rows are sorted by contact_id: the first)
    open_rows = np.flatnonzero(undecided)
    again = open_rows[pd.Series(email_key[open_rows], dtype=object, copy=False).duplicated(keep=False).to_numpy()]
    first_row: dict[str, int] = {}
    for row, key in zip(again.tolist(), email_key[again].tolist(), strict=True):
        first_row.setdefault(key, row)
    lowest_of = dict(zip(again.tolist(), contact_ids[[first_row[key] for key in email_key[again].tolist()]].tolist(),
                         strict=True))
    shared = {row: lowest for row, lowest in lowest_of.items() if lowest != contact_ids[row]}
    decide(_mask(count, shared), Outcome.FAILED, lambda row: why.email_shared(email[row], shared[row]))

    # 7. a CMS account already has this email
    open_rows = np.flatnonzero(undecided)
    user_keys = users["email_key"].tolist()
    match_rows = open_rows[_members(email_key[open_rows].tolist(), set(user_keys))]
    if len(match_rows):
        match_keys = email_key[match_rows].tolist()
        first_user: dict[str, int] = {}  # users are by uf_id: the first is the lowest
        for index in np.flatnonzero(_members(user_keys, set(match_keys))).tolist():
            first_user.setdefault(user_keys[index], index)
        found = np.array([first_user[key] for key in match_keys], dtype=np.int64)
        names = users["username"][found]
        ids = users["uf_id"][found].tolist()
        account_of = dict(zip(match_rows.tolist(), zip(names.tolist(), ids, strict=True), strict=True))
        # Any link found is another contact's: a contact's own links settled it in rule 2.
        owner_of_account = _lowest_by(link_rows[link_rows["uf_id"].notna()], "uf_id")
        other_owner = {row: owner_of_account[account[1]] for row, account in account_of.items()
                       if account[1] in owner_of_account}

        matched = _mask(count, match_rows)
        username[match_rows] = names
        uf_id[match_rows] = ids

        decide(
            _mask(count, other_owner),
            Outcome.FAILED,
            lambda row: why.account_linked_to_other(*account_of[row], other_owner[row]),
        )
        admin_rows = match_rows[users["is_admin"][found]]
        decide(
            _mask(count, admin_rows), Outcome.FAILED, lambda row: why.account_is_administrator(*account_of[row])
        )
        if settings.on_existing_email == OnExistingEmail.FAIL:
            decide(matched, Outcome.FAILED, lambda row: why.existing_email_not_linked(*account_of[row]))
        decide(matched, Outcome.LINKED_EXISTING, why.EXISTING_ACCOUNT_SAME_EMAIL, action_value=LINK)
        # Failed rows keep the account's name and id in the reason, not as the contact's own.
        failed_here = matched & (outcome == Outcome.FAILED.value)
        username[failed_here] = ""
        uf_id[failed_here] = None

    # 8. CiviCRM would refuse a second UFMatch with the same login name (uf_name) in the domain
    open_rows = np.flatnonzero(undecided)
    login_owners: dict[int, Any] = {}
    if len(link_rows):
        owner_of_login = _lowest_by(link_rows, "uf_name_key")
        login_rows = open_rows[_members(email_key[open_rows].tolist(), owner_of_login)]
        login_owners = {row: owner_of_login[key] for row, key in zip(login_rows.tolist(), email_key[login_rows].tolist(),
                                                                       strict=True)}
    decide(
        _mask(count, login_owners),
        Outcome.FAILED,
        lambda row: why.email_is_login_of(email[row], login_owners[row]),
    )

    # 9. create: a unique username from the pattern, else the fallback pattern, else user{contact_id}
    open_rows = np.flatnonzero(undecided)
    patterns = [settings.username_pattern, settings.username_fallback_pattern]
    tokens = {"email" if text == "email_local" else text for pattern in patterns
              for text, is_token in pattern_parts(pattern) if is_token}
    # only the fields the patterns use (user{contact_id} may use the ids); a missing field renders ''
    name_fields: dict[str, np.ndarray] = {"contact_id": contact_ids[open_rows]}
    name_fields.update({field: contacts[field].to_numpy(dtype=object)[open_rows]
                        for field in ("first_name", "last_name", "display_name") if field in tokens})
    if "email" in tokens:
        name_fields["email"] = email_text[open_rows]
    candidates = pd.Series(
        candidate_usernames(name_fields, patterns, rules.sanitize_username), index=open_rows, dtype=object
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
    names = candidates[~empty].tolist()
    if max(map(len, names), default=0) > rules.max_username_length:
        names = [suffix_base(name, rules.max_username_length) for name in names]
    username_base[creating] = names
    decide(_mask(count, creating), Outcome.CREATED, why.NEW_ACCOUNT, action_value=CREATE)

    # 10. limit: the lowest contact ids go first, the rest wait for the next run
    if limit is not None:
        acting = np.flatnonzero(np.isin(action, BATCH_ACTIONS))
        later = acting[limit:]
        action[later] = NONE
        outcome[later] = Outcome.DEFERRED.value
        reason[later] = why.beyond_limit(limit)

    notes = _text(contacts["email_note"]).to_numpy()
    for row in np.flatnonzero(notes != "").tolist():  # few contacts have a note
        if reason[row]:
            reason[row] = f"{reason[row]}; {notes[row]}"
    # One roles list for all creates and one empty list for the rest: nothing changes them in place
    # (the batches and records get copies), and a million small lists cost a second.
    creates = action == CREATE
    roles = _same_object(count, [])
    roles[creates] = _same_object(1, list(settings.roles))
    sources = contacts["sources"].tolist()
    if not set(map(type, sources)) <= {list}:  # the contacts' own lists (read only, as above)
        sources = [value if type(value) is list else _as_list(value) for value in sources]  # anything else made a list
    columns = {
        "contact_id": contact_ids.astype("int64"),
        "email": _none_where(email_text, email_length == 0),
        "action": action,
        "outcome": outcome,
        "reason": reason,
        "username": username,
        "username_base": np.where(creates, username_base, ""),  # '' once rule 10 defers a create
        "uf_id": uf_id,
        "roles": roles,
        "first_name": _text_array(contacts["first_name"]),
        "last_name": _text_array(contacts["last_name"]),
        "display_name": _text_array(contacts["display_name"]),
        "locale": (_none_if_blank(_text(contacts["preferred_language"])) if settings.sync_preferred_language
                   else np.full(count, None, dtype=object)),
        "user_fields": _user_fields(contacts, action, settings.user_fields),
        "do_not_email": _flags(contacts["do_not_email"]),
        "sources": sources,
        "attempts": attempts,
        "uf_name": _none_if_blank(uf_names),
        "journal_activity_id": journal_activity_id,
        "exhausted": exhausted,
    }
    # Text columns stay `object` so a missing value is None, as in the batches, not NaN. copy=False: one
    # block per column, as made; consolidating the object columns into one block touched every value
    # (a second and 250 MB at a million rows). Every array is the plan's own and writable, as before.
    return pd.DataFrame(
        {
            name: _own(values) if isinstance(values, np.ndarray) and values.dtype != object else _object_column(values)
            for name, values in columns.items()
        },
        columns=PLAN_COLUMNS,
        copy=False,
    )


def _own(values: np.ndarray) -> np.ndarray:
    """The array if it is writable (made here), else a copy: pandas 3 hands out read-only views of a
    frame's data (an input column's, say), which the plan must neither share nor leave read-only."""
    return values if values.flags.writeable else values.copy()


def _object_column(values) -> pd.Series:
    """An `object` Series of the values as they are (no copy of an array made here, no str inference)."""
    if isinstance(values, pd.Series):
        values = values.to_numpy(dtype=object)
    if not isinstance(values, np.ndarray):
        values = np.fromiter(values, dtype=object, count=len(values))  # lists stay items, not a 2-d array
    return pd.Series(_own(values), dtype=object, copy=False)  # pandas 3 copies an array unless told not to


def _adopt_own_accounts(contacts, cms_users, link_rows, undecided, decide, username, uf_id,
                        journal_activity_id, rules: AccountRules) -> None:
    """Rule 5b: link (as `created`) the accounts the contacts' journal entries name."""
    journals = contacts["journal"].to_numpy(dtype=object)
    values = journals.tolist()
    if set(map(type, values)) <= {list}:  # the usual case: bool() of each list, in C
        has_entries = np.fromiter(map(bool, values), dtype=bool, count=len(values))
    else:
        has_entries = np.fromiter((bool(_as_list(value)) for value in values), dtype=bool, count=len(values))
    rows = np.flatnonzero(has_entries & undecided).tolist()
    if not rows:
        return
    journal_of = {row: [JournalEntry.from_dict(int(contacts["contact_id"].iat[row]), entry)
                        for entry in _as_list(journals[row])] for row in rows}
    users = _accounts_named(_with_columns(cms_users, CMS_USER_COLUMNS), list(journal_of.values()))
    # Each contact looks only at the accounts its own entries name (by id or login), in the users'
    # order: the first account an entry owns decides, as when every account was looked at.
    by_id: dict[int, list[int]] = {}
    by_login: dict[str, list[int]] = {}
    always: list[int] = []
    for index, user in enumerate(users):
        if user.get("uf_id") is None:
            continue
        try:
            by_id.setdefault(int(user["uf_id"]), []).append(index)
        except (TypeError, ValueError):
            always.append(index)  # checked by every contact (and fails there as it always did)
        by_login.setdefault(str(user.get("username") or "").lower(), []).append(index)
    owners: dict[int, set[int]] = {}
    for link in link_rows.itertuples(index=False):
        if link.uf_id is not None:
            owners.setdefault(int(link.uf_id), set()).add(int(link.contact_id))
    adopted, admins, others = {}, {}, {}
    for row, entries in journal_of.items():
        contact_id = int(contacts["contact_id"].iat[row])
        named = set(always)
        for entry in entries:
            if entry.uf_id is not None:
                named.update(by_id.get(entry.uf_id, ()))
            else:
                named.update(index for name in entry.usernames for index in by_login.get(name.lower(), ()))
        for index in sorted(named):
            user = users[index]
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


def _accounts_named(cms_users: pd.DataFrame, journals: list[list[JournalEntry]]) -> list[dict]:
    """The CMS users (as records, in their order) any of the journal entries may own, by id or by a
    sent login: a superset, which _adopt_own_accounts checks exactly. Odd ids or names are kept."""
    ids = [entry.uf_id for entries in journals for entry in entries
           if isinstance(entry.uf_id, (int, float)) and math.isfinite(entry.uf_id)]
    logins = {name.lower() for entries in journals for entry in entries if entry.uf_id is None
              for name in entry.usernames}
    numbers = pd.to_numeric(cms_users["uf_id"], errors="coerce")
    if pd.api.types.is_integer_dtype(numbers.dtype):
        by_id = numbers.isin([int(value) for value in ids]).to_numpy()
    else:  # int() truncates; NaN and text are kept for the exact check
        values = np.trunc(numbers.astype(float).to_numpy())
        by_id = np.isin(values, [float(int(value)) for value in ids]) | ~np.isfinite(values)
    names = cms_users["username"].tolist()
    if set(map(type, names)) <= {str}:  # the usual case, in C
        by_name = np.fromiter(map(logins.__contains__, lower_texts(names)), dtype=bool, count=len(names))
    else:  # a name that is not text is kept too
        by_name = np.fromiter((type(name) is not str or name.lower() in logins for name in names), dtype=bool,
                              count=len(names))
    return cms_users.iloc[np.flatnonzero(by_id | by_name)].to_dict("records")


def _user_fields(contacts: pd.DataFrame, action: np.ndarray, patterns: dict[str, str]) -> list[dict | None]:
    """Per contact to create, the configured extra user fields rendered from its own fields ('' left out)."""
    if not patterns:
        return [None] * len(contacts)
    rendered = {name: render_usernames(pattern, contacts) for name, pattern in patterns.items()}
    return [{name: values[row].strip() for name, values in rendered.items() if values[row].strip()}
            if action[row] == CREATE else None for row in range(len(contacts))]


def _none_if_blank(text: pd.Series) -> np.ndarray:
    values = text.to_numpy(dtype=object, copy=True)
    values[values == ""] = None
    return values


def _none_where(values: np.ndarray, blank: np.ndarray) -> np.ndarray:
    """A copy of the object array with None where `blank`."""
    values = values.copy()
    values[blank] = None
    return values


def _same_object(count: int, value: Any) -> np.ndarray:
    """An object array holding the one `value` (a list, say, not its items) `count` times."""
    holder = np.empty((), dtype=object)
    holder[()] = value
    return np.full(count, holder, dtype=object)


def _members(values: list, among: set | dict) -> np.ndarray:
    """Whether each value is in `among`, as a bool array (one C-level pass)."""
    return np.fromiter(map(among.__contains__, values), dtype=bool, count=len(values))


def _lowest_by(link_rows: pd.DataFrame, column: str) -> dict:
    """The lowest contact_id of the UFMatch rows per value of `column` (Python values and ints)."""
    if not len(link_rows):
        return {}
    lowest = pd.Series(np.array(link_rows["contact_id"].tolist(), dtype=np.int64), copy=False).groupby(
        link_rows[column].to_numpy(dtype=object)).min()
    return dict(zip(lowest.index.tolist(), lowest.tolist(), strict=True))


def _mask(count: int, rows: Iterable[int]) -> np.ndarray:
    mask = np.zeros(count, dtype=bool)
    rows = rows if isinstance(rows, (np.ndarray, pd.Index)) else list(rows)
    mask[np.asarray(rows, dtype=np.int64)] = True
    return mask


def _is_admin(flag: Any, uf_id: Any, roles: Any, rules: AccountRules) -> bool:
    """The backend says which accounts administer the site; without its word, the CMS's rules."""
    if flag is not None and not (isinstance(flag, float) and math.isnan(flag)):
        return _truthy(flag)
    return rules.is_admin(uf_id, _as_list(roles))


def _admin_flags(users: pd.DataFrame, rules: AccountRules) -> np.ndarray:
    """_is_admin of each user; a bool is_admin column (the backends' word for every user) as it is."""
    if users["is_admin"].dtype == bool:
        return users["is_admin"].to_numpy()
    return np.array([_is_admin(flag, uf_id, roles, rules) for flag, uf_id, roles
                     in zip(users["is_admin"], users["uf_id"], users["roles"], strict=True)], dtype=bool)


def _int_ids(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The ids as int64 (0 where missing) and where they are present; as _optional_ids, without a
    Python int per row."""
    numbers = pd.to_numeric(series, errors="coerce")
    if isinstance(numbers.dtype, np.dtype) and numbers.dtype.kind in "iu":  # none missing: as they are
        return numbers.to_numpy().astype(np.int64, copy=False), np.ones(len(numbers), dtype=bool)
    values = numbers.astype(float).to_numpy()
    present = ~np.isnan(values)
    ids = np.zeros(len(values), dtype=np.int64)
    ids[present] = values[present].astype(np.int64)
    return ids, present


def _prepare_cms_users(cms_users: pd.DataFrame | None, rules: AccountRules) -> tuple[dict[str, np.ndarray],
                                                                                    list[str]]:
    """CMS users with an id and an email (its lower-cased `email_key`) by uf_id, as arrays by column
    (`uf_id` int64), and every username.

    Several accounts may share an email: rule 7 takes the first (the lowest uf_id)."""
    users = _with_columns(cms_users, CMS_USER_COLUMNS)
    ids, has_id = _int_ids(users["uf_id"])
    names = _text(users["username"]).to_numpy()
    email_keys = _lower(_text(users["email"]))
    is_admin = _admin_flags(users, rules)
    taken = names[names != ""].tolist()
    keep = np.flatnonzero(has_id & (email_keys != ""))
    # lowest uf_id first (stable), then the first row of each email
    if len(keep) > 1 and not (np.diff(ids[keep]) >= 0).all():
        keep = keep[np.argsort(ids[keep], kind="stable")]
    table = {"uf_id": ids[keep], "username": names[keep], "email_key": email_keys[keep], "is_admin": is_admin[keep]}
    return table, taken


def _prepare_links(links: pd.DataFrame | None) -> pd.DataFrame:
    """UFMatch rows with int ids and a lower-cased uf_name key."""
    rows = _with_columns(links, LINK_COLUMNS)
    uf_names = _text(rows["uf_name"]).to_numpy()
    table = pd.DataFrame(
        {
            "contact_id": _optional_ids(rows["contact_id"]),
            "uf_id": _optional_ids(rows["uf_id"]),
            "uf_name": pd.Series(uf_names, index=rows.index, dtype=object),
            "uf_name_key": pd.Series(_lower(uf_names), index=rows.index, dtype=object),
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


def batch_frames(plan: pd.DataFrame, batch_size: int) -> list[pd.DataFrame]:
    """The create/link rows of the plan in contact_id order, cut into batches (slices of the plan frame)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    plan = plan.reset_index(drop=True)  # an index named contact_id would make sorting ambiguous
    acting = plan[plan["action"].isin(BATCH_ACTIONS)].sort_values("contact_id", kind="stable")
    return [acting.iloc[start : start + batch_size] for start in range(0, len(acting), batch_size)]


def make_batches(plan: pd.DataFrame, batch_size: int) -> list[list[dict]]:
    """The create/link rows of the plan in contact_id order, cut into batches of JSON-safe dicts."""
    return [json_safe_records(batch) for batch in batch_frames(plan, batch_size)]


def json_safe_columns(frame: pd.DataFrame) -> dict[str, list]:
    """The frame's columns as lists of plain Python values (no numpy scalars, NaN as None): a table chunk."""
    # Column by column: tolist() already gives Python scalars for numeric columns.
    return {str(name): _json_safe_column(frame[name].tolist()) for name in frame.columns}


def json_safe_chunks(frame: pd.DataFrame, rows: int) -> Iterable[dict[str, list]]:
    """json_safe_columns of each slice of `rows` rows, in order: a table written without a dict per row."""
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    for start in range(0, len(frame), rows):
        yield json_safe_columns(frame.iloc[start : start + rows])


def json_safe_records(frame: pd.DataFrame) -> list[dict]:
    """The frame's rows as dicts of plain Python values (no numpy scalars, NaN as None)."""
    columns = json_safe_columns(frame)
    keys = list(columns)
    return [dict(zip(keys, values, strict=True)) for values in zip(*columns.values(), strict=True)]


_PLAIN_KINDS = frozenset({str, int, bool, type(None)})


def _json_safe_column(values: list) -> list:
    """_json_safe of each value; a column of plain values (most) is looked at once, not value by value."""
    kinds = set(map(type, values))
    if kinds <= _PLAIN_KINDS:
        return values
    if all(kind is type(None) or issubclass(kind, str) for kind in kinds):  # text, e.g. the Action members
        return [value if value is None else str(value) for value in values]
    if kinds == {list} and set(map(type, chain.from_iterable(values))) <= _PLAIN_KINDS:
        # value[:]: list(value) was ten times slower here (with the collector on)
        if len(set(map(id, values))) * 2 > len(values):
            return [value[:] for value in values]
        # rows that share one list in the frame (the plan's roles) share one copy
        copies = {id(value): value[:] for value in values}
        return [copies[id(value)] for value in values]
    return [_json_safe(value) for value in values]


def batch_label(batch: list[dict] | pd.DataFrame) -> str:
    """A short human label for a batch (its rows, or its frame), e.g. 'contacts 101-103 (3)'."""
    ids = batch["contact_id"].tolist() if isinstance(batch, pd.DataFrame) else [row["contact_id"] for row in batch]
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
