"""Action specs, default tracking specs, conversion specs and matching (SPEC §9).

Pure functions over JSON-shaped values; the tables they read are in
``streams/spec_tables.py`` and every rule is explained in ``docs/specs.md``.

- A *spec* is normalized to ``{key: (value, ...)}``: array notation, values as strings,
  deduplicated and sorted, so two specs are equal exactly when ``==`` says so.
- An *action* is ``{key: value}`` with string values, e.g. the conversion action
  ``{"action.type": "offsite_conversion", "fb_pixel": "1", "offsite_conversion.event":
  "Purchase"}``.
- A spec matches an action when every key of the spec is in the action and the action's
  value is among the spec's values; meta action types (``post_engagement``...) in a spec
  stand for the action types they cover.

Bad input raises :class:`SpecError` with the path of the offending field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from streams import spec_tables as t

Spec = Mapping[str, tuple[str, ...]]
Action = Mapping[str, str]

ACTION_TYPE: Final = "action.type"
ROOT: Final = "$"

_KEY_RE: Final = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*")
_DIGITS_RE: Final = re.compile(r"[0-9]+")
_STORY_RE: Final = re.compile(r"([0-9]+)_([0-9]+)")
#: Goals that are "an action" in the seed's bid-type definitions (oCPM, CPA).
_ACTION_GOALS: Final = t.PIXEL_GOALS | {row.goal for row in t.CONVERSION_SPEC_ROWS}


class SpecError(ValueError):
    """A malformed spec, action or ad. ``path`` names the field, e.g.
    ``promoted_object.pixel_id`` or ``tracking_specs[0]["action.type"]``."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


# --- specs and actions --------------------------------------------------------
def _sub(path: str, key: str) -> str:
    return f'{path}["{key}"]'


def _key(key: object, path: str) -> str:
    if not isinstance(key, str) or not key:
        raise SpecError(path, f"keys must be non-empty strings, got {key!r}")
    if not _KEY_RE.fullmatch(key):
        raise SpecError(_sub(path, key), "a key is dot-separated words of [A-Za-z0-9_]")
    return key


def _scalar(value: object, path: str) -> str:
    """An id or word given as a string or an integer, as a string."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise SpecError(path, f"must be a string or an integer, got {type(value).__name__}")
    text = str(value)
    if not text.strip():
        raise SpecError(path, "must not be empty")
    return text


def normalize_spec(obj: object, path: str = ROOT) -> Spec:
    """Validate an action spec and return it in canonical array notation.

    ``{'action.type': 'like', 'page': 1}`` and ``{'action.type': ['like'], 'page':
    ['1']}`` give the same result. Raises :class:`SpecError` when ``obj`` is not an object,
    is empty, lacks ``action.type``, has a bad key, or a value that is not a string, an
    integer or a non-empty list of those.
    """
    if not isinstance(obj, Mapping):
        raise SpecError(path, f"an action spec must be an object, got {type(obj).__name__}")
    if not obj:
        raise SpecError(path, "an action spec must have at least one key")
    spec: dict[str, tuple[str, ...]] = {}
    for raw_key, raw_value in obj.items():
        key = _key(raw_key, path)
        at = _sub(path, key)
        if isinstance(raw_value, list | tuple):
            if not raw_value:
                raise SpecError(at, "a list of values must not be empty")
            values = {_scalar(v, f"{at}[{i}]") for i, v in enumerate(raw_value)}
        else:
            values = {_scalar(raw_value, at)}
        spec[key] = tuple(sorted(values))
    if ACTION_TYPE not in spec:
        raise SpecError(_sub(path, ACTION_TYPE), "missing: every action spec names its action")
    return spec


def normalize_action(obj: object, path: str = ROOT) -> Action:
    """Validate an action (``{key: value}``, one value per key) with string values."""
    if not isinstance(obj, Mapping):
        raise SpecError(path, f"an action must be an object, got {type(obj).__name__}")
    action = {_key(k, path): _scalar(v, _sub(path, str(k))) for k, v in obj.items()}
    if ACTION_TYPE not in action:
        raise SpecError(_sub(path, ACTION_TYPE), "missing: every action has an action.type")
    return action


def spec_to_json(spec: Spec) -> dict[str, list[str]]:
    """A spec as a JSON-ready object in array notation."""
    return {key: list(values) for key, values in spec.items()}


def expand_action_types(types: Iterable[str]) -> frozenset[str]:
    """The action types a spec's ``action.type`` values cover: each meta spec
    (``app_engagement``, ``page_engagement``, ``post_engagement``) adds the action types
    Meta lists for it, and stays in the set itself."""
    expanded: set[str] = set()
    for action_type in types:
        expanded.add(action_type)
        expanded.update(t.META_SPECS.get(action_type, ()))
    return frozenset(expanded)


def _allowed(spec: Spec, key: str) -> frozenset[str]:
    values = spec[key]
    return expand_action_types(values) if key == ACTION_TYPE else frozenset(values)


def spec_matches(spec: Spec, action: Action) -> bool:
    """True when every key of ``spec`` is in ``action`` with one of the allowed values."""
    return all(key in action and action[key] in _allowed(spec, key) for key in spec)


def explain_match(spec: Spec, action: Action) -> list[str]:
    """Why ``spec`` does not match ``action``: one reason per failing key; [] on a match."""
    reasons: list[str] = []
    for key, values in spec.items():
        if key not in action:
            reasons.append(f'"{key}" missing from the action (spec wants one of {list(values)})')
        elif action[key] not in _allowed(spec, key):
            covers = ""
            metas = [v for v in values if v in t.META_SPECS]
            if key == ACTION_TYPE and metas:
                covers = f", which cover {sorted(expand_action_types(metas) - set(metas))}"
            reasons.append(f'"{key}": {action[key]!r} is not among {list(values)}{covers}')
    return reasons


# --- ads ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AdDef:
    """A validated ad definition (SPEC §9). ``ids`` maps placeholder names
    (``PAGE_ID``, ``POST_ID``, ``FACEBOOK_PIXEL_ID``, ``APPLICATION_ID``, ``EVENT_ID``,
    ``OFFER_ID``) to the ids the ad provides."""

    ad_id: str
    objective: str
    optimization_goal: str | None
    billing_event: str | None
    creative_type: str | None
    ids: Mapping[str, str]
    custom_event_type: str | None
    custom_event_str: str | None
    promotes_catalog: bool
    tracking_specs: tuple[Spec, ...]


def _object(obj: object, path: str, *, optional: bool) -> Mapping[str, object]:
    if obj is None and optional:
        return {}
    if not isinstance(obj, Mapping):
        raise SpecError(path, f"must be an object, got {type(obj).__name__}")
    return obj


def _word(value: object, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SpecError(path, f"must be a non-empty string, got {value!r}")
    return value.strip().upper()


def _enum(value: object, path: str) -> str | None:
    """An upper-cased enum value (objective, goal, ...), None when absent."""
    return None if value is None else _word(value, path)


def _numeric_id(obj: Mapping[str, object], key: str, path: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, str) and _DIGITS_RE.fullmatch(value):
        return value
    raise SpecError(path, f"must be a numeric id (digits, string or integer), got {value!r}")


def _creative_ids(creative: Mapping[str, object]) -> tuple[list[tuple[str, str]], str | None]:
    """(page id candidates with their paths, post id) from the ad's ``creative``."""
    pages: list[tuple[str, str]] = []
    page = _numeric_id(creative, "page_id", "creative.page_id")
    if page is not None:
        pages.append((page, "creative.page_id"))
    post: str | None = None
    for key in ("post_id", "object_story_id", "effective_object_story_id"):
        value = creative.get(key)
        if value is None:
            continue
        path = f"creative.{key}"
        text = _scalar(value, path)
        story = _STORY_RE.fullmatch(text)
        if story:
            pages.append((story.group(1), path))
            text = story.group(2)
        elif key != "post_id" or not _DIGITS_RE.fullmatch(text):
            wanted = "a post id or " if key == "post_id" else ""
            raise SpecError(path, f"must be {wanted}'<page id>_<post id>', got {text!r}")
        if post is None:
            post = text
        elif post != text:
            raise SpecError(path, f"post {text} differs from the post {post} named before")
    return pages, post


def _first(candidates: list[tuple[str, str]]) -> str | None:
    if not candidates:
        return None
    first = candidates[0][0]
    for value, path in candidates[1:]:
        if value != first:
            raise SpecError(
                path,
                f"page {value} differs from page {first} (the creative must "
                "promote the promoted object's page)",
            )
    return first


def parse_ad(obj: object) -> AdDef:
    """Validate an ad definition (SPEC §9 plus an optional ``creative`` object; see
    docs/specs.md). Raises :class:`SpecError` naming the bad field."""
    ad = _object(obj, ROOT, optional=False)
    ad_id = ad.get("ad_id")
    if ad_id is None:
        raise SpecError("ad_id", "missing")
    if ad.get("objective") is None:
        raise SpecError("objective", "missing")
    objective = _word(ad["objective"], "objective")
    goal = _enum(ad.get("optimization_goal"), "optimization_goal")
    creative_type = _enum(ad.get("creative_type"), "creative_type")
    if creative_type is not None:
        creative_type = t.CREATIVE_TYPE_ALIASES.get(creative_type, creative_type)
        if creative_type not in t.CREATIVE_TYPES:
            raise SpecError(
                "creative_type",
                f"unknown creative type {creative_type!r}; one of {sorted(t.CREATIVE_TYPES)}",
            )
    promoted = _object(ad.get("promoted_object"), "promoted_object", optional=True)
    creative = _object(ad.get("creative"), "creative", optional=True)

    def pid(key: str) -> str | None:
        return _numeric_id(promoted, key, f"promoted_object.{key}")

    pages, post = _creative_ids(creative)
    page = pid("page_id")
    ids_in = {
        t.PAGE_ID.name: _first(([(page, "promoted_object.page_id")] if page else []) + pages),
        t.POST_ID.name: post,
        t.PIXEL_ID.name: pid("pixel_id"),
        t.APPLICATION_ID.name: pid("application_id"),
        t.EVENT_ID.name: pid("event_id") or _numeric_id(creative, "event_id", "creative.event_id"),
        t.OFFER_ID.name: pid("offer_id") or _numeric_id(creative, "offer_id", "creative.offer_id"),
    }
    ids = {name: value for name, value in ids_in.items() if value is not None}
    catalog = pid("product_set_id") is not None or pid("product_catalog_id") is not None
    event_type = _enum(promoted.get("custom_event_type"), "promoted_object.custom_event_type")
    event_str: str | None = None
    if promoted.get("custom_event_str") is not None:
        event_str = _scalar(promoted["custom_event_str"], "promoted_object.custom_event_str")
    _check_goal(goal, ids, event_type)

    raw_specs = ad.get("tracking_specs")
    if raw_specs is None:
        raw_specs = []
    if not isinstance(raw_specs, list):
        raise SpecError(
            "tracking_specs", f"must be a list of action specs, got {type(raw_specs).__name__}"
        )
    specs = tuple(normalize_spec(s, f"tracking_specs[{i}]") for i, s in enumerate(raw_specs))
    return AdDef(
        ad_id=_scalar(ad_id, "ad_id"),
        objective=objective,
        optimization_goal=goal,
        billing_event=_enum(ad.get("billing_event"), "billing_event"),
        creative_type=creative_type,
        ids=ids,
        custom_event_type=event_type,
        custom_event_str=event_str,
        promotes_catalog=catalog,
        tracking_specs=specs,
    )


def _check_goal(goal: str | None, ids: Mapping[str, str], event_type: str | None) -> None:
    """The promoted object fields a goal's conversion spec cannot do without."""
    if goal in t.PIXEL_GOALS:
        if t.PIXEL_ID.name in ids:
            path = "promoted_object.custom_event_type"
            if event_type is None:
                raise SpecError(path, f"required with pixel_id for optimization_goal {goal}")
            if event_type != t.OTHER_EVENT_TYPE and event_type not in t.CUSTOM_EVENT_TYPE_EVENTS:
                known = [*sorted(t.CUSTOM_EVENT_TYPE_EVENTS), t.OTHER_EVENT_TYPE]
                raise SpecError(path, f"{event_type!r} is not a pixel event type; one of {known}")
        elif t.APPLICATION_ID.name not in ids:
            raise SpecError(
                "promoted_object.pixel_id",
                f"required for optimization_goal {goal} (or application_id for app events)",
            )
    elif goal == "APP_INSTALLS" and t.APPLICATION_ID.name not in ids:
        raise SpecError(
            "promoted_object.application_id", "required for optimization_goal APP_INSTALLS"
        )


def _ad(ad: AdDef | Mapping[str, object]) -> AdDef:
    return ad if isinstance(ad, AdDef) else parse_ad(ad)


def table_objective(ad: AdDef | Mapping[str, object]) -> str | None:
    """The objective of the seed's table whose rows apply to ``ad`` (None: no rows).

    Table objectives stand for themselves; current Meta objectives use
    ``spec_tables.OBJECTIVE_ALIASES`` (OUTCOME_ENGAGEMENT with goal PAGE_LIKES or
    EVENT_RESPONSES uses that objective, OUTCOME_SALES promoting a catalog or with a
    dynamic product creative uses PRODUCT_CATALOG_SALES).
    """
    a = _ad(ad)
    if a.objective in t.TABLE_OBJECTIVES:
        return a.objective
    by_goal = t.ENGAGEMENT_GOAL_OBJECTIVES.get(a.optimization_goal or "")
    if a.objective == "OUTCOME_ENGAGEMENT" and by_goal is not None:
        return by_goal
    if a.objective == "OUTCOME_SALES" and (
        a.promotes_catalog or a.creative_type == t.DYNAMIC_PRODUCT
    ):
        return "PRODUCT_CATALOG_SALES"
    return t.OBJECTIVE_ALIASES.get(a.objective)


def bid_type(ad: AdDef | Mapping[str, object]) -> str | None:
    """The seed's bid type: CPM, CPC, oCPM or CPA (None when none of them fits)."""
    a = _ad(ad)
    billing, goal = a.billing_event, a.optimization_goal
    if billing == goal == "IMPRESSIONS":
        return "CPM"
    if billing == goal == "CLICKS":
        return "CPC"
    if goal in _ACTION_GOALS:
        if billing == "IMPRESSIONS":
            return "oCPM"
        if billing == goal:
            return "CPA"
    return None


# --- resolution ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ResolvedSpec:
    """A tracking spec and where it came from: ``default:<row>`` or ``custom[<i>]``."""

    spec: Spec
    source: str


@dataclass(frozen=True, slots=True)
class Skipped:
    """A table spec left out because the ad lacks ids it needs (names of placeholders)."""

    source: str
    spec: Mapping[str, tuple[str, ...]]
    missing: tuple[str, ...]


def _fill(template: t.Template, ids: Mapping[str, str]) -> Spec | tuple[str, ...]:
    """The template with placeholders filled in, or the names of the missing ids."""
    missing = sorted(
        {
            v.name
            for vs in template.values()
            for v in vs
            if isinstance(v, t.Placeholder) and v.name not in ids
        }
    )
    if missing:
        return tuple(missing)
    return {
        key: tuple(sorted({v if isinstance(v, str) else ids[v.name] for v in values}))
        for key, values in template.items()
    }


def _shape(template: t.Template) -> dict[str, tuple[str, ...]]:
    return {k: tuple(v if isinstance(v, str) else v.name for v in vs) for k, vs in template.items()}


def _row_applies(row: t.DefaultRow, a: AdDef, objective: str | None, sampled: bool) -> bool:
    return (
        row.objective == objective
        and (row.creatives is None or a.creative_type in row.creatives)
        and (row.goal_is is None or a.optimization_goal == row.goal_is)
        and (row.goal_is_not is None or a.optimization_goal != row.goal_is_not)
        and (not row.requires_pixel or t.PIXEL_ID.name in a.ids)
        and (sampled or not row.sampled)
    )


def _defaults(
    a: AdDef, objective: str | None, include_sampled: bool
) -> tuple[list[ResolvedSpec], list[Skipped], list[str]]:
    specs: list[ResolvedSpec] = []
    skipped: list[Skipped] = []
    notes: list[str] = []
    if objective is None:
        notes.append(f"objective {a.objective}: no default tracking specs in Meta's table")
        return specs, skipped, notes
    if a.creative_type is None and any(
        r.objective == objective and r.creatives is not None for r in t.DEFAULT_TRACKING_ROWS
    ):
        notes.append(
            f"no creative_type: {objective} rows that depend on the creative were not applied"
        )
    for row in t.DEFAULT_TRACKING_ROWS:
        if not _row_applies(row, a, objective, include_sampled):
            continue
        source = f"default:{row.row_id}"
        if row.note:
            notes.append(f"{row.row_id}: {row.note}")
        for template in row.specs:
            filled = _fill(template, a.ids)
            if isinstance(filled, tuple):
                skipped.append(Skipped(source, _shape(template), filled))
            else:
                specs.append(ResolvedSpec(filled, source))
    return specs, skipped, notes


def _event_name(a: AdDef) -> str | None:
    if a.custom_event_type == t.OTHER_EVENT_TYPE:
        return a.custom_event_str
    return t.CUSTOM_EVENT_TYPE_EVENTS.get(a.custom_event_type or "")


def _conversion(a: AdDef) -> tuple[ResolvedSpec | None, Skipped | None, str | None]:
    goal = a.optimization_goal
    if goal in t.PIXEL_GOALS:
        if t.PIXEL_ID.name not in a.ids:  # app events (validated in parse_ad)
            app = _fill(t.APP_EVENT_CONVERSION_SPEC, a.ids)
            assert not isinstance(app, tuple)
            return ResolvedSpec(app, f"goal:{goal}/app_events"), None, None
        event = _event_name(a)
        if event is None:
            return (
                None,
                None,
                (
                    "custom_event_type OTHER without custom_event_str: a custom "
                    "conversion's rule is unknown to convstream, no conversion spec"
                ),
            )
        spec = _fill(t.PIXEL_CONVERSION_SPEC, {**a.ids, t.EVENT_NAME.name: event})
        assert not isinstance(spec, tuple)
        return ResolvedSpec(spec, f"goal:{goal}/pixel"), None, None
    for row in t.CONVERSION_SPEC_ROWS:
        if row.goal == goal and (row.creatives is None or a.creative_type in row.creatives):
            source = f"goal:{row.row_id}"
            filled = _fill(row.spec, a.ids)
            if isinstance(filled, tuple):
                return None, Skipped(source, _shape(row.spec), filled), None
            return ResolvedSpec(filled, source), None, None
    creative = f" and creative_type {a.creative_type}" if a.creative_type else ""
    return None, None, f"no conversion spec for optimization_goal {goal}{creative}"


def _spec_id(spec: Spec) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple(sorted(spec.items()))


@dataclass(frozen=True, slots=True)
class ResolvedAd:
    """An ad's tracking specs (indexes are what ``SpecMatch.tracking_specs`` refers to)
    and conversion spec, with where each came from and what was left out and why."""

    ad: AdDef
    table_objective: str | None
    rule: str
    tracking_specs: tuple[ResolvedSpec, ...]
    conversion_spec: ResolvedSpec | None
    skipped: tuple[Skipped, ...]
    notes: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        conv = self.conversion_spec
        return {
            "ad_id": self.ad.ad_id,
            "objective": self.ad.objective,
            "table_objective": self.table_objective,
            "optimization_goal": self.ad.optimization_goal,
            "bid_type": bid_type(self.ad),
            "custom_specs_rule": self.rule,
            "tracking_specs": [spec_to_json(r.spec) for r in self.tracking_specs],
            "tracking_spec_sources": [r.source for r in self.tracking_specs],
            "conversion_spec": spec_to_json(conv.spec) if conv else None,
            "conversion_spec_source": conv.source if conv else None,
            "skipped": [
                {"source": s.source, "spec": spec_to_json(s.spec), "missing": list(s.missing)}
                for s in self.skipped
            ],
            "notes": list(self.notes),
        }


def resolve_ad(ad: AdDef | Mapping[str, object], *, include_sampled: bool = False) -> ResolvedAd:
    """Resolve an ad's tracking specs and conversion spec (the catalog can keep the result).

    Defaults come from the seed's table; the ad's own ``tracking_specs`` are added after
    them, or replace them for APP_INSTALLS / OUTCOME_ENGAGEMENT ads that have some. Specs
    equal to an earlier one are dropped. ``include_sampled`` adds rows Meta applies to a
    sample of ads only (dwell).
    """
    a = _ad(ad)
    objective = table_objective(a)
    defaults, skipped, notes = _defaults(a, objective, include_sampled)
    custom = [ResolvedSpec(s, f"custom[{i}]") for i, s in enumerate(a.tracking_specs)]
    rule = "replace" if a.objective in t.OVERWRITE_OBJECTIVES else "add"
    if rule == "replace" and custom:
        if defaults:
            notes.append(
                f"objective {a.objective}: custom tracking specs replace the "
                f"{len(defaults)} default(s)"
            )
        candidates = custom
    else:
        candidates = defaults + custom
    seen: set[tuple[tuple[str, tuple[str, ...]], ...]] = set()
    specs: list[ResolvedSpec] = []
    for candidate in candidates:
        key = _spec_id(candidate.spec)
        if key not in seen:
            seen.add(key)
            specs.append(candidate)
    conv, conv_skipped, conv_note = _conversion(a)
    if conv_skipped:
        skipped.append(conv_skipped)
    if conv_note:
        notes.append(conv_note)
    return ResolvedAd(a, objective, rule, tuple(specs), conv, tuple(skipped), tuple(notes))


def default_tracking_specs(
    ad: AdDef | Mapping[str, object], *, include_sampled: bool = False
) -> list[Spec]:
    """The default tracking specs of Meta's table for ``ad`` (ids filled in; a spec whose
    ids the ad lacks is left out, see ``resolve_ad(...).skipped``)."""
    a = _ad(ad)
    return [r.spec for r in _defaults(a, table_objective(a), include_sampled)[0]]


def resolve_tracking_specs(ad: AdDef | Mapping[str, object]) -> list[Spec]:
    """Defaults plus custom specs (custom only, when given, for APP_INSTALLS and
    OUTCOME_ENGAGEMENT), without repeats."""
    return [r.spec for r in resolve_ad(ad).tracking_specs]


def conversion_spec(ad: AdDef | Mapping[str, object]) -> Spec | None:
    """The conversion spec Meta derives from the optimization goal and promoted object
    (None when the goal has none, or the ad lacks the ids it needs)."""
    conv = _conversion(_ad(ad))[0]
    return conv.spec if conv else None


def resolve(ad: AdDef | Mapping[str, object]) -> dict[str, object]:
    """``resolve_ad`` as a JSON-ready object (``convstream specs resolve AD.json``)."""
    return resolve_ad(ad).as_dict()


# --- conversions as actions ---------------------------------------------------
def conversion_actions(
    pixel_id: str | int,
    event_name: str,
    action_source: str | None = None,
    has_lead_id: bool = False,
) -> list[Action]:
    """The actions a conversion is (SPEC §9): always the pixel's ``offsite_conversion``;
    a CRM lead event (action_source system_generated with a lead_id) is also a
    ``leadgen_quality_conversion`` on the pixel, which is also its dataset."""
    pixel = _numeric_id({"pixel_id": pixel_id}, "pixel_id", "pixel_id")
    if pixel is None:
        raise SpecError("pixel_id", "missing")
    event = _scalar(event_name, "event_name")
    actions: list[Action] = [
        {
            ACTION_TYPE: t.OFFSITE_CONVERSION,
            "fb_pixel": pixel,
            "offsite_conversion.event": event,
        }
    ]
    if action_source == t.CRM_ACTION_SOURCE and has_lead_id:
        actions.append(
            {ACTION_TYPE: t.LEADGEN_QUALITY_CONVERSION, "fb_pixel": pixel, "dataset": pixel}
        )
    return actions


def actions_from_event(obj: object) -> list[Action]:
    """Actions from a conversion record (SPEC §7: pixel_id, event_name, action_source,
    user_data.lead_id), a server event with pixel_id, one action, or a list of actions."""
    if isinstance(obj, list):
        return [normalize_action(a, f"[{i}]") for i, a in enumerate(obj)]
    record = _object(obj, ROOT, optional=False)
    if ACTION_TYPE in record:
        return [normalize_action(record)]
    if "pixel_id" not in record or "event_name" not in record:
        raise SpecError(
            ROOT,
            "expected a conversion (pixel_id, event_name), an action "
            "(action.type) or a list of actions",
        )
    user_data = _object(record.get("user_data"), "user_data", optional=True)
    source = record.get("action_source")
    event = record["event_name"]
    if not isinstance(event, str):
        raise SpecError("event_name", f"must be a string, got {type(event).__name__}")
    pixel = record["pixel_id"]
    if isinstance(pixel, bool) or not isinstance(pixel, str | int):
        raise SpecError("pixel_id", f"must be a numeric id, got {pixel!r}")
    return conversion_actions(
        pixel, event, source if isinstance(source, str) else None, bool(user_data.get("lead_id"))
    )


# --- matching -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SpecMatch:
    """Which tracking specs (indexes into the resolved list) matched any of the actions,
    and whether the conversion spec did: SPEC §8 ``specs``."""

    ad_id: str
    tracking_specs: list[int]
    conversion_spec: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "ad_id": self.ad_id,
            "conversion_spec": self.conversion_spec,
            "tracking_specs": list(self.tracking_specs),
        }


def _resolved(ad: ResolvedAd | AdDef | Mapping[str, object]) -> ResolvedAd:
    return ad if isinstance(ad, ResolvedAd) else resolve_ad(ad)


def match_ad(ad: ResolvedAd | AdDef | Mapping[str, object], actions: Sequence[Action]) -> SpecMatch:
    """Match an ad's resolved specs against a conversion's actions."""
    r = _resolved(ad)
    acts = [normalize_action(a, f"actions[{i}]") for i, a in enumerate(actions)]
    tracking = [
        i for i, rs in enumerate(r.tracking_specs) if any(spec_matches(rs.spec, a) for a in acts)
    ]
    conv = r.conversion_spec is not None and any(
        spec_matches(r.conversion_spec.spec, a) for a in acts
    )
    return SpecMatch(r.ad.ad_id, tracking, conv)


def _why_not(spec: Spec, acts: Sequence[Action]) -> list[tuple[int, list[str]]] | None:
    """None when ``spec`` matches one of ``acts``, else each action's reasons."""
    why = [(i, explain_match(spec, a)) for i, a in enumerate(acts)]
    return None if any(not reasons for _, reasons in why) else why


def _explain_one(rs: ResolvedSpec, acts: Sequence[Action]) -> dict[str, object]:
    why = _why_not(rs.spec, acts)
    return {
        "spec": spec_to_json(rs.spec),
        "source": rs.source,
        "matched": why is None,
        "why_not": [{"action": i, "reasons": w} for i, w in why or []],
    }


def explain(ad: ResolvedAd | AdDef | Mapping[str, object], event: object) -> dict[str, object]:
    """What ``convstream specs match AD.json EVENT.json`` reports (as JSON): the event's
    actions, each resolved spec with whether it matched and, if not, why not, the match."""
    r = _resolved(ad)
    acts = actions_from_event(event)
    tracking = [{"index": i, **_explain_one(rs, acts)} for i, rs in enumerate(r.tracking_specs)]
    conv = _explain_one(r.conversion_spec, acts) if r.conversion_spec else None
    return {
        "ad_id": r.ad.ad_id,
        "actions": [dict(a) for a in acts],
        "match": match_ad(r, acts).as_dict(),
        "tracking_specs": tracking,
        "conversion_spec": conv,
        "notes": list(r.notes),
    }


def explain_lines(ad: ResolvedAd | AdDef | Mapping[str, object], event: object) -> list[str]:
    """The same report as lines of text for a terminal."""
    r = _resolved(ad)
    acts = actions_from_event(event)
    match = match_ad(r, acts)
    lines = [
        f"ad {r.ad.ad_id}: tracking_specs {match.tracking_specs} matched, "
        f"conversion_spec {'matched' if match.conversion_spec else 'not matched'}"
    ]
    lines.extend(f"  action {i}: {dict(a)}" for i, a in enumerate(acts))
    entries: list[tuple[str, ResolvedSpec | None]] = [
        (f"tracking_specs[{i}]", rs) for i, rs in enumerate(r.tracking_specs)
    ]
    entries.append(("conversion_spec", r.conversion_spec))
    for label, rs in entries:
        if rs is None:
            lines.append(f"  {label}: none")
            continue
        why = _why_not(rs.spec, acts)
        verdict = "MATCH" if why is None else "no match"
        lines.append(f"  {label} {spec_to_json(rs.spec)} ({rs.source}): {verdict}")
        for i, reasons in why or []:
            lines.extend(f"    action {i}: {reason}" for reason in reasons)
    lines.extend(f"  note: {note}" for note in r.notes)
    return lines
