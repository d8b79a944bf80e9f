"""Ports of the WordPress PHP functions the users API applies (wp-includes/formatting.php and friends).

Pure functions of their input: usernames, text fields, slugs and emails are spelt and checked as
WordPress 6.1 does, and form bodies are read the way PHP fills $_POST.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any
from urllib.parse import parse_qsl, quote_plus

# WordPress's remove_accents() transliterations that NFKD decomposition does not give.
_TRANSLITERATE = str.maketrans({"ß": "ss", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ø": "o", "Ø": "O",
                                "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "ł": "l", "Ł": "L", "þ": "th",
                                "Þ": "TH", "ı": "i", "ħ": "h", "Ħ": "H", "ŧ": "t", "Ŧ": "T", "ĸ": "k"})
_TAG_RE = re.compile(r"<[^>]*>")
_SCRIPT_RE = re.compile(r"<(script|style)[^>]*?>.*?</\1>", re.I | re.S)
_OCTET_RE = re.compile(r"%[a-fA-F0-9]{2}")
_ENTITY_RE = re.compile(r"&.+?;")
_VALID_ENTITY_RE = re.compile(r"&(?:[A-Za-z][A-Za-z0-9]*|#[0-9]+|#x[0-9A-Fa-f]+);")


def _php_empty(value: Any) -> bool:
    """PHP's empty(): '', '0', 0, None, [] and False are empty."""
    return value in (None, "", "0", 0, False) or value == [] or value == {}


def _remove_accents(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text.translate(_TRANSLITERATE))
    return "".join(ch for ch in folded if not unicodedata.combining(ch))


def _strip_all_tags(text: str) -> str:
    return _TAG_RE.sub("", _SCRIPT_RE.sub("", text))


def sanitize_user_strict(username: str) -> str:
    """wp-includes/formatting.php sanitize_user($username, true)."""
    text = _strip_all_tags(username)
    text = _remove_accents(text)
    text = _OCTET_RE.sub("", text)
    text = _ENTITY_RE.sub("", text)
    text = re.sub(r"[^a-z0-9 _.\-@]", "", text, flags=re.I)
    text = text.strip()
    return re.sub(r"\s+", " ", text)


def sanitize_text_field(value: Any) -> str:
    """wp-includes/formatting.php _sanitize_text_fields() without newline keeping."""
    if isinstance(value, dict | list):
        return ""
    text = "" if value is None else str(value)
    if "<" in text:
        # wp_pre_kses_less_than: a '<' that does not open a tag survives as an entity.
        text = re.sub(r"<(?![A-Za-z/!?])", "&lt;", text)
        text = _strip_all_tags(text)
    text = re.sub(r"[\r\n\t ]+", " ", text).strip()
    found = False
    while (match := _OCTET_RE.search(text)) is not None:
        text = text.replace(match.group(0), "")
        found = True
    if found:
        text = re.sub(r" +", " ", text).strip()
    return text


def _specialchars(text: str) -> str:
    """kses entity normalising + _wp_specialchars(ENT_NOQUOTES, no double encoding)."""
    out = []
    pos = 0
    for match in _VALID_ENTITY_RE.finditer(text):
        out.append(text[pos:match.start()].replace("&", "&amp;"))
        out.append(match.group(0))
        pos = match.end()
    out.append(text[pos:].replace("&", "&amp;"))
    return "".join(out).replace("<", "&lt;").replace(">", "&gt;")


def _pre_user_text(value: str) -> str:
    """The pre_user_{display_name,first_name,last_name,nickname} filters."""
    return _specialchars(sanitize_text_field(value))


def sanitize_title(title: str) -> str:
    """sanitize_title_with_dashes(..., 'save') for the characters a login can contain."""
    text = _remove_accents(_strip_all_tags(title)).lower()
    text = text.replace(".", "-")
    text = re.sub(r"[^%a-z0-9 _-]", "", text)
    text = re.sub(r"\s+", "-", text)
    text = re.sub(r"-+", "-", text)
    return text.strip("-")


def is_email(email: str) -> bool:
    """wp-includes/formatting.php is_email()."""
    if len(email) < 6 or email.find("@", 1) == -1:
        return False
    local, domain = email.split("@", 1)
    if not re.fullmatch(r"[a-zA-Z0-9!#$%&'*+/=?^_`{|}~.-]+", local):
        return False
    if re.search(r"\.{2,}", domain) or domain.strip(" \t\n\r\0\x0b.") != domain:
        return False
    subs = domain.split(".")
    if len(subs) < 2:
        return False
    return all(sub.strip(" \t\n\r\0\x0b-") == sub and re.fullmatch(r"[a-z0-9-]+", sub, re.I) for sub in subs)


def _php_urlencode(value: str) -> str:
    return quote_plus(value, safe="").replace("~", "%7E")


def _parse_list(value: Any) -> list:
    """wp_parse_list: arrays stay, strings split on commas/whitespace."""
    if isinstance(value, list):
        return value
    if value is None:
        return []
    return [part for part in re.split(r"[\s,]+", str(value)) if part]


def _is_php_numeric(text: str) -> bool:
    return re.fullmatch(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*", text) is not None


def _parse_php_form(text: str) -> dict:
    """application/x-www-form-urlencoded the way PHP fills $_POST (name[]=a&name[]=b gives a list)."""
    result: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        match = re.fullmatch(r"([^\[\]]+)\[[^\[\]]*\]", key)
        if match:
            result.setdefault(match.group(1), [])
            if isinstance(result[match.group(1)], list):
                result[match.group(1)].append(value)
        else:
            result[key] = value
    return result
