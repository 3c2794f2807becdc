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
# the same, for the escapes of ASCII characters, as text (``"3A"`` -> ``":"``)
_HEX_ASCII: Final[dict[str, str]] = {
    k.decode(): v.decode() for k, v in _HEX_BYTE.items() if v < b"\x80"
}


def unquote(s: str) -> str:
    """``urllib.parse.unquote(s)``: for an ASCII string, the same bytes-level loop
    without the regex split and argument checks; anything else goes to the stdlib."""
    if "%" not in s:
        return s
    if not s.isascii():
        return _stdlib_unquote(s)
    parts = s.split("%")  # first as text: URLs escape ASCII characters (":", "/", "=")
    out = [parts[0]]
    for item in parts[1:]:
        ch = _HEX_ASCII.get(item[:2])
        if ch is not None:
            out.append(ch)
            out.append(item[2:])
        elif item[:2].encode() in _HEX_BYTE:
            return _unquote_bytes(s)  # a byte >= 0x80: part of a UTF-8 sequence
        else:
            out.append("%")
            out.append(item)
    return "".join(out)


def _unquote_bytes(s: str) -> str:
    """``unquote`` of an ASCII string, byte by byte (escapes of UTF-8 sequences)."""
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


def _name(raw: str) -> str:
    """A parameter name decoded (``+`` is a space, then ``%XX``)."""
    name = raw.replace("+", " ") if "+" in raw else raw
    return unquote(name) if "%" in name else name


# Decoded parameter names (``cd%5Bvalue%5D`` -> ``cd[value]``): a pixel sends the same
# few dozen. Bounded (names up to 64 characters, 1,024 of them), process memory only.
_NAMES: Final[dict[str, str]] = {}
_NAMES_MAX: Final = 1024
_NAME_MAX: Final = 64


def first_wins(qs: str) -> dict[str, str]:
    """The pairs as a dict; the first occurrence of a name wins. (``pairs`` unrolled:
    a pixel hit is split this way, and most of its fields need no decoding.)"""
    out: dict[str, str] = {}
    for field in qs.split("&"):
        if not field:
            continue
        raw, _, value = field.partition("=")
        name = _NAMES.get(raw)
        if name is None:
            name = _name(raw)
            if len(raw) <= _NAME_MAX and len(_NAMES) < _NAMES_MAX:
                _NAMES[raw] = name
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
    if url.isascii() and not _urlsplit_special(url):
        return url.partition("#")[0].partition("?")[2]
    return urlsplit(url).query


def _urlsplit_special(url: str) -> bool:
    """True when ``url`` holds a character for which urlsplit does more than cut the
    string: brackets (IPv6 hosts) or tab, CR, LF (removed). (Five substring searches:
    ``frozenset.isdisjoint(url)`` looked every character up, 1.1 us for 90 of them.)"""
    return "[" in url or "]" in url or "\t" in url or "\r" in url or "\n" in url
