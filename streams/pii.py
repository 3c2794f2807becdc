"""Normalize and SHA-256 hash the personal data of one event's ``user_data`` (SPEC §5).

Pure: no I/O, no clock, no Kafka. Every lookup table and regex is built once at import so
the per-event path is dictionary look-ups, a few regexes and ``hashlib``. The rules per key,
and where they deliberately differ from Meta's facebook-business SDK, are in docs/pii.md.

Raw values never leave this module: they are not logged, not put in errors or warnings,
and a value that cannot be normalized is dropped (warning ``dropped_<key>``), never kept.
"""

from __future__ import annotations

import calendar
import hashlib
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

import phonenumbers
import pycountry

from streams.codes import DROPPED_UNKNOWN_USER_DATA_KEY, INVALID_TYPE, Error, dropped

HASHED_KEYS: Final[frozenset[str]] = frozenset(
    {"em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id"}
)
PLAIN_KEYS: Final[frozenset[str]] = frozenset(
    {
        "client_ip_address",
        "client_user_agent",
        "fbc",
        "fbp",
        "subscription_id",
        "fb_login_id",
        "lead_id",
        "anon_id",
        "madid",
        "page_id",
        "ctwa_clid",
    }
)
# Hashed keys that also accept a JSON integer (taken as its decimal string).
NUMERIC_KEYS: Final[frozenset[str]] = frozenset({"ph", "zp", "db", "external_id"})
# Key of PiiResult.dropped counting values found under keys that are in neither set. The
# unknown key names themselves are never reported (unbounded, and could be anything).
UNKNOWN_KEY: Final = "unknown"
# Regions phonenumbers knows (lowercase alpha-2): valid values of the default phone country.
PHONE_REGIONS: Final[frozenset[str]] = frozenset(r.lower() for r in phonenumbers.SUPPORTED_REGIONS)

_HEX64: Final = re.compile(r"[0-9a-fA-F]{64}")
_MIN_YEAR: Final = 1900
_MAX_INT: Final = 2**64  # JSON integers beyond 64 bits are not accepted as numbers


# str.lower as CPython defines it. Compiled (mypyc) code has its own lower() for str,
# which lacks the one context rule CPython applies: a capital sigma that ends a word
# becomes final sigma. Called through this name, compiled code runs CPython's method.
_STR_LOWER: Final[Callable[[str], str]] = str.lower
_CAPITAL_SIGMA: Final = "\u03a3"


def _lower(s: str) -> str:
    """``s.lower()``, the same in pure Python and compiled."""
    return _STR_LOWER(s) if _CAPITAL_SIGMA in s else s.lower()


def sha256_hex(s: str) -> str:
    """Lowercase hex SHA-256 of the UTF-8 bytes of ``s``."""
    return sha256_hexdigest(s.encode("utf-8"))


_SHA256_START: Final = hashlib.sha256()  # (never updated: only copied)


def sha256_hexdigest(data: bytes) -> str:
    """Lowercase hex SHA-256 of ``data``. A copy of an empty hash object, not
    ``hashlib.sha256(data)``: with OpenSSL 3 the constructor looks the digest up by
    name every time (``py_evp_fromname``, ~20% of a short value's hashing)."""
    h = _SHA256_START.copy()
    h.update(data)
    return h.hexdigest()


def is_sha256_hex(s: str) -> bool:
    """True when ``s`` (already trimmed) is 64 hex characters of either case."""
    return len(s) == 64 and _HEX64.fullmatch(s) is not None


# --- letters of any script (fn, ln, ct, st) ------------------------------------------------


class _CategoryTable(dict[int, "int | None"]):
    """``str.translate`` table keeping the code points whose Unicode general category starts
    with one of ``keep`` (e.g. "LM": letters and marks) and deleting the rest. Filled lazily,
    one code point at a time; bounded so hostile input cannot grow it without limit."""

    _LIMIT: Final = 1 << 16

    def __init__(self, keep: str) -> None:
        super().__init__()
        self._keep = keep

    def __missing__(self, cp: int) -> int | None:
        value = cp if unicodedata.category(chr(cp))[0] in self._keep else None
        if len(self) < self._LIMIT:
            self[cp] = value
        return value


_LETTERS: Final = _CategoryTable("LM")  # letters and combining marks


def _letters(value: str) -> str:
    """NFC, lowercase, then keep only letters and combining marks of any script.

    Lowercasing happens before filtering so context-sensitive case mappings (Greek final
    sigma) see the text as written; marks are kept so Indic and other abugida scripts
    survive (``हिन्दी`` stays whole)."""
    if not value.isascii():
        value = unicodedata.normalize("NFC", value)
    return _lower(value).translate(_LETTERS)


def _fold(letters: str) -> str:
    """Accent-free form of a lowercase letters-only string, for table look-ups only."""
    if letters.isascii():
        return letters
    decomposed = unicodedata.normalize("NFKD", letters)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


# --- em ----------------------------------------------------------------------------------

# x@y.z: one @, no whitespace, a domain of non-empty dot-separated labels. Written without
# nested ambiguity so matching stays linear on hostile input.
_EMAIL: Final = re.compile(r"[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)+")


def _em(value: str) -> str | None:
    s = _lower(value.strip())
    return s if _EMAIL.fullmatch(s) else None


# --- ph ----------------------------------------------------------------------------------

_PH_EXTENSION: Final = re.compile(r"(?:ext(?:ension)?|x|#)\.?\s*\d{1,6}\s*$", re.IGNORECASE)
_NON_DIGITS: Final = re.compile(r"[^0-9]+")
_PH_PLAIN: Final = re.compile(r"\+?[0-9 ()\-./]+")  # the common shape: ASCII, no extension
_PH_SEPARATORS: Final = str.maketrans("", "", "+ ()-./")
_CALLING_CODES: Final[frozenset[str]] = frozenset(
    str(cc) for cc in phonenumbers.COUNTRY_CODE_TO_REGION_CODE
)
# North American Numbering Plan: [1] NXX NXX XXXX. Under a NANP default region such a number
# gets calling code 1 without the (slow) phonenumbers parse.
_NANP_REGIONS: Final[frozenset[str]] = frozenset(phonenumbers.COUNTRY_CODE_TO_REGION_CODE[1])
_NANP: Final = re.compile(r"1?([2-9]\d\d[2-9]\d{6})", re.ASCII)
_PH_MIN: Final = 7
_PH_MAX: Final = 15


def _ascii_digits(s: str) -> str:
    if not s.isascii():  # fullwidth, Arabic-Indic, ... digits are digits too
        s = "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in s)
    return _NON_DIGITS.sub("", s)


def _e164_digits(number: phonenumbers.PhoneNumber) -> str:
    e164: str = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164[1:]


def _valid_international(digits: str) -> str | None:
    """E.164 digits of ``+digits`` when phonenumbers says that is a valid number."""
    try:
        number = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        return None
    return _e164_digits(number) if phonenumbers.is_valid_number(number) else None


def _drop_trunk_zero(digits: str) -> str:
    """``+44 (0)20 ...`` / ``+44 020 ...``: a national trunk 0 after the country code.

    Only numbers whose national part starts with 0 reach phonenumbers (rare); the common
    case stays a plain digit string. Italian-style significant zeros are kept because
    phonenumbers knows them."""
    for size in (1, 2, 3):
        if digits[:size] in _CALLING_CODES:
            if digits[size : size + 1] == "0":
                return _valid_international(digits) or digits
            return digits
    return digits


@lru_cache(maxsize=16384)
def _national(digits: str, region: str) -> str:
    """Digits typed without ``+``/``00`` under a default region: add its calling code.

    A number that already starts with the region's calling code and is valid that way is
    kept; else a valid national number gets the calling code (trunk prefix removed); else a
    number valid as international (a foreign number typed without +) is kept; else the
    national reading wins, as SPEC §5 asks."""
    calling_code = str(phonenumbers.country_code_for_region(region))
    if digits.startswith(calling_code) and (intl := _valid_international(digits)):
        return intl
    try:
        national: phonenumbers.PhoneNumber | None = phonenumbers.parse(digits, region)
    except phonenumbers.NumberParseException:
        national = None
    if national is not None and phonenumbers.is_valid_number(national):
        return _e164_digits(national)
    if digits[0] != "0" and (intl := _valid_international(digits)):
        return intl
    return _e164_digits(national) if national is not None else digits


def _ph(value: str, region: str | None) -> str | None:
    s = value.strip()
    if _PH_PLAIN.fullmatch(s) is not None:
        digits = s.translate(_PH_SEPARATORS)
    else:
        if (ext := _PH_EXTENSION.search(s)) is not None and ext.start() > 0:
            s = s[: ext.start()]
        digits = _ascii_digits(s)
    if not digits:
        return None
    if s.startswith(("+", "\uff0b")) or digits.startswith("00"):  # + or fullwidth +
        if digits.startswith("00"):
            digits = digits[2:]
        if not digits or digits[0] == "0":  # no calling code starts with 0
            return None
        digits = _drop_trunk_zero(digits)
    elif region is not None and 4 <= len(digits) <= _PH_MAX + 2:
        if region in _NANP_REGIONS and (nanp := _NANP.fullmatch(digits)) is not None:
            digits = "1" + nanp.group(1)  # fast path, same answer as phonenumbers
        else:
            digits = _national(digits, region)
    return digits if _PH_MIN <= len(digits) <= _PH_MAX else None


def _phone_region(default_phone_country: str | None) -> str | None:
    """phonenumbers region for the configured default, or None when unset or unknown (a
    settings validator should reject unknown ones up front using PHONE_REGIONS)."""
    if default_phone_country is None:
        return None
    region = default_phone_country.strip().upper()
    return region if region in phonenumbers.SUPPORTED_REGIONS else None


# --- ge ----------------------------------------------------------------------------------

_GENDERS: Final[dict[str, str]] = {
    "f": "f",
    "female": "f",
    "woman": "f",
    "m": "m",
    "male": "m",
    "man": "m",
}


def _ge(value: str) -> str | None:
    return _GENDERS.get(_letters(value))  # "F", " Female ", "male." all count


# --- db ----------------------------------------------------------------------------------

_DB_FORMATS: Final[tuple[tuple[re.Pattern[str], tuple[int, int, int]], ...]] = (
    # (pattern, positions of year, month, day among the groups)
    (re.compile(r"(\d{4})(\d{2})(\d{2})", re.ASCII), (0, 1, 2)),  # YYYYMMDD
    (re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})", re.ASCII), (0, 1, 2)),  # YYYY-MM-DD
    (re.compile(r"(\d{4})/(\d{1,2})/(\d{1,2})", re.ASCII), (0, 1, 2)),  # YYYY/MM/DD
    (re.compile(r"(\d{4})\.(\d{1,2})\.(\d{1,2})", re.ASCII), (0, 1, 2)),  # YYYY.MM.DD
    (re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})", re.ASCII), (2, 0, 1)),  # MM/DD/YYYY
    (re.compile(r"(\d{1,2})-(\d{1,2})-(\d{4})", re.ASCII), (2, 0, 1)),  # MM-DD-YYYY
    (re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4})", re.ASCII), (2, 1, 0)),  # DD.MM.YYYY
)


def _db(value: str, this_year: int | None) -> str | None:
    s = value.strip()
    for pattern, (yi, mi, di) in _DB_FORMATS:
        if (m := pattern.fullmatch(s)) is not None:
            groups = m.groups()
            year, month, day = int(groups[yi]), int(groups[mi]), int(groups[di])
            if year < _MIN_YEAR or (this_year is not None and year > this_year):
                return None
            if not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(year, month)[1]:
                return None
            return f"{year:04d}{month:02d}{day:02d}"
    return None


# --- ct, fn, ln ----------------------------------------------------------------------------


def _letters_or_none(value: str) -> str | None:
    return _letters(value) or None


# --- st ----------------------------------------------------------------------------------


def _build_states() -> dict[str, str]:
    table: dict[str, str] = {}
    for sub in pycountry.subdivisions:
        if sub.country_code in ("US", "CA"):
            table[_fold(_letters(sub.name))] = sub.code.split("-")[1].lower()
    extra = {  # common spellings pycountry does not carry; French names of CA provinces
        "Washington DC": "dc",
        "Washington D.C.": "dc",
        "US Virgin Islands": "vi",
        "Virgin Islands": "vi",
        "Newfoundland": "nl",
        "Yukon Territory": "yt",
        "Colombie-Britannique": "bc",
        "Île-du-Prince-Édouard": "pe",
        "Nouveau-Brunswick": "nb",
        "Nouvelle-Écosse": "ns",
        "Terre-Neuve-et-Labrador": "nl",
        "Québec": "qc",
        "Territoires du Nord-Ouest": "nt",
    }
    for name, code in extra.items():
        table.setdefault(_fold(_letters(name)), code)
    return table


_STATES: Final[dict[str, str]] = _build_states()
_STATE_COUNTRIES: Final = frozenset({None, "us", "ca"})


def _st(value: str, country: str | None) -> str | None:
    letters = _letters(value)
    if not letters:
        return None
    if country in _STATE_COUNTRIES:
        return _STATES.get(_fold(letters), letters)
    return letters


# --- zp ----------------------------------------------------------------------------------

_ALNUM: Final = _CategoryTable("LMN")  # letters (with their marks) and digits
_WHITESPACE: Final = re.compile(r"\s+")
_ZIP_5_4: Final = re.compile(r"(\d{5})-?\d{4}", re.ASCII)


def _us_zip(digits: str) -> str:
    """ASCII digits of a US ZIP code -> its first 5 digits."""
    if 3 <= len(digits) < 5:  # leading zeros lost by a spreadsheet or a JSON number
        return digits.zfill(5)
    return digits[:5]


def _zp(value: str, country: str | None) -> str | None:
    """Lowercase letters and digits only (spaces, dashes, dots... go); US: first 5 digits."""
    s = _lower(value.strip())
    if s.isascii() and s.isdigit():  # fast path: "94035", "940351234", "75018"
        if country == "us" or (country is None and len(s) == 9):
            return _us_zip(s)
        return s
    if country is None and (m := _ZIP_5_4.fullmatch(_WHITESPACE.sub("", s))) is not None:
        return m.group(1)
    compact = s.translate(_ALNUM)
    if country == "us" and compact.isascii() and compact.isdigit():
        return _us_zip(compact)
    return compact or None


# --- country -------------------------------------------------------------------------------

_COUNTRY_ALIASES: Final[dict[str, str]] = {
    "UK": "gb",
    "Great Britain": "gb",
    "Britain": "gb",
    "England": "gb",
    "Scotland": "gb",
    "Wales": "gb",
    "Northern Ireland": "gb",
    "Holland": "nl",
    "The Netherlands": "nl",
    "Russia": "ru",
    "Turkey": "tr",
    "Palestine": "ps",
    "Vatican": "va",
    "Vatican City": "va",
    "Micronesia": "fm",
    "Cape Verde": "cv",
    "Ivory Coast": "ci",
    "Swaziland": "sz",
    "Burma": "mm",
    "Brunei": "bn",
    "DR Congo": "cd",
    "DRC": "cd",
    "Democratic Republic of the Congo": "cd",
    "Republic of the Congo": "cg",
    "Macedonia": "mk",
    "East Timor": "tl",
    "South Korea": "kr",
    "North Korea": "kp",
}


def _build_countries() -> dict[str, str]:
    """Letters-only, accent-free lowercase key -> alpha-2 lowercase."""
    table: dict[str, str] = {}
    derived: dict[str, set[str]] = {}
    for c in pycountry.countries:
        code = c.alpha_2.lower()
        table[code] = code
        table[c.alpha_3.lower()] = code
        for attr in ("name", "official_name", "common_name"):
            name = getattr(c, attr, None)
            if not name:
                continue
            table.setdefault(_fold(_letters(name)), code)
            # "Palestine, State of" -> "Palestine"; "Holy See (Vatican City State)" -> both
            for part in re.split(r"[,()]", name):
                key = _fold(_letters(part))
                if len(key) > 3:
                    derived.setdefault(key, set()).add(code)
    for key, codes in derived.items():
        if len(codes) == 1:  # "Virgin Islands" and "Korea" are ambiguous: left out
            table.setdefault(key, next(iter(codes)))
    for name, code in _COUNTRY_ALIASES.items():
        table.setdefault(_fold(_letters(name)), code)
    return table


_COUNTRIES: Final[dict[str, str]] = _build_countries()


def _country(value: str) -> str | None:
    s = _lower(value.strip())
    code = _COUNTRIES.get(s)  # fast path: "us", "usa"
    if code is None:
        code = _COUNTRIES.get(_fold(_letters(s)))
    return code


# --- external_id ---------------------------------------------------------------------------


def _external_id(value: str) -> str | None:
    return value.strip() or None


# --- public API ----------------------------------------------------------------------------

_Rule = Callable[[str, "str | None", "str | None", "int | None"], "str | None"]
_RULES: Final[dict[str, _Rule]] = {
    "em": lambda v, country, region, year: _em(v),
    "ph": lambda v, country, region, year: _ph(v, region),
    "fn": lambda v, country, region, year: _letters_or_none(v),
    "ln": lambda v, country, region, year: _letters_or_none(v),
    "ge": lambda v, country, region, year: _ge(v),
    "db": lambda v, country, region, year: _db(v, year),
    "ct": lambda v, country, region, year: _letters_or_none(v),
    "st": lambda v, country, region, year: _st(v, country),
    "zp": lambda v, country, region, year: _zp(v, country),
    "country": lambda v, country, region, year: _country(v),
    "external_id": lambda v, country, region, year: _external_id(v),
}


def normalize(
    key: str,
    value: str,
    *,
    country: str | None = None,
    default_phone_country: str | None = None,
    this_year: int | None = None,
) -> str | None:
    """SPEC §5 normalization of one raw value of hashed key ``key``; None when it cannot be
    normalized (or is blank). Does not hash, and does not detect already-hashed values
    (hash_user_data does that first).

    ``country``: the event's normalized alpha-2 country (e.g. "us"), used by zp (US rule)
    and st (US/CA names only when it is us, ca or unknown). ``default_phone_country``: the
    configured alpha-2 region for phone numbers typed without a country code.
    ``this_year``: upper bound for db years (the year of the event's received_at; None: no
    upper bound). Raises ValueError for a key that is not in HASHED_KEYS.
    """
    rule = _RULES.get(key)
    if rule is None:
        raise ValueError("normalize() takes a hashed user_data key")
    hint = _lower(country.strip()) if country else None
    return rule(value, hint, _phone_region(default_phone_country), this_year)


@dataclass(frozen=True, slots=True, init=False)
class PiiResult:
    """One event's user_data after normalization and hashing. Holds no raw hashed-key value.

    ``user_data``: hashed keys -> sorted, de-duplicated list of 64 lowercase hex digests
    (a one-digest list may be shared with other results: do not change it in place);
    plain keys -> their string, byte-exact. Keys with nothing left (or blank) are absent.
    ``warnings``: sorted, distinct codes (``dropped_<key>``, ``dropped_unknown_user_data_key``).
    ``errors``: one ``invalid_type`` Error per offending key, sorted by field; the value
    itself is removed and never quoted.
    ``hashed`` / ``prehashed`` / ``dropped``: per-key counts of values hashed here, taken as
    already hashed, dropped (``UNKNOWN_KEY`` counts unknown keys). Only
    non-zero counts appear; keys are always from HASHED_KEYS or UNKNOWN_KEY.
    """

    user_data: dict[str, object]
    warnings: tuple[str, ...]
    errors: tuple[Error, ...]
    hashed: dict[str, int]
    prehashed: dict[str, int]
    dropped: dict[str, int]

    def __init__(  # written, not generated: see streams/model.py
        self,
        user_data: dict[str, object],
        warnings: tuple[str, ...],
        errors: tuple[Error, ...],
        hashed: dict[str, int],
        prehashed: dict[str, int],
        dropped: dict[str, int],
    ) -> None:
        object.__setattr__(self, "user_data", user_data)
        object.__setattr__(self, "warnings", warnings)
        object.__setattr__(self, "errors", errors)
        object.__setattr__(self, "hashed", hashed)
        object.__setattr__(self, "prehashed", prehashed)
        object.__setattr__(self, "dropped", dropped)


def _raw_values(key: str, value: object) -> tuple[list[str], bool]:
    """The string values under a hashed key, and whether any element had a wrong type."""
    if isinstance(value, str):
        return [value], False
    numeric = key in NUMERIC_KEYS
    if isinstance(value, int) and not isinstance(value, bool):
        return ([str(value)], False) if numeric and -_MAX_INT < value < _MAX_INT else ([], True)
    if not isinstance(value, list):
        return [], True
    out: list[str] = []
    bad = False
    for item in value:
        if isinstance(item, str):
            out.append(item)
        elif (
            numeric
            and isinstance(item, int)
            and not isinstance(item, bool)
            and -_MAX_INT < item < _MAX_INT
        ):
            out.append(str(item))
        elif item is not None:  # a null inside a list is just absent
            bad = True
    return out, bad


def _type_error(key: str) -> Error:
    if key in PLAIN_KEYS:
        expected = "a string"
    elif key in NUMERIC_KEYS:
        expected = "a string, an integer, or a list of them"
    else:
        expected = "a string or a list of strings"
    field = f"user_data.{key}"
    return Error(INVALID_TYPE, field, f"{field} must be {expected}; the value was removed")


def _digest(
    rule: _Rule, value: str, hint: str | None, region: str | None, this_year: int | None
) -> tuple[str | None, str | None]:
    """(digest, normal form) of one trimmed, non-blank value. normal is None for a value
    taken as already hashed; digest is None for a value that must be dropped."""
    if len(value) == 64 and _HEX64.fullmatch(value) is not None:
        return value.lower(), None
    normal = rule(value, hint, region, this_year)
    if normal is None:
        return None, None
    try:
        return sha256_hexdigest(normal.encode("utf-8")), normal
    except UnicodeEncodeError:  # lone surrogates are not text: nothing sane to hash
        return None, None


# Memo of single-string results, one per hashed key: value -> (digest, normal form), or
# (value, context) -> the same for the keys whose rule reads more than the value (zp and
# st the country hint, ph the default region, db the year). Real traffic repeats values
# (country, st, ct, fn, ge; and the browser and server copies of one conversion), and
# normalization is most of the pipeline's cost; a memo per key keeps a key of unique
# values (em, ph, external_id) from evicting the repeated ones. Bounded: each is cleared
# when full (65,536 entries in all). It lives in process memory only, which holds these
# raw values anyway while a batch is processed; nothing of it is logged, exported or
# persisted.
# (the one-element digest list a record carries, normal form): the list is shared by
# every record with that value (never changed in place: records are read and written,
# and dedup's merge adds keys, not digests), which saves a list per value and event
_Hit = tuple[list[str] | None, str | None]
_MEMO: Final[dict[str, dict[object, _Hit]]] = {}
_MEMO_MAX: Final = 65_536 // len(HASHED_KEYS)  # per key
_CONTEXT_KEYS: Final = frozenset({"zp", "st", "ph", "db"})


@dataclass(slots=True, init=False)
class _Many:
    """Outcome of one hashed key whose value is not a single string."""

    digests: list[str]  # sorted, distinct
    normals: set[str]
    hashed: int
    prehashed: int
    dropped: int
    bad_type: bool

    def __init__(
        self,
        digests: list[str],
        normals: set[str],
        hashed: int,
        prehashed: int,
        dropped: int,
        bad_type: bool,
    ) -> None:
        self.digests = digests
        self.normals = normals
        self.hashed = hashed
        self.prehashed = prehashed
        self.dropped = dropped
        self.bad_type = bad_type


def _hash_many(
    key: str, value: object, hint: str | None, region: str | None, this_year: int | None
) -> _Many:
    rule = _RULES[key]
    raw, bad = _raw_values(key, value)
    digests: set[str] = set()
    normals: set[str] = set()
    n_hashed = n_prehashed = n_dropped = 0
    for item in raw:
        s = item.strip()
        if not s:
            continue
        digest, normal = _digest(rule, s, hint, region, this_year)
        if digest is None:
            n_dropped += 1
            continue
        digests.add(digest)
        if normal is None:
            n_prehashed += 1
        else:
            normals.add(normal)
            n_hashed += 1
    return _Many(sorted(digests), normals, n_hashed, n_prehashed, n_dropped, bad)


def _error_field(error: Error) -> str:
    return error.field or ""


def hash_user_data(
    user_data: Mapping[str, object],
    *,
    default_phone_country: str | None = None,
    this_year: int | None = None,
) -> PiiResult:
    """Normalize and hash every hashed key, keep plain keys byte-exact, drop the rest.

    A value that is 64 hex characters after trim is taken as already hashed (lowercased).
    Blank values and JSON nulls are ignored silently. The country is handled first so zp
    and st can use it (no hint when it is given hashed, or with several distinct values).
    Never raises on data.
    """
    region = _phone_region(default_phone_country)
    out: dict[str, object] = {}
    hashed: dict[str, int] = {}
    prehashed: dict[str, int] = {}
    dropped_counts: dict[str, int] = {}
    warnings: set[str] | None = None  # made when needed (most events drop nothing)
    errors: list[Error] | None = None

    # country first: its plain normal form is the hint for zp and st.
    hint: str | None = None
    country: _Many | None = None
    raw_country = user_data.get("country")
    if type(raw_country) is str:  # one string (the usual case): the memo, as below
        s = raw_country.strip()
        if s:  # the normal form _digest gives (none when already hashed or dropped)
            hint = None if len(s) == 64 and _HEX64.fullmatch(s) else _country(s)
    elif raw_country is not None:
        country = _hash_many("country", raw_country, None, region, this_year)
        if len(country.normals) == 1 and not country.prehashed:
            hint = next(iter(country.normals))

    for key, value in user_data.items():
        if value is None:
            continue
        rule = _RULES.get(key)
        if rule is not None:  # a hashed key
            if type(value) is str:  # the hot path: one string
                s = value.strip()
                if not s:
                    continue
                memo = _MEMO.get(key)  # the memo of this key (inlined: hot)
                if memo is None:
                    memo = _MEMO[key] = {}
                mk: object = s
                if key in _CONTEXT_KEYS:
                    mk = (s, region if key == "ph" else this_year if key == "db" else hint)
                hit = memo.get(mk)
                if hit is None:
                    digest, normal = _digest(rule, s, hint, region, this_year)
                    hit = (None if digest is None else [digest], normal)
                    if len(memo) >= _MEMO_MAX:
                        memo.clear()
                    memo[mk] = hit
                digests, normal = hit
                if digests is None:
                    dropped_counts[key] = 1
                    if warnings is None:
                        warnings = set()
                    warnings.add(dropped(key))
                else:
                    out[key] = digests
                    (hashed if normal is not None else prehashed)[key] = 1
                continue
            if key == "country" and country is not None:
                many = country
            else:
                many = _hash_many(key, value, hint, region, this_year)
            if many.digests:
                out[key] = many.digests
            if many.hashed:
                hashed[key] = many.hashed
            if many.prehashed:
                prehashed[key] = many.prehashed
            if many.dropped:
                dropped_counts[key] = many.dropped
                if warnings is None:
                    warnings = set()
                warnings.add(dropped(key))
            if many.bad_type:
                if errors is None:
                    errors = []
                errors.append(_type_error(key))
        elif key in PLAIN_KEYS:
            if isinstance(value, str):
                if value and not value.isspace():  # blank means absent, as for hashed keys
                    out[key] = value
            else:
                if errors is None:
                    errors = []
                errors.append(_type_error(key))
        else:
            dropped_counts[UNKNOWN_KEY] = dropped_counts.get(UNKNOWN_KEY, 0) + 1
            if warnings is None:
                warnings = set()
            warnings.add(DROPPED_UNKNOWN_USER_DATA_KEY)
    return PiiResult(
        user_data=out,
        warnings=tuple(sorted(warnings)) if warnings else (),
        errors=tuple(sorted(errors, key=_error_field)) if errors else (),
        hashed=hashed,
        prehashed=prehashed,
        dropped=dropped_counts,
    )
