"""wp-login.php (the lostpassword form and its mail) and the site's other HTML pages."""

from __future__ import annotations

import html
import threading

from .faults import Call
from .php import _parse_php_form
from .responses import _html_response, _Response

_MAIL_FAILED_HTML = (
    "<strong>Error:</strong> The email could not be sent. Your site may not be correctly configured to "
    'send emails. <a href="https://wordpress.org/support/article/resetting-your-password/">Get support '
    "for resetting your password</a>."
)
_NO_ACCOUNT_HTML = "<strong>Error:</strong> There is no account with that username or email address."
_EMPTY_LOGIN_HTML = "<strong>Error:</strong> Please enter a username or email address."


class LoginPage:
    """WordPressEmulator's HTML side (its __init__ in server.py sets the state)."""

    _lock: threading.RLock
    _users: dict[int, dict]
    _by_login: dict[str, int]
    _by_email: dict[str, int]
    mail_works: bool
    mails: list[dict]
    site_name: str

    def _handle_site(self, method: str, raw_path: str, query: dict, body_bytes: bytes, headers: dict,
                     call: Call) -> _Response:
        if raw_path == "/wp-login.php":
            form = _parse_php_form(body_bytes.decode("utf-8", "replace")) if body_bytes else {}
            call.body = form or None
            action = query.get("action", "login")
            if action in ("lostpassword", "retrievepassword"):
                if method == "POST":
                    return self._lost_password(form)
                return _html_response(200, _login_page("Lost Password", None))
            return _html_response(200, _login_page("Log In", None))
        if raw_path in ("/", "/index.php"):
            return _html_response(200, f"<!DOCTYPE html><html><head><title>{html.escape(self.site_name)}"
                                       "</title></head><body></body></html>")
        return _html_response(404, "<!DOCTYPE html><html><body><h1>Page not found</h1></body></html>")

    def _lost_password(self, form: dict) -> _Response:
        """retrieve_password() + the wp-login.php lostpassword case."""
        login = str(form.get("user_login") or "").strip()
        user = None
        if not login:
            return _html_response(200, _login_page("Lost Password", _EMPTY_LOGIN_HTML))
        with self._lock:
            if login.find("@") > 0:
                user_id = self._by_email.get(login.lower()) or self._by_login.get(login.lower())
            else:
                user_id = self._by_login.get(login.lower())
            user = self._users.get(user_id) if user_id else None
            if user is None:
                return _html_response(200, _login_page("Lost Password", _NO_ACCOUNT_HTML))
            if not self.mail_works:
                return _html_response(200, _login_page("Lost Password", _MAIL_FAILED_HTML))
            self.mails.append({"user_login": user["username"], "to": user["email"], "user_id": user["id"],
                               "subject": f"[{self.site_name}] Password Reset"})
        response = _Response(302, b"", [("Location", "/wp-login.php?checkemail=confirm"),
                                        ("Set-Cookie", "wordpress_test_cookie=WP%20Cookie%20check; path=/"),
                                        ("Content-Type", "text/html; charset=UTF-8")])
        return response


def _login_page(title: str, error_html: str | None) -> str:
    error = f'<div id="login_error">\t{error_html}<br />\n</div>\n' if error_html else ""
    return (f"<!DOCTYPE html>\n<html><head><title>{title} &lsaquo; WordPress</title></head>"
            f'<body class="login"><div id="login">{error}<form name="lostpasswordform" '
            'id="lostpasswordform" action="/wp-login.php?action=lostpassword" method="post">'
            '<input type="text" name="user_login" id="user_login" /></form></div></body></html>\n')
