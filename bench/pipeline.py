"""Benchmark: stored inbound events drained by the Procfile's workers, batch path vs per message.

    python3 bench/pipeline.py                # PostgreSQL at postgresql://postgres@127.0.0.1:5432/
    python3 bench/pipeline.py --events 20000 --baseline-events 2000 --batch 100

What runs: a scratch PostgreSQL database of its own (created, migrated, dropped at the
end), a private redis-server on a free port, and the Procfile's `worker` line (dramatiq,
its processes and threads as written there). The database holds 2,000 senders' folders
(60% on one folder, 10% on two, 30% on none), 12 users in the number's team (10 of them
folders' sales resources, one subscribed to all), so that routing and notifying do real
work: about 6 notifications per message.

Each run inserts its events directly (as the webhook stores them; not timed), then
enqueues them and times until every event is routed and every message notified
(`messages.notified_at` set), polling the database:
- baseline, same run, same workers: the per-message path, one `process_inbound_event`
  task per event and one `notify_inbound` task per message (the path before batching);
- batch path: one `process_inbound_events` task per `--batch` events, as the group
  commit of the webhook hands them over (it hands one task per commit).
Senders are interleaved (event n is from sender n mod 2000), ten texts each.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import dramatiq
import sqlalchemy as sa
from harness import (
    ACCOUNT_SID,
    BUSINESS_NUMBER,
    DEFAULT_DATABASE,
    MetricsWatch,
    PeakRss,
    Process,
    free_port,
    private_redis,
    procfile_command,
    scratch_database,
    wait_for,
    write_config,
)

from gateway.broker import INBOUND_QUEUE, build_broker
from gateway.db import normalize_database_url
from gateway.inbound import PROCESS_INBOUND_ACTOR
from gateway.inbound_batch import PROCESS_INBOUND_BATCH_ACTOR
from gateway.messaging import InboundMessage
from gateway.models import utcnow

SENDERS = 2_000
AGENTS = 10


def sender(n: int) -> str:
    return f"+1415{n % SENDERS:07d}"


def seed(engine) -> None:
    """Users of the number's team and the senders' folders."""
    now = utcnow()
    with engine.begin() as connection:
        names = [f"agent{k}" for k in range(AGENTS)] + ["lead", "watcher"]
        users = connection.execute(sa.text(
            "INSERT INTO users (name, role, subscribe_all, created_at) "
            "SELECT n, 'agent', n = 'watcher', :now FROM unnest(CAST(:names AS text[])) AS n RETURNING id"
        ), {"names": names, "now": now}).scalars().all()
        connection.execute(sa.text(
            "INSERT INTO user_teams (user_id, team) "
            "SELECT u, 'service' FROM unnest(CAST(:ids AS bigint[])) AS u"
        ), {"ids": users})
        folders, phones = [], []
        for n in range(SENDERS):
            share = n % 10
            owners = 1 if share < 6 else (2 if share == 6 else 0)
            for copy in range(owners):
                folders.append((f"cust-{n}-{copy}", f"Customer {n}", f"agent{n % AGENTS}"))
                phones.append((len(folders), sender(n)))
        ids = connection.execute(sa.text(
            "INSERT INTO folders (external_id, name, sales_resource, created_at, updated_at) "
            "SELECT e, n, s, :now, :now FROM unnest(CAST(:external AS text[]), CAST(:names AS text[]), "
            "CAST(:sales AS text[])) WITH ORDINALITY AS v(e, n, s, o) ORDER BY o RETURNING id"
        ), {"external": [f[0] for f in folders], "names": [f[1] for f in folders],
            "sales": [f[2] for f in folders], "now": now}).scalars().all()
        connection.execute(sa.text(
            "INSERT INTO folder_phones (folder_id, number) "
            "SELECT f, p FROM unnest(CAST(:folders AS bigint[]), CAST(:numbers AS text[])) AS v(f, p)"
        ), {"folders": [ids[index - 1] for index, _ in phones], "numbers": [p for _, p in phones]})


def store_events(engine, count: int, tag: str) -> list[int]:
    """`count` events as the webhook stores them, waiting for a worker; returns their ids."""
    ids = []
    for start in range(0, count, 5_000):
        rows = []
        for n in range(start, min(count, start + 5_000)):
            message = InboundMessage("twilio", ACCOUNT_SID, f"SM{tag}{n:030x}", sender(n), BUSINESS_NUMBER,
                                     f"Text {n} about my order")
            now = utcnow().isoformat()
            rows.append({"carrier": "twilio-bench", "carrier_message_id": message.carrier_message_id,
                         "from_number": sender(n), "from_kind": "e164", "to_number": BUSINESS_NUMBER,
                         "payload": message.to_payload(), "status": "received", "received_at": now,
                         "enqueued_at": now})
        with engine.begin() as connection:
            ids += connection.execute(sa.text(
                "INSERT INTO inbound_events (carrier, carrier_message_id, from_number, from_kind, to_number, "
                "payload, status, received_at, enqueued_at, attempts) SELECT carrier, carrier_message_id, "
                "from_number, from_kind, to_number, payload, status, received_at, enqueued_at, 0 "
                "FROM json_populate_recordset(NULL::inbound_events, CAST(:rows AS json)) "
                "ORDER BY received_at RETURNING id"
            ), {"rows": json.dumps(rows)}).scalars().all()
    return sorted(ids)


def drain(engine, broker, actor: str, tasks: list, events: list[int]) -> float:
    """Enqueue `tasks` and wait until each of `events` is processed and notified; msg/s."""
    first, last = events[0], events[-1]
    done = sa.text(
        "SELECT count(*) FROM messages m JOIN inbound_events e ON e.id = m.inbound_event_id "
        "WHERE e.id BETWEEN :first AND :last AND m.notified_at IS NOT NULL"
    )
    started = time.perf_counter()
    for args in tasks:
        broker.enqueue(dramatiq.Message(queue_name=INBOUND_QUEUE, actor_name=actor, args=(args,),
                                        kwargs={}, options={}))

    def finished() -> bool:
        with engine.connect() as connection:
            return connection.execute(done, {"first": first, "last": last}).scalar() == len(events)

    wait_for(finished, f"{len(events)} messages to be routed and notified", timeout=300, interval=0.2)
    return len(events) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_DATABASE,
                        help="a PostgreSQL server to make a scratch database on")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--baseline-events", type=int, default=2_000)
    parser.add_argument("--batch", type=int, default=100, help="events per batch task")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    with private_redis(workdir) as redis_url, scratch_database(args.database_url, "bench_pipeline") as url:
        engine = sa.create_engine(normalize_database_url(url))
        seed(engine)
        env = {**os.environ, "GATEWAY_CONFIG": str(write_config(workdir)), "DATABASE_URL": url,
               "REDIS_URL": redis_url, "MEDIA_DIR": str(workdir / "media")}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env["dramatiq_prom_port"] = str(free_port())
        workers = Process(procfile_command("worker"), env, workdir / "worker.log")
        memory = PeakRss()
        metrics = MetricsWatch(f"http://127.0.0.1:{env['dramatiq_prom_port']}/metrics",
                               "gateway_routing_outcomes_total")
        broker = build_broker(redis_url, middleware=[])
        try:
            memory.watch("worker", workers.popen.pid)
            memory.start()
            metrics.start()
            time.sleep(3)  # let the worker processes boot (not timed: nothing is enqueued yet)
            print(f"worker command: {procfile_command('worker')}", flush=True)
            # Warm-up: imports, pools and statement caches of both paths.
            warm = store_events(engine, 200, "w")
            drain(engine, broker, PROCESS_INBOUND_ACTOR, warm[:100], warm[:100])
            drain(engine, broker, PROCESS_INBOUND_BATCH_ACTOR, [warm[100:]], warm[100:])

            baseline_events = store_events(engine, args.baseline_events, "a")
            baseline = drain(engine, broker, PROCESS_INBOUND_ACTOR, baseline_events, baseline_events)
            print(f"baseline, one task per event:   {baseline:7.0f} msg/s  ({len(baseline_events)} events)",
                  flush=True)
            events = store_events(engine, args.events, "b")
            batches = [events[i:i + args.batch] for i in range(0, len(events), args.batch)]
            batched = drain(engine, broker, PROCESS_INBOUND_BATCH_ACTOR, batches, events)
            print(f"batch path, {args.batch} events a task: {batched:7.0f} msg/s  ({len(events)} events)")
            metrics.stop()
        finally:
            memory.stop()
            workers.stop()
            broker.close()
        audit(engine)
        engine.dispose()
    print(f"\nratio batch/baseline: {batched / baseline:.2f}x   (target >= 1,000 msg/s on 2 cores)")
    print(memory.report("worker") + "  (target < 200 MB per process)")
    print(f"worker metrics during the run: {metrics.report()}")


def audit(engine) -> None:
    with engine.connect() as connection:
        events, messages, notified, conversations, doubled = connection.execute(sa.text(
            "SELECT (SELECT count(*) FROM inbound_events), (SELECT count(*) FROM messages), "
            "(SELECT count(*) FROM messages WHERE notified_at IS NOT NULL), "
            "(SELECT count(*) FROM conversations), "
            "(SELECT count(*) FROM (SELECT contact_id FROM conversations WHERE status != 'closed' "
            " GROUP BY business_number, contact_id HAVING count(*) > 1) AS d)"
        )).one()
        notifications = connection.execute(sa.text("SELECT count(*) FROM notifications")).scalar()
    print(f"\naudit: {events} events, {messages} messages ({notified} notified), "
          f"{conversations} conversations for {SENDERS} senders, {notifications} notifications; "
          f"senders with two open conversations: {doubled}")
    if not (events == messages == notified and conversations == SENDERS and doubled == 0):
        raise SystemExit("AUDIT FAILED")


if __name__ == "__main__":
    main()
