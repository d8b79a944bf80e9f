"""Fixtures for the CiviCRM hook tests: the emulator, its env-var connection, and a quick-retrying hook."""

from __future__ import annotations

import pytest

from sandbox.civicrm import testing as civicrm_fixtures

civicrm = civicrm_fixtures.civicrm
civicrm_conn = civicrm_fixtures.civicrm_conn


@pytest.fixture
def sleeps():
    """Backoff waits the hook asked for (recorded instead of slept)."""
    return []


@pytest.fixture
def hook(civicrm_conn, sleeps):
    from civicrm_hooks.hook import CiviCRMHook

    made = CiviCRMHook(civicrm_conn, timeout=5, page_size=10)
    made._sleep = sleeps.append
    yield made
    made.close()
