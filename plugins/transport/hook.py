"""RestHook: the base of every HTTP hook of the project (docs/design.md "One transport")."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import requests
from airflow.sdk import BaseHook

from transport.errors import ProvisioningError
from transport.policy import check_secret, parse_verify, retry_after_seconds, retry_wait, site_base_url


@dataclass(frozen=True)
class Endpoint:
    """What a connection says, checked: the site's base URL, credentials, extras, TLS and timeout."""

    conn_id: str
    conn_type: str
    base_url: str  # scheme://host[:port][/path], no trailing slash; "" when the connection has no host
    login: str
    password: str = field(repr=False)
    extra: dict = field(repr=False)
    verify: bool | str
    timeout: float


class RestHook(BaseHook):
    """Base of every HTTP hook of the project: one connection, one session, one retry policy.

    Subclasses set the Airflow attributes (`conn_name_attr`, `default_conn_name`, `conn_type`,
    `hook_name`), `site` (how messages name the site), `secret_extras`, and implement `error(...)`
    (the hook's error for a connection problem or an unusable answer). Nothing here touches the
    network before the first call.
    """

    site = "the site"
    secret_extras: tuple[str, ...] = ()
    password_label = "password"
    max_tries = 3            # for idempotent calls; anything else is sent once
    backoff_seconds = 0.5
    jitter = 0.0             # up to this fraction added to each back-off, so workers do not retry in step
    max_retry_after = 30.0   # a longer Retry-After is left to the caller (a worker must not sleep for it)
    connect_timeout = 10.0
    default_timeout = 30.0
    keep_cookies = False     # stateless by default: a session cookie can switch a site to its cookie flow
    user_agent = "cmsuser-airflow/1"

    def __init__(self, conn_id: str | None = None, *, timeout: float | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.conn_id = conn_id or self.default_conn_name
        setattr(self, self.conn_name_attr, self.conn_id)
        self._timeout_override = timeout
        self._endpoint: Endpoint | None = None
        self._session: requests.Session | None = None
        self._verify: bool | str = True  # the connection's `verify`, or the environment's CA bundle (get_conn)
        self._sleep = time.sleep  # tests swap this to observe waits without waiting

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.conn_name_attr}={self.conn_id!r})"

    # --- what a subclass provides ------------------------------------------------------------

    def connection_error(self, message: str) -> ProvisioningError:
        """The hook's error for a connection that is missing or unusable (never retried)."""
        raise NotImplementedError

    def unavailable(self, message: str, *, code: str) -> ProvisioningError:
        """The hook's transient error for a timeout or a failed connection."""
        raise NotImplementedError

    def uses_host(self, extra: dict) -> bool:
        """Whether the connection's host makes the URL (a hook may take a full URL from an extra instead)."""
        return True

    def check_endpoint(self, endpoint: Endpoint) -> None:
        """Refuse a connection that lacks what this hook needs (host, login, ...); the message says what."""

    # --- connection ----------------------------------------------------------------------------

    @property
    def endpoint(self) -> Endpoint:
        """The connection, read once and checked; secrets are masked in logs as soon as they are read."""
        if self._endpoint is not None:
            return self._endpoint
        conn_id = self.conn_id
        try:
            conn = self.get_connection(conn_id)
        except Exception as exc:  # AirflowNotFoundException and friends
            raise self.connection_error(
                f"Airflow connection '{conn_id}' is not defined: create it (type {self.conn_type}) as the "
                "README describes") from exc
        extra = dict(conn.extra_dejson or {})
        password = conn.password or ""
        from airflow.sdk.log import mask_secret

        for secret in (password, *(str(extra.get(key) or "") for key in self.secret_extras)):
            if secret:
                mask_secret(secret)
        # refused rather than stripped: a credential is sent exactly as stored
        check_secret(conn.login, field="login", conn_id=conn_id, error_cls=self.connection_error)
        check_secret(password, field=self.password_label, conn_id=conn_id, error_cls=self.connection_error)
        for key in self.secret_extras:
            check_secret(str(extra.get(key) or "") or None, field=f"extra.{key}", conn_id=conn_id,
                         error_cls=self.connection_error)
        verify = parse_verify(extra.get("verify", True), conn_id=conn_id, error_cls=self.connection_error)
        timeout = self._timeout_override
        if timeout is None:
            try:
                timeout = float(extra.get("timeout") or self.default_timeout)
            except (TypeError, ValueError):
                raise self.connection_error(f"Connection '{conn_id}': extra.timeout must be a number of "
                                            "seconds, e.g. 30.") from None
        base_url = site_base_url(conn.host, conn.schema, conn.port, conn_id=conn_id,
                                 error_cls=self.connection_error, what=self.site) if self.uses_host(extra) else ""
        endpoint = Endpoint(conn_id=conn_id, conn_type=conn.conn_type or "", base_url=base_url,
                            login=conn.login or "", password=password, extra=extra, verify=verify,
                            timeout=float(timeout))
        self.check_endpoint(endpoint)
        self._endpoint = endpoint
        return endpoint

    @property
    def timeout(self) -> float:
        """How long the hook waits for an answer: a write may still be running on the site after it."""
        return self.endpoint.timeout

    def get_conn(self) -> requests.Session:
        """The hook's session, made on first use. Extras are settings: none becomes a header."""
        if self._session is None:
            _ = self.endpoint  # a bad connection fails before any request
            session = requests.Session()
            if not self.keep_cookies:
                session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
            session.headers.update({"Accept": "application/json", "User-Agent": self.user_agent})
            # The environment's proxies and CA bundle, read once per session: left to requests, they are read
            # from os.environ again on every request and redirect (about 2 ms each under Airflow's environment,
            # the largest CPU cost per account after the request itself). The site's URL decides NO_PROXY.
            found = session.merge_environment_settings(self.endpoint.base_url or None, {}, None,
                                                       self.endpoint.verify, None)
            session.proxies.update(found["proxies"])
            self._verify = found["verify"]
            session.trust_env = False
            self.configure_session(session)
            self._session = session
        return self._session

    def configure_session(self, session: requests.Session) -> None:
        """Authentication and fixed headers of this hook's API (default: none)."""

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def scrub(self, text: str) -> str:
        """`text` with this connection's secrets replaced by ***, for messages built from answers."""
        endpoint = self._endpoint
        if endpoint is not None:
            for secret in (endpoint.password, *(str(endpoint.extra.get(k) or "") for k in self.secret_extras)):
                if secret:
                    text = text.replace(secret, "***")
        return text

    # --- requests ------------------------------------------------------------------------------

    def send(self, method: str, url: str, classify: Callable[[requests.Response], Any], *, idempotent: bool,
             what: str, allow_redirects: bool = True, **kwargs: Any) -> Any:
        """Send one request and return `classify(response)`.

        `classify` returns the answer's value or raises a ProvisioningError. Errors whose `retryable`
        is set (timeouts, dropped connections, 429/5xx of the hook's choosing) are retried up to
        `max_tries` times when the call is idempotent, after the server's Retry-After (at most
        `max_retry_after` s) or an exponential back-off; anything else is raised at once.
        """
        session = self.get_conn()
        endpoint = self.endpoint
        tries = self.max_tries if idempotent else 1
        error: ProvisioningError | None = None
        too_long = False
        attempt = 0
        for attempt in range(1, tries + 1):
            started = time.monotonic()
            try:
                response = session.request(method, url, timeout=(self.connect_timeout, endpoint.timeout),
                                           verify=self._verify, allow_redirects=allow_redirects, **kwargs)
            except requests.Timeout:
                error = self.unavailable(f"no answer from {self.site} to {what} within {endpoint.timeout:g} s "
                                         f"(connection '{self.conn_id}')", code="timeout")
            except requests.RequestException as exc:
                error = self.unavailable(f"could not reach {self.site} for {what} at {endpoint.base_url or url} "
                                         f"(connection '{self.conn_id}'; {type(exc).__name__}: the connection "
                                         "failed or was dropped)", code="connection_error")
            else:
                self.log.debug("%s -> HTTP %s in %d ms", what, response.status_code,
                               (time.monotonic() - started) * 1000)
                try:
                    return classify(response)
                except ProvisioningError as exc:
                    if not exc.retryable:
                        raise
                    error = exc
                    if error.retry_after is None:
                        error.retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            if attempt == tries:
                break
            if error.retry_after is not None and error.retry_after > self.max_retry_after:
                too_long = True  # sleeping that long would hold the worker: leave the wait to the caller
                break
            wait = retry_wait(attempt, backoff=self.backoff_seconds, jitter=self.jitter,
                              retry_after=error.retry_after)
            self.log.info("%s: %s; try %d of %d in %.1f s", what, error.message, attempt + 1, tries, wait)
            self._sleep(wait)
        assert error is not None
        raise self.gave_up(error, tries=attempt, idempotent=idempotent, too_long=too_long)

    def gave_up(self, error: ProvisioningError, *, tries: int, idempotent: bool,
                too_long: bool) -> ProvisioningError:
        """The error to raise after the last try; a hook may add advice to its message."""
        return error
