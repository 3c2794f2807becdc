"""Settings from the environment: typed, validated, errors name the variable."""

from __future__ import annotations

import pytest

from streams import settings as settings_module
from streams.settings import Settings, SettingsError, from_env, to_env


def test_defaults() -> None:
    s = from_env({})
    assert s == Settings()
    assert s.topics.server_raw == "events.server.raw"
    assert s.broker_url == "kafka://127.0.0.1:9092"


def test_values_are_parsed() -> None:
    s = from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "k1:9092, k2:9093",
            "CONVSTREAM_PARTITIONS": "12",
            "CONVSTREAM_MERGE_WINDOW": "30",
            "CONVSTREAM_PIXEL_ALLOWLIST": "111, 222",
            "CONVSTREAM_DEFAULT_PHONE_COUNTRY": "de",
            "CONVSTREAM_TOPIC_CONVERSIONS": "my.conversions",
            "CONVSTREAM_STORE": "memory://",
            "CONVSTREAM_STANDBY_REPLICAS": "0",
        }
    )
    assert s.broker_url == "kafka://k1:9092;kafka://k2:9093"
    assert s.partitions == 12 and s.merge_window == 30
    assert s.pixel_allowlist == frozenset({"111", "222"})
    assert s.default_phone_country == "DE"
    assert s.topics.conversions == "my.conversions"
    assert s.standby_replicas == 0


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"CONVSTREAM_PARTITIONS": "many"}, "CONVSTREAM_PARTITIONS"),
        ({"CONVSTREAM_PARTITIONS": "0"}, "CONVSTREAM_PARTITIONS"),
        ({"CONVSTREAM_WEB_PORT": "70000"}, "CONVSTREAM_WEB_PORT"),
        ({"CONVSTREAM_STANDBY_REPLICAS": "-1"}, "CONVSTREAM_STANDBY_REPLICAS"),
        ({"CONVSTREAM_STORE": "redis://"}, "CONVSTREAM_STORE"),
        ({"CONVSTREAM_LOG_LEVEL": "loud"}, "CONVSTREAM_LOG_LEVEL"),
        ({"CONVSTREAM_PIXEL_ALLOWLIST": "12a"}, "CONVSTREAM_PIXEL_ALLOWLIST"),
        ({"CONVSTREAM_DEFAULT_PHONE_COUNTRY": "USA"}, "CONVSTREAM_DEFAULT_PHONE_COUNTRY"),
        ({"CONVSTREAM_TOPIC_DEAD_LETTER": "bad topic"}, "CONVSTREAM_TOPIC_DEAD_LETTER"),
        ({"CONVSTREAM_TOPIC_CONVERSIONS": "events.server.raw"}, "CONVSTREAM_TOPIC_"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "nohost"}, "KAFKA_BOOTSTRAP_SERVERS"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "KAFKA_SASL_USERNAME"),
        ({"CONVSTREAM_MERG_WINDOW": "1"}, "CONVSTREAM_MERG_WINDOW"),
        ({"KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "KAFKA_SSL_CAFILE"),
        ({"KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(SettingsError, match=name):
        from_env(env)


def test_secrets_stay_out_of_repr() -> None:
    s = from_env(
        {
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_USERNAME": "svc",
            "KAFKA_SASL_PASSWORD": "hunter2-very-secret",
        }
    )
    assert s.sasl_mechanism == "PLAIN"
    assert "hunter2" not in repr(s) and "hunter2" not in str(s)


def test_to_env_round_trips() -> None:
    s = from_env(
        {
            "CONVSTREAM_PIXEL_ALLOWLIST": "1,2",
            "CONVSTREAM_BATCH_WITHIN": "0.02",
            "CONVSTREAM_DEFAULT_PHONE_COUNTRY": "GB",
            "CONVSTREAM_STANDBY_REPLICAS": "2",
            "CONVSTREAM_INGEST_PROCESS": "no",
            "CONVSTREAM_COMPRESSION": "lz4",
        }
    )
    assert from_env(to_env(s)) == s


def test_compression_is_zstd_unless_set_and_takes_only_kafka_codecs() -> None:
    assert from_env({}).compression == "zstd"
    assert from_env({"CONVSTREAM_COMPRESSION": " None "}).compression == "none"
    with pytest.raises(SettingsError, match="CONVSTREAM_COMPRESSION"):
        from_env({"CONVSTREAM_COMPRESSION": "brotli"})


@pytest.mark.parametrize(
    ("value", "cpus", "own"),
    [("auto", 1, False), ("auto", 2, True), ("auto", 8, True), ("yes", 1, True), ("no", 8, False)],
)
def test_ingest_runs_in_its_own_process_with_two_cpus_or_when_asked(
    monkeypatch: pytest.MonkeyPatch, value: str, cpus: int, own: bool
) -> None:
    monkeypatch.setattr(settings_module, "usable_cpus", lambda: cpus)
    assert from_env({"CONVSTREAM_INGEST_PROCESS": value}).ingest_own_process is own


def test_ingest_process_takes_only_its_three_values() -> None:
    with pytest.raises(SettingsError, match="INGEST_PROCESS must be one of auto, yes, no"):
        from_env({"CONVSTREAM_INGEST_PROCESS": "2"})
