"""Backdrop CMS: users through bee (Backdrop's command line tool) on the site's server, over SSH.

Backdrop core has no user API over HTTP; the backend runs a fixed set of named PHP operations
(bee_ops.php) through `bee eval` on the site's server: hook.py runs bee (over SSH with a pinned host
key, or locally), backend.py finds, creates and mails users, rules.py says what Backdrop accepts,
connection.py describes the Airflow connection form. Importing this package imports no Airflow.
An Airflow connection of type `ssh` carries Backdrop when the settings say `cms_type: backdrop`.
"""

from cms_operators.backdrop.connection import CONNECTION
from cms_operators.backdrop.rules import RULES
from cms_operators.registry import CmsType

CMS_TYPE = CmsType(
    name="backdrop",
    label="Backdrop",
    rules=RULES,
    hook_class="cms_operators.backdrop.hook.BeeHook",
    backend_class="cms_operators.backdrop.backend.BackdropBackend",
    connection=CONNECTION,
    generic_connection_types=("ssh",),
)
