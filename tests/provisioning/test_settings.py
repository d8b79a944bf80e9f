from pathlib import Path

import pytest
import yaml

from provisioning.settings import (
    SECTION_OF,
    SECTIONS,
    SETTINGS_ENV_VAR,
    Settings,
    SettingsError,
    load_settings,
    parse_settings,
    settings_path,
    settings_reference_markdown,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FILE = REPO_ROOT / "config" / "cmsuser.yaml"


def write_settings(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cmsuser.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def settings_error(tmp_path: Path, values: dict) -> str:
    """The SettingsError message for these values (plus a trigger group, unless they set one)."""
    path = write_settings(tmp_path, yaml.safe_dump({"trigger_groups": ["g"], **values}))
    with pytest.raises(SettingsError) as caught:
        load_settings(path)
    return str(caught.value)


# --- the shipped file and the defaults ---------------------------------------------------------


def test_default_config_file_loads_with_the_sandbox_values():
    settings = load_settings(DEFAULT_FILE)
    assert settings.trigger_groups == ["new_members", "volunteers_smart"]
    assert settings.trigger_tags == ["needs_login"]
    assert (settings.history_group, settings.history_tag) == ("has_login", "login_created")
    assert settings.username_pattern == "{first_name}.{last_name}"
    assert settings.roles == ["member"]
    assert settings.notify is True


FLAT = """
civicrm_conn_id: crm
cms_conn_id: site
domain_id: 2
trigger_groups: [members]
trigger_tags: [3]
history_tag: has_login
username_pattern: "{email_local}"
roles: [member]
notify: false
max_attempts: 2
batch_size: 50
schedule: "@daily"
timezone: Europe/Berlin
"""

SECTIONED = """
connections: {civicrm_conn_id: crm, cms_conn_id: site, domain_id: 2}
triggers:
  trigger_groups: [members]
  trigger_tags: [3]
  history_tag: has_login
accounts: {username_pattern: "{email_local}", roles: [member], notify: false}
attempts: {max_attempts: 2}
tasks: {batch_size: 50}
nightly: {schedule: "@daily", timezone: Europe/Berlin}
"""


def test_settings_in_sections_mean_the_same_as_at_the_top_level():
    assert parse_settings(SECTIONED) == parse_settings(FLAT)
    assert parse_settings(SECTIONED).model_dump()["domain_id"] == 2
    mixed = "triggers: {trigger_groups: [members]}\nroles: [member]\nnightly:\n"  # an empty section is fine
    assert parse_settings(mixed).roles == ["member"]


def test_every_setting_has_exactly_one_section():
    assert sorted(SECTION_OF) == sorted(Settings.model_fields)
    assert sum(len(keys) for keys in SECTIONS.values()) == len(Settings.model_fields)


@pytest.mark.parametrize(("text", "fragment"), [
    ("trigger_tags: [a]\ntriggers: {trigger_tags: [b]}", "trigger_tags: given both at the top level and as "
                                                         "triggers.trigger_tags; keep one"),
    ("triggers: {trigger_tags: [a], roles: [x]}", "triggers.roles: unknown setting in this section; it belongs "
                                                  "in accounts:"),
    ("triggers: {trigger_tags: [a], tagz: [b]}", "triggers.tagz: unknown setting in this section; the settings "
                                                 "of triggers: are trigger_groups, trigger_tags"),
    ("trigger_tags: [a]\naccounts: [member]", "accounts: is a list, not a section"),
])
def test_section_mistakes_name_the_key_and_what_to_do(text, fragment):
    with pytest.raises(SettingsError, match="^Settings file <text>: ") as caught:
        parse_settings(text)
    assert fragment in str(caught.value)


def test_settings_path_defaults_to_the_repository_config(monkeypatch):
    monkeypatch.delenv(SETTINGS_ENV_VAR, raising=False)
    assert settings_path() == DEFAULT_FILE
    assert load_settings().trigger_tags == ["needs_login"]


def test_settings_path_follows_the_environment_variable(monkeypatch, tmp_path):
    path = write_settings(tmp_path, "trigger_tags: [42]\nbatch_size: 7\n")
    monkeypatch.setenv(SETTINGS_ENV_VAR, str(path))
    assert settings_path() == path
    settings = load_settings()
    assert (settings.trigger_tags, settings.batch_size) == ([42], 7)


@pytest.mark.parametrize(
    ("field", "default"),
    [
        ("civicrm_conn_id", "civicrm_default"),
        ("cms_conn_id", "cms_default"),
        ("cms_type", None),  # the CMS connection's type decides
        ("domain_id", 1),
        ("trigger_tags", []),
        ("history_group", None),
        ("history_tag", None),
        ("username_pattern", "{first_name}.{last_name}"),
        ("username_fallback_pattern", "{email_local}"),
        ("roles", ["subscriber"]),
        ("notify", True),
        ("on_existing_email", "link"),
        ("sync_preferred_language", True),
        ("user_fields", {}),
        ("admin_groups", []),
        ("admin_roles", []),
        ("reset_groups", []),
        ("reset_tags", []),
        ("max_attempts", 4),
        ("batch_size", 200),
        ("retry_delay_seconds", 300),
        ("activity_source_contact_id", None),
        ("schedule", "0 2 * * *"),
        ("timezone", "UTC"),
    ],
)
def test_defaults(field, default):
    assert getattr(Settings(trigger_groups=[1]), field) == default


def test_every_field_has_help_text_and_is_in_the_reference():
    reference = settings_reference_markdown()
    lines = reference.strip().splitlines()
    assert len(lines) == 2 + len(Settings.model_fields)
    for name, field in Settings.model_fields.items():
        assert field.description and len(field.description) > 30, name
        row = next(line for line in lines if f"| `{name}` |" in line)
        assert row.startswith(f"| `{SECTION_OF[name]}` | `{name}` |")
        assert field.description.replace("|", "\\|") in row


@pytest.mark.parametrize(
    ("field", "type_text", "default_text"),
    [
        ("max_attempts", "integer, 1 to 20", "4"),
        ("on_existing_email", '"link" or "fail"', '"link"'),
        ("roles", "list of (text)", '["subscriber"]'),
        ("history_group", "integer or text or empty", "empty"),
        ("notify", "true/false", "true"),
    ],
)
def test_reference_shows_type_and_default(field, type_text, default_text):
    row = next(line for line in settings_reference_markdown().splitlines() if f"| `{field}` |" in line)
    cells = [cell.strip() for cell in row.strip("|").split(" | ")]
    assert cells[2:4] == [type_text, default_text]


# --- valid values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "schedule",
    [
        "0 2 * * *",
        "*/15 * * * *",
        "0 0 1 */3 *",
        "30 4 * * mon-fri",
        "0 6,18 1-15 jan,jul sun",
        "@daily",
        "@hourly",
    ],
)
def test_valid_schedules(schedule):
    assert Settings(trigger_groups=[1], schedule=schedule).schedule == schedule


@pytest.mark.parametrize(
    "pattern",
    ["{first_name}.{last_name}", "{email_local}", "{contact_id}-{last_name}", "m_{display_name}", "{email}"],
)
def test_valid_username_patterns(pattern):
    assert Settings(trigger_groups=[1], username_pattern=pattern).username_pattern == pattern


@pytest.mark.parametrize(
    "pattern", ["{email_local}", " {email_local} ", "member-{contact_id}", "{last_name}_{contact_id}"]
)
def test_valid_username_fallback_patterns(pattern):
    settings = Settings(trigger_groups=[1], username_fallback_pattern=pattern)
    assert settings.username_fallback_pattern == pattern.strip()


def test_both_username_help_texts_give_the_order_of_patterns():
    pattern = Settings.model_fields["username_pattern"].description
    fallback = Settings.model_fields["username_fallback_pattern"].description
    assert "`username_fallback_pattern` is used, and if that is empty too, `user{contact_id}`" in pattern
    assert "Order: `username_pattern`, then this, then `user{contact_id}`" in fallback


def test_trigger_entries_keep_ids_and_names():
    settings = Settings(trigger_groups=[5, " Members "], trigger_tags=["Needs login"], history_group="")
    assert settings.trigger_groups == [5, "Members"]
    assert settings.trigger_tags == ["Needs login"]
    assert settings.history_group is None


def test_tags_alone_are_enough():
    assert Settings(trigger_tags=["t"]).trigger_groups == []


def test_timezone_accepts_iana_names():
    assert Settings(trigger_groups=[1], timezone="Europe/Berlin").timezone == "Europe/Berlin"


# --- invalid values: every message names the file and the field --------------------------------


@pytest.mark.parametrize(
    ("values", "field", "fragment"),
    [
        ({"domain_id": 0}, "domain_id", "greater than or equal to 1"),
        ({"domain_id": "main"}, "domain_id", "valid integer"),
        ({"max_attempts": 0}, "max_attempts", "greater than or equal to 1"),
        ({"max_attempts": 21}, "max_attempts", "less than or equal to 20"),
        ({"batch_size": 0}, "batch_size", "greater than or equal to 1"),
        ({"batch_size": 5001}, "batch_size", "less than or equal to 5000"),
        ({"retry_delay_seconds": -1}, "retry_delay_seconds", "greater than or equal to 0"),
        ({"cms_type": "typo3"}, "cms_type", "'wordpress'"),
        ({"on_existing_email": "merge"}, "on_existing_email", "'link' or 'fail'"),
        ({"notify": "perhaps"}, "notify", "valid boolean"),
        ({"activity_source_contact_id": 0}, "activity_source_contact_id", "greater than or equal to 1"),
        ({"schedule": "61 * * * *"}, "schedule", "minute '61' is outside 0-59"),
        ({"schedule": "0 2 * *"}, "schedule", "4 fields instead of 5"),
        ({"schedule": "*/0 * * * *"}, "schedule", "step 0"),
        ({"schedule": "0 2 * * funday"}, "schedule", "day of week 'funday'"),
        ({"schedule": "@sometimes"}, "schedule", "unknown preset @sometimes"),
        ({"timezone": "Mars/Olympus"}, "timezone", "'Mars/Olympus' is not a known time zone"),
        ({"username_pattern": "{first}.{last_name}"}, "username_pattern", "unknown token {first}"),
        ({"username_pattern": "{first_name"}, "username_pattern", "unbalanced '{'"),
        ({"username_pattern": "first_name}"}, "username_pattern", "unbalanced '}'"),
        ({"username_pattern": "member"}, "username_pattern", "has no token"),
        ({"username_pattern": "  "}, "username_pattern", "is empty"),
        ({"username_fallback_pattern": "{nick}"}, "username_fallback_pattern", "unknown token {nick}"),
        ({"username_fallback_pattern": "{email_local"}, "username_fallback_pattern", "unbalanced '{'"),
        ({"username_fallback_pattern": "member"}, "username_fallback_pattern", "has no token"),
        ({"username_fallback_pattern": ""}, "username_fallback_pattern", "is empty"),
        ({"username_fallback_pattern": 5}, "username_fallback_pattern", "valid string"),
        ({"roles": []}, "roles", "at least 1 item"),
        ({"user_fields": {"field_name": "{nick}"}}, "user_fields", "field_name: unknown token {nick}"),
        ({"user_fields": {" ": "{first_name}"}}, "user_fields", "empty field name"),
        ({"user_fields": ["field_name"]}, "user_fields", "valid dictionary"),
        ({"admin_groups": [0]}, "admin_groups", "not a valid id"),
        ({"admin_roles": ["site boss", ""]}, "admin_roles", "empty role"),
        ({"reset_groups": ["G"]}, "reset_groups", "G is also in trigger_groups"),
        ({"trigger_tags": ["needs_login"], "reset_tags": ["Needs_Login"]}, "reset_tags", "Needs_Login is also"),
        ({"reset_groups": ["a", "a"]}, "reset_groups", "listed more than once"),
        ({"reset_tags": [0]}, "reset_tags", "not a valid id"),
        ({"admin_roles": ["Site Boss"], "roles": ["member", "site boss"]}, "roles",
         "'site boss' is not allowed"),
        ({"sync_preferred_language": "sometimes"}, "sync_preferred_language", "valid boolean"),
        ({"roles": ["administrator"]}, "roles", "'administrator' is not allowed"),
        ({"roles": ["member", " "]}, "roles", "empty role"),
        ({"trigger_groups": [""]}, "trigger_groups", "empty entry"),
        ({"trigger_groups": [0]}, "trigger_groups", "not a valid id"),
        ({"trigger_groups": ["a", "a"]}, "trigger_groups", "listed more than once"),
        ({"trigger_groups": [[1, 2]]}, "trigger_groups[0]", "an id (a number) or a name"),
        ({"history_tag": ["x"]}, "history_tag", "an id (a number) or a name"),
    ],
)
def test_invalid_values_name_file_and_field(tmp_path, values, field, fragment):
    message = settings_error(tmp_path, values)
    assert message.startswith(f"Settings file {tmp_path / 'cmsuser.yaml'}: {field}: ")
    assert fragment in message


def test_unknown_token_lists_the_allowed_ones(tmp_path):
    message = settings_error(tmp_path, {"username_pattern": "{nick}"})
    for token in (
        "{first_name}",
        "{last_name}",
        "{display_name}",
        "{contact_id}",
        "{email}",
        "{email_local}",
    ):
        assert token in message


def test_seed_style_token_gets_a_hint(tmp_path):
    message = settings_error(tmp_path, {"username_pattern": "{contact.first_name}_{contact.last_name}"})
    assert "write {first_name} instead of {contact.first_name}" in message


def test_type_errors_say_what_the_field_is_for(tmp_path):
    message = settings_error(tmp_path, {"batch_size": "lots"})
    assert "(got 'lots')" in message
    assert Settings.model_fields["batch_size"].description in message


def test_misspelt_setting_is_caught_with_a_suggestion(tmp_path):
    message = settings_error(tmp_path, {"max_atempts": 3})
    assert "max_atempts: unknown setting. Did you mean max_attempts?" in message


def test_every_problem_is_reported_at_once(tmp_path):
    message = settings_error(tmp_path, {"batch_size": 0, "timezone": "Nowhere/City", "colour": "red"})
    lines = message.splitlines()
    assert len(lines) == 3
    assert {line.split(": ")[1] for line in lines} == {"batch_size", "timezone", "colour"}


def test_no_trigger_at_all_names_both_fields(tmp_path):
    path = write_settings(tmp_path, "batch_size: 10\n")
    with pytest.raises(SettingsError, match=r"trigger_groups, trigger_tags: both are empty"):
        load_settings(path)


def test_empty_file_asks_for_a_trigger(tmp_path):
    with pytest.raises(SettingsError, match="at least one group in trigger_groups"):
        load_settings(write_settings(tmp_path, "# nothing yet\n"))


def test_yaml_syntax_error_gives_the_line(tmp_path):
    path = write_settings(tmp_path, "trigger_groups: [a]\nroles: [member\nnotify: true\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(path)
    assert str(caught.value).startswith(f"Settings file {path}: line ")
    assert "Fix the YAML syntax" in str(caught.value)


def test_top_level_must_be_a_mapping(tmp_path):
    with pytest.raises(SettingsError, match="top level: is a list, not a mapping"):
        load_settings(write_settings(tmp_path, "- trigger_groups\n"))


def test_missing_file_says_to_set_the_environment_variable(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SettingsError) as caught:
        load_settings(missing)
    assert str(caught.value).startswith(f"Settings file {missing}: file not found.")
    assert SETTINGS_ENV_VAR in str(caught.value)


def test_settings_error_is_a_value_error():
    assert issubclass(SettingsError, ValueError)


def test_parse_settings_names_the_given_source():
    with pytest.raises(SettingsError, match=r"^Settings file dag-params: batch_size: "):
        parse_settings("trigger_tags: [a]\nbatch_size: -5\n", source="dag-params")
