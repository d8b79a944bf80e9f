"""The account journal: what this pipeline sent to the CMS, kept in CiviCRM beside the contact.

Before a batch posts any create, it records for each contact the username it is about to send
and when, in that contact's "User Account Creation" activity of the run (status Scheduled until
finalize gives it the outcome). Once the CMS answers, the account's id is added, and around the
password mail its state ("sending", then "sent"). The entry is one bracketed line in the
activity's details, so it survives a killed worker, a lost CiviCRM answer and the end of the run,
and every worker and every later run reads it with the activity history it reads anyway.

An account counts as ours only through this record, never by email alone (`JournalEntry.owns`).

Pure: no Airflow, no I/O. The CiviCRM reads and writes live in `civicrm_hooks.queries`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote

#: The mail states a journal entry can hold; "sending" means a try may have died mid-mail.
MAIL_SENDING = "sending"
MAIL_SENT = "sent"

#: How far the CMS's clock may lag ours when we compare its registration time with our send time.
CLOCK_SKEW = timedelta(minutes=5)

#: How every journal line starts (CiviCRM finds the activities holding one with LIKE).
LINE_PREFIX = "[cmsuser account "
_LINE_RE = re.compile(r"\[cmsuser account ([^\]\n]*)\]")
_MARKER_RE = re.compile(r"\[Airflow run [^\]\n]*\]")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def now_utc() -> str:
    return datetime.now(UTC).strftime(_TIME_FORMAT)


def _parse_time(text: str | None) -> datetime | None:
    """Our own format, or a CMS's ISO 8601 (naive values are UTC, as some CMSs send them)."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class JournalEntry:
    """One contact's journal line in one activity."""

    contact_id: int
    activity_id: int | None = None
    status: str | None = None          # the activity's status name (Scheduled until finalize)
    usernames: tuple[str, ...] = ()    # sent, and not refused by the CMS
    sent: str | None = None            # when the first of them was sent (UTC)
    uf_id: int | None = None           # the account, once the CMS has answered
    username: str | None = None        # its login, once known
    mail: str = ""                     # "", MAIL_SENDING or MAIL_SENT
    markers: tuple[str, ...] = field(default=())  # the runs that wrote this activity

    @property
    def pending(self) -> bool:
        """A create was sent and its answer is not known: the account may exist."""
        return bool(self.usernames) and self.uf_id is None

    def owns(self, uf_id: int, username: str, registered: str | None = None) -> bool:
        """Whether the CMS account (uf_id, username, registration time) is the one this entry sent.

        The id settles it when known. Otherwise the login must be one we sent, and an account
        registered clearly before we sent it is somebody else's.
        """
        if self.uf_id is not None:
            return int(uf_id) == self.uf_id
        if (username or "").lower() not in {name.lower() for name in self.usernames}:
            return False
        sent, made = _parse_time(self.sent), _parse_time(registered)
        return sent is None or made is None or made >= sent - CLOCK_SKEW

    def sending(self, usernames: list[str], when: str) -> JournalEntry:
        return replace(self, usernames=tuple(usernames), sent=self.sent or when)

    def created(self, uf_id: int, username: str) -> JournalEntry:
        return replace(self, usernames=(username,), uf_id=int(uf_id), username=username)

    def with_mail(self, state: str) -> JournalEntry:
        return replace(self, mail=state)

    def to_dict(self) -> dict:
        """JSON-safe, for XCom (the plan reads the journal the extract found)."""
        return {"activity_id": self.activity_id, "status": self.status, "usernames": list(self.usernames),
                "sent": self.sent, "uf_id": self.uf_id, "username": self.username, "mail": self.mail}

    @classmethod
    def from_dict(cls, contact_id: int, data: dict) -> JournalEntry:
        return cls(contact_id=int(contact_id), activity_id=data.get("activity_id"), status=data.get("status"),
                   usernames=tuple(data.get("usernames") or ()), sent=data.get("sent"),
                   uf_id=data.get("uf_id"), username=data.get("username"), mail=data.get("mail") or "")

    def line(self) -> str:
        parts = []
        if self.usernames:
            parts.append("usernames=" + "|".join(quote(name, safe="@._-") for name in self.usernames))
        for key in ("sent", "uf_id", "username", "mail"):
            value = getattr(self, key)
            if value not in (None, ""):
                parts.append(f"{key}={quote(str(value), safe='@._-:')}")
        return f"[cmsuser account {' '.join(parts)}]"


def parse(contact_id: int, details: str | None, *, activity_id: int | None = None,
          status: str | None = None) -> JournalEntry | None:
    """The journal entry in an activity's details, or None when it has none."""
    match = _LINE_RE.search(details or "")
    if not match:
        return None
    fields: dict[str, str] = {}
    for part in match.group(1).split():
        key, _, value = part.partition("=")
        fields[key] = value
    usernames = tuple(unquote(name) for name in fields.get("usernames", "").split("|") if name)
    uf_id = fields.get("uf_id")
    return JournalEntry(
        contact_id=int(contact_id), activity_id=activity_id, status=status, usernames=usernames,
        sent=unquote(fields["sent"]) if "sent" in fields else None,
        uf_id=int(uf_id) if uf_id and uf_id.isdigit() else None,
        username=unquote(fields["username"]) if "username" in fields else None,
        mail=unquote(fields.get("mail", "")), markers=tuple(markers_in(details)))


def markers_in(details: str | None) -> list[str]:
    return _MARKER_RE.findall(details or "")


def details_text(text: str | None, entry: JournalEntry | None, markers: list[str] | tuple[str, ...]) -> str:
    """An activity's details: the human text, then the journal line, then every run marker, one per line."""
    lines = [text] if text else []
    if entry is not None:
        lines.append(entry.line())
    lines += list(dict.fromkeys(markers))
    return "\n".join(lines)


def mail_state(entries: list[JournalEntry], uf_id: int) -> str:
    """What the journal says about this account's password mail, over every entry naming it."""
    states = {entry.mail for entry in entries if entry.uf_id == uf_id}
    if MAIL_SENT in states:
        return MAIL_SENT
    return MAIL_SENDING if MAIL_SENDING in states else ""


def owner_entry(entries: list[JournalEntry], uf_id: int, username: str,
                registered: str | None = None) -> JournalEntry | None:
    """The newest entry that says this account is ours, or None."""
    for entry in sorted(entries, key=lambda e: e.activity_id or 0, reverse=True):
        if entry.owns(uf_id, username, registered):
            return entry
    return None


def seconds_until(moment: str | None, wait: float) -> float:
    """How long from now until `wait` seconds after `moment` (0 when that has passed)."""
    start = _parse_time(moment)
    if start is None:
        return 0.0
    return max(0.0, (start + timedelta(seconds=wait) - datetime.now(UTC)).total_seconds())
