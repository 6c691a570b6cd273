"""`gateway config check [DIR]`, run as an operator runs it: a real process."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REPO_CONFIG = ROOT / "config" / "gateway.toml"

# The variables that would change what the check reads; each run sets its own.
GATEWAY_VARIABLES = ("GATEWAY_CONFIG", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "CRM_HOOK_SECRET")


def gateway(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in GATEWAY_VARIABLES}
    return subprocess.run(
        [sys.executable, "-c", "from gateway.cli import main; main(prog_name='gateway')", *args],
        cwd=ROOT, env={**environ, **(env or {})}, capture_output=True, text=True, timeout=60,
    )


def summary_of(path: Path) -> str:
    """The summary line, counted from the file itself rather than by the code under test."""
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    return (f"{path}: ok ({len(raw.get('carriers', []))} carriers, "
            f"{len(raw.get('business_numbers', []))} business numbers, {len(raw.get('teams', []))} teams)")


def test_the_repos_own_config_passes_with_a_summary():
    result = gateway("config", "check", "config")

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == summary_of(Path("config/gateway.toml")) + "\n"


def test_without_a_directory_it_checks_the_one_gateway_config_names():
    result = gateway("config", "check", env={"GATEWAY_CONFIG": str(ROOT / "config")})

    assert result.returncode == 0
    assert result.stdout == summary_of(REPO_CONFIG) + "\n"


BREAKAGES = [
    ("unknown team", lambda text: text.replace('team = "sales"', 'team = "billing"'),
     "business_numbers[1].team: no team named 'billing'"),
    ("unset secret",
     lambda text: text.replace("${TWILIO_AUTH_TOKEN:-local-dev-token}", "${TWILIO_AUTH_TOKEN}"),
     "carriers[0].auth_token: environment variable TWILIO_AUTH_TOKEN is not set"),
    ("unknown key", lambda text: text.replace("[gateway]\n", "[gateway]\ndefault_regoin = \"US\"\n"),
     "gateway.default_regoin: Extra inputs are not permitted"),
]


@pytest.mark.parametrize("label, break_config, problem", [pytest.param(*b, id=b[0]) for b in BREAKAGES])
def test_a_broken_config_fails_with_one_line_that_says_why(tmp_path, label, break_config, problem):
    # Given a copy of the repo's config, broken in one place
    path = tmp_path / "gateway.toml"
    broken = break_config(REPO_CONFIG.read_text(encoding="utf-8"))
    assert broken != REPO_CONFIG.read_text(encoding="utf-8"), f"{label}: the example config changed shape"
    path.write_text(broken, encoding="utf-8")

    result = gateway("config", "check", str(tmp_path))

    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr == f"Error: config error: {path}: {problem}\n"


def test_a_directory_without_a_config_is_named(tmp_path):
    result = gateway("config", "check", str(tmp_path / "nowhere"))

    assert result.returncode != 0
    assert result.stderr == f"Error: config error: {tmp_path / 'nowhere'}: file not found\n"
