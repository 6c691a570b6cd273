"""`gateway send` as an operator runs it, and sends whose task was lost coming back."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from gateway import delivery
from tests.conftest import SERVICE_NUMBER, wait_until

ROOT = Path(__file__).resolve().parents[2]
FOOTER = "Reply STOP to opt out."

pytestmark = pytest.mark.processes


def gateway(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from gateway.cli import main; main(prog_name='gateway')", *args],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
    )


def test_gateway_send_queues_a_text_that_a_worker_delivers(runtime, gateway_env, workers, standin):
    workers()

    result = gateway("send", "--from", "+1 555 234 5678", "--to", "4155550100", "--body", "Your car is ready",
                     env=gateway_env)

    assert result.returncode == 0, result.stderr
    expected = f"queued message 1 from {SERVICE_NUMBER} to +14155550100 (1 segment, gsm7)"
    assert result.stdout.strip() == expected
    [received] = wait_until(lambda: standin.accepted, message="the CLI's text at the carrier")
    assert received.field("Body") == f"Your car is ready\n{FOOTER}"


@pytest.mark.parametrize(
    "label, args, reason",
    [("an empty body", ["--to", "+14155550100", "--body", ""], "refused (empty_message)"),
     ("an invalid destination", ["--to", "+1", "--body", "hi"], "refused (invalid_destination)"),
     ("a number that is not ours", ["--to", "+14155550100", "--body", "hi", "--from", "+15550001111"],
      "refused (invalid_business_number)")],
)
def test_gateway_send_refuses_bad_input_in_one_line(runtime, gateway_env, label, args, reason):
    full = ["send", "--from", SERVICE_NUMBER, *args] if "--from" not in args else ["send", *args]

    result = gateway(*full, env=gateway_env)

    assert result.returncode != 0, label
    assert result.stderr.strip().startswith(f"Error: {reason}")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_send_whose_task_was_lost_is_handed_back_by_the_sweeper_and_sent_once(
    runtime, client, admin_headers, workers, standin
):
    sent = client.post("/api/v1/messages", json={
        "business_number": SERVICE_NUMBER, "to": "+14155550100", "body": "Lost and found"},
        headers=admin_headers)
    assert sent.status_code == 202
    redis.Redis.from_url(runtime.redis_url).flushdb()   # Redis lost the task

    assert delivery.sweep(runtime, older_than=dt.timedelta(0)) == 1
    assert delivery.sweep(runtime, older_than=dt.timedelta(0)) == 0   # marked: not twice
    workers()

    [received] = wait_until(lambda: standin.accepted, message="the swept send at the carrier")
    assert received.field("Body") == f"Lost and found\n{FOOTER}"
