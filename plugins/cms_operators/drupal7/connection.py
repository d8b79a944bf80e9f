"""The `drupal7` Airflow connection type: its form in the UI, as provider-info data.

Pure data, no Airflow import. What the fields mean is Drupal7Hook's (hook.py): host = the site's
base URL; login + password = the API user (a Drupal 7 account, logged in through the Services
endpoint's `user/login` action); extra `endpoint` = the Services endpoint's path (e.g. `api`),
plus `verify` and `timeout`. Extras are settings, never HTTP headers.
"""

from __future__ import annotations

from typing import Any

from transport.form import transport_fields

CONNECTION: dict[str, Any] = {
    "ui-field-behaviour": {
        "hidden-fields": ["schema", "port"],
        "relabeling": {"host": "Site URL", "login": "API user", "password": "Password"},
        "placeholders": {
            "host": "https://www.example.org",
            "login": "a Drupal 7 account whose role has 'administer users', 'administer permissions' and "
                     "'access user profiles'",
            "password": "that account's password",
        },
    },
    "conn-fields": {
        "endpoint": {
            "label": "Services endpoint path",
            "description": "The path of the Services 3.x endpoint (REST server, session authentication, JSON), "
                           "as set at admin/structure/services, e.g. api.",
            "schema": {"type": ["string", "null"]},
        },
        **transport_fields("Drupal 7", 30),
    },
}
