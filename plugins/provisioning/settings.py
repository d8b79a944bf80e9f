"""The settings file (config/cmsuser.yaml): its schema, help texts and loader.

The `description=` of every field is the user documentation; `settings_reference_markdown()`
renders them for the README, so keep them complete and written for an administrator.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import annotated_types
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticUndefined

from cms_operators import registry
from provisioning.usernames import USERNAME_TOKENS, PatternError, pattern_parts
from provisioning.vocabulary import OnExistingEmail

SETTINGS_ENV_VAR = "CMSUSER_SETTINGS"

#: Schedule presets Airflow understands besides cron expressions.
AIRFLOW_SCHEDULE_PRESETS = ("@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")

_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (name, lowest, highest, names usable instead of numbers)
_CRON_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTH_NAMES),
    ("day of week", 0, 7, _DAY_NAMES),
)
_CRON_ITEM_RE = re.compile(r"^(?P<range>\*|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/(?P<step>[0-9]+))?$")


#: Default execution timeouts per task, in minutes: reads and plans are quick, batches talk to a slow CMS.
TASK_TIMEOUT_MINUTES = {"preflight": 10, "password_resets": 60, "extract": 60, "plan": 30, "create_accounts": 120,
                        "finalize": 60}


#: The settings file may group settings in these sections (each key keeps its name inside its
#: section); every key may also be given at the top level, as before sections existed, but not both.
SECTIONS: dict[str, tuple[str, ...]] = {
    "connections": ("civicrm_conn_id", "cms_conn_id", "cms_type", "domain_id", "lock_conn_id"),
    "triggers": ("trigger_groups", "trigger_tags", "history_group", "history_tag"),
    "resets": ("reset_groups", "reset_tags"),
    "accounts": ("username_pattern", "username_fallback_pattern", "roles", "notify", "on_existing_email",
                 "sync_preferred_language", "user_fields", "admin_groups", "admin_roles"),
    "attempts": ("max_attempts", "activity_source_contact_id"),
    "tasks": ("batch_size", "retry_delay_seconds", "task_timeout_minutes", "log_attention_rows",
              "lock_wait_seconds", "max_concurrency", "parallel_batches", "max_requests_per_second"),
    "nightly": ("schedule", "timezone"),
    "approval": ("approval_threshold", "approval_users", "approval_timeout_minutes"),
    "realtime": ("watch_interval_seconds",),
    "run_files": ("run_files_url", "run_files_conn_id", "keep_run_files_hours"),
}
SECTION_OF = {key: section for section, keys in SECTIONS.items() for key in keys}


class SettingsError(ValueError):
    """The settings file is missing, unreadable or has invalid values; the message says what to fix."""


class Settings(BaseModel):
    """Everything the pipeline needs to know about one CiviCRM domain and its CMS."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    civicrm_conn_id: str = Field(
        "civicrm_default",
        min_length=1,
        description="Airflow connection id of the CiviCRM site (host = site URL, password = API key, "
        "extra `site_key` if the site requires one).",
    )
    cms_conn_id: str = Field(
        "cms_default",
        min_length=1,
        description="Airflow connection id of the CMS (for WordPress: host = site URL, login = admin user, "
        "password = an Application Password). Its connection type names the CMS.",
    )
    cms_type: str | None = Field(
        None,
        description="Which CMS the accounts are created in: one of "
        + ", ".join(f"`{name}`" for name in registry.names())
        + ". Empty: the type of the CMS connection decides (a connection of type `http` means "
        "`wordpress`). When both are given they must agree.",
    )
    domain_id: int = Field(
        1,
        ge=1,
        description="CiviCRM domain whose UFMatch links are read and written (1 on single-site installs).",
    )
    lock_conn_id: str = Field(
        "cmsuser_lock",
        min_length=1,
        description="Airflow connection id of the creation lock, which makes creating an account exclusive "
        "per email across all runs, DAGs and workers: type `postgres`, any PostgreSQL every worker reaches "
        "(Airflow's metadata database will do). Without it pre-flight stops the run. Only for a single-process "
        "sandbox (dag.test, the demo): extra `{\"in_process\": true}`, which protects nothing between workers.",
    )
    trigger_groups: list[int | str] = Field(
        default_factory=list,
        description="Groups whose contacts get an account: each entry a group id, name or title. "
        "Smart groups count their current members. Names are looked up when the run starts. "
        "At least one trigger group or tag is required.",
    )
    trigger_tags: list[int | str] = Field(
        default_factory=list,
        description="Tags whose contacts get an account: each entry a tag id, name or label. "
        "Names are looked up when the run starts. At least one trigger group or tag is required.",
    )
    history_group: int | str | None = Field(
        None,
        description="Group (id, name or title) that contacts are added to once they have an account, "
        "whether it was created, linked or already there. Empty: no history group.",
    )
    history_tag: int | str | None = Field(
        None,
        description="Tag (id, name or label) that contacts get once they have an account. Empty: no history tag.",
    )
    reset_groups: list[int | str] = Field(
        default_factory=list,
        description="Groups (id, name or title) whose contacts get the CMS's own password-reset email for "
        "their linked account, recorded as a 'User Account Password Reset' activity (Completed, or Failed "
        "with the reason; never counted as an account-creation attempt); then they are taken out of the "
        "group (status Removed). A contact without a linked account gets a Failed activity saying so and "
        "is taken out too; one the CMS could not be reached for stays for the next run. Empty: no resets.",
    )
    reset_tags: list[int | str] = Field(
        default_factory=list,
        description="Tags (id, name or label) whose contacts get the password-reset email, as for "
        "`reset_groups`; the tag is removed afterwards.",
    )
    username_pattern: str = Field(
        "{first_name}.{last_name}",
        description="How new usernames are made. Tokens: "
        + ", ".join("`{" + token + "}`" for token in USERNAME_TOKENS)
        + " (`{email_local}` is the part before the @). The result is folded to lower-case ASCII "
        "letters, digits and `_ . - @` (names without Latin letters are transliterated: Иван Петров "
        "becomes ivan.petrov); a taken name gets 2, 3, ... appended; at most 60 characters. If the "
        "result is empty (no usable name fields), `username_fallback_pattern` is used, and if that "
        "is empty too, `user{contact_id}`.",
    )
    username_fallback_pattern: str = Field(
        "{email_local}",
        description="How a username is made when `username_pattern` gives an empty one for a contact "
        "(for example when first and last name are both missing). Same tokens and rules as "
        "`username_pattern`. If this is empty too, the username is `user` followed by the contact id, "
        "such as `user123`. Order: `username_pattern`, then this, then `user{contact_id}`.",
    )
    roles: list[str] = Field(
        default_factory=lambda: ["subscriber"],
        min_length=1,
        description="CMS roles (slugs) given to newly created accounts. Linked existing accounts keep "
        "their roles. A role that makes an administrator of the CMS (WordPress: `administrator`) is refused.",
    )
    notify: bool = Field(
        True,
        description="After creating an account, have the CMS email the new user a link to set "
        "a password. Without it, users must use 'lost password' themselves.",
    )
    on_existing_email: Literal[tuple(choice.value for choice in OnExistingEmail)] = Field(
        OnExistingEmail.LINK.value,
        description="What to do when a CMS account with the contact's email already exists: `link` "
        "connects the contact to it (never for administrators, or accounts linked to another "
        "contact), `fail` records a failed attempt instead.",
    )
    sync_preferred_language: bool = Field(
        True,
        description="Give new accounts the contact's preferred language (WordPress: `locale`; Drupal: "
        "`preferred_langcode`, with `en_US` cut to `en`), only when the site has that language enabled.",
    )
    user_fields: dict[str, str] = Field(
        default_factory=dict,
        description="Extra fields of new accounts, for CMSs with user fields (Drupal, Drupal 7, Backdrop): "
        "CMS field name -> pattern with the same tokens as `username_pattern`, e.g. "
        "`{field_full_name: \"{first_name} {last_name}\"}`. Pre-flight checks that each field exists on the site.",
    )
    admin_groups: list[int | str] = Field(
        default_factory=list,
        description="Joomla: user groups (id or title) whose members count as administrators besides Super "
        "Users, Administrator and their child groups; such accounts are never linked to a contact.",
    )
    admin_roles: list[str] = Field(
        default_factory=list,
        description="Drupal 7 and Backdrop: role names whose holders count as administrators besides user 1 "
        "(empty: the site's administrator role, `administrator`); such accounts are never linked to a "
        "contact, and these roles are refused in `roles`.",
    )
    max_attempts: int = Field(
        4,
        ge=1,
        le=20,
        description="Failed attempts (at most one per run) after which a contact is taken out of "
        "the trigger groups and tags. Each attempt is recorded as a Failed 'User Account Creation' "
        "activity; giving up is recorded too, so a contact added to a trigger again later starts "
        "a fresh count.",
    )
    batch_size: int = Field(
        200,
        ge=1,
        le=5000,
        description="Contacts per create batch. Each batch is one Airflow task that retries on its own. "
        "Each task costs Airflow about a second to start and end: with `max_concurrency` above 1, batches of "
        "a few thousand keep that small against the creates (see docs/benchmarks.md). A batch holds one "
        "creation lock per email: `batch_size` times the pool's slots must stay below PostgreSQL's lock "
        "table (README, The creation lock).",
    )
    max_concurrency: int = Field(
        1,
        ge=1,
        le=32,
        description="Creates one batch sends to the CMS side by side, each thread with its own CMS session. "
        "Creates for one email never overlap (the creation lock); every other guarantee holds as with 1. "
        "A CMS is slow and easy to overload: raise it only as far as the site copes (see docs/benchmarks.md). "
        "Beyond about 4, spread the creates over batches instead (`parallel_batches` and the pool's slots, each "
        "batch max_concurrency threads): each batch task is a process of its own, with its own core and "
        "interpreter lock.",
    )
    parallel_batches: int = Field(
        4,
        ge=1,
        le=64,
        description="Batches of one run that may create at the same time (the create task's "
        "`max_active_tis_per_dagrun`); the `cmsuser_cms` pool bounds them across runs and DAGs.",
    )
    max_requests_per_second: float | None = Field(
        None,
        gt=0,
        description="Creates and password mails per second one run may send to the CMS, over all its batches: each running batch "
        "keeps an equal share (this divided by `parallel_batches`), across its threads, and every thread pauses "
        "when the CMS asks (429 or 503 with Retry-After). Empty: no limit but the CMS's own answers.",
    )
    retry_delay_seconds: int = Field(
        300,
        ge=0,
        description="Seconds Airflow waits before retrying a batch after a temporary error "
        "(timeouts, 5xx, rate limits).",
    )
    lock_wait_seconds: int = Field(
        60,
        ge=0,
        le=3600,
        description="How long a batch waits for an email another run or worker is creating an account for "
        "(it holds that email's creation lock until the account is linked). Contacts still locked then are "
        "retried with the batch; on its last try they are `deferred` to the next run, with no attempt counted.",
    )
    task_timeout_minutes: dict[str, int] = Field(
        default_factory=lambda: dict(TASK_TIMEOUT_MINUTES),
        description="Longest each task may run, in minutes, before Airflow stops it and the run ends red "
        "(a batch that hits it keeps what it finished, and its retry continues): "
        + ", ".join(f"`{task}` ({minutes})" for task, minutes in TASK_TIMEOUT_MINUTES.items())
        + ". Give only the tasks to change; the others keep these values.",
    )
    log_attention_rows: int = Field(
        50,
        ge=0,
        description="At most this many failed contacts (id, display name, reason) are listed in the "
        "finalize log for staff to look at; the full per-contact table is the run's `outcomes` file.",
    )
    activity_source_contact_id: int | None = Field(
        None,
        ge=1,
        description="Contact recorded as the source (author) of the 'User Account Creation' "
        "activities. Empty: the contact itself.",
    )
    schedule: str = Field(
        "0 2 * * *",
        description="When the nightly run starts: a 5-field cron expression (minute hour "
        "day-of-month month day-of-week) or an Airflow preset such as `@daily`.",
    )
    timezone: str = Field(
        "UTC",
        description="Time zone the schedule is read in, as an IANA name such as `Europe/Berlin`.",
    )

    approval_threshold: int | None = Field(
        None,
        ge=0,
        description="When a run would create more new CMS accounts than this, it waits for an operator's "
        "approval (an Airflow human-in-the-loop task, `approval`) before any account is created; links to "
        "existing accounts do not count. The request shows the planned counts per outcome and a sample of "
        "the contacts (ids, planned outcome, username). Rejected or unanswered: nothing is created, no "
        "attempt is counted, every contact's outcome is `approval_rejected`, and the run still ends "
        "green. Empty: no approval gate (the DAGs then have no `approval` task; a threshold set later takes "
        "effect once Airflow has re-read the DAG files); 0: every run that would create an account waits.",
    )
    approval_users: list[str | int] = Field(
        default_factory=list,
        description="Who may approve or reject (Airflow's human-in-the-loop `assigned_users`): Airflow user "
        "ids as the auth manager knows them (the simple auth manager: the username; FAB: the numeric user "
        "id). They also need permission to edit the DAG's human-in-the-loop details. Empty: anyone with "
        "that permission.",
    )
    approval_timeout_minutes: int = Field(
        720,
        ge=1,
        description="How long a run waits for an answer to its approval request; then Airflow takes the "
        "default answer, Reject. Runs do not overlap (one at a time), so the next scheduled run waits "
        "until this one is answered or timed out.",
    )

    watch_interval_seconds: float = Field(
        5.0,
        ge=1,
        le=300,
        description="How often the near-real-time DAG (`cmsuser_realtime`) asks CiviCRM whether a contact has "
        "joined a static trigger or reset group or been given a trigger or reset tag: one request of two "
        "primary-key reads that find nothing while nothing happens. A contact's account is made within about "
        "this plus the run's own time (about 20 s). Smart groups are not watched: the nightly run takes them.",
    )

    run_files_url: str | None = Field(
        None,
        min_length=1,
        description="Where a run keeps its per-contact data between tasks (the contacts read, the plan, each batch, "
        "the outcomes), as files under one folder per run; XComs carry only references and counts. Empty: "
        "`$AIRFLOW_HOME/cmsuser_runs` on the local disk, right when every task runs on one host. With workers on "
        "several hosts, a store they all see: an object-storage URL such as `s3://bucket/cmsuser-runs` (with "
        "`run_files_conn_id`), or a shared mount. Local folders are made readable by their owner only.",
    )
    run_files_conn_id: str | None = Field(
        None,
        min_length=1,
        description="The Airflow connection that opens `run_files_url` (e.g. an `aws` connection for `s3://`; its "
        "provider must be installed). Empty for the local disk.",
    )
    keep_run_files_hours: float = Field(
        0,
        ge=0,
        le=24 * 90,
        description="Hours a finished run's files (members' data) are kept after its finalize, e.g. to read the "
        "`outcomes` file; 0 deletes them as finalize ends. A run that has not finished keeps them for its "
        "retries and clears, at most 7 days. Every finalize deletes the files of older runs.",
    )

    @model_validator(mode="before")
    @classmethod
    def _flatten_sections(cls, data: Any) -> Any:
        """Sections (connections:, triggers:, ...) hold the same keys as the top level: lift them up."""
        if not isinstance(data, dict):
            return data
        flat = {key: value for key, value in data.items() if key not in SECTIONS}
        for section in SECTIONS:
            if section not in data:
                continue
            keys = data[section]
            if keys is None:
                continue
            if not isinstance(keys, dict):
                raise ValueError(f"{section}: is a {type(keys).__name__}, not a section; write its settings "
                                 f"indented below it ({', '.join(SECTIONS[section])})")
            for key, value in keys.items():
                if key not in SECTIONS[section]:
                    home = SECTION_OF.get(key)
                    hint = (f"it belongs in {home}:" if home else
                            f"the settings of {section}: are {', '.join(SECTIONS[section])}")
                    raise ValueError(f"{section}.{key}: unknown setting in this section; {hint}")
                if key in flat:
                    raise ValueError(f"{key}: given both at the top level and as {section}.{key}; keep one")
                flat[key] = value
        return flat

    @field_validator(
        "civicrm_conn_id",
        "cms_conn_id",
        "lock_conn_id",
        "schedule",
        "timezone",
        "username_pattern",
        "username_fallback_pattern",
        mode="before",
    )
    @classmethod
    def _strip_text(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @field_validator("trigger_groups", "trigger_tags", "reset_groups", "reset_tags")
    @classmethod
    def _check_trigger_refs(cls, refs: list[int | str]) -> list[int | str]:
        cleaned = [_check_ref(ref) for ref in refs]
        duplicates = sorted({str(ref) for ref in cleaned if cleaned.count(ref) > 1})
        if duplicates:
            raise ValueError(f"{', '.join(duplicates)} listed more than once; list each entry once")
        return cleaned

    @field_validator("task_timeout_minutes")
    @classmethod
    def _check_timeouts(cls, given: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(given) - set(TASK_TIMEOUT_MINUTES))
        if unknown:
            raise ValueError(f"unknown task {', '.join(unknown)}; the tasks are {', '.join(TASK_TIMEOUT_MINUTES)}")
        low = sorted(task for task, minutes in given.items() if minutes < 1)
        if low:
            raise ValueError(f"{', '.join(low)}: give at least 1 minute")
        return {**TASK_TIMEOUT_MINUTES, **given}

    @field_validator("history_group", "history_tag")
    @classmethod
    def _check_history_ref(cls, ref: int | str | None) -> int | str | None:
        if ref is None or (isinstance(ref, str) and not ref.strip()):
            return None
        return _check_ref(ref)

    @field_validator("user_fields")
    @classmethod
    def _check_user_fields(cls, fields: dict[str, str]) -> dict[str, str]:
        for name, pattern in fields.items():
            if not name.strip():
                raise ValueError("has an empty field name; give the CMS's field name, e.g. field_full_name")
            try:
                pattern_parts(pattern)
            except PatternError as error:
                raise ValueError(f"{name}: {error}") from None
        return {name.strip(): pattern for name, pattern in fields.items()}

    @field_validator("admin_groups")
    @classmethod
    def _check_admin_groups(cls, refs: list[int | str]) -> list[int | str]:
        return [_check_ref(ref) for ref in refs]

    @field_validator("username_pattern", "username_fallback_pattern")
    @classmethod
    def _check_pattern(cls, pattern: str) -> str:
        if not pattern:
            raise ValueError("is empty; use tokens such as {first_name}.{last_name}")
        try:
            parts = pattern_parts(pattern)
        except PatternError as error:
            raise ValueError(str(error)) from None
        if not any(is_token for _, is_token in parts):
            allowed = ", ".join("{" + token + "}" for token in USERNAME_TOKENS)
            raise ValueError(
                f"'{pattern}' has no token, so every contact would get the same name; use {allowed}"
            )
        return pattern

    @field_validator("cms_type", mode="before")
    @classmethod
    def _check_cms_type(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if isinstance(value, str):
            key = value.strip().lower()
            if key not in registry.names():
                raise ValueError(f"'{value}' is not a supported CMS; use one of "
                                 + ", ".join(f"'{name}'" for name in registry.names()))
            return key
        return value

    @field_validator("approval_users")
    @classmethod
    def _check_approval_users(cls, users: list[str | int]) -> list[str]:
        cleaned = [str(user).strip() for user in users]
        if any(not user for user in cleaned):
            raise ValueError("contains an empty user id; give Airflow user ids such as admin")
        return list(dict.fromkeys(cleaned))

    @field_validator("admin_roles")
    @classmethod
    def _check_admin_roles(cls, roles: list[str]) -> list[str]:
        cleaned = [role.strip() for role in roles]
        if any(not role for role in cleaned):
            raise ValueError("contains an empty role; give role names such as administrator")
        return list(dict.fromkeys(cleaned))

    @field_validator("roles")
    @classmethod
    def _check_roles(cls, roles: list[str]) -> list[str]:
        cleaned = [role.strip() for role in roles]
        if any(not role for role in cleaned):
            raise ValueError("contains an empty role; give role slugs such as subscriber")
        return list(dict.fromkeys(cleaned))

    @model_validator(mode="after")
    def _refuse_admin_roles(self) -> Settings:
        # Every triggered contact would get full control of the site: never what is meant. Without a
        # cms_type the connection decides later, so every supported CMS's administrator roles count.
        kinds = [registry.get(self.cms_type)] if self.cms_type else list(registry.cms_types().values())
        named = {role.lower() for role in self.admin_roles}
        for role in self.roles:
            if role.lower() in named or any(kind.rules.is_admin_role(role) for kind in kinds):
                raise ValueError(f"roles: '{role}' is not allowed for automatically created accounts (it "
                                 "administers the site); use a lesser role")
        return self

    @field_validator("schedule")
    @classmethod
    def _check_schedule(cls, schedule: str) -> str:
        problem = _cron_problem(schedule)
        if problem:
            presets = ", ".join(AIRFLOW_SCHEDULE_PRESETS)
            raise ValueError(
                f"'{schedule}' is not a schedule ({problem}); use 5 cron fields like '0 2 * * *' or one of {presets}"
            )
        return schedule

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"'{name}' is not a known time zone; use an IANA name such as UTC or Europe/Berlin"
            ) from None
        return name

    @model_validator(mode="after")
    def _require_a_trigger(self) -> Settings:
        if not self.trigger_groups and not self.trigger_tags:
            raise ValueError(
                "trigger_groups, trigger_tags: both are empty, so no contact would ever be picked. "
                "List at least one group in trigger_groups or one tag in trigger_tags"
            )
        # a contact there would be sent both mails at once, the second voiding the first link
        for setting, refs, other, others in (("reset_groups", self.reset_groups, "trigger_groups", self.trigger_groups),
                                             ("reset_tags", self.reset_tags, "trigger_tags", self.trigger_tags)):
            shared = [str(ref) for ref in refs if str(ref).lower() in {str(o).lower() for o in others}]
            if shared:
                raise ValueError(f"{setting}: {', '.join(shared)} is also in {other}; a group or tag either "
                                 "creates accounts or resets passwords, not both")
        return self


def _check_ref(ref: int | str) -> int | str:
    if isinstance(ref, bool):
        raise ValueError(f"{ref!r} is not a group/tag; give an id, a name or a title")
    if isinstance(ref, int):
        if ref < 1:
            raise ValueError(f"{ref} is not a valid id; ids start at 1")
        return ref
    text = ref.strip()
    if not text:
        raise ValueError("contains an empty entry; give an id, a name or a title")
    return text


def _cron_problem(schedule: str) -> str | None:
    """Why `schedule` is neither an Airflow preset nor a plain 5-field cron expression (None: it is fine)."""
    if schedule.startswith("@"):
        return None if schedule in AIRFLOW_SCHEDULE_PRESETS else f"unknown preset {schedule}"
    fields = schedule.split()
    if len(fields) != 5:
        return f"{len(fields)} fields instead of 5"
    for text, (name, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        for item in text.lower().split(","):
            match = _CRON_ITEM_RE.match(item)
            if not match:
                return f"bad {name} '{text}'"
            if match["step"] is not None and int(match["step"]) == 0:
                return f"step 0 in {name} '{text}'"
            if match["range"] == "*":
                continue
            for bound in match["range"].split("-"):
                if bound in names:
                    continue
                if not bound.isdigit() or not low <= int(bound) <= high:
                    return f"{name} '{bound}' is outside {low}-{high}"
    return None


# ---------------------------------------------------------------------------------------------
# Loading


def settings_path() -> Path:
    """$CMSUSER_SETTINGS if set, else config/cmsuser.yaml in the repository."""
    configured = os.environ.get(SETTINGS_ENV_VAR, "").strip()
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "config" / "cmsuser.yaml"


def load_settings(path: str | Path | None = None) -> Settings:
    """Read and validate the settings file; raise SettingsError listing every problem."""
    path = Path(path) if path is not None else settings_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsError(
            f"Settings file {path}: file not found. Create it (config/cmsuser.yaml is an example) "
            f"or set {SETTINGS_ENV_VAR} to the path of your settings file."
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise SettingsError(
            f"Settings file {path}: cannot be read ({error}). Check the path and the file's permissions, "
            f"or set {SETTINGS_ENV_VAR} to another file."
        ) from None
    return parse_settings(text, source=str(path))


def parse_settings(text: str, *, source: str = "<text>") -> Settings:
    """Validate settings given as YAML text; `source` names the file in error messages."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "YAML syntax"
        problem = getattr(error, "problem", None) or str(error)
        raise SettingsError(
            f"Settings file {source}: {where}: {problem}. Fix the YAML syntax there "
            "(indentation, quotes, a missing ':')."
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SettingsError(
            f"Settings file {source}: top level: is a {type(data).__name__}, not a mapping. "
            "Write one 'setting: value' per line."
        )
    try:
        return Settings.model_validate(data)
    except ValidationError as error:
        raise SettingsError("\n".join(_describe_errors(error, source))) from None


def _describe_errors(error: ValidationError, source: str) -> list[str]:
    # Group by field first: an `int | str` value that is neither gives one error per branch.
    by_field: dict[str, list[dict]] = {}
    for item in error.errors(include_url=False):
        by_field.setdefault(_field_label(item["loc"]), []).append(item)
    lines = []
    for field, items in by_field.items():
        item = items[0]
        top = item["loc"][0] if item["loc"] else None
        message = item["msg"].removeprefix("Value error, ")
        if len(items) > 1 and all(_is_union_branch(each["loc"]) for each in items):
            message = "input should be an id (a number) or a name"
        if item["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(top), Settings.model_fields, n=1)
            hint = f"Did you mean {close[0]}?" if close else "Remove it or check its spelling."
            lines.append(f"Settings file {source}: {field}: unknown setting. {hint}")
        elif not item["loc"]:
            # Whole-model checks already start with the fields they are about.
            lines.append(f"Settings file {source}: {message}.")
        elif item["type"] == "value_error":
            lines.append(f"Settings file {source}: {field}: {message}.")
        else:
            shown = _short_repr(item.get("input"))
            help_text = Settings.model_fields[top].description if top in Settings.model_fields else ""
            lines.append(
                f"Settings file {source}: {field}: {message[:1].lower()}{message[1:]} (got {shown}). "
                f"Fix the value of {top}. About {top}: {help_text}"
            )
    return lines


def _is_union_branch(loc: tuple) -> bool:
    return len(loc) > 1 and isinstance(loc[-1], str)


def _field_label(loc: tuple) -> str:
    label = ""
    for part in loc:
        if isinstance(part, int):
            label += f"[{part}]"
        elif label:
            # Union branches (e.g. 'int', 'str') add nothing a reader needs.
            continue
        else:
            label = str(part)
    return label


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------------------------------------
# Reference documentation


def settings_reference_markdown() -> str:
    """A Markdown table of every setting: name, type, default and help text."""
    rows = ["| Section | Setting | Type | Default | Description |", "|---|---|---|---|---|"]
    for name, field in sorted(Settings.model_fields.items(), key=lambda item: _section_order(item[0])):
        if field.default_factory is not None:
            default = field.default_factory()
        elif field.default is PydanticUndefined:
            default = "(required)"
        else:
            default = field.default
        type_text = _type_text(field.annotation) + _bounds_text(field.metadata)
        rows.append(
            f"| `{SECTION_OF[name]}` | `{name}` | {_cell(type_text)} | {_cell(_default_text(default))} | {_cell(field.description or '')} |"
        )
    return "\n".join(rows) + "\n"


def _section_order(name: str) -> tuple[int, int]:
    section = SECTION_OF[name]
    return list(SECTIONS).index(section), SECTIONS[section].index(name)


def _type_text(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        return _type_text(args[0])
    if origin is Literal:
        return " or ".join(f'"{arg}"' for arg in args)
    if origin in (typing.Union, types.UnionType):
        optional = type(None) in args
        names = [_type_text(arg) for arg in args if arg is not type(None)]
        text = " or ".join(names)
        return f"{text} or empty" if optional else text
    if origin is list:
        return f"list of ({_type_text(args[0])})" if args else "list"
    if origin is dict:
        return f"mapping of {_type_text(args[0])} to {_type_text(args[1])}" if args else "mapping"
    return {int: "integer", str: "text", bool: "true/false"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def _bounds_text(metadata: list) -> str:
    low = next((item.ge for item in metadata if isinstance(item, annotated_types.Ge)), None)
    high = next((item.le for item in metadata if isinstance(item, annotated_types.Le)), None)
    if low is not None and high is not None:
        return f", {low} to {high}"
    if low is not None:
        return f", at least {low}"
    if high is not None:
        return f", at most {high}"
    return ""


def _default_text(default: Any) -> str:
    if default is None:
        return "empty"
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, dict):
        return "{" + ", ".join(f"{key}: {value}" for key, value in default.items()) + "}"
    if isinstance(default, list):
        return "[" + ", ".join(f'"{item}"' if isinstance(item, str) else str(item) for item in default) + "]"
    return f'"{default}"' if isinstance(default, str) else str(default)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


README_START = "<!-- settings-reference:start"
README_END = "<!-- settings-reference:end -->"


def write_reference(readme: str | Path) -> bool:
    """Put the settings table into the README between its markers; True if the file changed."""
    path = Path(readme)
    text = path.read_text(encoding="utf-8")
    start = text.index("\n", text.index(README_START)) + 1
    end = text.index(README_END)
    updated = text[:start] + settings_reference_markdown() + text[end:]
    if updated != text:
        path.write_text(updated, encoding="utf-8")
    return updated != text


if __name__ == "__main__":  # `make docs`
    import sys

    for name in sys.argv[1:] or ["README.md"]:
        print(f"{name}: {'updated' if write_reference(name) else 'already up to date'}")
