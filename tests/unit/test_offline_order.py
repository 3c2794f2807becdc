"""`convstream process` orders both files by received_at, reading it from a line's start
where it leads (the raw messages `collect` writes) and checking it when the line is
decoded: a line whose decoding gives another time sends both files back to be ordered
from decoded times, so the output is always that of the exact order."""

from __future__ import annotations

import orjson
import pytest

from bench.traffic import offline_files
from streams import offline
from streams.settings import Settings

NOW = 1_795_500_000.0
S = Settings(merge_window=5)


def _files(n: int = 600) -> tuple[list[offline.Line], list[offline.Line]]:
    pixel, server = offline_files(n)
    return (
        offline.read_lines("browser", S.topics.pixel_raw, b"\n".join(pixel)),
        offline.read_lines("server", S.topics.server_raw, b"\n".join(server)),
    )


def _out(result: offline.Result) -> bytes:
    return offline.dumps_lines(result.conversions + result.candidates + result.dead_letters)


def _exact(pixel: list[offline.Line], server: list[offline.Line]) -> bytes:
    order = offline.ordered(offline.exact_lines(pixel), offline.exact_lines(server))
    return _out(offline.process(S, order, NOW))


def test_leading_times_are_read_without_decoding_and_equal_the_decoded_ones() -> None:
    pixel, server = _files()
    exact = offline.exact_lines(pixel + server)
    assert [ln.received_at for ln in pixel + server] == [ln.received_at for ln in exact]
    # most lines lead with their time; the cut ones ("...", "data": ) do not end with }
    assert sum(ln.value.startswith(b'{"received_at":') for ln in pixel + server) > 500


def test_run_gives_the_output_of_the_exact_order_on_mixed_traffic() -> None:
    pixel, server = _files()
    result = offline.run(S, pixel, server, NOW)
    assert result.conversions and result.dead_letters
    assert _out(result) == _exact(pixel, server)


def _pixel(received_at: str, tail: str = "") -> bytes:
    hit = {
        "received_at": 0,
        "pixel_id": "1234567890",
        "ev": "Purchase",
        "eid": "e-1",
        "dl": "https://shop.example/thanks",
        "ts": str(int(NOW * 1000)),
    }
    body = orjson.dumps(hit).decode()
    return (
        '{"received_at":' + received_at + body[len('{"received_at":0') : -1] + tail + "}"
    ).encode()


def _server(received_at: float, event_id: str) -> bytes:
    ev = {
        "event_name": "Purchase",
        "event_time": int(NOW) - 60,
        "event_id": event_id,
        "action_source": "website",
        "user_data": {"em": "a@example.com"},
    }
    return orjson.dumps({"received_at": received_at, "pixel_id": "1234567890", "data": [ev]})


@pytest.mark.parametrize(
    "line",
    [
        # a repeated key: the decoded message's received_at is the last one (1 < 3)
        _pixel("5", ',"received_at":1'),
        # starts as a message with time 5, is not JSON: dead-lettered where line 0 sorts
        b'{"received_at":5,"pixel_id":"1234567890",}',
    ],
)
def test_a_line_whose_decoding_gives_another_time_is_ordered_by_that_time(line: bytes) -> None:
    pixel = offline.read_lines("browser", S.topics.pixel_raw, line + b"\n" + _pixel("6"))
    server = offline.read_lines(
        "server", S.topics.server_raw, _server(3.0, "e-1") + b"\n" + _server(7.0, "e-2")
    )
    assert pixel[0].received_at == 5.0  # read from the line's start
    hinted = [(ln.source, ln.number) for ln in offline.ordered(pixel, server)]
    exact = [
        (ln.source, ln.number) for ln in offline.ordered(*map(offline.exact_lines, (pixel, server)))
    ]
    assert hinted != exact  # the order differs, so the output would
    with pytest.raises(offline.Misordered):
        offline.process(S, offline.ordered(pixel, server), NOW)
    assert _out(offline.run(S, pixel, server, NOW)) == _exact(pixel, server)
