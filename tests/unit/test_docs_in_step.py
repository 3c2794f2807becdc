"""The contract docs (``docs/``) stay in step with the code: every error and warning code
of ``streams/codes.py`` and every setting of ``streams/settings.py`` is documented, and
the docs name no code or setting the code does not have."""

from __future__ import annotations

import re
from pathlib import Path

from streams import codes
from streams.pii import HASHED_KEYS
from streams.settings import ENV_VARS

DOCS = Path(__file__).resolve().parents[2] / "docs"
_CODE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_SETTING = re.compile(r"\b((?:CONVSTREAM|KAFKA)_[A-Z0-9_]*[A-Z0-9])\b(\*?)")
# KAFKA_* variables of the local-broker scripts and of Kafka itself, not convstream settings
_NOT_SETTINGS = frozenset(
    {"KAFKA_LOCAL_PORT", "KAFKA_LOCAL_DIR", "KAFKA_VERSION", "KAFKA_HEAP_OPTS"}
)
# a row of the error table in docs/validation.md: | `code` | ...
_ERROR_ROW = re.compile(r"^\|\s*`([a-z_]+)`")


def docs_text() -> dict[str, str]:
    pages = {p.name: p.read_text(encoding="utf-8") for p in sorted(DOCS.glob("*.md"))}
    assert "validation.md" in pages and "operations.md" in pages, sorted(pages)
    return pages


def code_constants() -> set[str]:
    """Every code string ``streams/codes.py`` defines (errors and warnings)."""
    found = {
        v
        for k, v in vars(codes).items()
        if k.isupper() and isinstance(v, str) and _CODE_NAME.match(v)
    }
    assert found >= codes.ERROR_CODES and codes.CLIENT_CLOCK_SKEW in found
    return found


def missing(names: set[str] | frozenset[str], text: str) -> list[str]:
    """The names that do not appear in ``text`` as `code` (backticked, exactly)."""
    return sorted(n for n in names if f"`{n}`" not in text)


def test_every_error_and_warning_code_is_documented() -> None:
    text = "\n".join(docs_text().values())
    assert not missing(code_constants(), text), missing(code_constants(), text)


def test_every_dropped_key_warning_is_documented() -> None:
    text = "\n".join(docs_text().values())
    names = {codes.dropped(k) for k in HASHED_KEYS}
    assert not missing(names, text), missing(names, text)


def test_every_setting_is_documented() -> None:
    text = "\n".join(docs_text().values())
    assert not missing(set(ENV_VARS), text), missing(set(ENV_VARS), text)


def test_the_docs_name_no_setting_the_code_lacks() -> None:
    unknown = []
    for page, text in docs_text().items():
        for n, line in enumerate(text.splitlines(), start=1):
            for m in _SETTING.finditer(line):
                name, wildcard = m.groups()
                if wildcard or name in ENV_VARS or name in _NOT_SETTINGS:
                    continue
                unknown.append(f"docs/{page}:{n}: {name}")
    assert not unknown, "settings the code does not know:\n" + "\n".join(unknown)


def test_the_error_table_lists_only_real_codes_and_all_of_them() -> None:
    rows = [
        m.group(1)
        for line in docs_text()["validation.md"].splitlines()
        if (m := _ERROR_ROW.match(line))
    ]
    assert set(rows) - code_constants() == set(), set(rows) - code_constants()
    assert codes.ERROR_CODES - set(rows) == set(), codes.ERROR_CODES - set(rows)


def test_missing_reports_what_is_absent() -> None:
    assert missing({"event_time_too_old", "unknown_pixel"}, "| `unknown_pixel` | ... |") == [
        "event_time_too_old"
    ]
    assert missing({"unknown_pixel"}, "unknown_pixel without backticks") == ["unknown_pixel"]
