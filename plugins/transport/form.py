"""The connection-form fields every connection type has because the transport reads them (no Airflow import).

`extra.verify` and `extra.timeout` mean the same for every hook (transport.hook.RestHook), so their
form fields are made here once; each connection.py adds only its own API's fields.
"""

from __future__ import annotations


def transport_fields(site: str, default_timeout: float) -> dict[str, dict]:
    """`verify` and `timeout` as provider-info conn-fields; `site` names the system in the help text."""
    return {
        "verify": {
            "label": "TLS verification",
            "description": "true (the default when empty) checks the site's certificate; false skips the check "
                           "(test sites only); or the path of a CA bundle that exists where the tasks run.",
            "schema": {"type": ["boolean", "string", "null"]},
        },
        "timeout": {
            "label": "Timeout (seconds)",
            "description": f"How long to wait for each answer from {site}; default {default_timeout:g}.",
            "schema": {"type": ["number", "null"], "minimum": 1},
        },
    }
