"""Contract-suite fixtures: `wordpress` (a started emulator) and `cms_conn` (a connection to it).
The two-kind `wordpress_site` fixture is imported by the test module from tests/real_wordpress.py."""

from __future__ import annotations

from tests import real_wordpress as wp_fixtures

wordpress = wp_fixtures.wordpress
cms_conn = wp_fixtures.cms_conn
