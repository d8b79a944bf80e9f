"""Which CMS types exist: `cms_type` (and the Airflow connection type) -> its package.

Adding a CMS is one package under cms_operators/ with a `CMS_TYPE` in its `__init__` and one line
in `_PACKAGES` below. No Airflow import here and no network: the settings validate `cms_type`
against this list, and the provider lists its connection types from it. Hooks and backends are
imported only when asked for.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from cms_operators.backend import CmsConfigError
from provisioning.rules import AccountRules

# one line per CMS: the package whose __init__ defines CMS_TYPE
_PACKAGES = ("cms_operators.wordpress", "cms_operators.joomla", "cms_operators.drupal",
             "cms_operators.backdrop",
             "cms_operators.drupal7")

#: Connection types that name no CMS (Airflow's own http and ssh): the settings' cms_type says which
#: CMS they carry, and each CMS type lists the ones it accepts (`generic_connection_types`). Without a
#: cms_type, an http connection means wordpress (documented before our own types existed).
DEFAULT_CMS_TYPE = "wordpress"


@dataclass(frozen=True)
class CmsType:
    """One CMS type: its name (also its Airflow connection type), rules, hook, backend and form."""

    name: str                 # the `cms_type` setting and the Airflow connection type
    label: str                # shown to people: "WordPress"
    rules: AccountRules
    hook_class: str           # dotted path of its hook (BaseHook subclass)
    backend_class: str        # dotted path of its CmsBackend: Backend(conn_id, settings=None)
    connection: dict[str, Any] = field(default_factory=dict)  # provider-info extras: conn-fields, ui-field-behaviour
    # Airflow connection types that name no CMS but may carry this one when cms_type says so
    generic_connection_types: tuple[str, ...] = ("http", "https")

    def backend(self, conn_id: str, settings=None):
        """The backend for connection `conn_id`; `settings` give CMS-specific ones (e.g. admin_groups)."""
        return _load(self.backend_class)(conn_id, settings=settings)

    def hook(self):
        return _load(self.hook_class)


def _load(dotted: str):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def cms_types() -> dict[str, CmsType]:
    types = [importlib.import_module(package).CMS_TYPE for package in _PACKAGES]
    return {t.name: t for t in types}


def names() -> tuple[str, ...]:
    return tuple(cms_types())


def get(name: str | None) -> CmsType:
    """The CMS type called `name` (case and spaces ignored); CmsConfigError names the valid ones."""
    key = (name or "").strip().lower()
    known = cms_types()
    if key not in known:
        raise CmsConfigError(None, "unsupported_cms_type",
                             f"CMS type {name!r} is not supported; set cms_type to one of: {', '.join(known)}")
    return known[key]


def generic_connection_types() -> tuple[str, ...]:
    """Connection types that name no CMS (e.g. http, ssh): cms_type says which CMS they carry."""
    return tuple(dict.fromkeys(t for kind in cms_types().values() for t in kind.generic_connection_types))


def for_connection(connection_type: str | None, configured: str | None, conn_id: str) -> CmsType:
    """The CMS type a run uses: the connection's own type, checked against `cms_type` when that is set.

    A connection of a generic type (http, ssh) leaves it to `cms_type`; an http one without it means
    wordpress. The CMS must accept that connection type (Backdrop's bee needs ssh, the others http).
    """
    conn_kind = (connection_type or "").strip().lower()
    wanted = (configured or "").strip().lower() or None
    known = cms_types()
    if conn_kind in known:
        if wanted and wanted != conn_kind:
            raise CmsConfigError(
                None, "cms_type_mismatch", f"The settings say cms_type: {wanted}, but connection '{conn_id}' is of type {conn_kind}: "
                f"make them agree (or leave cms_type empty and the connection's type decides)")
        return get(conn_kind)
    generic = generic_connection_types()
    if conn_kind and conn_kind not in generic:
        raise CmsConfigError(
            None, "unsupported_connection_type", f"Connection '{conn_id}' is of type {conn_kind!r}, which names no CMS: give it one of the types "
            f"{', '.join(known)} (or {' or '.join(generic)}, with cms_type in the settings)")
    if wanted is None and conn_kind:
        carriers = [kind for kind in known.values() if conn_kind in kind.generic_connection_types]
        wanted = DEFAULT_CMS_TYPE if any(k.name == DEFAULT_CMS_TYPE for k in carriers) else \
            (carriers[0].name if len(carriers) == 1 else None)
        if wanted is None:
            raise CmsConfigError(
                None, "cms_type_missing", f"Connection '{conn_id}' is of type {conn_kind}, which several CMS types use "
                f"({', '.join(k.name for k in carriers)}): set cms_type in the settings")
    kind = get(wanted or DEFAULT_CMS_TYPE)
    if conn_kind and conn_kind not in kind.generic_connection_types:
        raise CmsConfigError(
            None, "connection_type_mismatch", f"The settings say cms_type: {kind.name}, which cannot use connection '{conn_id}' of "
            f"type {conn_kind}: give the connection the type {kind.name}"
            + (f" (or {' or '.join(kind.generic_connection_types)})" if kind.generic_connection_types else ""))
    return kind
