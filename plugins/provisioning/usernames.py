"""Usernames: render the configured pattern, make it acceptable to WordPress, make it unique.

WordPress is the strictest target here: its REST API rejects (never rewrites) a login that
`sanitize_user($login, true)` would change, so we produce logins that pass unchanged.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping

import pandas as pd

#: The tokens a username pattern may use, in the order the help text lists them.
USERNAME_TOKENS: tuple[str, ...] = (
    "first_name",
    "last_name",
    "display_name",
    "contact_id",
    "email",
    "email_local",
)

#: WordPress stores logins in a varchar(60); longer ones fail with `user_login_too_long`.
WORDPRESS_MAX_USERNAME_LENGTH = 60

_TOKEN_RE = re.compile(r"\{([^{}]*)\}")

# Letters that NFKD does not split into base letter + accent; WordPress' remove_accents()
# transliterates these, so we do too rather than dropping them.
_TRANSLITERATE = str.maketrans(
    {
        "ß": "ss",
        "ẞ": "SS",
        "æ": "ae",
        "Æ": "AE",
        "œ": "oe",
        "Œ": "OE",
        "ø": "o",
        "Ø": "O",
        "đ": "d",
        "Đ": "D",
        "ð": "d",
        "Ð": "D",
        "ł": "l",
        "Ł": "L",
        "þ": "th",
        "Þ": "TH",
        "ı": "i",
    }
)
_NOT_ALLOWED_RE = re.compile(r"[^a-z0-9 _.@-]")
_WHITESPACE_RE = re.compile(r"\s+")
_DOTS_RE = re.compile(r"\.{2,}")
_EDGE_CHARS = " ._-"


class PatternError(ValueError):
    """A username pattern with an unknown token or unbalanced braces."""


def pattern_parts(pattern: str) -> list[tuple[str, bool]]:
    """Split a pattern into (text, is_token) parts, or raise PatternError saying what is wrong."""
    allowed = ", ".join("{" + token + "}" for token in USERNAME_TOKENS)
    parts: list[tuple[str, bool]] = []
    position = 0
    for match in _TOKEN_RE.finditer(pattern):
        literal = pattern[position : match.start()]
        _check_no_stray_brace(literal, pattern, allowed)
        if literal:
            parts.append((literal, False))
        token = match.group(1).strip()
        if token not in USERNAME_TOKENS:
            hint = ""
            if token.startswith("contact."):
                # The seed extension writes CiviCRM tokens as {contact.first_name}.
                hint = f" (write {{{token.removeprefix('contact.')}}} instead of {{{token}}})"
            raise PatternError(f"unknown token {{{match.group(1)}}}{hint}; allowed tokens are {allowed}")
        parts.append((token, True))
        position = match.end()
    tail = pattern[position:]
    _check_no_stray_brace(tail, pattern, allowed)
    if tail:
        parts.append((tail, False))
    return parts


def _check_no_stray_brace(literal: str, pattern: str, allowed: str) -> None:
    for brace in "{}":
        if brace in literal:
            raise PatternError(
                f"unbalanced '{brace}' in '{pattern}'; write tokens as {{name}}, allowed tokens are {allowed}"
            )


def _token_value(token: str, contact: Mapping) -> str:
    if token == "email_local":
        email = _text(contact.get("email"))
        return email.split("@", 1)[0] if email else ""
    return _text(contact.get(token))


def _text(value: object) -> str:
    """A contact field as text: missing values (None, NaN, pandas NA) become ''."""
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value.is_integer():  # ids that went through a float column
            return str(int(value))
    return str(value).strip()


def render_username(pattern: str, contact: Mapping) -> str:
    """Fill the pattern's tokens from the contact's fields; a missing field gives ''."""
    return "".join(
        _token_value(text, contact) if is_token else text for text, is_token in pattern_parts(pattern)
    )


def render_usernames(pattern: str, contacts: Iterable[Mapping]) -> list[str]:
    """render_username for many contacts, parsing the pattern once."""
    parts = pattern_parts(pattern)
    return [
        "".join(_token_value(text, contact) if is_token else text for text, is_token in parts)
        for contact in contacts
    ]


def sanitize_wordpress(raw: str) -> str:
    """Turn raw text into a login WordPress' strict `sanitize_user` accepts unchanged.

    Accents are folded to ASCII, everything is lower-cased (WordPress compares logins
    case-insensitively, so mixed case only invites 'Jane.Doe' vs 'jane.doe' surprises),
    whitespace runs become one '.', characters outside [a-z0-9 _.@-] are dropped, repeated
    dots collapse, and leading/trailing separators are stripped. May return ''.
    """
    if not raw:
        return ""
    folded = unicodedata.normalize("NFKD", str(raw).translate(_TRANSLITERATE))
    ascii_text = "".join(char for char in folded if not unicodedata.combining(char))
    text = _WHITESPACE_RE.sub(".", ascii_text.lower().strip())
    text = _NOT_ALLOWED_RE.sub("", text)
    text = _DOTS_RE.sub(".", text)
    return text.strip(_EDGE_CHARS)


def _fit(base: str, suffix: str, max_length: int) -> str:
    """base + suffix within max_length, cutting the base (not the suffix) and its loose separators."""
    room = max_length - len(suffix)
    stem = base[:room]
    if len(stem) < len(base):
        stem = stem.rstrip(_EDGE_CHARS) or stem
    return stem + suffix


class _UsernameAllocator:
    """Hands out unique logins; remembers the next suffix per base so collisions cost O(1)."""

    def __init__(self, taken: Iterable[str], max_length: int):
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {max_length}")
        self.max_length = max_length
        self.used: set[str] = {name.lower() for name in taken if isinstance(name, str) and name}
        self.next_suffix: dict[str, int] = {}

    def claim(self, candidate: str) -> str:
        base = _fit(candidate, "", self.max_length)
        key = base.lower()
        if key not in self.used:
            self.used.add(key)
            return base
        number = self.next_suffix.get(key, 2)
        while True:
            name = _fit(base, str(number), self.max_length)
            number += 1
            if name.lower() not in self.used:
                break
        self.next_suffix[key] = number
        self.used.add(name.lower())
        return name


def unique_usernames(
    candidates: pd.Series, taken: Iterable[str], max_length: int = WORDPRESS_MAX_USERNAME_LENGTH
) -> pd.Series:
    """Make each candidate unique (case-insensitively) against `taken` and the earlier candidates.

    Collisions get 2, 3, ... appended (jane.doe, jane.doe2, jane.doe3), the base cut so the
    whole fits max_length. Empty/missing candidates stay ''. Runs in O(len + len(taken)).
    """
    allocator = _UsernameAllocator(taken, max_length)
    names = [allocator.claim(value) if (value := _text(raw)) else "" for raw in candidates]
    return pd.Series(names, index=candidates.index, dtype=object, name=candidates.name)


def next_candidate(username: str, taken: set[str], max_length: int = WORDPRESS_MAX_USERNAME_LENGTH) -> str:
    """The login to try after the CMS said `username` exists (someone took it since the plan).

    `username` itself counts as taken; the suffix is appended (jane.doe2 -> jane.doe22) rather
    than bumped, because a trailing number may be a contact id from the pattern.
    """
    allocator = _UsernameAllocator([*taken, username], max_length)
    return allocator.claim(username)
