"""streams/query.py gives exactly what urllib.parse gives (it is a faster copy of it)."""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlsplit

from hypothesis import example, given, settings
from hypothesis import strategies as st

from streams import query

# characters that matter to query and URL splitting, plus some that do not
_PIECES = list("aZ09-._~:/?#[]@!$&'()*+,;=% \t\r\n\x00\x7f\u00e9\u00df\u20ac\U0001f600")
_PIECES += ["%2", "%41", "%e2%82%ac", "%C3%A9", "%zz", "%%", "%F0%9F", "%ff", "https://"]
_URLISH = st.lists(st.sampled_from(_PIECES), max_size=30).map("".join)
_ANY = st.text(max_size=40)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(_URLISH, _ANY))
@example("")
@example("&&=&a=&=b&c")
@example("dl=https%3A%2F%2Fshop.example%2Fp%3Ffbclid%3DIwAR1&ev=Purchase&cd[value]=1+2")
@example("a=%E2%82&b=%e2%82%ac%zz%")
def test_pairs_is_parse_qsl_with_blank_values(qs: str) -> None:
    assert query.pairs(qs) == parse_qsl(qs, keep_blank_values=True)


@settings(max_examples=1000, deadline=None)
@given(st.one_of(_URLISH, _ANY))
def test_first_wins_keeps_the_first_occurrence(qs: str) -> None:
    expected: dict[str, str] = {}
    for k, v in parse_qsl(qs, keep_blank_values=True):
        expected.setdefault(k, v)
    assert query.first_wins(qs) == expected
    assert list(query.first_wins(qs)) == list(expected)  # same order


@settings(max_examples=2000, deadline=None)
@given(st.one_of(_URLISH, _ANY))
@example("%C3%A9%")
@example("caf\u00e9%C3%A9")
@example("%ff%fe")
def test_unquote_is_the_stdlib_unquote(s: str) -> None:
    assert query.unquote(s) == unquote(s)


def _stdlib_query(url: str) -> str | type[ValueError]:
    try:
        return urlsplit(url).query
    except ValueError:
        return ValueError


def _fast_query(url: str) -> str | type[ValueError]:
    try:
        return query.url_query(url)
    except ValueError:
        return ValueError


@settings(max_examples=3000, deadline=None)
@given(st.one_of(_URLISH, _ANY, st.builds(lambda a, b: "https://" + a + "/" + b, _URLISH, _URLISH)))
@example("https://shop.example/p/1?fbclid=IwAR1&utm_campaign=c1#top?x=1")
@example("https://[::1/?a=1")
@example("https://sh\top.example/?a\n=1")
@example("https://x/?a=1\r&b=2")
@example("https://x]/?a=1")
@example("  https://x/?q#f")
@example("//host?x#y")
@example("?a=1")
def test_url_query_is_urlsplit_query(url: str) -> None:
    assert _fast_query(url) == _stdlib_query(url)
