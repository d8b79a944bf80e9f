"""The `civicrm` Airflow connection type: its form in the UI, as provider-info data.

Pure data, no Airflow import: `cmsuser_provider.get_provider_info()` puts it in the provider's
`connection-types` (Airflow's ProvidersManager reads `conn-fields` and `ui-field-behaviour` from
there). What the fields mean is CiviCRMHook's (civicrm_hooks/hook.py): host = the site's base URL,
password = the API key, extras `site_key`, `api4_url`, `verify`, `timeout`. Extras are settings,
never HTTP headers. Each conn-field is stored in the connection's extra JSON under its own name.
"""

from __future__ import annotations

from typing import Any

from transport.form import transport_fields

#: The Airflow connection type, the hook that serves it and its name in the UI (the hook's `hook_name`).
CONN_TYPE = "civicrm"
HOOK_CLASS = "civicrm_hooks.hook.CiviCRMHook"
LABEL = "CiviCRM APIv4"

CONNECTION: dict[str, Any] = {
    "ui-field-behaviour": {
        # the API key authenticates on its own: no login; the scheme and port belong in the host URL
        "hidden-fields": ["schema", "port", "login"],
        "relabeling": {"host": "Site URL", "password": "API key"},
        "placeholders": {
            "host": "https://crm.example.org",
            "password": "API key of the API contact (at most 32 characters)",
        },
    },
    "conn-fields": {
        "site_key": {
            "label": "Site key",
            "description": "Optional: the site key (CIVICRM_SITE_KEY in civicrm.settings.php), sent as "
                           "X-Civi-Key when the site's AuthX guard asks for it. Without it the API contact "
                           "needs the permission 'authenticate with api key'.",
            "schema": {"type": ["string", "null"], "format": "password"},
        },
        "api4_url": {
            "label": "APIv4 URL template",
            "description": "Optional: the full APIv4 URL with {entity} and {action}, when the default "
                           "<Site URL>/civicrm/ajax/api4/{entity}/{action} does not fit, e.g. WordPress "
                           "without clean URLs: https://crm.example.org/?civiwp=CiviCRM&q=civicrm/ajax/api4/"
                           "{entity}/{action}. When set, it is used instead of the Site URL.",
            "schema": {"type": ["string", "null"]},
        },
        **transport_fields("CiviCRM", 60),
    },
}
