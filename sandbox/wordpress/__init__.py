"""In-memory emulator of WordPress 6.1's REST users API and the lostpassword form.

Behaviour follows the contract (docs: shared/contracts/cms-users.md §2) and was compared
against a real WordPress 6.1.9 (sandbox/real_wordpress/start.sh) by the shared contract suite
in tests/contract/test_wordpress_contract.py. What it emulates:

* Basic auth with one application password (non-alphanumerics ignored); anything else is
  anonymous, and each route answers anonymous callers with its own 401 body.
* `GET /wp-json/` (index), `GET|POST|OPTIONS /wp/v2/users`, `GET|DELETE /wp/v2/users/{id}`,
  `GET /wp/v2/users/me`, also as `/?rest_route=/wp/v2/...`.
* Create validation in WordPress's order: JSON parse, missing params, schema validation
  (email format, locale enum), sanitising (username via strict sanitize_user, password),
  permission, `id`, roles, then wp_insert_user (login length, login exists, nicename length,
  email exists, url length) and the database column limits (email 100, display name 250)
  that surface as a 500 `internal_server_error` with nothing stored.
* Listing with context, search column choice, paging headers (X-WP-Total, X-WP-TotalPages,
  Link built the way WordPress builds it), include/exclude/roles/slug filters, ordering.
* `POST /wp-login.php?action=lostpassword`: 302 to `?checkemail=confirm` and a recorded mail,
  or 200 with the HTML error WordPress shows (unknown user, mail not working).
* Fault injection (`inject`) and a record of every call (`calls`).

The package, by concern: php.py (ports of WordPress's PHP functions), store.py (users, roles,
seeding), rest.py (authentication, routing, the REST endpoints), lostpassword.py (wp-login.php and
the site's pages), faults.py (injection, the call record), responses.py (JSON/HTML answers),
server.py (WordPressEmulator: state, `handle`, the HTTP server), cli.py (`python -m sandbox wordpress`).
"""

from .cli import add_cli
from .faults import Call
from .php import is_email, sanitize_text_field, sanitize_title, sanitize_user_strict
from .server import WordPressEmulator
from .store import CORE_ROLES


def sandbox_site(secret: str, login: str = "admin") -> WordPressEmulator:
    """A fresh site for the sandbox: its API user `login` has the application password `secret`."""
    return WordPressEmulator(login=login, app_password=secret)


def sandbox_connection(site: WordPressEmulator) -> dict:
    """The CMS connection's fields for a started site (sandbox/emulators.py)."""
    return {"host": site.url, "login": site.login, "password": site.app_password}


__all__ = [
    "CORE_ROLES",
    "Call",
    "WordPressEmulator",
    "add_cli",
    "sandbox_connection",
    "sandbox_site",
    "is_email",
    "sanitize_text_field",
    "sanitize_title",
    "sanitize_user_strict",
]
