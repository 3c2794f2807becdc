"""Start-up errors against Kafka: one line naming the setting, never the password
(agents/kafka_io.py explain_connect_error; streams/cli.py main)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import SaslAuthenticationFailed, UnsupportedSaslMechanismError

from agents import kafka_io
from streams import cli
from streams.settings import KafkaSetupError, Settings, from_env

SECRET = "s3cret-pw-0123456789"


def sasl_settings(tmp_path: Path) -> Settings:
    ca = tmp_path / "ca.pem"
    ca.write_text("not read here")
    return from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "broker.example:9096",
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": "svc-convstream",
            "KAFKA_SASL_PASSWORD": SECRET,
            "KAFKA_SSL_CAFILE": str(ca),
        }
    )


def cert_error() -> ssl.SSLCertVerificationError:
    e = ssl.SSLCertVerificationError(1, "certificate verify failed")
    e.verify_message = "unable to get local issuer certificate"
    return e


@pytest.mark.parametrize(
    ("errors", "wanted"),
    [
        (
            [OSError("x"), SaslAuthenticationFailed("invalid credentials")],
            ["rejected the SASL credentials of user 'svc-convstream'", "KAFKA_SASL_PASSWORD"],
        ),
        ([UnsupportedSaslMechanismError()], ["KAFKA_SASL_MECHANISM=SCRAM-SHA-512"]),
        ([cert_error()], ["not trusted", "unable to get local issuer", "KAFKA_SSL_CAFILE"]),
        ([ConnectionRefusedError(111, "Connection refused")], ["ConnectionRefusedError"]),
        ([], ["cannot connect", "KAFKA_BOOTSTRAP_SERVERS=broker.example:9096"]),
    ],
)
def test_connect_errors_are_one_line_naming_the_setting(
    tmp_path: Path, errors: list[BaseException], wanted: list[str]
) -> None:
    msg = kafka_io.explain_connect_error(sasl_settings(tmp_path), errors)
    for w in wanted:
        assert w in msg
    assert "\n" not in msg
    assert SECRET not in msg


def test_main_prints_a_kafka_setup_error_and_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(args: Any) -> int:
        raise KafkaSetupError("Kafka denied user 'x' access: it needs Read on topic(s) a")

    monkeypatch.setattr(cli, "cmd_produce", refuse)  # build_parser reads it in main()
    assert cli.main(["produce", "--topic", "t", "f.jsonl"]) == 1
    err = capsys.readouterr().err
    assert err == "convstream produce: Kafka denied user 'x' access: it needs Read on topic(s) a\n"
