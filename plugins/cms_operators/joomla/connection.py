"""The `joomla` Airflow connection type: its form in the UI, as provider-info data.

Pure data, no Airflow import: CMS_TYPE (this package's __init__) carries it and
`cmsuser_provider.get_provider_info()` lists it. What the fields mean is JoomlaHook's (hook.py):
host = the site's base URL, password = the API user's Joomla API token (login unused), extras
`api_url`, `verify`, `timeout`. Extras are settings, never HTTP headers.
"""

from __future__ import annotations

from typing import Any

from transport.form import transport_fields

CONNECTION: dict[str, Any] = {
    "ui-field-behaviour": {
        # the token names its user; the scheme and port belong in the host URL
        "hidden-fields": ["schema", "port", "login"],
        "relabeling": {"host": "Site URL", "password": "Joomla API token"},
        "placeholders": {
            "host": "https://www.example.org",
            "password": "Users > Edit Profile > Joomla API Token of the API user",
        },
    },
    "conn-fields": {
        "api_url": {
            "label": "API root",
            "description": "Optional: the Web Services root when it is not <Site URL>/api/index.php "
                           "(e.g. https://www.example.org/api with URL rewriting).",
            "schema": {"type": ["string", "null"]},
        },
        **transport_fields("Joomla", 30),
    },
}
