"""Fixtures for the pipeline step tests: `wordpress` (a started emulator) and `cms_conn` (a connection to it).
They live in tests/real_wordpress.py, shared with the contract suite."""

from __future__ import annotations

from tests import real_wordpress as wp_fixtures

wordpress = wp_fixtures.wordpress
cms_conn = wp_fixtures.cms_conn
