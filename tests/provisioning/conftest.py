"""Small factories for the frames the planner takes, with defaults that pass every rule."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from cms_operators.wordpress.rules import RULES
from provisioning.plan import CMS_USER_COLUMNS, CONTACT_COLUMNS, LINK_COLUMNS, plan_contacts
from provisioning.settings import Settings


def contact_row(contact_id: int, **fields) -> dict:
    """A triggered contact that would get a new account unless `fields` say otherwise."""
    row = {
        "contact_id": contact_id,
        "contact_type": "Individual",
        "first_name": "Jane",
        "last_name": "Doe",
        "display_name": "Jane Doe",
        "email": f"contact{contact_id}@example.org",
        "is_deceased": False,
        "do_not_email": False,
        "preferred_language": "en_US",
        "uf_id": None,
        "uf_name": None,
        "sources": ["group:1"],
        "attempts": 0,
    }
    row.update(fields)
    return row


@pytest.fixture
def contact():
    """contact_row as a fixture, for tests that build contacts one by one."""
    return contact_row


@pytest.fixture
def make_settings():
    def factory(**overrides) -> Settings:
        return Settings(**{"trigger_groups": ["new_members"], **overrides})

    return factory


@pytest.fixture
def make_contacts():
    def factory(*rows: dict) -> pd.DataFrame:
        return pd.DataFrame(list(rows), columns=CONTACT_COLUMNS)

    return factory


@pytest.fixture
def make_cms_users():
    def factory(*users: tuple) -> pd.DataFrame:
        """Each user as (uf_id, username, email[, roles[, registered]])."""
        rows = [
            {
                "uf_id": user[0],
                "username": user[1],
                "email": user[2],
                "roles": list(user[3]) if len(user) > 3 else ["subscriber"],
                "registered": user[4] if len(user) > 4 else None,
            }
            for user in users
        ]
        return pd.DataFrame(rows, columns=CMS_USER_COLUMNS)

    return factory


@pytest.fixture
def make_links():
    def factory(*links: tuple) -> pd.DataFrame:
        """Each UFMatch row as (contact_id, uf_id, uf_name)."""
        return pd.DataFrame(
            [dict(zip(LINK_COLUMNS, link, strict=True)) for link in links], columns=LINK_COLUMNS
        )

    return factory


@pytest.fixture
def run_plan(make_contacts, make_cms_users, make_links, make_settings):
    """Plan contacts given as dicts; returns the plan indexed by contact_id for easy lookups."""

    def run(
        contacts, users=(), links=(), *, limit=None, plan_options=None, first_attempts_only=False,
        **settings_overrides
    ) -> pd.DataFrame:
        plan = plan_contacts(
            make_contacts(*contacts),
            make_cms_users(*users),
            make_links(*links),
            make_settings(**settings_overrides),
            replace(RULES, **(plan_options or {})),
            limit=limit,
            first_attempts_only=first_attempts_only,
        )
        return plan.set_index("contact_id", drop=False)

    return run
