"""Joomla 4/5: users through the Web Services API (/api/index.php/v1/users) with an API token.

hook.py talks HTTP (API and the site's password-reset form), backend.py finds, creates and mails
users, rules.py says what Joomla accepts, connection.py describes the Airflow connection form.
Importing this package imports no Airflow: the registry reads CMS_TYPE from here.
"""

from cms_operators.joomla.connection import CONNECTION
from cms_operators.joomla.rules import RULES
from cms_operators.registry import CmsType

CMS_TYPE = CmsType(
    name="joomla",
    label="Joomla",
    rules=RULES,
    hook_class="cms_operators.joomla.hook.JoomlaHook",
    backend_class="cms_operators.joomla.backend.JoomlaBackend",
    connection=CONNECTION,
)
