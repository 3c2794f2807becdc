"""Contract tests: the published JSON Schemas in schemas/ (SPEC §1) against real outputs.

The pipeline is run in-process over schemas/examples/*.jsonl and every conversion and dead
letter it writes must validate; the input examples must validate against the input schemas
(except the lines that are deliberately broken); hand-made bad records must be rejected; and
the schemas' enums must equal the code's lists, so neither can drift from the other.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, ValidationError
from referencing import Registry, Resource

from streams import codes, pii, quality, records, validate
from streams.model import Origin, Source
from streams.offline import Line, dumps_lines, ordered, process, read_lines
from streams.pipeline import Pipeline, Result
from streams.settings import Settings
from streams.specs import SpecError, conversion_actions, match_ad, parse_ad

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
EXAMPLES = SCHEMAS / "examples"
BASE = "https://convstream.dev/schemas/"
DRAFT = "https://json-schema.org/draft/2020-12/schema"
NAMES = (
    "pixel_hit",
    "server_events",
    "conversion",
    "dead_letter",
    "attribution_candidate",
    "ad",
    "forward_dead_letter",
)
OUTPUTS = ("conversion", "dead_letter", "attribution_candidate", "forward_dead_letter")
PIXEL_TOPIC, SERVER_TOPIC = "events.pixel.raw", "events.server.raw"

SCHEMA: dict[str, dict[str, Any]] = {
    n: json.loads((SCHEMAS / f"{n}.schema.json").read_text()) for n in NAMES
}
REGISTRY: Registry[Any] = Registry().with_resources(
    (s["$id"], Resource.from_contents(s)) for s in SCHEMA.values()
)
SERVER_EVENT = {"$ref": f"{BASE}server_events.schema.json#/$defs/server_event"}


def validator(name_or_schema: str | dict[str, Any]) -> Draft202012Validator:
    schema = SCHEMA[name_or_schema] if isinstance(name_or_schema, str) else name_or_schema
    return Draft202012Validator(schema, registry=REGISTRY)


def errors(name_or_schema: str | dict[str, Any], instance: Any) -> list[ValidationError]:
    return list(validator(name_or_schema).iter_errors(instance))


def assert_valid(name: str, instance: Any, what: str = "") -> None:
    errs = errors(name, instance)
    assert not errs, f"{what} is not a valid {name}: " + "; ".join(
        f"{list(e.absolute_path)}: {e.message}" for e in errs
    )


def example(name: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads((EXAMPLES / f"{name}.json").read_text())
    return value


def jsonl(name: str) -> list[bytes]:
    return [ln for ln in (EXAMPLES / name).read_bytes().split(b"\n") if ln.strip()]


# --- the schemas themselves ---------------------------------------------------------------


def _fields(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (path, schema) of a named field, outside if/then/else (which only restate
    fields documented where they are declared)."""
    if isinstance(node, list):
        for v in node:
            yield from _fields(v, path)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in ("if", "then", "else"):
            continue
        if key == "properties":
            for name, prop in value.items():
                yield f"{path}.{name}", prop
                yield from _fields(prop, f"{path}.{name}")
        else:
            yield from _fields(value, path)


@pytest.mark.parametrize("name", NAMES)
def test_schema_is_valid_2020_12_with_id_title_and_descriptions(name: str) -> None:
    schema = SCHEMA[name]
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == DRAFT
    assert schema["$id"] == f"{BASE}{name}.schema.json"
    assert schema["title"].strip() and schema["description"].strip()
    fields = list(_fields(schema))
    assert fields
    undocumented = [
        path for path, prop in fields if "$ref" not in prop and not prop.get("description")
    ]
    assert not undocumented, f"fields without a description: {undocumented}"


def test_every_schema_file_is_tested_and_listed_in_the_readme() -> None:
    on_disk = {p.name.removesuffix(".schema.json") for p in SCHEMAS.glob("*.schema.json")}
    assert on_disk == set(NAMES)
    readme = (SCHEMAS / "README.md").read_text()
    for name in NAMES:
        assert f"{name}.schema.json" in readme
    assert "additive" in readme.lower()


@pytest.mark.parametrize("name", OUTPUTS)
def test_output_schemas_are_strict(name: str) -> None:
    schema = SCHEMA[name]
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == set(schema["properties"]) - {
        "referrer_url",
        "data_processing_options_country",
        "data_processing_options_state",
    }


# --- the schemas agree with the code's lists ----------------------------------------------


def _user_data_defs() -> list[dict[str, Any]]:
    return [SCHEMA["conversion"]["$defs"]["user_data"], SCHEMA["dead_letter"]["$defs"]["user_data"]]


def test_user_data_keys_are_exactly_pii_hashed_and_plain_keys() -> None:
    for ud in _user_data_defs():
        assert ud["additionalProperties"] is False
        props = ud["properties"]
        assert set(props) == pii.HASHED_KEYS | pii.PLAIN_KEYS
        assert {k for k, v in props.items() if v.get("$ref") == "#/$defs/sha256_list"} == (
            pii.HASHED_KEYS
        )
        assert all(props[k]["type"] == "string" for k in pii.PLAIN_KEYS)
    assert _user_data_defs()[0]["properties"] == _user_data_defs()[1]["properties"]
    raw_user_data = SCHEMA["server_events"]["$defs"]["server_event"]["properties"]["user_data"]
    assert set(raw_user_data["properties"]) == pii.HASHED_KEYS | pii.PLAIN_KEYS


def test_enums_equal_the_codes_in_streams() -> None:
    error = SCHEMA["dead_letter"]["$defs"]["error"]["properties"]["code"]["enum"]
    assert set(error) == codes.ERROR_CODES
    for sources in (
        SCHEMA["conversion"]["properties"]["action_source"]["enum"],
        SCHEMA["server_events"]["$defs"]["server_event"]["properties"]["action_source"]["enum"],
    ):
        assert set(sources) == validate.ACTION_SOURCES
    mq_keys = SCHEMA["conversion"]["properties"]["match_quality"]["properties"]["keys"]
    assert set(quality.WEIGHTS) <= set(mq_keys["items"]["enum"])
    assert set(records.CONVSTREAM_FIELDS) <= set(SCHEMA["conversion"]["required"])


def test_warning_pattern_accepts_every_warning_code_and_nothing_else() -> None:
    pattern = re.compile(SCHEMA["conversion"]["properties"]["warnings"]["items"]["pattern"])
    good = [
        codes.CLIENT_CLOCK_SKEW,
        codes.EVENT_TIME_IN_MS,
        codes.FBC_TIME_IN_SECONDS,
        codes.DROPPED_UNKNOWN_USER_DATA_KEY,
        *(codes.dropped(k) for k in pii.HASHED_KEYS),
    ]
    for w in good:
        assert pattern.search(w), w
    for w in ("dropped_fbp", "dropped_", "client_clock_skew_x", "missing_currency", ""):
        assert not pattern.search(w), w


# --- input examples ----------------------------------------------------------------------


def test_every_pixel_hit_example_is_valid() -> None:
    lines = jsonl("pixel_hits.jsonl")
    assert lines
    for n, line in enumerate(lines):
        assert_valid("pixel_hit", json.loads(line), f"pixel_hits.jsonl line {n}")


@pytest.mark.parametrize(
    "query",
    ["id=1&ev=X&dpo=LDU&dpoco=1&dpost=1000", "id=1&ev=X&dpo=LDU&dpoco=0&dpost=0", "id=1&ev=X&dpo="],
)
def test_pixel_hit_schema_accepts_limited_data_use(query: str) -> None:
    assert_valid("pixel_hit", {"received_at": 1795400000.0, "query": query}, query)
    params = dict(p.split("=") for p in query.split("&"))
    assert_valid("pixel_hit", {"received_at": 1795400000.0, "params": params}, query)


def test_server_event_examples_valid_except_the_deliberately_broken_ones() -> None:
    lines = jsonl("server_events.jsonl")
    assert len(lines) == 5
    verdicts: dict[int, list[ValidationError]] = {}
    for n, line in enumerate(lines):
        if n == 4:
            with pytest.raises(json.JSONDecodeError):
                json.loads(line)  # "this line is not JSON"
            continue
        verdicts[n] = errors("server_events", json.loads(line))
    assert [n for n, errs in verdicts.items() if not errs] == [0, 1, 2]
    # line 3: its second event is a Purchase without currency; the first event is fine
    (err,) = verdicts[3]
    assert list(err.absolute_path) == ["data", 1, "custom_data"]
    assert err.validator == "required" and "'currency'" in err.message


@pytest.mark.parametrize(
    ("hit", "why"),
    [
        ({"query": "id=1&ev=PageView"}, "no received_at"),
        ({"received_at": "1795400000", "query": "id=1&ev=PageView"}, "received_at a string"),
        ({"received_at": 1795400000.0}, "neither query nor params"),
        ({"received_at": 1795400000.0, "query": "ev=PageView"}, "no pixel id"),
        ({"received_at": 1795400000.0, "query": "id=12ab&ev=PageView"}, "bad pixel id"),
        ({"received_at": 1795400000.0, "params": {"id": "1"}}, "no event name"),
        ({"received_at": 1795400000.0, "params": {"id": "1", "ev": "X", "ts": 5}}, "ts number"),
        (
            {"received_at": 1795400000.0, "query": "id=1&ev=X", "params": {"id": "1", "ev": "X"}},
            "both query and params",
        ),
        (
            {"received_at": 1795400000.0, "params": {"id": "1", "ev": "X", "dpoco": "US"}},
            "LDU country not an integer (params)",
        ),
        (
            {"received_at": 1795400000.0, "params": {"id": "1", "ev": "X", "dpost": "-1"}},
            "LDU state not an integer (params)",
        ),
        (
            {"received_at": 1795400000.0, "query": "id=1&ev=X&dpo=LDU&dpoco=US"},
            "LDU country not an integer (query)",
        ),
        (
            {"received_at": 1795400000.0, "query": "id=1&dpost=CA&ev=X"},
            "LDU state not an integer (query)",
        ),
    ],
)
def test_pixel_hit_schema_rejects_invalid_hits(hit: dict[str, Any], why: str) -> None:
    assert errors("pixel_hit", hit), why


def _server_message(**event: Any) -> dict[str, Any]:
    ev = {
        "event_name": "Lead",
        "event_time": 1795400000,
        "action_source": "system_generated",
        "user_data": {"em": "a@example.org"},
    }
    ev.update(event)
    return {"received_at": 1795400000.0, "pixel_id": "1234567890", "data": [ev]}


@pytest.mark.parametrize(
    ("message", "why"),
    [
        ({**_server_message(), "data": [_server_message()["data"][0]] * 1001}, "1001 events"),
        ({**_server_message(), "data": []}, "no events"),
        ({**_server_message(), "pixel_id": "pixel-1"}, "bad pixel id"),
        (_server_message(action_source="web"), "bad action_source"),
        (_server_message(event_time="1795400000"), "event_time a string"),
        (
            _server_message(action_source="website", event_source_url="https://x.example/"),
            "website without client_user_agent",
        ),
        (_server_message(user_data={"email": "a@example.org"}), "unknown user_data key"),
        (_server_message(custom_data={"value": -1}), "negative value"),
        (_server_message(custom_data={"contents": [{"quantity": 1}]}), "contents without id"),
        (
            _server_message(event_name="Purchase", custom_data={"currency": "EUR"}),
            "Purchase without value",
        ),
    ],
)
def test_server_events_schema_rejects_invalid_messages(message: dict[str, Any], why: str) -> None:
    assert errors("server_events", message), why


# --- real outputs of the pipeline ---------------------------------------------------------


@pytest.fixture(scope="module")
def outputs() -> dict[str, list[dict[str, Any]]]:
    """The offline pipeline over the example files, as written to the output files."""
    pixel = read_lines("browser", PIXEL_TOPIC, (EXAMPLES / "pixel_hits.jsonl").read_bytes())
    server = read_lines("server", SERVER_TOPIC, (EXAMPLES / "server_events.jsonl").read_bytes())
    result = process(Settings(), ordered(pixel, server), now=1795400400.25)

    def written(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [json.loads(ln) for ln in dumps_lines(recs).splitlines()]

    return {
        "conversion": written(result.conversions),
        "dead_letter": written(result.dead_letters),
    }


def test_every_real_conversion_is_valid(outputs: dict[str, list[dict[str, Any]]]) -> None:
    assert outputs["conversion"]
    for rec in outputs["conversion"]:
        assert_valid("conversion", rec, f"conversion {rec.get('event_name')}")


def test_every_real_dead_letter_is_valid(outputs: dict[str, list[dict[str, Any]]]) -> None:
    assert outputs["dead_letter"]
    for rec in outputs["dead_letter"]:
        assert_valid("dead_letter", rec, f"dead letter at offset {rec.get('offset')}")


def test_limited_data_use_of_the_example_hit_reaches_its_conversion(
    outputs: dict[str, list[dict[str, Any]]],
) -> None:
    # pixel_hits.jsonl line 3 says dpo=LDU&dpoco=1&dpost=1000 (SPEC §2.1)
    (vc,) = [c for c in outputs["conversion"] if c["event_id"] == "vc-9"]
    assert vc["data_processing_options"] == ["LDU"]
    assert vc["data_processing_options_country"] == 1
    assert vc["data_processing_options_state"] == 1000
    assert_valid("conversion", vc)


def test_dead_letters_are_exactly_what_the_input_schema_rejects(
    outputs: dict[str, list[dict[str, Any]]],
) -> None:
    where = {(d["source_topic"], d["offset"], d["event_index"]) for d in outputs["dead_letter"]}
    # server_events.jsonl line 3 event 1 (Purchase without currency), line 4 (not JSON)
    assert where == {(SERVER_TOPIC, 3, 1), (SERVER_TOPIC, 4, None)}


def test_conversion_minus_convstream_fields_is_a_capi_server_event(
    outputs: dict[str, list[dict[str, Any]]],
) -> None:
    capi_fields = set(SCHEMA["server_events"]["$defs"]["server_event"]["properties"])
    # test_event_code is request-level in CAPI; the conversion carries it per event
    assert set(SCHEMA["conversion"]["properties"]) - set(records.CONVSTREAM_FIELDS) <= (
        capi_fields | {"test_event_code"}
    )
    for rec in [*outputs["conversion"], example("conversion")]:
        capi = {k: v for k, v in rec.items() if k not in records.CONVSTREAM_FIELDS}
        errs = errors(SERVER_EVENT, capi)
        assert not errs, [e.message for e in errs]


# --- negative cases: what the output schemas must refuse ----------------------------------

RAW_EMAIL = "john_smith@gmail.com"
HEX32 = "0123456789abcdef" * 2
HEX64 = pii.sha256_hex(RAW_EMAIL)
Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    *parents, last = path.split(".")

    def mutate(rec: dict[str, Any]) -> None:
        node = rec
        for p in parents:
            node = node[p]
        node[last] = value

    return mutate


def _del(path: str) -> Mutation:
    *parents, last = path.split(".")

    def mutate(rec: dict[str, Any]) -> None:
        node = rec
        for p in parents:
            node = node[p]
        del node[last]

    return mutate


CONVERSION_MUTATIONS: list[tuple[str, Mutation, list[Any]]] = [
    ("raw email in em", _set("user_data.em", [RAW_EMAIL]), ["user_data", "em", 0]),
    ("raw email as a string", _set("user_data.em", RAW_EMAIL), ["user_data", "em"]),
    ("unknown user_data key", _set("user_data.email", HEX64), ["user_data"]),
    ("32-hex em", _set("user_data.em", [HEX32]), ["user_data", "em", 0]),
    ("upper-case hex em", _set("user_data.em", [HEX64.upper()]), ["user_data", "em", 0]),
    ("repeated digest", _set("user_data.em", [HEX64, HEX64]), ["user_data", "em"]),
    ("empty hashed list", _set("user_data.ph", []), ["user_data", "ph"]),
    ("plain key not a string", _set("user_data.fbp", ["fb.1.2.3"]), ["user_data", "fbp"]),
    (
        "empty plain key",
        _set("user_data.client_ip_address", ""),
        ["user_data", "client_ip_address"],
    ),
    ("blank plain key", _set("user_data.fbp", " \t"), ["user_data", "fbp"]),
    ("lowercase currency", _set("custom_data.currency", "eur"), ["custom_data", "currency"]),
    ("value as a string", _set("custom_data.value", "49.9"), ["custom_data", "value"]),
    ("negative value", _set("custom_data.value", -1), ["custom_data", "value"]),
    ("Purchase without currency", _del("custom_data.currency"), ["custom_data"]),
    ("missing conversion_id", _del("conversion_id"), []),
    ("short conversion_id", _set("conversion_id", HEX32), ["conversion_id"]),
    ("missing nullable event_id", _del("event_id"), []),
    ("extra top-level field", _set("raw_event", {}), []),
    ("bad action_source", _set("action_source", "web"), ["action_source"]),
    ("event_time in float", _set("event_time", 1795399999.5), ["event_time"]),
    ("website without url", _set("event_source_url", None), ["event_source_url"]),
    ("website without user agent", _del("user_data.client_user_agent"), ["user_data"]),
    ("unknown warning", _set("warnings", ["something_odd"]), ["warnings", 0]),
    ("warning for a plain key", _set("warnings", ["dropped_fbp"]), ["warnings", 0]),
    ("score above 10", _set("match_quality.score", 10.5), ["match_quality", "score"]),
    ("unknown source", _set("sources", ["crm"]), ["sources", 0]),
    ("repeated source", _set("sources", ["server", "server"]), ["sources"]),
    ("no source", _set("sources", []), ["sources"]),
    ("bad dedup method", _set("dedup.method", "ip"), ["dedup", "method"]),
    ("negative duplicates", _set("dedup.duplicates", -1), ["dedup", "duplicates"]),
    ("pixel id not digits", _set("pixel_id", "px-1"), ["pixel_id"]),
    ("numeric content id", _set("custom_data.content_ids", [7]), ["custom_data", "content_ids", 0]),
    ("bare content_ids", _set("custom_data.content_ids", "sku-1"), ["custom_data", "content_ids"]),
    (
        "numeric contents id",
        _set("custom_data.contents", [{"id": 7}]),
        ["custom_data", "contents", 0, "id"],
    ),
]


def test_conversion_example_is_valid() -> None:
    assert_valid("conversion", example("conversion"), "examples/conversion.json")


@pytest.mark.parametrize(
    ("mutate", "path"),
    [pytest.param(m, p, id=name) for name, m, p in CONVERSION_MUTATIONS],
)
def test_conversion_schema_rejects(mutate: Mutation, path: list[Any]) -> None:
    rec = example("conversion")
    assert not errors("conversion", rec)
    mutate(rec)
    errs = errors("conversion", rec)
    assert errs, "accepted"
    assert any(list(e.absolute_path) == path for e in errs), [
        (list(e.absolute_path), e.message) for e in errs
    ]


DEAD_LETTER_MUTATIONS: list[tuple[str, Mutation, list[Any]]] = [
    (
        "raw email in the event",
        _set("event.user_data.em", [RAW_EMAIL]),
        ["event", "user_data", "em", 0],
    ),
    ("unknown user_data key", _set("event.user_data.email", RAW_EMAIL), ["event", "user_data"]),
    ("unknown event field", _set("event.payload", {"em": RAW_EMAIL}), ["event"]),
    (
        "unknown error code",
        _set("errors", [{"code": "oops", "field": None, "message": "x"}]),
        ["errors", 0, "code"],
    ),
    ("no errors", _set("errors", []), ["errors"]),
    (
        "error without field",
        _set("errors", [{"code": "missing_value", "message": "x"}]),
        ["errors", 0],
    ),
    ("pixel id not digits", _set("pixel_id", "١٢٣"), ["pixel_id"]),
    ("long event id", _set("event_id", "x" * 257), ["event_id"]),
    ("missing rejected_at", _del("rejected_at"), []),
    ("extra top-level field", _set("value", "raw message"), []),
]


def test_forward_dead_letter_example_is_valid() -> None:
    assert_valid("forward_dead_letter", example("forward_dead_letter"))
    rec = example("forward_dead_letter")
    rec["event"]["user_data"]["em"] = ["buyer@example.org"]  # raw PII cannot pass
    assert errors("forward_dead_letter", rec)


def test_dead_letter_example_is_valid() -> None:
    assert_valid("dead_letter", example("dead_letter"), "examples/dead_letter.json")


@pytest.mark.parametrize(
    ("mutate", "path"),
    [pytest.param(m, p, id=name) for name, m, p in DEAD_LETTER_MUTATIONS],
)
def test_dead_letter_schema_rejects(mutate: Mutation, path: list[Any]) -> None:
    rec = example("dead_letter")
    mutate(rec)
    errs = errors("dead_letter", rec)
    assert any(list(e.absolute_path) == path for e in errs), [
        (list(e.absolute_path), e.message) for e in errs
    ]


def test_dead_letter_of_a_whole_message_has_null_event() -> None:
    rec = example("dead_letter")
    rec.update(
        event=None,
        event_index=None,
        pixel_id=None,
        event_name=None,
        event_id=None,
        received_at=None,
    )
    rec["errors"] = [{"code": "malformed_message", "field": None, "message": "not JSON"}]
    assert_valid("dead_letter", rec)


# --- attribution candidates ---------------------------------------------------------------


def test_attribution_candidate_example_is_valid() -> None:
    assert_valid("attribution_candidate", example("attribution_candidate"))


def test_attribution_candidate_example_is_consistent() -> None:
    cand, conv = example("attribution_candidate"), example("conversion")
    assert cand["conversion_id"] == conv["conversion_id"]
    assert cand["lag_seconds"] == cand["event_time"] - cand["click_time"]
    assert cand["fbclid"] in conv["user_data"]["fbc"]
    assert cand["fbclid"] in cand["landing"]["url"]
    # the specs object is what the spec engine computes for the example ad
    actions = conversion_actions(cand["pixel_id"], cand["event_name"])
    assert match_ad(example("ad"), actions).as_dict() == cand["specs"]


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"windows": ["7d_click", "28d_click"]}, "1d_click missing for a 9999 s lag"),
        ({"lag_seconds": 90000}, "1d_click listed for a lag over one day"),
        ({"lag_seconds": 2419201, "windows": []}, "lag over 28 days"),
        ({"lag_seconds": -5}, "negative lag"),
        ({"windows": ["1d_click", "7d_click", "28d_click", "1d_click"]}, "repeated window"),
        ({"windows": ["1d_click", "7d_click", "28d_view"]}, "unknown window"),
        ({"currency": "eur"}, "lowercase currency"),
        ({"conversion_id": "abc"}, "bad conversion_id"),
        ({"landing": {"url": "https://shop.example/"}}, "landing without utm and ids"),
        (
            {"specs": {"ad_id": "23851", "conversion_spec": "yes", "tracking_specs": [2]}},
            "conversion_spec not a boolean",
        ),
        (
            {"specs": {"ad_id": "23851", "conversion_spec": True, "tracking_specs": ["2"]}},
            "tracking spec index a string",
        ),
        ({"fbc": "fb.1.2.3"}, "extra field"),
    ],
)
def test_attribution_candidate_schema_rejects(changes: dict[str, Any], why: str) -> None:
    cand = example("attribution_candidate")
    cand.update(changes)
    assert errors("attribution_candidate", cand), why


def test_attribution_candidate_without_landing_or_specs_is_valid() -> None:
    cand = example("attribution_candidate")
    cand.update(
        landing=None,
        specs=None,
        value=None,
        currency=None,
        lag_seconds=700000,
        windows=["28d_click"],
    )
    assert_valid("attribution_candidate", cand)


# --- ads ----------------------------------------------------------------------------------


def test_ad_example_is_valid_and_parse_ad_accepts_it() -> None:
    ad = example("ad")
    assert_valid("ad", ad)
    parsed = parse_ad(ad)
    assert parsed.ad_id == ad["ad_id"]
    assert parsed.tracking_specs


def test_ad_docs_example_shapes_are_valid() -> None:
    ad = example("ad")
    ad.update(
        ad_id=23851,
        objective="conversions",
        tracking_specs=[
            {"action.type": "offsite_conversion", "fb_pixel": 999},
            {"action.type": ["post_engagement"], "page": ["222"], "post.wall": [333]},
        ],
    )
    assert_valid("ad", ad)
    parse_ad(ad)


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"ad_id": None}, "no ad id"),
        ({"objective": " "}, "blank objective"),
        ({"tracking_specs": [{"fb_pixel": "1"}]}, "spec without action.type"),
        ({"tracking_specs": [{"action.type": []}]}, "empty list of values"),
        ({"tracking_specs": [{"action.type": "like", "bad key": "1"}]}, "bad key"),
        ({"tracking_specs": [{"action.type": True}]}, "boolean value"),
        ({"tracking_specs": {"action.type": "like"}}, "specs not a list"),
        (
            {"promoted_object": {"pixel_id": "px", "custom_event_type": "PURCHASE"}},
            "pixel id not digits",
        ),
        ({"creative": {"object_story_id": "222-333"}}, "bad object_story_id"),
    ],
)
def test_ad_schema_and_parse_ad_both_reject(changes: dict[str, Any], why: str) -> None:
    ad = example("ad")
    ad.update(changes)
    if changes.get("ad_id", "") is None:
        del ad["ad_id"]
    assert errors("ad", ad), why
    with pytest.raises(SpecError):
        parse_ad(ad)


# --- any input: every output the pipeline writes is valid --------------------------------
# Mostly valid events (so many become conversions), half of them with one field broken
# (so the dead-letter path is exercised too), plus arbitrary text in every user_data key.

RECEIVED_AT = 1795400000.0
_text = st.text(max_size=12)
_raw_pii = st.sampled_from(
    [
        "John_Smith@Gmail.com",
        " +1 (650) 555-1212",
        "Female",
        "2/16/1997",
        "94035-1234",
        "United States",
        "California",
        "Valéry",
        HEX64.upper(),
        HEX32,
        "",
        "  ",
    ]
)
_hashed_values = {
    k: st.one_of(
        _raw_pii,
        _text,
        st.lists(st.one_of(_raw_pii, _text, st.none()), max_size=3),
        *([st.integers(0, 10**12)] if k in pii.NUMERIC_KEYS else []),
    )
    for k in pii.HASHED_KEYS
}
_plain_values = {k: st.one_of(_text, st.sampled_from([" ", "\u3000"])) for k in pii.PLAIN_KEYS}
_user_data = st.fixed_dictionaries(
    {
        "em": st.sampled_from(["John_Smith@Gmail.com", HEX64, HEX64.upper(), "a@b.example"]),
        "client_user_agent": st.just("Mozilla/5.0 (X11; Linux x86_64)"),
    },
    optional={
        **{
            k: v
            for k, v in {**_hashed_values, **_plain_values}.items()
            if k not in ("em", "client_user_agent")
        },
        "email": _text,
    },
)
_custom_data = st.fixed_dictionaries(
    {
        "value": st.sampled_from([49.9, 0, 10, "19.99", "1e3", " 7 "]),
        "currency": st.sampled_from(["EUR", "eur", " usd ", "JPY"]),
    },
    optional={
        "contents": st.lists(
            st.fixed_dictionaries(
                {"id": st.sampled_from(["a", 7])}, optional={"quantity": st.integers(0, 9)}
            ),
            max_size=2,
        ),
        "content_ids": st.one_of(
            st.lists(st.one_of(_text, st.integers(0, 10**12), st.just(7.0)), max_size=2),
            st.sampled_from(["sku-1", 42]),
        ),
        "order_id": _text,
    },
)
_good_event = st.fixed_dictionaries(
    {
        "event_name": st.sampled_from(["Purchase", "Lead", "ViewContent", "AddToCart"]),
        "action_source": st.sampled_from(
            ["website", "app", "system_generated", "other", "physical_store"]
        ),
        "event_time": st.one_of(
            st.integers(int(RECEIVED_AT) - 6 * 86_400, int(RECEIVED_AT) + 50),
            st.just(int(RECEIVED_AT) * 1000),
            st.floats(RECEIVED_AT - 100, RECEIVED_AT),
        ),
        "event_source_url": st.sampled_from(
            ["https://shop.example/?fbclid=AbC", "https://shop.example/p"]
        ),
        "user_data": _user_data,
        "custom_data": _custom_data,
    },
    optional={
        "event_id": st.one_of(st.text(min_size=1, max_size=12), st.integers(0, 10**6)),
        "referrer_url": _text,
        "opt_out": st.booleans(),
        "data_processing_options": st.sampled_from([[], ["LDU"]]),
        "data_processing_options_country": st.sampled_from([0, 1]),
        "data_processing_options_state": st.sampled_from([0, 1000]),
        "app_data": st.just({"advertiser_tracking_enabled": 1}),
    },
)
_BREAKS: list[tuple[str, Any]] = [
    ("event_name", ""),
    ("event_name", 5),
    ("action_source", "web"),
    ("event_time", "now"),
    ("event_time", int(RECEIVED_AT) - 8 * 86_400),
    ("event_time", int(RECEIVED_AT) + 600),
    ("event_id", True),
    ("event_source_url", ""),
    ("opt_out", "no"),
    ("custom_data", []),
    ("data_processing_options", "LDU"),
    ("data_processing_options_country", "1"),
    ("user_data", None),
    ("user_data", "x"),
    ("user_data", {"ge": "f", "ct": "Paris"}),
    ("user_data.em", "not-an-email"),
    ("user_data.em", 5),
    ("user_data.fbp", 5),
    ("user_data.client_user_agent", None),
    ("custom_data.value", -1),
    ("custom_data.value", "abc"),
    ("custom_data.currency", "XX"),
    ("custom_data.currency", None),
    ("custom_data.contents", [{"quantity": 1}]),
]


def _break(event: dict[str, Any], change: tuple[str, Any]) -> dict[str, Any]:
    path, value = change
    event = json.loads(json.dumps(event))
    *parents, last = path.split(".")
    node = event
    for p in parents:
        node = node[p]
    node[last] = value
    return event


_server_event = st.one_of(
    _good_event, st.builds(_break, _good_event, st.sampled_from(_BREAKS)), st.integers(-5, 5)
)
_server_messages = st.fixed_dictionaries(
    {
        "received_at": st.just(RECEIVED_AT),
        "pixel_id": st.sampled_from(["1234567890", 1234567890, "1234567890", "", "px"]),
        "data": st.lists(_server_event, max_size=3),
    },
    optional={"test_event_code": st.sampled_from(["TEST1", "TEST1", 7])},
)
_hit_params = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["1234567890", "1234567890", "x"]),
        "ev": st.sampled_from(["Purchase", "PageView", "Lead"]),
        "dl": st.sampled_from(["https://shop.example/p?fbclid=XyZ", "https://shop.example/", ""]),
        "cd[value]": st.sampled_from(["49.90", "49.90", "x"]),
        "cd[currency]": st.sampled_from(["eur", "EUR", "XYZ"]),
    },
    optional={
        "eid": _text,
        "ts": st.sampled_from([str(int(RECEIVED_AT) * 1000), "1", "abc"]),
        "cd[contents]": st.sampled_from(['[{"id": "a"}]', "[", "[1]"]),
        "ud[em]": st.sampled_from(["Valery@Example.FR", "nope", HEX64]),
        "ud[ph]": st.sampled_from(["+33 1 23 45 67 89", "12"]),
        "ud[zz]": _text,
        "fbp": st.just("fb.1.1795300000000.123456"),
        "fbc": st.sampled_from(["fb.1.1795390000000.XyZ", ""]),
        "rl": _text,
        "dpo": st.sampled_from(["LDU", "", "LDU,"]),
        "dpoco": st.sampled_from(["0", "1", "US", ""]),
        "dpost": st.sampled_from(["0", "1000", "x"]),
    },
)
_pixel_hit = st.fixed_dictionaries(
    {
        "received_at": st.just(RECEIVED_AT),
        "params": _hit_params,
        "ip": st.sampled_from(["203.0.113.7", "203.0.113.7", ""]),
        "user_agent": st.sampled_from(["Mozilla/5.0", "Mozilla/5.0", ""]),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(server=st.lists(_server_messages, max_size=3), hits=st.lists(_pixel_hit, max_size=3))
def test_every_output_for_generated_input_is_valid(
    server: list[dict[str, Any]], hits: list[dict[str, Any]]
) -> None:
    lines = [Line("server", SERVER_TOPIC, n, orjson.dumps(m)) for n, m in enumerate(server)]
    lines += [Line("browser", PIXEL_TOPIC, n, orjson.dumps(h)) for n, h in enumerate(hits)]
    result = process(Settings(), lines, now=RECEIVED_AT + 1)
    for rec in result.conversions:
        assert_valid("conversion", orjson.loads(orjson.dumps(rec)))
    for rec in result.dead_letters:
        assert_valid("dead_letter", orjson.loads(orjson.dumps(rec)))


def _run(source: Source, message: dict[str, Any]) -> Result:
    out = Result()
    topic = SERVER_TOPIC if source == "server" else PIXEL_TOPIC
    Pipeline(Settings()).process(
        source, orjson.dumps(message), Origin(topic, 0, 0), RECEIVED_AT + 1, out
    )
    return out


def test_dead_letter_pixel_id_is_ascii_digits() -> None:
    out = _run("server", {**_server_message(), "pixel_id": "\u0661\u0662\u0663"})
    (dead,) = out.dead_letters
    assert dead["pixel_id"] is None
    assert_valid("dead_letter", dead)


@pytest.mark.parametrize("blank", ["", "  ", "\t"])
def test_conversion_has_no_blank_plain_user_data_value(blank: str) -> None:
    msg = _server_message(user_data={"em": "a@example.org", "client_ip_address": blank})
    (conv,) = _run("server", msg).conversions
    assert "client_ip_address" not in conv["user_data"]
    assert_valid("conversion", conv)
