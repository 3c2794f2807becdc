"""Throughput of streams.pii.hash_user_data against the facebook-business SDK normalizer.

    PYTHONPATH=. python bench/pii_vs_sdk.py [N]     # N user_data dicts, default 100000

Generates N realistic user_data dicts with a fixed seed (em, ph, fn, ln, ct, st, zp, country,
external_id, plain keys, about 10% of hashed values already SHA-256), then times, over the
same dicts, single-threaded, best of 5 interleaved rounds in CPU time:

- convstream: ``hash_user_data(ud)`` (and once more with ``default_phone_country="us"``);
- SDK: ``Normalize.normalize_field(key, value)`` (normalize + SHA-256) per hashed value,
  de-duplicated per key like the SDK's UserData, values it rejects skipped.

Prints figures; asserts nothing about speed (STYLE: benchmarks are never timed assertions).
"""

from __future__ import annotations

import gc
import hashlib
import platform
import random
import sys
import time
from collections.abc import Callable, Mapping

from facebook_business.adobjects.serverside.normalize import Normalize

from streams.pii import HASHED_KEYS, hash_user_data

SEED = 20260101
FIRST = ["John", "Mary", "José", "Zoë", "Anne-Marie", "O'Neil", "Łukasz", "Søren", "Wei", "Ana"]
LAST = ["Smith", "O'Connor", "Müller", "García", "van der Berg", "Nguyen", "Kowalski", "Lee"]
DOMAINS = ["gmail.com", "Yahoo.com", "example.co.uk", "web.de", "outlook.com", "shop.example"]
CITIES = ["Menlo Park", "New York", "San Francisco", "London", "München", "São Paulo", "Paris"]
STATES = ["California", "CA", "New York", "ny", "Texas", "Ontario", "Québec", "Bavaria"]
COUNTRIES = ["US", "us", "United States", "USA", "GB", "de", "France", "CA", "Brazil"]


def _prehashed(rng: random.Random) -> str:
    digest = hashlib.sha256(str(rng.random()).encode()).hexdigest()
    return digest.upper() if rng.random() < 0.3 else digest


def _phone(rng: random.Random) -> str:
    area, mid, last = rng.randint(201, 989), rng.randint(200, 999), rng.randint(0, 9999)
    return rng.choice(
        [
            f"+1 ({area}) {mid}-{last:04d}",
            f"+1{area}{mid}{last:04d}",
            f"1-{area}-{mid}-{last:04d}",
            f"+44 20 {mid}{last % 10} {last:04d}",
            f"0049 151 {mid}{last:04d}",
            f"({area}) {mid}-{last:04d}",  # national: needs a default country
        ]
    )


def make_user_data(rng: random.Random) -> dict[str, object]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    email = f"{first}.{last}{rng.randint(1, 9999)}@{rng.choice(DOMAINS)}".replace(" ", "")
    ud: dict[str, object] = {
        "em": f" {email} " if rng.random() < 0.2 else email,
        "ph": _phone(rng),
        "fn": first,
        "ln": last,
        "ct": rng.choice(CITIES),
        "st": rng.choice(STATES),
        "zp": rng.choice(
            [
                f"{rng.randint(10000, 99999)}",
                f"{rng.randint(10000, 99999)}-1234",
                "SW1A 1AA",
                "75018",
                "K1A 0B1",
            ]
        ),
        "country": rng.choice(COUNTRIES),
        "external_id": f"cust-{rng.randint(1, 10**9)}",
        "client_ip_address": f"203.0.113.{rng.randint(1, 254)}",
        "client_user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
        "fbp": f"fb.1.1795300000000.{rng.randint(10**8, 10**9)}",
    }
    for key in ("em", "ph", "fn", "ln", "external_id"):
        if rng.random() < 0.1:
            ud[key] = _prehashed(rng)
    if rng.random() < 0.1:
        ud["em"] = [ud["em"], f"{last}@{rng.choice(DOMAINS)}"]
    return ud


def sdk_hash_user_data(ud: Mapping[str, object]) -> dict[str, object]:
    """What an SDK user does: normalize_field (normalize + SHA-256) per hashed value."""
    out: dict[str, object] = {}
    for key, value in ud.items():
        if key not in HASHED_KEYS:
            out[key] = value
            continue
        digests = set()
        for v in value if isinstance(value, list) else [value]:
            try:
                digests.add(Normalize.normalize_field(key, v))
            except (TypeError, ValueError):  # the SDK raises on values it rejects
                continue
        if digests:
            out[key] = list(digests)
    return out


def timed(
    contenders: dict[str, Callable[[Mapping[str, object]], object]],
    data: list[dict[str, object]],
    rounds: int = 5,
) -> dict[str, float]:
    """Best pass per contender, in CPU seconds of this process. Rounds interleave the
    contenders and CPU time (not wall time) is used, so a busy shared machine skews the
    ratio as little as possible."""
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(rounds):
        for name, fn in contenders.items():
            gc.collect()
            start = time.process_time()
            for ud in data:
                fn(ud)
            best[name] = min(best[name], time.process_time() - start)
    return best


def main(argv: list[str]) -> None:
    n = int(argv[1]) if len(argv) > 1 else 100_000
    rng = random.Random(SEED)
    data = [make_user_data(rng) for _ in range(n)]
    values = sum(
        len(v) if isinstance(v, list) else 1
        for ud in data
        for k, v in ud.items()
        if k in HASHED_KEYS
    )
    print(f"python {platform.python_version()} on {platform.machine()}, one thread")
    print(f"{n} user_data dicts, {values} hashed-key values ({values / n:.1f} per dict)")

    ours = "convstream hash_user_data"
    ours_us = "convstream, default_phone_country=us"
    sdk = "facebook-business SDK normalize_field"
    seconds = timed(
        {
            ours: hash_user_data,
            ours_us: lambda ud: hash_user_data(ud, default_phone_country="us"),
            sdk: sdk_hash_user_data,
        },
        data,
    )
    for name, s in seconds.items():
        print(f"{name:40s} {n / s:>10,.0f} user_data/s  {s / n * 1e6:7.2f} us each")
    print(
        f"ratio convstream / SDK: {seconds[sdk] / seconds[ours]:.2f}x "
        f"(with default_phone_country=us: {seconds[sdk] / seconds[ours_us]:.2f}x)"
    )


if __name__ == "__main__":
    main(sys.argv)
