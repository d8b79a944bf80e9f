"""The project as an Airflow provider: its connection types, with their forms, for the Airflow UI.

Installed with the project (`pip install .`, or `make venv` editable), the entry point
`apache_airflow_provider` -> `provider_info = "cmsuser_provider:get_provider_info"` makes Airflow's
ProvidersManager list the connection types `civicrm` and one per registered CMS (`wordpress`): the
UI shows each type's form (labels, hidden fields, typed extras with help) and its Test button runs
the hook's `test_connection()`. Connections of type `http` keep working as before; they just get
the generic HTTP form.

No Airflow import and no network here: every Airflow process calls this while it discovers
providers, and the hooks are imported only when Airflow asks for them (the dotted paths below).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

__version__ = "0.1.0"  # the package version (pyproject.toml reads it from here)

PACKAGE_NAME = "cmsuser-airflow"  # must equal the distribution's name: Airflow refuses a mismatch

log = logging.getLogger(__name__)


def _connection_type(conn_type: str, hook_class: str, label: str, form: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"connection-type": conn_type, "hook-class-name": hook_class, "hook-name": label}
    for key in ("ui-field-behaviour", "conn-fields"):
        if form.get(key):
            entry[key] = copy.deepcopy(form[key])  # Airflow rewrites parts of what it gets
    return entry


def connection_types() -> list[dict[str, Any]]:
    """`civicrm`, then one entry per CMS of the registry, in the registry's order."""
    from civicrm_hooks import connection as civicrm

    types = [_connection_type(civicrm.CONN_TYPE, civicrm.HOOK_CLASS, civicrm.LABEL, civicrm.CONNECTION)]
    try:
        from cms_operators.registry import cms_types

        cms = list(cms_types().values())
    except Exception:  # a broken CMS package must not stop Airflow from discovering every other provider
        log.exception("cmsuser-airflow: the CMS registry did not load; only the civicrm connection type is listed")
        return types
    types += [_connection_type(kind.name, kind.hook_class, kind.label, kind.connection) for kind in cms]
    return types


def get_provider_info() -> dict[str, Any]:
    """The provider info Airflow's ProvidersManager reads (schema: airflow/provider_info.schema.json)."""
    return {
        "package-name": PACKAGE_NAME,
        "name": "CiviCRM CMS user accounts",
        "description": "Creates website (CMS) user accounts for CiviCRM contacts and links them through "
                       "UFMatch. Connection types: ``civicrm`` and one per supported CMS.\n",
        "versions": [__version__],
        "connection-types": connection_types(),
    }
