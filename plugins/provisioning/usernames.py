"""Usernames: render the configured pattern, spell it in ASCII, make it unique.

Which characters and lengths a CMS accepts is the CMS's own rule (provisioning.rules.AccountRules,
made by each CMS package); this module renders, transliterates and de-duplicates for any of them.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence

import pandas as pd
from text_unidecode import unidecode

#: The tokens a username pattern may use, in the order the help text lists them.
USERNAME_TOKENS: tuple[str, ...] = (
    "first_name",
    "last_name",
    "display_name",
    "contact_id",
    "email",
    "email_local",
)

#: The pattern used when both configured patterns give an empty username.
LAST_RESORT_PATTERN = "user{contact_id}"

_TOKEN_RE = re.compile(r"\{([^{}]*)\}")

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


def ascii_login(raw: str, clean: Callable[[str], str]) -> str:
    """A login made of `raw` by a CMS's `clean` (which keeps only what the CMS accepts), spelt in ASCII.

    Accents are folded first ('Zoë' -> 'Zoe'); only a name with nothing left after that (no Latin
    letters: 'Иван Петров', '李小龍') is transliterated whole ('Ivan Petrov', 'Li Xiao Long'), so a
    name that gave a login before keeps exactly that login ('Jane 李' stays 'jane'). May return ''.
    """
    if not raw:
        return ""
    text = str(raw)
    return clean(_fold_latin(text)) or clean(_transliterate(unicodedata.normalize("NFC", text)))


def _fold_latin(text: str) -> str:
    """Drop accents; spell the Latin letters NFKD cannot split (ß, æ, ø, ł, þ, ı; ħ, ŋ) in ASCII."""
    return "".join(
        _ascii_spelling(char) if _is_latin_letter(char) else char
        for char in unicodedata.normalize("NFKD", text)
        if not unicodedata.combining(char)
    )


def _transliterate(text: str) -> str:
    """Each non-ASCII character spelt in ASCII where the library can (Иван -> Ivan, 李 -> 'Li ')."""
    return "".join(char if char.isascii() or char.isspace() else _ascii_spelling(char) for char in text)


def _is_latin_letter(char: str) -> bool:
    return (
        not char.isascii()
        and unicodedata.category(char).startswith("L")
        and "LATIN" in unicodedata.name(char, "")
    )


def _ascii_spelling(char: str) -> str:
    spelling = unidecode(char)
    # The library answers '[?]' for what it does not know and a symbol for a few letters
    # (ə -> '@'): drop those, as the letter was dropped before.
    return spelling if spelling.strip().isalnum() else ""


def candidate_usernames(
    contacts: Sequence[Mapping],
    patterns: Sequence[str],
    sanitize: Callable[[str], str],
) -> list[str]:
    """Per contact, the sanitised name of the first pattern that gives one, else of user{contact_id}.

    The patterns are tried in order (username_pattern, then username_fallback_pattern), each only
    for the contacts still without a name; '' only if even user{contact_id} sanitises to nothing.
    """
    names = [""] * len(contacts)
    sanitized: dict[str, str] = {}  # many contacts share names; sanitise each distinct text once
    rows: Sequence[int] = range(len(contacts))
    for pattern in [*patterns, LAST_RESORT_PATTERN]:
        rows = [row for row in rows if not names[row]]
        if not rows:
            break
        for row, raw in zip(rows, render_usernames(pattern, [contacts[row] for row in rows]), strict=True):
            if raw not in sanitized:
                sanitized[raw] = sanitize(raw)
            names[row] = sanitized[raw]
    return names


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
    candidates: pd.Series, taken: Iterable[str], max_length: int
) -> pd.Series:
    """Make each candidate unique (case-insensitively) against `taken` and the earlier candidates.

    Collisions get 2, 3, ... appended (jane.doe, jane.doe2, jane.doe3), the base cut so the
    whole fits max_length. Empty/missing candidates stay ''. Runs in O(len + len(taken)).
    """
    allocator = _UsernameAllocator(taken, max_length)
    names = [allocator.claim(value) if (value := _text(raw)) else "" for raw in candidates]
    return pd.Series(names, index=candidates.index, dtype=object, name=candidates.name)


def suffix_base(candidate: str, max_length: int) -> str:
    """The name a candidate's numeric suffixes are added to: the candidate cut to max_length."""
    return _fit(candidate, "", max_length)


def next_candidate(base: str, taken: Iterable[str], max_length: int) -> str:
    """The login to try after the CMS refused one as taken (someone took it since the plan).

    `base` is the plan's `username_base`, the name before any suffix; `taken` holds the refused
    names. The answer is the base with the next suffix above every suffixed form of the base in
    `taken` (case-insensitively, cut to max_length like unique_usernames): jane.doe refused
    gives jane.doe2, jane.doe3 refused gives jane.doe4. The suffix goes on the base, not on the
    refused name, so a number the pattern made (user{contact_id}) is never bumped.
    """
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")
    used = {name.lower() for name in taken if isinstance(name, str) and name}
    # Above the highest: the plan gave the lowest free suffix, so the lower ones were taken then.
    number = max((_suffix_of(name, base, max_length) for name in used), default=0)
    number = max(number + 1, 2)
    while (name := _fit(base, str(number), max_length)).lower() in used:
        number += 1
    return name


def _suffix_of(name: str, base: str, max_length: int) -> int:
    """n if `name` (lower-case) is `base` with suffix n as _fit makes it, else 0."""
    digits = len(name) - len(name.rstrip("0123456789"))
    for start in range(len(name) - digits, len(name)):  # the longest suffix first: the highest n
        suffix = name[start:]
        if suffix[0] != "0" and int(suffix) >= 2 and _fit(base, suffix, max_length).lower() == name:
            return int(suffix)
    return 0
