"""transport: the connection checks and Retry-After parsing both hooks share."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from transport.policy import check_secret, parse_verify, retry_after_seconds, site_base_url


class Refused(Exception):
    """Stands in for a hook's error class."""


# ----------------------------------------------------------------------------- parse_verify


@pytest.mark.parametrize("value, expected", [
    (True, True), (False, False), (None, True), ("", True), ("  ", True),
    ("true", True), ("True", True), (" TRUE ", True), ("1", True), ("yes", True), ("On", True),
    ("false", False), ("False", False), (" FALSE ", False), ("0", False), ("no", False), ("OFF", False),
    (1, True), (0, False),
])
def test_parse_verify_reads_booleans_in_every_usual_spelling(value, expected):
    assert parse_verify(value, conn_id="c", error_cls=Refused) is expected


def test_parse_verify_keeps_an_existing_ca_bundle_path(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    assert parse_verify(str(bundle), conn_id="c", error_cls=Refused) == str(bundle)
    assert parse_verify(f" {bundle} ", conn_id="c", error_cls=Refused) == str(bundle)


@pytest.mark.parametrize("value, shown", [
    ("/etc/ssl/no-such-bundle.pem", "/etc/ssl/no-such-bundle.pem"),
    ("maybe", "'maybe'"),
    (["true"], "of type list"),
    (2, "of type int"),
])
def test_parse_verify_refuses_anything_else_naming_the_connection_field_and_choices(value, shown):
    with pytest.raises(Refused) as caught:
        parse_verify(value, conn_id="civicrm_x", error_cls=Refused)
    message = str(caught.value)
    assert "'civicrm_x'" in message and "extra.verify" in message and shown in message
    assert "true" in message and "false" in message and "CA bundle" in message


# ----------------------------------------------------------------------------- check_secret


@pytest.mark.parametrize("value", [None, "", "abc123", "abcd EFGH 1234 ijkl", "jöhn"])
def test_check_secret_passes_usable_values_unchanged(value):
    assert check_secret(value, field="login", conn_id="c", error_cls=Refused) == value


@pytest.mark.parametrize("value, problem", [
    ("key-abc\ndef", "line break"),
    ("key-abc\r\n", "line break"),
    ("key-abc\n", "line break"),  # a trailing newline is refused, not stripped
    ("key\u2028abc", "line break"),
    ("key\tabc", "control character"),
    ("key\x00abc", "control character"),
    ("key\x7fabc", "control character"),
    (" key-abc", "whitespace"),
    ("key-abc ", "whitespace"),
    ("key-abc\u00a0", "whitespace"),
])
def test_check_secret_refuses_what_cannot_go_into_a_header_without_showing_it(value, problem):
    with pytest.raises(Refused) as caught:
        check_secret(value, field="password (the API key)", conn_id="civicrm_x", error_cls=Refused)
    message = str(caught.value)
    assert "'civicrm_x'" in message and "password (the API key)" in message and problem in message
    assert "key-abc" not in message and "abc" not in message
    assert value not in message and value.strip() not in message


# ----------------------------------------------------------------------------- site_base_url


@pytest.mark.parametrize("host, schema, port, expected", [
    ("https://crm.example.org", None, None, "https://crm.example.org"),
    ("https://crm.example.org/", None, None, "https://crm.example.org"),
    (" http://crm.example.org/sub/ ", None, None, "http://crm.example.org/sub"),
    ("HTTPS://crm.example.org", "", None, "https://crm.example.org"),
    ("https://crm.example.org", "http", None, "https://crm.example.org"),  # the host's own scheme wins
    ("https://crm.example.org", None, 8443, "https://crm.example.org:8443"),
    ("https://crm.example.org:9443/sub", None, 8443, "https://crm.example.org:9443/sub"),  # the host's port wins
    ("127.0.0.1:8080", "http", None, "http://127.0.0.1:8080"),
    ("www.example.org/blog", "https", 8443, "https://www.example.org:8443/blog"),
    ("www.example.org", "HTTP", None, "http://www.example.org"),
    ("http://[::1]/", None, 8080, "http://[::1]:8080"),
    ("", None, None, ""),
    (None, "https", 443, ""),
])
def test_site_base_url_keeps_scheme_port_and_path(host, schema, port, expected):
    assert site_base_url(host, schema, port, conn_id="c", error_cls=Refused, what="the site") == expected


@pytest.mark.parametrize("host, schema", [
    ("127.0.0.1:8080", None), ("www.example.org", ""), ("www.example.org", "mysql"), ("www.example.org", "civicrm"),
])
def test_site_base_url_refuses_to_guess_a_missing_scheme(host, schema):
    with pytest.raises(Refused) as caught:
        site_base_url(host, schema, None, conn_id="cms_x", error_cls=Refused, what="the WordPress site")
    message = str(caught.value)
    assert "'cms_x'" in message and "no scheme" in message
    assert "https://" in message and "http://" in message and f"https://{host}" in message


def test_site_base_url_does_not_repeat_credentials_in_a_host():
    with pytest.raises(Refused) as caught:
        site_base_url("admin:s3cret@www.example.org", None, None, conn_id="c", error_cls=Refused, what="the site")
    assert "s3cret" not in str(caught.value) and "https://www.example.org" in str(caught.value)


@pytest.mark.parametrize("host", ["ftp://www.example.org", "https://", "https://www.example.org:port"])
def test_site_base_url_refuses_hosts_that_are_not_web_urls(host):
    with pytest.raises(Refused, match="'c'"):
        site_base_url(host, None, None, conn_id="c", error_cls=Refused, what="the site")


# ----------------------------------------------------------------------------- retry_after_seconds

NOW = datetime(2026, 5, 4, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("value, expected", [
    (None, None), ("", None), ("soon", None), ("-5", None), ("1e3", None), ("inf", None),
    ("0", 0.0), ("7", 7.0), (" 120 ", 120.0), ("1.5", 1.5),
    (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
    ("Mon, 04 May 2026 12:02:00 GMT", 120.0),
    ("Mon, 04 May 2026 14:02:00 +0200", 120.0),
    ("Mon, 04 May 2026 12:02:00 -0000", 120.0),  # no zone claimed: read as UTC
    ("Mon, 04 May 2026 11:00:00 GMT", 0.0),  # already past
    ("Mon, 32 May 2026 12:02:00 GMT", None),
])
def test_retry_after_reads_seconds_and_http_dates(value, expected):
    assert retry_after_seconds(value, now=NOW) == expected


def test_retry_after_takes_now_as_a_timestamp_or_the_current_time():
    header = "Mon, 04 May 2026 12:02:00 GMT"
    assert retry_after_seconds(header, now=NOW.timestamp()) == 120.0
    assert retry_after_seconds(header, now=NOW.replace(tzinfo=None)) == 120.0  # naive means UTC
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    assert 55 <= retry_after_seconds(soon) <= 60
