"""WordPress (5.6 and later): users through the REST API with an Application Password.

hook.py talks HTTP, backend.py finds, creates and mails users, rules.py says what WordPress
accepts, connection.py describes the Airflow connection form. Importing this package imports no
Airflow: the registry reads CMS_TYPE from here.
"""

from cms_operators.registry import CmsType
from cms_operators.wordpress.connection import CONNECTION
from cms_operators.wordpress.rules import RULES

CMS_TYPE = CmsType(
    name="wordpress",
    label="WordPress",
    rules=RULES,
    hook_class="cms_operators.wordpress.hook.WordPressHook",
    backend_class="cms_operators.wordpress.backend.WordPressBackend",
    connection=CONNECTION,
)
