"""The real Twilio webhook requests in `../shared/twilio-webhooks/cases.json`, by id.

Shared by the adapter's table (tests/carriers/test_twilio.py) and the webhook's
(tests/webhooks/test_twilio_cases.py). A missing file fails the test rather than skipping it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CASES_FILE = Path(__file__).resolve().parents[1].parent / "shared" / "twilio-webhooks" / "cases.json"


def load_cases() -> dict[str, dict]:
    if not CASES_FILE.is_file():
        pytest.fail(f"the real Twilio webhook table is missing: expected it at {CASES_FILE}")
    return {case["id"]: case for case in json.loads(CASES_FILE.read_text(encoding="utf-8"))}
