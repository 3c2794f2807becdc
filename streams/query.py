"""Query-string splitting: exactly ``urllib.parse.parse_qsl(qs, keep_blank_values=True)``
(``&``-separated, split at the first ``=``, ``+`` is a space, ``%XX`` decoded as UTF-8
with errors replaced), without its per-call argument coercion and per-field calls.
Pixel hits and landing URLs are split once per event or more, so this is on the hot path;
tests/unit/test_query.py checks it against the standard library on generated input."""

from __future__ import annotations

from urllib.parse import unquote


def pairs(qs: str) -> list[tuple[str, str]]:
    """The (name, value) pairs of a query string, in order, blank values kept."""
    out: list[tuple[str, str]] = []
    for field in qs.split("&"):
        if not field:
            continue
        name, _, value = field.partition("=")
        if "+" in name:
            name = name.replace("+", " ")
        if "%" in name:
            name = unquote(name)
        if "+" in value:
            value = value.replace("+", " ")
        if "%" in value:
            value = unquote(value)
        out.append((name, value))
    return out


def first_wins(qs: str) -> dict[str, str]:
    """The pairs as a dict; the first occurrence of a name wins."""
    out: dict[str, str] = {}
    for name, value in pairs(qs):
        if name not in out:
            out[name] = value
    return out
