"""SPEC §8 attribution candidates as pure steps over a key-value state.

A conversion's click evidence is its ``fbc`` (``fb.<n>.<creation time>.<fbclid>[.<appendix>]``)
and the ``fbclid`` query parameter of its event_source_url. Attribution runs in two steps,
so that the landing state of one fbclid and every lookup of it meet on one partition:

1. ``route`` (where conversions are read): one small message per distinct fbclid, keyed
   by the fbclid. ``hit`` is set when the conversion's own URL carried the fbclid: that URL
   is a landing page (any event counts, PageView included).
2. ``Attributor.handle`` (on the fbclid partition): keeps the first landing of each fbclid
   (the hit with the smallest event_time, so arrival order does not matter) and turns the
   message into a candidate when the click is 0 to 28 days before the conversion.

Landing state, keyed by fbclid: ``{"url", "utm", "ad_id", "campaign_id", "adset_id",
"time"}`` (``time`` is the hit's event_time; it is dropped in a candidate). The caller
deletes entries for which ``landing_expired`` is true. Time is the data's: event_time
decides lags, nothing reads a clock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from streams import codes, query, specs

WINDOWS: Final = (("1d_click", 86_400), ("7d_click", 604_800), ("28d_click", 2_419_200))
LANDING_TTL: Final = 2_419_200
LANDING_PARAMS: Final = ("ad_id", "campaign_id", "adset_id")

_MS_DIGITS: Final = 13
_S_DIGITS: Final = 10

Tally = Counter[tuple[str, ...]]
Catalog = Callable[[str], specs.ResolvedAd | None]


@dataclass(frozen=True, slots=True, init=False)
class Fbc:
    """A parsed ``fbc`` value. ``in_seconds``: the creation time had 10 digits (seconds)
    instead of Meta's 13 (milliseconds). (A written ``__init__``: see model.py.)"""

    fbclid: str
    click_time: int
    in_seconds: bool

    def __init__(self, fbclid: str, click_time: int, in_seconds: bool) -> None:
        object.__setattr__(self, "fbclid", fbclid)
        object.__setattr__(self, "click_time", click_time)
        object.__setattr__(self, "in_seconds", in_seconds)


@dataclass(frozen=True, slots=True, init=False)
class Click:
    """One distinct fbclid of a conversion; ``fbc_time`` when it came from the fbc."""

    fbclid: str
    fbc_time: int | None

    def __init__(self, fbclid: str, fbc_time: int | None) -> None:
        object.__setattr__(self, "fbclid", fbclid)
        object.__setattr__(self, "fbc_time", fbc_time)


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def parse_fbc(value: object) -> Fbc | None:
    """The fbclid and click time of an fbc, or None when it is not click evidence.

    The fbclid is case-sensitive and kept byte-exact; only whitespace around the whole
    value is stripped.
    """
    if not isinstance(value, str):
        return None
    parts = value.strip().split(".")
    if len(parts) not in (4, 5) or "" in parts or parts[0] != "fb":
        return None
    _, index, created, fbclid = parts[:4]
    if not _digits(index) or not _digits(created):
        return None
    if len(created) == _MS_DIGITS:
        return Fbc(fbclid, int(created) // 1000, in_seconds=False)
    if len(created) == _S_DIGITS:
        return Fbc(fbclid, int(created), in_seconds=True)
    return None


def fbc_warning(user_data: Mapping[str, Any]) -> str | None:
    """``fbc_time_in_seconds`` when the fbc's creation time is in seconds, else None."""
    fbc = parse_fbc(user_data.get("fbc"))
    return codes.FBC_TIME_IN_SECONDS if fbc is not None and fbc.in_seconds else None


Params = tuple[tuple[str, str], ...]
_CACHED_URL_MAX: Final = 2048  # longer URLs are split every time (bounds the memo's memory)


def _split_query(url: str) -> Params:
    try:
        found = query.pairs(query.url_query(url))
    except ValueError:
        return ()
    kept: list[tuple[str, str]] = []
    for k, v in found:
        if v.strip():
            kept.append((k, v))
    return tuple(kept)


# One conversion's URL is split up to three times (click evidence, routing, landing):
# remembered for the last few thousand URLs. Process memory only, like the URL itself.
_split_query_cached: Final = lru_cache(maxsize=4096)(_split_query)


def _query(url: object) -> Params:
    """The decoded query parameters of a URL, in order, without blank values."""
    if not isinstance(url, str):
        return ()
    return _split_query_cached(url) if len(url) <= _CACHED_URL_MAX else _split_query(url)


def _first(params: Params, name: str) -> str | None:
    for k, v in params:
        if k == name:
            return v
    return None


def _has_removed(url: str) -> bool:
    """True when ``url`` holds a character urlsplit removes (tab, CR, LF)."""
    return "\t" in url or "\n" in url or "\r" in url


def fbclid_from_url(url: object) -> str | None:
    """The first non-blank ``fbclid`` query parameter of a URL (not of its fragment)."""
    if not isinstance(url, str):
        return None
    # most URLs carry no click id: without "fbclid", a %-escape that could spell it or a
    # character urlsplit removes before splitting ("fbc\tlid" is fbclid to it), no
    # parameter can be named fbclid: nothing to split
    if "fbclid" not in url and "%" not in url and not _has_removed(url):
        return None
    return _first(_query(url), "fbclid")


def landing_from_url(url: str, event_time: int) -> dict[str, Any]:
    """The landing state value of a hit: its URL, utm_* parameters (keyed without the
    prefix) and Meta's dynamic URL parameters; first occurrence of each wins."""
    params = _query(url)
    utm: dict[str, str] = {}
    for k, v in params:
        if k.startswith("utm_") and len(k) > 4:
            utm.setdefault(k[4:], v)
    landing: dict[str, Any] = {"url": url, "utm": utm}
    landing.update((name, _first(params, name)) for name in LANDING_PARAMS)
    landing["time"] = event_time
    return landing


def landing_expired(value: Mapping[str, Any], stream_time: float) -> bool:
    """True when a stored landing is older than ``LANDING_TTL`` before ``stream_time``."""
    return bool(value["time"] < stream_time - LANDING_TTL)


def windows(lag_seconds: int) -> list[str]:
    """The click windows that contain the lag (limits inclusive); [] outside 0..28 days."""
    if lag_seconds < 0:
        return []
    return [name for name, limit in WINDOWS if lag_seconds <= limit]


def click_evidence(conversion: Mapping[str, Any]) -> list[Click]:
    """The distinct fbclids of a conversion: the fbc's first, then the URL's."""
    return _evidence(conversion)[0]


def _evidence(conversion: Mapping[str, Any]) -> tuple[list[Click], str | None]:
    """``click_evidence``, and the fbclid of the conversion's own URL."""
    user_data = conversion.get("user_data") or {}
    fbc = parse_fbc(user_data.get("fbc"))
    clicks = [Click(fbc.fbclid, fbc.click_time)] if fbc is not None else []
    from_url = fbclid_from_url(conversion.get("event_source_url"))
    if from_url is not None and (fbc is None or fbc.fbclid != from_url):
        clicks.append(Click(from_url, None))
    return clicks, from_url


def _summary(conversion: Mapping[str, Any]) -> dict[str, Any]:
    user_data = conversion.get("user_data") or {}
    custom_data = conversion.get("custom_data") or {}
    return {
        "conversion_id": conversion["conversion_id"],
        "pixel_id": conversion["pixel_id"],
        "event_name": conversion["event_name"],
        "event_time": conversion["event_time"],
        "action_source": conversion.get("action_source"),
        "has_lead_id": bool(user_data.get("lead_id")),
        "value": custom_data.get("value"),
        "currency": custom_data.get("currency") or None,
    }


# one click of a conversion as route's message carries it: fbclid, fbc_time, hit (the
# landing the conversion's own URL is, or None), the conversion's summary
_Routed = tuple[str, "int | None", "dict[str, Any] | None", dict[str, Any]]


def _routed(conversion: Mapping[str, Any]) -> list[_Routed]:
    """The parts of route's messages (the summary shared: ``handle`` only reads it)."""
    clicks, from_url = _evidence(conversion)
    if not clicks:
        return []
    url = conversion.get("event_source_url")
    summary = _summary(conversion)
    return [
        (
            c.fbclid,
            c.fbc_time,
            {"url": url, "time": summary["event_time"]} if c.fbclid == from_url else None,
            summary,
        )
        for c in clicks
    ]


def route(conversion: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The repartition step: ``(fbclid, message)`` for each click of a conversion."""
    return [
        (fbclid, {"fbclid": fbclid, "fbc_time": t, "hit": hit, "conversion": dict(summary)})
        for fbclid, t, hit, summary in _routed(conversion)
    ]


class Attributor:
    """The stateful step on the fbclid partition: ``landing`` maps fbclid to its first
    landing; ``catalog`` gives an ad's resolved specs (None for an ad it does not hold)."""

    def __init__(self, landing: MutableMapping[str, dict[str, Any]], catalog: Catalog) -> None:
        self.landing = landing
        self.catalog = catalog

    def handle(self, msg: Mapping[str, Any], tally: Tally) -> dict[str, Any] | None:
        """Record the message's hit, then return its candidate (None when there is none)."""
        return self._take(msg["fbclid"], msg["fbc_time"], msg.get("hit"), msg["conversion"], tally)

    def _take(
        self,
        fbclid: str,
        click_time: int | None,
        hit: Mapping[str, Any] | None,
        conv: Mapping[str, Any],
        tally: Tally,
    ) -> dict[str, Any] | None:
        """``handle`` of a message given by its parts."""
        if hit:
            self._record(fbclid, hit, tally)
        stored = self.landing.get(fbclid)
        if click_time is None:
            if stored is None:
                return None
            click_time = stored["time"]
        lag = conv["event_time"] - click_time
        in_windows = windows(lag)
        if not in_windows:
            tally["candidates_out_of_window", "negative" if lag < 0 else "too_old"] += 1
            return None
        landing = {k: v for k, v in stored.items() if k != "time"} if stored else None
        for window in in_windows:
            tally["candidates", window] += 1
        return {
            "conversion_id": conv["conversion_id"],
            "pixel_id": conv["pixel_id"],
            "event_name": conv["event_name"],
            "event_time": conv["event_time"],
            "value": conv["value"],
            "currency": conv["currency"],
            "fbclid": fbclid,
            "click_time": click_time,
            "lag_seconds": lag,
            "windows": in_windows,
            "landing": landing,
            "specs": self._specs(landing, conv, tally),
        }

    def _record(self, fbclid: str, hit: Mapping[str, Any], tally: Tally) -> None:
        """Keep the earliest hit: store it when none is stored or it is strictly earlier."""
        stored = self.landing.get(fbclid)
        if stored is None or hit["time"] < stored["time"]:
            self.landing[fbclid] = landing_from_url(hit["url"], hit["time"])
            tally["landing_stored",] += 1

    def _specs(
        self, landing: Mapping[str, Any] | None, conv: Mapping[str, Any], tally: Tally
    ) -> dict[str, object] | None:
        ad_id = landing["ad_id"] if landing else None
        if not ad_id:
            tally["spec_lookups", "no_ad_id"] += 1
            return None
        resolved = self.catalog(ad_id)
        if resolved is None:
            tally["spec_lookups", "unknown_ad"] += 1
            return None
        tally["spec_lookups", "known"] += 1
        actions = specs.conversion_actions(
            conv["pixel_id"], conv["event_name"], conv["action_source"], conv["has_lead_id"]
        )
        match = specs.match_ad(resolved, actions)
        if match.tracking_specs:
            tally["spec_matches", "tracking"] += 1
        if match.conversion_spec:
            tally["spec_matches", "conversion"] += 1
        return match.as_dict()


def route_counted(conversion: Mapping[str, Any], tally: Tally) -> list[tuple[str, dict[str, Any]]]:
    """``route``, counting the conversion as with or without click evidence."""
    routed = route(conversion)
    tally["click_evidence", "with" if routed else "without"] += 1
    return routed


def attribute(
    conversions: Iterable[Mapping[str, Any]], attributor: Attributor, tally: Tally
) -> list[dict[str, Any]]:
    """Offline: route each conversion (counted with / without click evidence) and handle
    its messages in order (as ``route_counted`` and ``handle`` do, without building the
    messages: each click's parts go to the attributor as they are)."""
    out: list[dict[str, Any]] = []
    for conversion in conversions:
        routed = _routed(conversion)
        tally["click_evidence", "with" if routed else "without"] += 1
        for fbclid, fbc_time, hit, summary in routed:
            candidate = attributor._take(fbclid, fbc_time, hit, summary, tally)
            if candidate is not None:
                out.append(candidate)
    return out
