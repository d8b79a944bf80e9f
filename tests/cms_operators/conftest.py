"""Fixtures for the CMS backend tests: a started WordPress emulator and an Airflow connection to it."""

from __future__ import annotations

import json

import pytest

from sandbox.wordpress import WordPressEmulator

APP_PASSWORD = "abcd EFGH 1234 ijkl MNOP 5678"


@pytest.fixture
def wordpress():
    """A started WordPress emulator (function scope); the API user is `admin` with APP_PASSWORD."""
    with WordPressEmulator(login="admin", app_password=APP_PASSWORD) as emulator:
        yield emulator


@pytest.fixture
def cms_conn(wordpress, monkeypatch):
    """AIRFLOW_CONN_CMS_DEFAULT pointing at the `wordpress` emulator (no Airflow DB needed); the conn id."""
    monkeypatch.setenv("AIRFLOW_CONN_CMS_DEFAULT", json.dumps({
        "conn_type": "http", "host": wordpress.url, "login": "admin", "password": APP_PASSWORD}))
    return "cms_default"
