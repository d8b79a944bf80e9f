"""Drupal 8 and later: users through core JSON:API with HTTP Basic auth (or an OAuth bearer token).

hook.py talks HTTP, backend.py finds, creates and mails users, rules.py says what Drupal accepts,
connection.py describes the Airflow connection form. Importing this package imports no Airflow:
the registry reads CMS_TYPE from here.
"""

from cms_operators.drupal.connection import CONNECTION
from cms_operators.drupal.rules import RULES
from cms_operators.registry import CmsType

CMS_TYPE = CmsType(
    name="drupal",
    label="Drupal",
    rules=RULES,
    hook_class="cms_operators.drupal.hook.DrupalHook",
    backend_class="cms_operators.drupal.backend.DrupalBackend",
    connection=CONNECTION,
)
