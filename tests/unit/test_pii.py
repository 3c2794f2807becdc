"""Unit and property tests for streams/pii.py (SPEC §5)."""

from __future__ import annotations

import calendar
import datetime
import hashlib
import re
import unicodedata

import phonenumbers
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from streams import codes
from streams.pii import (
    HASHED_KEYS,
    NUMERIC_KEYS,
    PHONE_REGIONS,
    PLAIN_KEYS,
    UNKNOWN_KEY,
    PiiResult,
    hash_user_data,
    is_sha256_hex,
    normalize,
    sha256_hex,
    sha256_hexdigest,
)

HEX64 = re.compile(r"[0-9a-f]{64}")


def h(s: str) -> str:
    return hashlib.sha256(s.encode("utf-8")).hexdigest()


def fullwidth(ascii_text: str) -> str:
    """The fullwidth form (U+FF01..) of printable ASCII, as typed with a CJK input method."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in ascii_text)


# --- the contract's constants ----------------------------------------------------------------


def test_key_sets() -> None:
    assert frozenset(
        {"em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id"}
    ) == HASHED_KEYS
    assert frozenset(
        {
            "client_ip_address", "client_user_agent", "fbc", "fbp", "subscription_id",
            "fb_login_id", "lead_id", "anon_id", "madid", "page_id", "ctwa_clid",
        }
    ) == PLAIN_KEYS
    assert not HASHED_KEYS & PLAIN_KEYS
    assert NUMERIC_KEYS <= HASHED_KEYS
    assert UNKNOWN_KEY not in HASHED_KEYS | PLAIN_KEYS
    assert {"us", "gb", "de"} <= PHONE_REGIONS


# --- Meta's published digests (SPEC §5) ------------------------------------------------------

META_DIGESTS = [
    ("em", " John_Smith@gmail.com ", "john_smith@gmail.com",
     "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"),
    ("ph", "+1 (650) 555-1212", "16505551212",
     "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"),
    ("fn", "Mary", "mary", "6915771be1c5aa0c886870b6951b03d7eafc121fea0e80a5ea83beb7c449f4ec"),
    ("db", "2/16/1997", "19970216",
     "01acdbf6ec7b4f478a225f1a246e5d6767eeab1a7ffa17f025265b5b94f40f0c"),
    ("country", "United States", "us",
     "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"),
]


@pytest.mark.parametrize(("key", "raw", "normal", "digest"), META_DIGESTS)
def test_meta_published_digests(key: str, raw: str, normal: str, digest: str) -> None:
    assert sha256_hex(normal) == digest
    assert normalize(key, raw) == normal
    result = hash_user_data({key: raw})
    assert result.user_data == {key: [digest]}
    assert result.hashed == {key: 1}


# --- normalization, key by key -----------------------------------------------------------------

# (key, raw, expected normal form or None = dropped); no country, no default phone region.
NORMALIZE_CASES: list[tuple[str, str, str | None]] = [
    # em
    ("em", " John_Smith@gmail.com ", "john_smith@gmail.com"),
    ("em", "JOHN.SMITH+tag@Example.CO.UK", "john.smith+tag@example.co.uk"),
    ("em", "ΟΔΟΣ@Example.GR", "οδος@example.gr"),  # final sigma (str.lower), compiled too
    ("em", "\tmary@example.com\n", "mary@example.com"),
    ("em", "josé@exämple.de", "josé@exämple.de"),
    ("em", "john_smith", None),
    ("em", "john@localhost", None),
    ("em", "john smith@gmail.com", None),
    ("em", "a@b@c.com", None),
    ("em", "@gmail.com", None),
    ("em", "john@.com", None),
    ("em", "john@gmail.", None),
    ("em", "john@gmail..com", None),
    # ph
    ("ph", "+1 (650) 555-1212", "16505551212"),
    ("ph", "16505551212", "16505551212"),
    ("ph", "+44 844 412 4653", "448444124653"),
    ("ph", "0044 844 412 4653", "448444124653"),
    ("ph", "+44 (0) 20 7946 0958", "442079460958"),
    ("ph", "+44 020 7946 0958", "442079460958"),
    ("ph", "+39 06 1234 5678", "390612345678"),  # Italian leading zero is significant
    ("ph", "+1.650.555.1212", "16505551212"),
    ("ph", "+1 650 555 1212 ext. 42", "16505551212"),
    ("ph", "+1 650 555 1212 x42", "16505551212"),
    ("ph", fullwidth("+1 650 555 1212"), "16505551212"),  # fullwidth digits
    ("ph", "020 7946 0958", "02079460958"),  # no default region: kept as typed
    ("ph", "555-12", None),  # < 7 digits
    ("ph", "+1234567890123456", None),  # > 15 digits
    ("ph", "+0123456789", None),  # no calling code starts with 0
    ("ph", "call me", None),
    ("ph", "+", None),
    # fn / ln
    ("fn", "Mary", "mary"),
    ("fn", "Valéry", "valéry"),
    ("fn", "Vale\u0301ry", "valéry"),  # decomposed input: NFC first, same digest as composed
    ("ln", " O'Connor ", "oconnor"),
    ("ln", "Smith-Jones", "smithjones"),
    ("ln", "van der Berg", "vanderberg"),
    ("fn", "Jean-Luc 2nd", "jeanlucnd"),
    ("fn", "Zoë!", "zoë"),
    ("ln", "Müller", "müller"),
    ("ln", "ΣΩΚΡΑΤΗΣ", "σωκρατης"),
    ("ct", "ΣΑΜΟΣ ΣΑΜΟΣ", "σαμοςσαμος"),  # each word's last sigma is final
    ("fn", "Владимир", "владимир"),
    ("fn", "हिन्दी", "हिन्दी"),  # combining vowel signs are kept
    ("fn", "太郎", "太郎"),
    ("fn", "محمد", "محمد"),
    ("fn", "123", None),
    ("ln", "--", None),
    # ge
    ("ge", "Female", "f"),
    ("ge", " f ", "f"),
    ("ge", "WOMAN", "f"),
    ("ge", "m", "m"),
    ("ge", "Male", "m"),
    ("ge", "man", "m"),
    ("ge", "M.", "m"),
    ("ge", "x", None),
    ("ge", "other", None),
    ("ge", "fem", None),
    # db
    ("db", "2/16/1997", "19970216"),
    ("db", "02/16/1997", "19970216"),
    ("db", "1997-02-16", "19970216"),
    ("db", "1997-2-6", "19970206"),
    ("db", "16.02.1997", "19970216"),
    ("db", "19970216", "19970216"),
    ("db", " 19970216 ", "19970216"),
    ("db", "2000-02-29", "20000229"),
    ("db", "1900-01-01", "19000101"),
    ("db", "1899-12-31", None),
    ("db", "1997-02-30", None),
    ("db", "1900-02-29", None),
    ("db", "13/01/1997", None),  # MM/DD: month 13
    ("db", "1997/02/16", "19970216"),
    ("db", "1997/2/6", "19970206"),
    ("db", "1997.02.16", "19970216"),
    ("db", "1997.2.6", "19970206"),
    ("db", "02-16-1997", "19970216"),
    ("db", "2-6-1997", "19970206"),
    ("db", "02-29-2000", "20000229"),  # leap year (divisible by 400)
    ("db", "2024/02/29", "20240229"),  # leap year
    ("db", "2023/02/29", None),  # not a leap year
    ("db", "1900.02.29", None),  # divisible by 100, not by 400: no Feb 29
    ("db", "02-30-1997", None),  # Feb 30 does not exist
    ("db", "1997/02/30", None),
    ("db", "1997.04.31", None),  # April has 30 days
    ("db", "1997/13/01", None),
    ("db", "1997.00.10", None),
    ("db", "00-10-1997", None),
    ("db", "12-31-1899", None),  # before 1900
    ("db", "16-02-1997", None),  # DD-MM-YYYY is not a format: month 16
    ("db", "1997-02/16", None),  # mixed separators
    ("db", "97/02/16", None),
    ("db", "Feb 16 1997", None),
    ("db", "19971316", None),
    # ct
    ("ct", "Menlo Park", "menlopark"),
    ("ct", "St. John's", "stjohns"),
    ("ct", "Winston-Salem", "winstonsalem"),
    ("ct", "São Paulo", "sãopaulo"),
    ("ct", "München", "münchen"),
    ("ct", "東京", "東京"),
    ("ct", "12345", None),
    # st
    ("st", "California", "ca"),
    ("st", "CA", "ca"),
    ("st", "new york", "ny"),
    ("st", "NEW-YORK", "ny"),
    ("st", "District of Columbia", "dc"),
    ("st", "Ontario", "on"),
    ("st", "Québec", "qc"),
    ("st", "Quebec", "qc"),
    ("st", "British Columbia", "bc"),
    ("st", "Bavaria", "bavaria"),
    ("st", "Île-de-France", "îledefrance"),
    ("st", "N.S.W.", "nsw"),
    ("st", "42", None),
    # zp
    ("zp", "94035", "94035"),
    ("zp", "94035-1234", "94035"),
    ("zp", "94035 1234", "94035"),
    ("zp", "940351234", "94035"),
    ("zp", "M1 1AE", "m11ae"),
    ("zp", "SW1A 1AA", "sw1a1aa"),
    ("zp", "75018", "75018"),
    ("zp", "1000-001", "1000001"),  # Portugal: the dash is formatting only
    ("zp", "100-0001", "1000001"),  # Japan
    ("zp", "K1A 0B1", "k1a0b1"),
    ("zp", "75018.", "75018"),
    ("zp", "H0H-0H0", "h0h0h0"),
    ("zp", " - ", None),
    # country
    ("country", "us", "us"),
    ("country", "US", "us"),
    ("country", " Us ", "us"),
    ("country", "USA", "us"),
    ("country", "United States", "us"),
    ("country", "united states of america", "us"),
    ("country", "U.S.", "us"),
    ("country", "Germany", "de"),
    ("country", "DEU", "de"),
    ("country", "United Kingdom", "gb"),
    ("country", "UK", "gb"),
    ("country", "South Korea", "kr"),
    ("country", "Côte d'Ivoire", "ci"),
    ("country", "Cote dIvoire", "ci"),
    ("country", "Viet Nam", "vn"),
    ("country", "Vietnam", "vn"),
    ("country", "Türkiye", "tr"),
    ("country", "Turkey", "tr"),
    ("country", "Palestine", "ps"),
    ("country", "Korea", None),  # ambiguous
    ("country", "xx", None),
    ("country", "Atlantis", None),
    ("country", "840", None),
    # external_id
    ("external_id", " Cust-ABC-123 ", "Cust-ABC-123"),
    ("external_id", "a b", "a b"),
]


@pytest.mark.parametrize(("key", "raw", "expected"), NORMALIZE_CASES)
def test_normalize(key: str, raw: str, expected: str | None) -> None:
    assert normalize(key, raw) == expected


@pytest.mark.parametrize(("key", "raw", "expected"), NORMALIZE_CASES)
def test_hash_user_data_follows_normalize(key: str, raw: str, expected: str | None) -> None:
    result = hash_user_data({key: raw})
    if expected is None:
        assert result.user_data == {}
        assert result.warnings == (codes.dropped(key),)
        assert result.dropped == {key: 1}
    else:
        assert result.user_data == {key: [h(expected)]}
        assert result.warnings == ()
        assert result.hashed == {key: 1}


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("6505551212", "us", "16505551212"),
        ("(650) 555-1212", "US", "16505551212"),
        ("1 650 555 1212", "us", "16505551212"),  # already has the calling code
        ("+1 650 555 1212", "gb", "16505551212"),  # explicit + wins over the default
        ("020 7946 0958", "gb", "442079460958"),  # trunk 0 removed
        ("07911 123456", "gb", "447911123456"),
        ("447911123456", "gb", "447911123456"),
        ("447911123456", "us", "447911123456"),  # valid only as international
        ("015112345678", "de", "4915112345678"),
        ("4915112345678", "de", "4915112345678"),
        ("011 44 20 7946 0958", "us", "442079460958"),  # US international prefix
        ("0044 20 7946 0958", "us", "442079460958"),
        (fullwidth("+1 650 555 1212"), "gb", "16505551212"),
        (fullwidth("+44 20 7946 0958"), "us", "442079460958"),
        ("6505551212", "zz", "6505551212"),  # unknown region: ignored
        ("6505551212", None, "6505551212"),
        ("123", "us", None),
    ],
)
def test_phone_default_country(raw: str, region: str | None, expected: str | None) -> None:
    assert normalize("ph", raw, default_phone_country=region) == expected
    result = hash_user_data({"ph": raw}, default_phone_country=region)
    assert result.user_data == ({"ph": [h(expected)]} if expected else {})


@given(
    st.sampled_from(["us", "ca", "pr"]),
    st.from_regex(r"\A[2-9][0-9]{2}[2-9][0-9]{6}\Z"),
    st.sampled_from(["", "1", "1-", "+1 "]),
)
def test_nanp_fast_path_matches_phonenumbers(region: str, number: str, prefix: str) -> None:
    parsed = phonenumbers.parse(number, region.upper())
    assume(phonenumbers.is_valid_number(parsed))
    expected = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)[1:]
    assert normalize("ph", prefix + number, default_phone_country=region) == expected


DB_LAYOUTS = (
    "{y:04d}{m:02d}{d:02d}",
    "{y:04d}-{m:02d}-{d:02d}",
    "{y:04d}/{m:02d}/{d:02d}",
    "{y:04d}.{m:02d}.{d:02d}",
    "{m:02d}/{d:02d}/{y:04d}",
    "{m:02d}-{d:02d}-{y:04d}",
    "{d:02d}.{m:02d}.{y:04d}",
)


@settings(max_examples=300, deadline=None)
@given(
    st.dates(datetime.date(1900, 1, 1), datetime.date(2026, 12, 31)), st.sampled_from(DB_LAYOUTS)
)
def test_db_every_real_date_in_every_format(day: datetime.date, layout: str) -> None:
    raw = layout.format(y=day.year, m=day.month, d=day.day)
    assert normalize("db", raw, this_year=2026) == day.strftime("%Y%m%d")


@pytest.mark.parametrize("layout", DB_LAYOUTS)
def test_db_day_past_the_end_of_the_month_is_dropped(layout: str) -> None:
    # leap rules: 1900 (by 100, not 400) and 2023 are common years, 2000 and 2024 leap years
    for year in (1900, 2000, 2023, 2024):
        for month in range(1, 13):
            last = calendar.monthrange(year, month)[1]
            assert normalize("db", layout.format(y=year, m=month, d=last), this_year=2026)
            for day in range(last + 1, 33):
                raw = layout.format(y=year, m=month, d=day)
                assert normalize("db", raw, this_year=2026) is None, raw


@pytest.mark.parametrize(
    ("raw", "this_year", "expected"),
    [
        ("2026-01-01", 2026, "20260101"),
        ("2027-01-01", 2026, None),
        ("2027-01-01", None, "20270101"),  # no bound given
        ("1900-01-01", 1950, "19000101"),
    ],
)
def test_db_year_bound(raw: str, this_year: int | None, expected: str | None) -> None:
    assert normalize("db", raw, this_year=this_year) == expected
    result = hash_user_data({"db": raw}, this_year=this_year)
    assert result.user_data == ({"db": [h(expected)]} if expected else {})


@pytest.mark.parametrize(
    ("zp", "country", "expected"),
    [
        ("94035-1234", "us", "94035"),
        ("94035-1234", "US", "94035"),
        ("940351234", "us", "94035"),
        ("94035 1234", "us", "94035"),
        ("2134", "us", "02134"),  # leading zero lost in a spreadsheet
        ("94035-1234", None, "94035"),  # the 5+4 pattern alone says US
        ("94035-1234", "fr", "940351234"),  # another country: no US rule
        ("K1A 0B1", "ca", "k1a0b1"),
        ("2134", None, "2134"),
    ],
)
def test_zp_with_country(zp: str, country: str | None, expected: str) -> None:
    assert normalize("zp", zp, country=country) == expected


@pytest.mark.parametrize(
    ("st_value", "country", "expected"),
    [
        ("California", "us", "ca"),
        ("Ontario", "ca", "on"),
        ("California", None, "ca"),
        ("California", "de", "california"),  # US/CA names only for us, ca or unknown
        ("Bavaria", "de", "bavaria"),
    ],
)
def test_st_with_country(st_value: str, country: str | None, expected: str) -> None:
    assert normalize("st", st_value, country=country) == expected


def test_country_hint_from_user_data() -> None:
    r = hash_user_data({"zp": "2134", "st": "Texas", "country": "United States"})
    assert r.user_data == {"zp": [h("02134")], "st": [h("tx")], "country": [h("us")]}
    # another country: no US zip rule, and US state names are not mapped
    r = hash_user_data({"zp": "94035-1234", "st": "Texas", "country": "France"})
    assert r.user_data["zp"] == [h("940351234")]
    assert r.user_data["st"] == [h("texas")]


def test_hashed_country_gives_no_hint() -> None:
    r = hash_user_data({"country": h("us").upper(), "zp": "2134"})
    assert r.user_data == {"country": [h("us")], "zp": [h("2134")]}
    r = hash_user_data({"country": h("fr"), "zp": "94035-1234"})
    assert r.user_data["zp"] == [h("94035")]  # 5+4 pattern rule only


def test_several_countries_give_no_hint() -> None:
    r = hash_user_data({"country": ["us", "ca"], "zp": "2134"})
    assert r.user_data == {"country": sorted([h("us"), h("ca")]), "zp": [h("2134")]}
    r = hash_user_data({"country": ["us", "USA", "United States"], "zp": "2134"})
    assert r.user_data == {"country": [h("us")], "zp": [h("02134")]}


def test_normalize_rejects_non_hashed_keys() -> None:
    for key in ("client_ip_address", "fbp", "email", ""):
        with pytest.raises(ValueError):
            normalize(key, "x")


def test_blank_is_none() -> None:
    for key in HASHED_KEYS:
        assert normalize(key, "   ") is None


# --- hash_user_data: shapes, types, counters -----------------------------------------------------


def test_lists_are_deduplicated_and_sorted() -> None:
    r = hash_user_data(
        {"em": ["B@example.com", "a@example.com", " b@example.com", "A@EXAMPLE.COM"]}
    )
    assert r.user_data == {"em": sorted([h("a@example.com"), h("b@example.com")])}
    assert r.hashed == {"em": 4}


def test_single_values_become_one_element_lists() -> None:
    r = hash_user_data({"fn": "Mary", "ge": "f"})
    assert r.user_data == {"fn": [h("mary")], "ge": [h("f")]}


def test_prehashed_passthrough_lowercased() -> None:
    digest = h("john_smith@gmail.com")
    r = hash_user_data({"em": f"  {digest.upper()} ", "ph": digest, "fn": [digest, digest]})
    assert r.user_data == {"em": [digest], "ph": [digest], "fn": [digest]}
    assert r.prehashed == {"em": 1, "ph": 1, "fn": 2}
    assert r.hashed == {}


def test_prehashed_mixed_with_raw() -> None:
    digest = h("mary")
    r = hash_user_data({"fn": ["Mary", digest.upper(), "Bob"]})
    assert r.user_data == {"fn": sorted({digest, h("bob")})}
    assert r.hashed == {"fn": 2}
    assert r.prehashed == {"fn": 1}


def test_32_hex_is_not_taken_as_hashed() -> None:
    md5 = hashlib.md5(b"customer-1").hexdigest()
    r = hash_user_data({"external_id": md5, "em": md5})
    assert r.user_data == {"external_id": [h(md5)]}
    assert r.hashed == {"external_id": 1}
    assert r.warnings == ("dropped_em",)


def test_63_and_65_hex_are_not_hashed() -> None:
    r = hash_user_data({"external_id": ["a" * 63, "a" * 65]})
    assert r.user_data == {"external_id": sorted([h("a" * 63), h("a" * 65)])}


def test_numbers_accepted_for_numeric_keys() -> None:
    r = hash_user_data(
        {"ph": 16505551212, "zp": 94035, "db": 19970216, "external_id": [42, "42"]}
    )
    assert r.errors == ()
    assert r.user_data == {
        "ph": [h("16505551212")],
        "zp": [h("94035")],
        "db": [h("19970216")],
        "external_id": [h("42")],
    }


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("em", 42),
        ("fn", 7),
        ("ph", 6505551212.0),
        ("zp", True),
        ("db", False),
        ("em", {"x": "john@example.com"}),
        ("em", [["john@example.com"]]),
        ("external_id", 2**70),
        ("country", 840),
        ("client_ip_address", 1234),
        ("fbp", ["fb.1.2.3"]),
        ("lead_id", 123456),
        ("client_user_agent", {"ua": "x"}),
    ],
)
def test_invalid_type(key: str, value: object) -> None:
    r = hash_user_data({key: value, "ln": "Smith"})
    assert r.user_data == {"ln": [h("smith")]}
    assert len(r.errors) == 1
    err = r.errors[0]
    assert err.code == codes.INVALID_TYPE
    assert err.field == f"user_data.{key}"
    assert repr(value) not in err.message
    assert str(value) not in err.message


def test_invalid_elements_removed_valid_ones_kept() -> None:
    r = hash_user_data({"em": ["a@example.com", 3.5, {"k": "b@example.com"}, None]})
    assert r.user_data == {"em": [h("a@example.com")]}
    assert [e.field for e in r.errors] == ["user_data.em"]
    assert "b@example.com" not in repr(r)


def test_errors_one_per_key_sorted() -> None:
    r = hash_user_data({"zp": 1.5, "country": 3.0, "em": [1.0, 2.0], "fbp": 5})
    assert [e.field for e in r.errors] == [
        "user_data.country", "user_data.em", "user_data.fbp", "user_data.zp",
    ]


def test_nulls_and_blanks_ignored_silently() -> None:
    r = hash_user_data({"em": None, "fn": "   ", "ln": [], "ph": ["", None], "fbp": None})
    assert r == PiiResult({}, (), (), {}, {}, {})


def test_plain_keys_kept_byte_exact() -> None:
    ud: dict[str, object] = {
        "client_ip_address": " 2001:DB8::1 ",
        "client_user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
        "fbc": "fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz1234567890",
        "fbp": "fb.1.1558571054389.1098115397",
        "subscription_id": "sub_1",
        "fb_login_id": "1234",
        "lead_id": "5678",
        "anon_id": "ANON",
        "madid": "38400000-8cf0-11bd-b23e-10b96e40000d",
        "page_id": "999",
        "ctwa_clid": "ARAkLkA8rmlFeiCktEJQ",
    }
    r = hash_user_data(ud)
    assert r.user_data == ud
    assert r.hashed == r.prehashed == r.dropped == {}


def test_blank_plain_values_are_absent() -> None:
    r = hash_user_data({"client_ip_address": "", "fbp": "  ", "fbc": "fb.1.2.x"})
    assert r == PiiResult({"fbc": "fb.1.2.x"}, (), (), {}, {}, {})


def test_unknown_keys_dropped() -> None:
    r = hash_user_data(
        {"email": "john@example.com", "phone": "+16505551212", "em": "john@example.com"}
    )
    assert r.user_data == {"em": [h("john@example.com")]}
    assert r.warnings == (codes.DROPPED_UNKNOWN_USER_DATA_KEY,)
    assert r.dropped == {UNKNOWN_KEY: 2}
    assert "john@example.com" not in repr(r)
    assert "email" not in repr(r)
    assert "phone" not in repr(r)


def test_warnings_distinct_and_sorted() -> None:
    r = hash_user_data(
        {"zzz": 1, "em": ["bad", "worse"], "ph": "12", "aaa": 2, "ge": "x", "db": "never"}
    )
    assert r.warnings == (
        "dropped_db", "dropped_em", "dropped_ge", "dropped_ph", "dropped_unknown_user_data_key",
    )
    assert r.dropped == {"em": 2, "ph": 1, "ge": 1, "db": 1, UNKNOWN_KEY: 2}


def test_output_key_order_follows_input() -> None:
    r = hash_user_data({"zp": "94035", "fbp": "fb.1.2.3", "country": "us", "em": "a@b.co"})
    assert list(r.user_data) == ["zp", "fbp", "country", "em"]


def test_result_is_frozen() -> None:
    r = hash_user_data({"fn": "Mary"})
    with pytest.raises(AttributeError):
        r.warnings = ("x",)  # type: ignore[misc]


@given(st.lists(st.binary(max_size=200), max_size=20))
def test_sha256_hexdigest_is_hashlib_call_after_call(values: list[bytes]) -> None:
    """Each call hashes only its own bytes (the shared empty hash is copied, never fed)."""
    hexdigests = [sha256_hexdigest(v) for v in values]
    assert hexdigests == [hashlib.sha256(v).hexdigest() for v in values]


def test_helpers() -> None:
    assert sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert sha256_hex("valéry") == h("valéry")
    assert is_sha256_hex("A" * 64)
    assert not is_sha256_hex("a" * 32)
    assert not is_sha256_hex("g" * 64)


def test_lone_surrogate_is_dropped_not_raised() -> None:
    r = hash_user_data({"external_id": "id-\ud800", "fn": "Mary"})
    assert r.user_data == {"fn": [h("mary")]}
    assert r.warnings == ("dropped_external_id",)


# --- properties --------------------------------------------------------------------------------

# Distinctive raw values: the brackets never occur in anything pii.py writes itself.
MARKED = st.text(min_size=0, max_size=30).map(lambda s: f"⟦{s}⟧")
REALISTIC = st.sampled_from(
    [
        "John_Smith@Gmail.com", "+1 (650) 555-1212", "6505551212", "Mary", "O'Connor",
        "Female", "m", "2/16/1997", "1997-02-16", "Menlo Park", "California", "Québec",
        "94035-1234", "M1 1AE", "United States", "USA", "de", "cust-42", "",
        h("x").upper(), h("y"), "d41d8cd98f00b204e9800998ecf8427e",
    ]
)
SCALAR = st.one_of(
    MARKED, REALISTIC, st.text(max_size=20), st.integers(), st.floats(), st.booleans(),
    st.none(),
)
VALUE = st.one_of(
    SCALAR, st.lists(SCALAR, max_size=4), st.dictionaries(st.text(max_size=5), SCALAR, max_size=2)
)
HASHED_KEY = st.sampled_from(sorted(HASHED_KEYS))
ANY_KEY = st.one_of(
    HASHED_KEY, st.sampled_from(sorted(PLAIN_KEYS)), st.sampled_from(["email", "phone", ""])
)
USER_DATA = st.dictionaries(ANY_KEY, VALUE, max_size=8)
REGION = st.one_of(st.none(), st.sampled_from(["us", "gb", "de", "fr", "in", "zz"]))
YEAR = st.one_of(st.none(), st.integers(1850, 2200))


def _hashed_values(result: PiiResult) -> list[str]:
    out: list[str] = []
    for key, value in result.user_data.items():
        if key in HASHED_KEYS:
            assert isinstance(value, list)
            out.extend(value)
    return out


@settings(max_examples=300, deadline=None)
@given(USER_DATA, REGION, YEAR)
def test_outputs_are_lowercase_sha256_sorted_distinct(
    ud: dict[str, object], region: str | None, year: int | None
) -> None:
    r = hash_user_data(ud, default_phone_country=region, this_year=year)
    for key, value in r.user_data.items():
        if key in PLAIN_KEYS:
            assert value is ud[key]
            assert isinstance(value, str)
            assert value.strip()
            continue
        assert key in HASHED_KEYS
        assert isinstance(value, list)
        assert value
        assert value == sorted(set(value))
        assert all(isinstance(v, str) and HEX64.fullmatch(v) for v in value)
    assert list(r.warnings) == sorted(set(r.warnings))
    assert all(e.code == codes.INVALID_TYPE for e in r.errors)
    assert len({e.field for e in r.errors}) == len(r.errors)
    for counts in (r.hashed, r.prehashed, r.dropped):
        assert all(n > 0 for n in counts.values())
        assert set(counts) <= HASHED_KEYS | {UNKNOWN_KEY}


@settings(max_examples=300, deadline=None)
@given(USER_DATA, REGION, YEAR)
def test_idempotent(ud: dict[str, object], region: str | None, year: int | None) -> None:
    first = hash_user_data(ud, default_phone_country=region, this_year=year)
    second = hash_user_data(first.user_data, default_phone_country=region, this_year=year)
    assert second.user_data == first.user_data
    assert second.hashed == {}
    assert second.dropped == {}
    assert second.warnings == ()
    assert second.errors == ()
    assert sum(second.prehashed.values()) == len(_hashed_values(first))


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.one_of(HASHED_KEY, MARKED),
        st.one_of(MARKED, st.lists(MARKED, max_size=3), st.dictionaries(MARKED, MARKED)),
        min_size=1,
        max_size=8,
    ),
    REGION,
)
def test_no_raw_value_in_result(ud: dict[str, object], region: str | None) -> None:
    r = hash_user_data(ud, default_phone_country=region)
    text = repr(r) + str(r) + repr(r.errors) + repr([e.as_dict() for e in r.errors])
    assert "⟦" not in text
    assert "⟧" not in text
    for key, value in ud.items():
        if key.startswith("⟦"):
            assert key not in text
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, str):
                assert v not in text
                assert repr(v)[1:-1] not in text


@given(HASHED_KEY, st.text(max_size=40), st.one_of(st.none(), st.sampled_from(["us", "ca"])),
       REGION, YEAR)
def test_normalize_never_raises(
    key: str, value: str, country: str | None, region: str | None, year: int | None
) -> None:
    out = normalize(key, value, country=country, default_phone_country=region, this_year=year)
    assert out is None or (isinstance(out, str) and out)


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=40))
def test_letters_keys_agree_and_keep_only_letters(value: str) -> None:
    out = normalize("fn", value)
    assert out == normalize("ln", value) == normalize("ct", value)
    if out is not None:
        assert all(unicodedata.category(c)[0] in "LM" for c in out)
    if value.isascii():
        assert out == ("".join(c for c in value.lower() if c.isalpha()) or None)


@given(st.text(min_size=1, max_size=30))
def test_external_id_keeps_case(value: str) -> None:
    out = normalize("external_id", value)
    assert out == (value.strip() or None)


@given(st.integers(min_value=0, max_value=10**15))
def test_number_and_string_agree(n: int) -> None:
    for key in NUMERIC_KEYS:
        assert hash_user_data({key: n}).user_data == hash_user_data({key: str(n)}).user_data
