"""Benchmark: signed Twilio webhooks into the web process, beside a bare Flask endpoint.

    python3 bench/ingest.py                  # PostgreSQL at postgresql://postgres@127.0.0.1:5432/
    python3 bench/ingest.py --database-url postgresql://USER@HOST:PORT/ --seconds 10 --rounds 2

What runs: a scratch PostgreSQL database of its own (created, migrated, dropped at the
end), a private redis-server on a free port, and the Procfile's `web` line (gunicorn, its
flags as written there) with production settings: DATABASE_URL, REDIS_URL, a config
with one Twilio account and one business number. The baseline, measured in the same
run, is `bench/bare_app.py` (a Flask endpoint returning the same TwiML and nothing else)
under the very same gunicorn command. No dramatiq worker runs: the web process is what
is measured, and the tasks it enqueues wait in Redis.

The client is wrk (Debian package `wrk`), 2 threads and 16 keep-alive connections, with
bench/ingest.lua cycling bodies signed before the timed part: every request is a unique,
correctly signed webhook (MessageSid, sender and body differ). Rounds alternate bare and
gateway, after a short warm-up of each; the figures are per round and the ratio is the
median of the rounds' ratios. After the run the database is audited: every webhook
answered 200 is stored, each MessageSid once.

With --bounds, each round also runs bench/ingest_bounds_app.py under the same command:
the gateway's webhook storing nothing, and waiting instead of storing (1 and 3 ms by
default, --waits). They show how much of the gap to the bare endpoint is the view's work
and how much is the wait for the commit. It also runs a bare WSGI endpoint (the same
TwiML without Flask), so the reader sees what a webhook answered outside Flask's
request machinery, as the gateway's direct door answers it, could gain at most.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import psutil
import redis
import sqlalchemy as sa
from harness import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    BUSINESS_NUMBER,
    DEFAULT_DATABASE,
    PUBLIC_URL,
    ROOT,
    MetricsWatch,
    PeakRss,
    Process,
    free_port,
    private_redis,
    scratch_database,
    wait_for,
    web_command,
    write_config,
)

from gateway.carriers import twilio
from gateway.cli.simulate_cmd import inbound_form
from gateway.db import normalize_database_url

CONNECTIONS = 16
WRK_THREADS = 2
PATH = "/webhooks/twilio/sms"
WARMUP_BODIES = 15_000


def write_bodies(path: Path, count: int, tag: str) -> Path:
    """`count` unique webhooks, signed as Twilio signs them, one per line."""
    with path.open("w") as out:
        for n in range(count):
            form = inbound_form(ACCOUNT_SID, f"+1415{n % 10_000:07d}", BUSINESS_NUMBER, f"{tag} text {n}")
            signature = twilio.sign(PUBLIC_URL + PATH, form, AUTH_TOKEN)
            out.write(f"{signature}\t{urllib.parse.urlencode(form)}\n")
    return path


def run_wrk(port: int, bodies: Path, seconds: float, stores: bool = True) -> dict:
    """One timed wrk run; `stores`: every request must be a new webhook (the file must last)."""
    completed = subprocess.run(
        ["wrk", "-t", str(WRK_THREADS), "-c", str(CONNECTIONS), "-d", f"{int(seconds)}s", "--timeout", "15s",
         "-s", str(ROOT / "bench" / "ingest.lua"), f"http://127.0.0.1:{port}", "--", str(WRK_THREADS)],
        env={**os.environ, "BENCH_BODIES": str(bodies)}, capture_output=True, text=True, check=True,
    )
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["failed"] = sum(result["errors"].values())
    if stores and result["requests"] > result["bodies"]:
        raise SystemExit(f"wrk sent {result['requests']} requests but only {result['bodies']} bodies exist: "
                         "raise --bodies so every webhook is unique")
    return result


def answers(port: int) -> bool:
    try:
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        connection.request("GET", "/healthz")
        return connection.getresponse().status < 500
    except OSError:
        return False


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its children so far."""
    tree = psutil.Process(pid)
    return sum(sum(process.cpu_times()[:2]) for process in [tree, *tree.children(recursive=True)])


def connections_per_process(pid: int, port: int) -> list[int]:
    """How many of the client's connections each gunicorn worker holds, fewest first.

    wrk opens its 16 keep-alive connections at once, and which worker accepts each is a
    race: a round may give the two workers 8 and 8, or 2 and 14. A worker's requests share
    its one GIL, so the split moves a round's figure (BENCHMARKS.md); each line shows it.
    """
    counts = []
    for worker in psutil.Process(pid).children():
        try:
            connections = worker.net_connections("tcp")
        except psutil.Error:
            continue
        counts.append(sum(1 for c in connections
                          if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port))
    return sorted(counts)


def timed_run(process: Process, port: int, bodies: Path, seconds: float, stores: bool = True) -> dict:
    """`run_wrk`, plus the web process's CPU per request (its gunicorn processes, summed) and
    the connections each of its workers held halfway through."""
    split: list[int] = []
    sampler = threading.Timer(seconds / 2,
                              lambda: split.extend(connections_per_process(process.popen.pid, port)))
    before = tree_cpu_seconds(process.popen.pid)
    sampler.start()
    result = run_wrk(port, bodies, seconds, stores)
    result["cpu_ms"] = (tree_cpu_seconds(process.popen.pid) - before) * 1000 / max(result["requests"], 1)
    sampler.join()
    result["split"] = split
    return result


def line(name: str, result: dict) -> str:
    return (f"{name:<22} {result['rps']:>8.0f} req/s   p50 {result['p50_us'] / 1000:>6.1f} ms   "
            f"p99 {result['p99_us'] / 1000:>6.1f} ms   CPU {result['cpu_ms']:.3f} ms/request   "
            f"connections {'+'.join(map(str, result['split'])) or '?'}   non-2xx/errors {result['failed']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_DATABASE,
                        help="a PostgreSQL server to make a scratch database on")
    parser.add_argument("--seconds", type=int, default=10, help="length of each timed run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bodies", type=int, default=60_000, help="unique webhooks per timed run")
    parser.add_argument("--bounds", action="store_true",
                        help="also run the webhook storing nothing, and waiting instead of storing")
    parser.add_argument("--waits", default="1,3", help="the waits of --bounds, in ms")
    args = parser.parse_args()
    bounds = {}  # name: (app, BENCH_STORE)
    if args.bounds:
        bounds["bare WSGI endpoint"] = ("bench.bare_app:create_wsgi_app()", "")
        bounds["no store"] = ("bench.ingest_bounds_app:create_app()", "none")
        bounds.update({f"wait {ms} ms": ("bench.ingest_bounds_app:create_app()", f"wait:{float(ms) / 1000}")
                       for ms in args.waits.split(",")})

    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    started = time.perf_counter()
    files = [write_bodies(workdir / f"bodies-{i}.txt", args.bodies if i else WARMUP_BODIES, f"r{i}")
             for i in range(args.rounds + 1)]
    signed = args.bodies * args.rounds + WARMUP_BODIES
    took = time.perf_counter() - started
    print(f"signed {signed} webhooks in {took:.1f} s (before the timed part)", flush=True)

    database = scratch_database(args.database_url, "bench_ingest")
    with private_redis(workdir) as redis_url, database as database_url:
        env = {**os.environ, "GATEWAY_CONFIG": str(write_config(workdir)), "DATABASE_URL": database_url,
               "REDIS_URL": redis_url, "PUBLIC_URL": PUBLIC_URL}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # gunicorn.conf.py makes a fresh one per run
        ports = {name: free_port() for name in ("bare", "gateway", *bounds)}
        processes = {
            "bare": Process(web_command("bench.bare_app:create_app()"), {**env, "PORT": str(ports["bare"])},
                            workdir / "bare.log"),
            "gateway": Process(web_command(), {**env, "PORT": str(ports["gateway"])}, workdir / "web.log"),
        }
        for n, (name, (app_spec, store)) in enumerate(bounds.items()):
            processes[name] = Process(web_command(app_spec), {**env, "PORT": str(ports[name]), "BENCH_STORE": store},
                                      workdir / f"bound-{n}.log")
        memory = PeakRss()
        # The gateway's own /metrics, scraped every 2 s through the timed runs: it answers
        # under load and its webhook counter moves (summed over the gunicorn processes).
        metrics = MetricsWatch(f"http://127.0.0.1:{ports['gateway']}/metrics", "gateway_webhooks_total")
        try:
            wait_for(lambda: all(answers(port) for port in ports.values()), "the web processes")
            for name, process in processes.items():
                memory.watch(name, process.popen.pid)
            memory.start()
            print(f"web command: {web_command()}", flush=True)
            for name in ports:  # warm-up: imports, connection pools, first compiles
                run_wrk(ports[name], files[0], 2, stores=name == "gateway")
            rounds, bound_ratios, bound_cpu = [], {name: [] for name in bounds}, {name: [] for name in bounds}
            metrics.start()
            for number, bodies in enumerate(files[1:], start=1):
                bare = timed_run(processes["bare"], ports["bare"], bodies, args.seconds, stores=False)
                gateway = timed_run(processes["gateway"], ports["gateway"], bodies, args.seconds)
                rounds.append((bare, gateway))
                print(f"round {number}:\n  {line('bare Flask endpoint', bare)}\n"
                      f"  {line('gateway webhook', gateway)}\n"
                      f"  ratio {gateway['rps'] / bare['rps']:.2f}x", flush=True)
                for name in bounds:  # the same bodies: these store nothing
                    bound = timed_run(processes[name], ports[name], bodies, args.seconds, stores=False)
                    bound_ratios[name].append(bound["rps"] / bare["rps"])
                    bound_cpu[name].append(bound["cpu_ms"])
                    print(f"  {line(name, bound)}  ratio {bound_ratios[name][-1]:.2f}x", flush=True)
            metrics.stop()
        finally:
            memory.stop()
            for process in processes.values():
                process.stop()
        stored = audit(database_url, rounds)
        tasks = redis.Redis.from_url(redis_url).hlen("dramatiq:inbound.msgs")
        print(f"handed to the workers in {tasks} tasks ({stored / max(tasks, 1):.1f} events a task)")
    ratio = statistics.median(g["rps"] / b["rps"] for b, g in rounds)
    print(f"\nmedian ratio gateway/bare: {ratio:.2f}x  (target >= 0.5x)")
    print("median CPU per request: " + ", ".join(
        f"{name} {statistics.median(r['cpu_ms'] for r in runs):.3f} ms"
        for name, runs in (("bare", [b for b, _ in rounds]), ("gateway", [g for _, g in rounds]))))
    for name, ratios in bound_ratios.items():
        print(f"  bound, {name}: {statistics.median(ratios):.2f}x, "
              f"CPU {statistics.median(bound_cpu[name]):.3f} ms/request")
    print(memory.report("gateway") + "  (target < 120 MB per process)")
    print(memory.report("bare"))
    print(f"gateway metrics during the run: {metrics.report()}")


def audit(database_url: str, rounds) -> int:
    """Every webhook answered 200 is stored, and each MessageSid once (the unique key)."""
    engine = sa.create_engine(normalize_database_url(database_url))
    with engine.connect() as connection:
        stored, distinct = connection.execute(
            sa.text("SELECT count(*), count(DISTINCT carrier_message_id) FROM inbound_events")).one()
    engine.dispose()
    answered = sum(g["requests"] - g["failed"] for _, g in rounds)
    print(f"\naudit: {stored} events stored ({distinct} distinct MessageSids); "
          f"{answered} answered 200 in the timed runs (+ warm-up and requests cut off by the run's end)")
    if stored != distinct or stored < answered:
        raise SystemExit("AUDIT FAILED: a webhook answered 200 is missing, or one is stored twice")
    return stored


if __name__ == "__main__":
    main()
