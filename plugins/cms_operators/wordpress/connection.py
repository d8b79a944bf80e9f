"""The `wordpress` Airflow connection type: its form in the UI, as provider-info data.

Pure data, no Airflow import: CMS_TYPE (this package's __init__) carries it, and
`cmsuser_provider.get_provider_info()` lists it under the provider's `connection-types` (Airflow's
ProvidersManager reads `conn-fields` and `ui-field-behaviour` from there). What the fields mean is
WordPressHook's (hook.py): host = the site's base URL, login = the API user, password = an
Application Password of that user, extras `rest_url`, `verify`, `timeout`. Extras are settings,
never HTTP headers. Each conn-field is stored in the connection's extra JSON under its own name.
"""

from __future__ import annotations

from typing import Any

from transport.form import transport_fields

CONNECTION: dict[str, Any] = {
    "ui-field-behaviour": {
        # the scheme and port belong in the host URL
        "hidden-fields": ["schema", "port"],
        "relabeling": {"host": "Site URL", "login": "API user", "password": "Application password"},
        "placeholders": {
            "host": "https://www.example.org",
            "login": "login (or email) of a user who may create, list, edit and promote users",
            "password": "Users > Profile > Application Passwords (not the account password)",
        },
    },
    "conn-fields": {
        "rest_url": {
            "label": "REST API root",
            "description": "Optional: the REST root when it is not <Site URL>/wp-json, e.g. "
                           "https://www.example.org/?rest_route= on sites without pretty permalinks.",
            "schema": {"type": ["string", "null"]},
        },
        **transport_fields("WordPress", 30),
    },
}
