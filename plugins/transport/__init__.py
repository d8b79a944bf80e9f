"""The one transport every hook uses: connection, session, retries, errors (docs/design.md "Transport").

`RestHook` owns, for CiviCRM and every CMS: the base URL from the connection, one `requests` session
per hook (no cookies unless a hook needs its own), timeouts, TLS verification, secret masking,
`Retry-After`, bounded retries of idempotent calls only, HTML cleaned out of error text, and extras
read as settings, never sent as headers. A hook adds only what its API means: how to call it and how
to read an answer (`classify`). `ProvisioningError` is the one error base of CiviCRM and CMS errors.

The policy functions below (`retry_after_seconds`, `retry_wait`, `plain_text`, the connection checks)
have no Airflow import, so asynchronous triggers can follow the same rules. Each check takes
`error_cls`, called with one message string. Messages name the connection and the field at fault,
and never contain a credential.
"""
