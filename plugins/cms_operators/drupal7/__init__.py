"""Drupal 7 with the contrib Services 3.x module: users through its REST server's `user` resource,
session login and X-CSRF-Token.

hook.py talks HTTP (session, token, error mapping), backend.py finds, creates and mails users,
rules.py says what Drupal 7 accepts, connection.py describes the Airflow connection form.
Importing this package imports no Airflow: the registry reads CMS_TYPE from here.
"""

from cms_operators.drupal7.connection import CONNECTION
from cms_operators.drupal7.rules import RULES
from cms_operators.registry import CmsType

CMS_TYPE = CmsType(
    name="drupal7",
    label="Drupal 7",
    rules=RULES,
    hook_class="cms_operators.drupal7.hook.Drupal7Hook",
    backend_class="cms_operators.drupal7.backend.Drupal7Backend",
    connection=CONNECTION,
)
