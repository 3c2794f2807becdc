"""Query strings, split exactly as ``urllib.parse`` does, without its per-call overhead.

``pairs(qs)`` is ``parse_qsl(qs, keep_blank_values=True)`` (``&``-separated, split at the
first ``=``, ``+`` is a space, ``%XX`` decoded as UTF-8 with errors replaced) and
``url_query(url)`` is ``urlsplit(url).query``. Pixel hits and landing URLs are split once
per event or more, so this is on the hot path; tests/unit/test_query.py checks both
against the standard library on generated input.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import unquote as _stdlib_unquote
from urllib.parse import urlsplit

_HEX: Final = "0123456789abcdefABCDEF"
_HEX_BYTE: Final[dict[bytes, bytes]] = {
    (a + b).encode(): bytes.fromhex(a + b) for a in _HEX for b in _HEX
}
# characters for which urlsplit does more than cut the string (IPv6 hosts, removed
# control characters); non-ASCII URLs also take the standard path (netloc checks)
_URLSPLIT_SPECIAL: Final = frozenset("[]\t\r\n")


def unquote(s: str) -> str:
    """``urllib.parse.unquote(s)``: for an ASCII string, the same bytes-level loop
    without the regex split and argument checks; anything else goes to the stdlib."""
    if "%" not in s:
        return s
    if not s.isascii():
        return _stdlib_unquote(s)
    bits = s.encode().split(b"%")
    res = [bits[0]]
    append = res.append
    for item in bits[1:]:
        byte = _HEX_BYTE.get(item[:2])
        if byte is None:
            append(b"%")
            append(item)
        else:
            append(byte)
            append(item[2:])
    return b"".join(res).decode("utf-8", "replace")


def pairs(qs: str) -> list[tuple[str, str]]:
    """The (name, value) pairs of a query string, in order, blank values kept."""
    out: list[tuple[str, str]] = []
    for field in qs.split("&"):
        if not field:
            continue
        name, _, value = field.partition("=")
        if "+" in name:
            name = name.replace("+", " ")
        if "+" in value:
            value = value.replace("+", " ")
        out.append((unquote(name), unquote(value)))
    return out


def first_wins(qs: str) -> dict[str, str]:
    """The pairs as a dict; the first occurrence of a name wins. (``pairs`` unrolled:
    a pixel hit is split this way, and most of its fields need no decoding.)"""
    out: dict[str, str] = {}
    for field in qs.split("&"):
        if not field:
            continue
        name, _, value = field.partition("=")
        if "+" in name:
            name = name.replace("+", " ")
        if "%" in name:
            name = unquote(name)
        if name in out:
            continue
        if "+" in value:
            value = value.replace("+", " ")
        out[name] = unquote(value) if "%" in value else value
    return out


def url_query(url: str) -> str:
    """``urlsplit(url).query`` (raises ValueError as it does). An ASCII URL without
    brackets or removed characters: the text after the first ``?`` before the first
    ``#`` (neither can occur in a scheme or a host)."""
    if url.isascii() and _URLSPLIT_SPECIAL.isdisjoint(url):
        return url.partition("#")[0].partition("?")[2]
    return urlsplit(url).query
