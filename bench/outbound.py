"""Benchmark: 10,000 outbound sends over 20 business numbers through real dramatiq workers.

    python3 bench/outbound.py --database-url postgresql://postgres@127.0.0.1:5432/test
    # --sends 2000 for a quick run; --processes/--threads size the workers

What runs: a fresh PostgreSQL database of its own (created, migrated, dropped at the end),
a private Redis server, the Twilio stand-in (tests/standins/twilio_api.py) answering every
request after 100 ms, and `dramatiq gateway.workers` worker processes. The 20 numbers have
limits of 10-30 segments per second (400/s in all; `--limits 1,2,3,2,1` for limits this
machine can fill), and each gets a share of the sends in proportion to its limit, so
every number has a backlog for the whole run.

The sends are queued as `POST /messages` queues them (an outbound message row in its own
conversation, then a wake of its number's sender: gateway/send_lead.py), but written in
bulk so that the set-up is not what is measured.

Figures, from the stand-in's own arrival timestamps:
- sends/s: accepted sends / (last arrival - first arrival);
- per number: the worst 1-second window of arrivals (any window [t, t + 1 s) starting at an
  arrival) against its limit, and how busy the number was (its rate / its limit);
- baseline, measured in the same run: the stand-in alone, driven by the twilio client from
  one separate process with as many threads as one worker process has carrier calls in
  flight (gateway/number_sender.py CARRIER_CALLS), no gateway and no limits: what the
  machine, the client and the 100 ms latency allow.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import dramatiq
import redis
import sqlalchemy as sa
from harness import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    DEFAULT_DATABASE,
    ROOT,
    MetricsWatch,
    PeakRss,
    Process,
    free_port,
    private_redis,
    procfile_command,
    scratch_database,
)
from pydantic import SecretStr

from gateway.broker import OUTBOUND_QUEUE, build_broker  # noqa: E402
from gateway.carriers import twilio  # noqa: E402
from gateway.db import normalize_database_url  # noqa: E402
from gateway.messaging import OutboundMessage  # noqa: E402
from gateway.models import Contact, Conversation, Message, utcnow  # noqa: E402
from gateway.number_sender import CARRIER_CALLS, SEND_DUE_ACTOR  # noqa: E402
from gateway.send_lead import SendLeads  # noqa: E402
from tests.standins.twilio_api import TwilioStandIn  # noqa: E402

DEFAULT_LIMITS = "10,15,20,25,30"      # segments per second, cycled over 20 numbers: 400/s in all
NUMBERS = 20
_limits: tuple[int, ...] = ()


def limits() -> tuple[int, ...]:
    return _limits
LATENCY_S = 0.1
BODY = "Your order {i} has shipped."  # with the footer: one GSM-7 segment


def numbers() -> list[str]:
    return [f"+1555300{index:04d}" for index in range(NUMBERS)]


def write_config(directory: Path, api_base: str) -> None:
    lines = [
        '[gateway]\ndefault_region = "US"\n',
        f'[[carriers]]\nname = "twilio-bench"\nkind = "twilio"\naccount_sid = "{ACCOUNT_SID}"\n'
        f'auth_token = "{AUTH_TOKEN}"\napi_base = "{api_base}"\nsend_timeout_seconds = 10\n',
        '[[teams]]\nname = "service"\n',
    ]
    for number, limit in zip(numbers(), limits(), strict=True):
        lines.append(
            f'[[business_numbers]]\nnumber = "{number}"\nname = "Line {number[-4:]}"\n'
            f'carrier = "twilio-bench"\nteam = "service"\nappended_message = "Reply STOP to opt out."\n'
            f"max_per_second = {limit}\n"
        )
    (directory / "gateway.toml").write_text("\n".join(lines))


def shares(total: int) -> list[int]:
    """Sends per number in proportion to its limit, so all finish together at full speed."""
    counts = [total * limit // sum(limits()) for limit in limits()]
    counts[-1] += total - sum(counts)
    return counts


def queue_sends(database_url: str, redis_url: str, total: int) -> list[int]:
    """Bulk-write what POST /messages writes (contact, conversation, queued message), then enqueue."""
    from gateway.outbound import compose_body
    from gateway.segments import count_segments

    engine = sa.create_engine(normalize_database_url(database_url))
    now = utcnow()
    rows = []
    index = 0
    for number, count in zip(numbers(), shares(total), strict=True):
        for _ in range(count):
            body = compose_body(BODY.format(i=index), "Reply STOP to opt out.")
            rows.append((number, f"+1415{index:07d}", body))
            index += 1
    message_ids = []
    with engine.begin() as connection:
        for start in range(0, len(rows), 1000):
            batch = rows[start:start + 1000]
            contact_ids = connection.execute(
                sa.insert(Contact).values([
                    {"number": to, "number_kind": "e164", "opted_out": False, "created_at": now}
                    for _, to, _ in batch
                ]).returning(Contact.id),
            ).scalars().all()
            conversation_ids = connection.execute(
                sa.insert(Conversation).values([
                    {"business_number": number, "contact_id": contact_id, "status": "unassigned",
                     "team": "service", "folder_match": "none", "candidate_folder_ids": [], "unread": False,
                     "last_message_at": now, "created_at": now}
                    for (number, _, _), contact_id in zip(batch, contact_ids, strict=True)
                ]).returning(Conversation.id),
            ).scalars().all()
            message_ids += connection.execute(
                sa.insert(Message).values([
                    {"conversation_id": conversation_id, "direction": "outbound", "body": body,
                     "from_number": number, "to_number": to, "status": "queued",
                     "segments": count_segments(body).segments, "encoding": count_segments(body).encoding,
                     "send_state": "pending", "send_attempts": 0, "created_at": now}
                    for (number, to, body), conversation_id in zip(batch, conversation_ids, strict=True)
                ]).returning(Message.id),
            ).scalars().all()
    engine.dispose()
    # As the API does after each commit: a wake per text; only the first of a number's
    # burst finds no sender on its way and enqueues a task.
    broker = build_broker(redis_url, middleware=[])
    leads = SendLeads(redis.Redis.from_url(redis_url))
    for number, _, _ in rows:
        if leads.wake(number):
            broker.enqueue(dramatiq.Message(queue_name=OUTBOUND_QUEUE, actor_name=SEND_DUE_ACTOR,
                                            args=(number,), kwargs={}, options={}))
    broker.close()
    return message_ids


def baseline(standin: TwilioStandIn, sends: int, threads: int) -> float:
    """The stand-in alone, from the twilio client in a process of its own (as the workers
    are): sends/s with no gateway in the way."""
    result = subprocess.run(
        [sys.executable, __file__, "--baseline-client", standin.url, str(sends), str(threads)],
        check=True, capture_output=True, text=True, cwd=ROOT,
    )
    return float(result.stdout.split()[-1])


def baseline_client(api_base: str, sends: int, threads: int) -> None:
    carrier = SimpleNamespace(account_sid=ACCOUNT_SID, auth_token=SecretStr(AUTH_TOKEN), api_base=api_base,
                              send_timeout_seconds=10)
    message = OutboundMessage(0, numbers()[0], "+14155550100", "baseline")
    twilio.send(message, carrier)   # warm: the client built, the connection open
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _: twilio.send(message, carrier), range(sends)))
    print(sends / (time.perf_counter() - started))


def worst_windows(standin: TwilioStandIn) -> dict[str, tuple[int, float]]:
    """Per number: (most arrivals in any 1 s window, arrivals per second overall)."""
    by_number: dict[str, list[float]] = {}
    for accepted in standin.accepted:
        by_number.setdefault(accepted.field("From"), []).append(accepted.received_at)
    result = {}
    for number, times in by_number.items():
        times.sort()
        worst, end = 0, 0
        for start, t in enumerate(times):
            while end < len(times) and times[end] < t + 1.0:
                end += 1
            worst = max(worst, end - start)
        span = times[-1] - times[0]
        result[number] = (worst, (len(times) - 1) / span if span else float("nan"))
    return result


def main() -> None:
    global _limits
    if sys.argv[1:2] == ["--baseline-client"]:
        _limits = (1,) * NUMBERS
        baseline_client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_DATABASE,
                        help="a PostgreSQL server to make a scratch database on")
    parser.add_argument("--sends", type=int, default=10_000)
    parser.add_argument("--timeout", type=float, default=110.0)
    parser.add_argument("--limits", default=DEFAULT_LIMITS,
                        help="max_per_second of the numbers, cycled over the 20 (default %(default)s)")
    args = parser.parse_args()
    cycle = [int(v) for v in args.limits.split(",")]
    _limits = tuple(cycle[i % len(cycle)] for i in range(NUMBERS))

    workdir = Path(tempfile.mkdtemp(prefix="bench-outbound-"))
    with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, latency=LATENCY_S) as standin, \
            private_redis(workdir) as redis_url, scratch_database(args.database_url, "bench_outbound") as url:
        base = baseline(standin, min(2000, args.sends), CARRIER_CALLS)
        standin.accepted.clear()
        standin.requests.clear()
        write_config(workdir, standin.url)
        queued_at = time.perf_counter()
        queue_sends(url, redis_url, args.sends)
        print(f"queued {args.sends} sends in {time.perf_counter() - queued_at:.1f} s", flush=True)
        env = {**os.environ, "GATEWAY_CONFIG": str(workdir), "DATABASE_URL": url, "REDIS_URL": redis_url,
               "PUBLIC_URL": "http://127.0.0.1:9", "MEDIA_DIR": str(workdir / "media")}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env["dramatiq_prom_port"] = str(free_port())
        workers = Process(procfile_command("worker"), env, workdir / "worker.log")
        memory = PeakRss()
        metrics = MetricsWatch(f"http://127.0.0.1:{env['dramatiq_prom_port']}/metrics", "gateway_sends_total")
        try:
            memory.watch("worker", workers.popen.pid)
            memory.start()
            metrics.start()
            deadline = time.monotonic() + args.timeout
            while len(standin.accepted) < args.sends and time.monotonic() < deadline:
                time.sleep(0.5)
            metrics.stop()
        finally:
            memory.stop()
            workers.stop()
        report(standin, args.sends, base, memory)
        print(f"worker metrics during the run: {metrics.report()}")


def report(standin: TwilioStandIn, sends: int, base: float, memory: PeakRss) -> None:
    accepted = len(standin.accepted)
    arrivals = sorted(a.received_at for a in standin.accepted)
    rate = (accepted - 1) / (arrivals[-1] - arrivals[0]) if accepted > 1 else 0.0
    creates = sum(1 for method, _, _ in standin.requests if method == "POST")
    distinct = len({a.form["Body"][0] for a in standin.accepted})
    print(f"\nworker command: {procfile_command('worker')}")
    print(f"baseline (stand-in alone, client process with {CARRIER_CALLS} threads): {base:.0f} sends/s")
    print(f"gateway: {accepted}/{sends} sends accepted ({distinct} distinct texts), "
          f"{creates} create requests, {rate:.0f} sends/s "
          f"({rate / base:.2f}x baseline; limits allow {sum(limits())}/s)")
    print(f"\n{'number':<14} {'limit/s':>7} {'worst 1-s window':>17} {'rate/s':>7} {'busy':>6}")
    windows = worst_windows(standin)
    held = True
    for number, limit in zip(numbers(), limits(), strict=True):
        worst, per_second = windows.get(number, (0, 0.0))
        held &= worst <= limit
        print(f"{number:<14} {limit:>7} {worst:>17} {per_second:>7.1f} {per_second / limit:>6.0%}")
    print(f"\nlimits held in every 1-s window: {'yes' if held else 'NO'}")
    print(memory.report("worker"))

if __name__ == "__main__":
    main()
