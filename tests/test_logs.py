"""Structured logs: one JSON object per line, naming the message a worker is working on."""

from __future__ import annotations

import base64
import json
import logging

from gateway.logs import JsonFormatter, bind_message, clear_message


def formatted(message: str, **extra) -> dict:
    record = logging.LogRecord("gateway.test", logging.INFO, __file__, 1, message, (), None)
    for name, value in extra.items():
        setattr(record, name, value)
    return json.loads(JsonFormatter().format(record))


def test_every_line_logged_while_a_message_is_bound_names_its_sid_and_conversation():
    bind_message("SM" + "a" * 32, 42, attachment_id=7)
    try:
        line = formatted("attachment download will be retried", reason="media host answered 503")
    finally:
        clear_message()

    assert line["message_sid"] == "SM" + "a" * 32
    assert (line["conversation_id"], line["attachment_id"]) == (42, 7)
    assert line["reason"] == "media host answered 503"
    assert (line["level"], line["msg"]) == ("info", "attachment download will be retried")


def test_a_line_after_the_message_is_cleared_names_no_message():
    bind_message("SM" + "b" * 32, 1)
    clear_message()

    line = formatted("sweeper started")

    assert "message_sid" not in line and "conversation_id" not in line


def test_fields_given_on_the_line_win_over_the_bound_ones():
    bind_message("SM" + "c" * 32, 1)
    try:
        line = formatted("inbound message threaded", conversation_id=2)
    finally:
        clear_message()

    assert line["conversation_id"] == 2


def test_the_settings_secrets_never_reach_a_log_line_even_in_a_traceback(runtime):
    token = runtime.settings.config.carriers[0].auth_token.get_secret_value()
    try:
        raise RuntimeError(f"carrier refused credentials {token}")
    except RuntimeError:
        import sys

        record = logging.LogRecord("gateway.test", logging.ERROR, __file__, 1, "auth %s failed", (token,),
                                   sys.exc_info())
    record.detail = f"Basic {token}"

    line = JsonFormatter().format(record)

    assert token not in line
    assert json.loads(line)["msg"] == "auth [redacted] failed"
    assert "[redacted]" in json.loads(line)["exc"] and json.loads(line)["detail"] == "Basic [redacted]"


def test_the_secrets_include_event_webhook_secrets_and_url_passwords():
    from pathlib import Path

    from gateway.settings import ConfigFile, Settings

    config = ConfigFile.model_validate({
        "carriers": [{"name": "t", "kind": "twilio", "account_sid": "AC1", "auth_token": "tok-123456"}],
        "notify": {"webhooks": [{"url": "https://hooks.example/x", "secret": "whsec-123456"}]},
    })
    settings = Settings(config=config, config_path=Path("."),
                        database_url="postgresql://app:db-pass-123@db/gateway",
                        redis_url="redis://:redis-pass-123@cache:6379/0")

    basic = [base64.b64encode(pair.encode()).decode() for pair in ("AC1:tok-123456", "app:db-pass-123", ":redis-pass-123")]
    assert sorted(set(settings.secrets())) == sorted(
        ["db-pass-123", "redis-pass-123", "tok-123456", "whsec-123456", *basic])


def test_a_basic_authorization_header_with_the_carrier_token_is_redacted(runtime):
    carrier = runtime.settings.config.carriers[0]
    header = "Basic " + base64.b64encode(
        f"{carrier.account_sid}:{carrier.auth_token.get_secret_value()}".encode()).decode()

    line = formatted("carrier call failed", headers={"Authorization": header}, attempts=[header, 2])

    assert line["headers"] == {"Authorization": "Basic [redacted]"}
    assert line["attempts"] == ["Basic [redacted]", 2]


def test_a_secret_with_quotes_or_accents_or_inside_a_longer_one_is_hidden_whole():
    from gateway.logs import redact_secrets

    redact_secrets(['s3cr"et-value', "pässwort-123", "hunter22", "hunter22-signing-key-XYZ"])

    line = formatted('token was s3cr"et-value, then pässwort-123', key="hunter22-signing-key-XYZ", ids=[1, 2])

    assert line["msg"] == "token was [redacted], then [redacted]"
    assert line["key"] == "[redacted]"
    assert line["ids"] == [1, 2]   # lists of ids stay JSON


def test_short_passwords_are_not_matched_so_they_cannot_deface_every_line():
    from gateway.logs import redact_secrets

    redact_secrets(["555010", "gateway"])

    line = formatted("texted +14155550100", number="+14155550100")

    assert (line["msg"], line["number"]) == ("texted +14155550100", "+14155550100")
    assert line["logger"] == "gateway.test"


def test_api_tokens_and_stream_tickets_keep_only_their_prefix_in_a_log_line():
    line = formatted("GET /api/v1/notifications/stream?ticket=gwst_b1f5hUc2nRwmAw-InMIvJqc36JhSd5ylJE0d5XpnO7o",
                     header="Bearer gw_Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHF1dXg")

    assert line["msg"] == "GET /api/v1/notifications/stream?ticket=gwst_[redacted]"
    assert line["header"] == "Bearer gw_[redacted]"


def test_a_container_that_holds_itself_is_logged_as_text_and_never_fails_the_call(caplog):
    loop = [1]
    loop.append(loop)
    mapping = {"id": 7}
    mapping["self"] = mapping

    line = formatted("odd extras", loop=loop, mapping=mapping)

    assert line["msg"] == "odd extras"
    assert "[...]" in json.dumps(line["loop"]) and "{...}" in json.dumps(line["mapping"])


def test_a_percent_encoded_ticket_or_token_is_redacted_too():
    line = formatted("redirect", target="/login?next=%2Fstream%3Fticket%3Dgwst_b1f5hUc2nRwmAw-InMIvJqc36JhSd5y",
                     header="Bearer%20gw_Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHF1dXg")

    assert line["target"] == "/login?next=%2Fstream%3Fticket%3Dgwst_[redacted]"
    assert line["header"] == "Bearer%20gw_[redacted]"
