"""The `drupal` Airflow connection type: its form in the UI, as provider-info data.

Pure data, no Airflow import: CMS_TYPE (this package's __init__) carries it, and
`cmsuser_provider.get_provider_info()` lists it under the provider's `connection-types`. What the
fields mean is DrupalHook's (hook.py): host = the site's base URL; login + password = an account for
HTTP Basic auth (core module basic_auth), or an empty login and an OAuth access token in the
password (contrib simple_oauth: sent as `Authorization: Bearer`); extras `jsonapi_path`, `verify`,
`timeout`. Extras are settings, never HTTP headers.
"""

from __future__ import annotations

from typing import Any

from transport.form import transport_fields

CONNECTION: dict[str, Any] = {
    "ui-field-behaviour": {
        "hidden-fields": ["schema", "port"],
        "relabeling": {"host": "Site URL", "login": "API user", "password": "Password or OAuth token"},
        "placeholders": {
            "host": "https://www.example.org",
            "login": "an account whose role has 'administer users' and 'administer permissions' "
                     "(empty when the password field holds an OAuth token)",
            "password": "the account's password (HTTP Basic, module basic_auth), or an OAuth access token",
        },
    },
    "conn-fields": {
        "jsonapi_path": {
            "label": "JSON:API path",
            "description": "Optional: the JSON:API base path when the site changed it (default /jsonapi).",
            "schema": {"type": ["string", "null"]},
        },
        **transport_fields("Drupal", 30),
    },
}
