"""Usernames: render the configured pattern, spell it in ASCII, make it unique.

Which characters and lengths a CMS accepts is the CMS's own rule (provisioning.rules.AccountRules,
made by each CMS package); this module renders, transliterates and de-duplicates for any of them.
"""

from __future__ import annotations

import math
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import compress, repeat
from operator import not_
from typing import TYPE_CHECKING

from text_unidecode import unidecode

if TYPE_CHECKING:
    import pandas as pd

# No pandas import here: every Airflow process loads the CMS rules (through the provider's connection
# types) and most never plan. A frame or a pandas NA can only come from a caller that loaded pandas.


def _pandas():
    return sys.modules.get("pandas")


def _is_frame(value: object) -> bool:
    pandas = _pandas()
    return pandas is not None and isinstance(value, pandas.DataFrame)

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
    if value is None:
        return ""
    pandas = _pandas()
    if pandas is not None and value is pandas.NA:
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


def render_usernames(pattern: str, contacts: Iterable[Mapping] | pd.DataFrame) -> list[str]:
    """render_username for many contacts (dicts, or a frame's rows), parsing the pattern once."""
    if not (_is_frame(contacts) or isinstance(contacts, Mapping)):
        contacts = contacts if isinstance(contacts, Sequence) else list(contacts)
    columns = _TokenColumns(contacts)
    return _render_columns(pattern_parts(pattern), columns, range(columns.count))


class _TokenColumns:
    """The contacts' token values as text, column by column (at a million contacts per-row dict
    lookups and calls were most of the time); a whole column is made once, a few rows on demand."""

    def __init__(self, contacts: Sequence[Mapping] | pd.DataFrame | Mapping[str, Sequence]):
        self.contacts = contacts
        if isinstance(contacts, Mapping):  # columns by field name
            self.count = len(next(iter(contacts.values()))) if contacts else 0
        else:
            self.count = len(contacts)
        self.columns: dict[str, list[str]] = {}

    def values(self, token: str, rows: Sequence[int] | None = None) -> list[str]:
        """The token's text for every contact, or for the given rows only."""
        if rows is None or token in self.columns:
            if token not in self.columns:
                self.columns[token] = self._texts(token, None)
            column = self.columns[token]
            return column if rows is None else [column[row] for row in rows]
        return self._texts(token, rows)

    def _texts(self, token: str, rows: Sequence[int] | None) -> list[str]:
        if token == "email_local":
            return [email.split("@", 1)[0] if email else "" for email in self.values("email", rows)]
        raws = self._raw(token, rows)
        if set(map(type, raws)) <= {str}:  # the usual case, in C
            return list(map(str.strip, raws))
        return [value.strip() if type(value) is str else _text(value) for value in raws]

    def _raw(self, field: str, rows: Sequence[int] | None) -> list:
        contacts = self.contacts
        if _is_frame(contacts) or isinstance(contacts, Mapping):
            if field not in contacts:
                return [None] * (self.count if rows is None else len(rows))
            values = contacts[field]
            column = values.tolist() if hasattr(values, "tolist") else list(values)  # a Series or an array
            return column if rows is None else [column[row] for row in rows]
        if rows is None:
            return [contact.get(field) for contact in contacts]
        return [contacts[row].get(field) for row in rows]


def _render_columns(parts: list[tuple[str, bool]], columns: _TokenColumns, rows: Sequence[int]) -> list[str]:
    """The pattern (as pattern_parts) rendered for the given rows."""
    if not any(is_token for _, is_token in parts):  # literals only: the same text for every row
        return ["".join(text for text, _ in parts)] * len(rows)
    every_row = isinstance(rows, range) and rows == range(columns.count)
    pieces: list[Iterable[str]] = [
        columns.values(text, None if every_row else rows) if is_token else repeat(text) for text, is_token in parts
    ]
    if len(pieces) == 1:
        return list(pieces[0])
    # strict=False: the literals repeat forever; the token columns all have len(rows) items
    return list(map("".join, zip(*pieces, strict=False)))


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


def ascii_logins(raws: Sequence[str], clean: Callable[[str], str]) -> list[str]:
    """ascii_login of each text, the same answers; fast when `clean` is a LoginCleaner (cleans all at once)."""
    texts = raws if set(map(type, raws)) <= {str} else [str(raw) if raw else "" for raw in raws]
    others = list(compress(range(len(texts)), map(not_, map(str.isascii, texts))))  # ASCII folds to itself
    plain = list(texts)
    folded: dict[str, str] = {}  # non-ASCII names repeat: fold each distinct one once
    for row in others:
        text = texts[row]
        if text not in folded:
            folded[text] = _fold_latin(text)
        plain[row] = folded[text]
    many = getattr(clean, "many", None)
    logins = many(plain) if many is not None else [clean(text) for text in plain]
    for row in others:  # likewise ASCII transliterates to itself: only these may still give a login
        if not logins[row]:
            logins[row] = clean(_transliterate(unicodedata.normalize("NFC", texts[row])))
    return logins


class LoginCleaner:
    """A CMS's login cleaner: lower case, whitespace runs as one '.', only the `allowed` characters
    (a regex class body, ASCII only), repeated dots collapsed, the `edges` stripped from both ends;
    shorter than `min_length` gives ''.

    `many` cleans a list with the same answers in a few C-level passes over the texts joined by NUL
    (at a million names, per-name regex calls were seconds)."""

    _SEP = "\x00"

    def __init__(self, allowed: str, edges: str, min_length: int = 1):
        if not allowed.isascii() or not edges.isascii() or self._SEP in allowed + edges:
            raise ValueError("allowed and edges must be ASCII without NUL")
        self.edges = edges
        self.min_length = min_length
        self._whitespace = re.compile(r"\s+")
        self._not_allowed = re.compile(f"[^{allowed}]")
        self._dots = re.compile(r"\.{2,}")
        # the ASCII characters `many` deletes (all others are non-ASCII: dropped as well)
        self._delete = bytes(code for code in range(1, 128) if self._not_allowed.match(chr(code)))
        # `many` turns whitespace at a text's ends into '.' too, which the edge strip then removes
        self._batch = "." in edges and not self._not_allowed.match(".")

    def __call__(self, text: str) -> str:
        text = self._whitespace.sub(".", text.lower().strip())
        text = self._not_allowed.sub("", text)
        text = self._dots.sub(".", text)
        text = text.strip(self.edges)
        return text if len(text) >= self.min_length else ""

    def many(self, texts: Sequence[str]) -> list[str]:
        if not texts:
            return []
        joined = self._SEP.join(texts)
        if not self._batch or joined.count(self._SEP) != len(texts) - 1:  # a text holds NUL itself
            return [self(text) for text in texts]
        # lower() is per character (only a final sigma looks at its neighbours, and no Greek stays);
        # split() cuts at the same whitespace as \s and strip()
        joined = ".".join(joined.lower().split())
        # what is left outside ASCII is not allowed; the rest of the disallowed is deleted by byte
        ascii_text = joined.encode("ascii", "ignore").translate(None, self._delete).decode("ascii")
        while ".." in ascii_text:
            ascii_text = ascii_text.replace("..", ".")
        edges, least = self.edges, self.min_length
        cleaned = list(map(str.strip, ascii_text.split(self._SEP), repeat(edges)))
        if least > 1:
            cleaned = [text if len(text) >= least else "" for text in cleaned]
        return cleaned


class LoginSanitizer:
    """raw text -> login, as ascii_login(raw, clean); `many` does a list at once with the same answers."""

    def __init__(self, clean: Callable[[str], str], name: str, doc: str | None = None):
        self.clean = clean
        self.__name__ = self.__qualname__ = name
        self.__doc__ = doc

    def __call__(self, raw: str) -> str:
        return ascii_login(raw, self.clean)

    def many(self, raws: Sequence[str]) -> list[str]:
        return ascii_logins(raws, self.clean)

    def __repr__(self) -> str:
        return f"<login sanitizer {self.__name__}>"


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
    contacts: Sequence[Mapping] | pd.DataFrame | Mapping[str, Sequence],
    patterns: Sequence[str],
    sanitize: Callable[[str], str],
) -> list[str]:
    """Per contact, the sanitised name of the first pattern that gives one, else of user{contact_id}.

    The patterns are tried in order (username_pattern, then username_fallback_pattern), each only
    for the contacts still without a name; '' only if even user{contact_id} sanitises to nothing.
    `contacts` are dicts, a frame, or a dict of columns (field -> values). A sanitiser with a `many`
    method (LoginSanitizer) does all names at once.
    """
    columns = _TokenColumns(contacts)
    names = [""] * columns.count
    many = getattr(sanitize, "many", None)
    sanitized: dict[str, str] = {}  # many contacts share names; sanitise each distinct text once
    rows: Sequence[int] = range(columns.count)  # every name is still '' for the first pattern
    for number, pattern in enumerate([*patterns, LAST_RESORT_PATTERN]):
        if number:
            rows = [row for row in rows if not names[row]]
        if not rows:
            break
        raws = _render_columns(pattern_parts(pattern), columns, rows)
        if many is not None:
            logins = many(raws)
        else:
            for raw in raws:
                if raw not in sanitized:
                    sanitized[raw] = sanitize(raw)
            logins = [sanitized[raw] for raw in raws]
        if not number:
            names = list(logins)
            continue
        for row, login in zip(rows, logins, strict=True):
            names[row] = login
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
        taken = taken if isinstance(taken, (list, tuple)) else list(taken)
        if set(map(type, taken)) <= {str}:  # the usual case, in C
            self.used: set[str] = set(lower_texts(taken))
            self.used.discard("")
        else:
            self.used = {name.lower() for name in taken if isinstance(name, str) and name}
        self.next_suffix: dict[str, int] = {}

    def claim(self, candidate: str) -> str:
        base = candidate if len(candidate) <= self.max_length else _fit(candidate, "", self.max_length)
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
    claim, used, add = allocator.claim, allocator.used, allocator.used.add
    values = candidates.tolist()
    if not set(map(type, values)) <= {str}:
        values = [_text(raw) for raw in values]
    values = list(map(str.strip, values))
    names = []
    append = names.append
    # lower_texts: a cleaner's logins are lower case already, and `used` then holds them, not copies
    for value, key in zip(values, lower_texts(values), strict=True):
        if not value:
            append("")
        elif key not in used and len(value) <= max_length:  # claim's first answer, inline
            add(key)
            append(value)
        else:
            append(claim(value))
    return _pandas().Series(names, index=candidates.index, dtype=object, name=candidates.name)


def lower_texts(texts: Sequence[str]) -> Sequence[str]:
    """str.lower of each text, sharing the texts that are lower case already (a cleaner's logins, most
    emails): the texts themselves when none changes (one pass over them all joined)."""
    joined = "\x00".join(texts)
    if joined.lower() == joined:  # no character has a lower case other than itself
        return texts
    return [text if lower == text else lower for text, lower in zip(texts, map(str.lower, texts), strict=True)]


def suffix_base(candidate: str, max_length: int) -> str:
    """The name a candidate's numeric suffixes are added to: the candidate cut to max_length."""
    return candidate if len(candidate) <= max_length else _fit(candidate, "", max_length)


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
