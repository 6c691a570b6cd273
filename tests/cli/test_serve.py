"""`gateway serve` on the embedded defaults, driven as a newcomer would drive it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest
import requests

from tests.conftest import ROOT, wait_until
from tests.workers.conftest import free_port

pytestmark = pytest.mark.processes


@pytest.fixture
def newcomer_env(tmp_path):
    """A fresh machine's environment: no DATABASE_URL, REDIS_URL or PUBLIC_URL."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "PUBLIC_URL", "MEDIA_DIR", "GATEWAY_CONFIG")
    }
    env["GATEWAY_CONFIG"] = str(ROOT / "config")
    return env


def gateway(tmp_path, env, *args) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_serve_on_embedded_defaults_routes_three_texts_matched_ambiguous_and_none(tmp_path, newcomer_env):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=newcomer_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout.readline().strip() == f"gateway listening on http://127.0.0.1:{port}"
        base = f"http://127.0.0.1:{port}"
        gateway(tmp_path, newcomer_env, "users", "add", "alice", "--role", "admin")
        token = gateway(tmp_path, newcomer_env, "tokens", "create", "alice").strip()
        (tmp_path / "folders.csv").write_text(
            "external_id,name,phones\n"
            "acme,Acme,+14155550100\nbob,Bob,+14155550111\nbob2,Bob Jr,+14155550111\n"
        )
        gateway(tmp_path, newcomer_env, "folders", "import", "folders.csv")
        for sender in ("+14155550100", "+14155550111", "+14155550999"):
            gateway(
                tmp_path,
                newcomer_env,
                "simulate",
                "inbound",
                "--from",
                sender,
                "--to",
                "+15552345678",
                "--body",
                "hello",
                "--url",
                base,
            )

        def three_conversations():
            data = requests.get(
                f"{base}/api/v1/conversations", headers={"Authorization": f"Bearer {token}"}, timeout=5
            ).json()["data"]
            return data if len(data) == 3 else None

        conversations = wait_until(three_conversations, message="three conversations")
        assert sorted((c["contact"]["number"], c["folder_match"]) for c in conversations) == [
            ("+14155550100", "matched"),
            ("+14155550111", "ambiguous"),
            ("+14155550999", "none"),
        ]
        children = psutil.Process(server.pid).children(recursive=True)
    finally:
        server.send_signal(signal.SIGINT)
        out, _ = server.communicate(timeout=60)

    assert server.returncode == 0
    assert out.strip().endswith("gateway stopped")
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
