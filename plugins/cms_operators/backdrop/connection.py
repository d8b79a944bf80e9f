"""The `backdrop` Airflow connection type: its form in the UI, as provider-info data.

Pure data, no Airflow import. What the fields mean is BeeHook's (hook.py): host, port and login of
the site's server for SSH, password = the private key's passphrase, the key itself in extra
`private_key` (or `key_file`, a path on the worker), `host_key` pins the server's public host key
(unknown host keys are refused), `site_root` and `bee_path` say where the site and bee are. Without
a host, bee runs on the worker's own machine. An Airflow connection of type `ssh` with
`cms_type: backdrop` in the settings works too (the same extras).
"""

from __future__ import annotations

from typing import Any

CONNECTION: dict[str, Any] = {
    "ui-field-behaviour": {
        "hidden-fields": ["schema"],
        "relabeling": {"host": "SSH host (empty: bee runs on the worker)", "login": "SSH user",
                       "password": "Private key passphrase", "port": "SSH port"},
        "placeholders": {
            "host": "backdrop.example.org",
            "login": "a user of the site's server that may run bee on the site",
            "password": "only when the private key has a passphrase",
            "port": "22",
        },
    },
    "conn-fields": {
        "site_root": {
            "label": "Backdrop root",
            "description": "The site's folder on its server (bee --root), e.g. /var/www/backdrop.",
            "schema": {"type": ["string", "null"]},
        },
        "bee_path": {
            "label": "bee command",
            "description": "How to run bee on the site's server; default `bee` (found on the PATH).",
            "schema": {"type": ["string", "null"]},
        },
        "host_key": {
            "label": "Pinned host key",
            "description": "The server's public host key, as `ssh-keyscan -t ed25519 <host>` prints it after the "
                           "host name (`ssh-ed25519 AAAA...`). Required unless the worker's ~/.ssh/known_hosts "
                           "knows the server: unknown host keys are refused.",
            "schema": {"type": ["string", "null"]},
        },
        "private_key": {
            "label": "Private key",
            "description": "The SSH user's private key (OpenSSH PEM text). Or `key_file`: its path on the worker.",
            "schema": {"type": ["string", "null"], "format": "password"},
        },
        "base_url": {
            "label": "Site URL",
            "description": "The site's address, for the links in Backdrop's mails (bee --base-url), e.g. "
                           "https://www.example.org. Needed unless settings.php sets $base_url: PHP on the "
                           "command line knows no host, and the links would point at http://site/.",
            "schema": {"type": ["string", "null"]},
        },
        "site": {
            "label": "Multisite",
            "description": "Optional: the site folder of a multisite install (bee --site).",
            "schema": {"type": ["string", "null"]},
        },
        "timeout": {
            "label": "Timeout (seconds)",
            "description": "How long one bee call may take before the backend gives up on its answer; default 120.",
            "schema": {"type": ["number", "null"], "minimum": 1},
        },
    },
}
