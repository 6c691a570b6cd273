"""Benchmark: folder lookup latency with 10k, 100k and 1M folder phone numbers.

    python3 bench/routing.py                 # PostgreSQL at postgresql://postgres@127.0.0.1:5432/
    python3 bench/routing.py --lookups 5000 --sizes 10000,100000,1000000

What runs: a scratch PostgreSQL database of its own (created, migrated, dropped at the end)
whose `folder_phones` table grows to each size in turn (one folder per phone, written
with generate_series; not timed), analysed after each step. At each size it times, one
at a time from one client through the gateway's own session:
- the lookup: the query the routing worker runs for a sender (`gateway/inbound.py`,
  `_match_folder`: the folder ids of one number), for numbers on a folder (80%) and
  numbers on none (20%), in random order;
- the baseline, in the same run and at the same size: a primary-key lookup of a folder
  (`SELECT id FROM folders WHERE id = ?`), the cheapest query the database answers.
Latency is client-side wall time per query (round trip on loopback included).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import sqlalchemy as sa
from harness import DEFAULT_DATABASE, scratch_database

from gateway.db import create_db_engine, make_sessionmaker
from gateway.models import Folder, FolderPhone


def phone(n: int) -> str:
    return f"+1{2000000000 + n * 7:010d}"  # spread over the number space, not consecutive


def grow(engine, size: int) -> None:
    """Folders and phones up to `size`, one phone per folder."""
    with engine.begin() as connection:
        have = connection.execute(sa.text("SELECT count(*) FROM folder_phones")).scalar()
        if have < size:
            connection.execute(sa.text(
                "INSERT INTO folders (id, external_id, name, created_at, updated_at) "
                "SELECT n, 'f' || n, 'Folder ' || n, now(), now() "
                "FROM generate_series(CAST(:low AS bigint), CAST(:high AS bigint)) AS n"
            ), {"low": have + 1, "high": size})
            connection.execute(sa.text(
                "INSERT INTO folder_phones (folder_id, number) "
                "SELECT n, '+1' || lpad((2000000000 + (n - 1) * 7)::text, 10, '0') "
                "FROM generate_series(CAST(:low AS bigint), CAST(:high AS bigint)) AS n"
            ), {"low": have + 1, "high": size})
            connection.execute(sa.text("SELECT setval('folders_id_seq', :high)"), {"high": size})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sa.text("ANALYZE folders"))
        connection.execute(sa.text("ANALYZE folder_phones"))


def timed(sessions, statements) -> list[float]:
    """Wall time of each statement, run one at a time in one session (ms)."""
    times = []
    with sessions() as session:
        for statement in statements:
            started = time.perf_counter()
            list(session.scalars(statement))
            times.append((time.perf_counter() - started) * 1000)
    return times


def percentiles(times: list[float]) -> tuple[float, float, float]:
    ordered = sorted(times)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.99) - 1], ordered[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_DATABASE,
                        help="a PostgreSQL server to make a scratch database on")
    parser.add_argument("--lookups", type=int, default=5_000)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rng = random.Random(7)

    print(f"{'phones':>9}  {'query':<38} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    with scratch_database(args.database_url, "bench_routing") as url:
        engine = create_db_engine(url)
        sessions = make_sessionmaker(engine)
        worst_p99 = 0.0
        for size in sizes:
            grow(engine, size)
            numbers = [phone(rng.randrange(size)) if rng.random() < 0.8 else phone(size + rng.randrange(size))
                       for _ in range(args.lookups)]
            ids = [rng.randrange(1, size + 1) for _ in range(args.lookups)]
            lookups = [sa.select(FolderPhone.folder_id).where(FolderPhone.number == n) for n in numbers]
            keys = [sa.select(Folder.id).where(Folder.id == i) for i in ids]
            timed(sessions, lookups[:500] + keys[:500])  # warm-up: statement caches, buffers
            # Interleaved halves, so that a burst of noise on the shared machine hits both.
            half = args.lookups // 2
            lookup_times = timed(sessions, lookups[:half])
            key_times = timed(sessions, keys[:half])
            lookup_times += timed(sessions, lookups[half:])
            key_times += timed(sessions, keys[half:])
            lookup, key = percentiles(lookup_times), percentiles(key_times)
            worst_p99 = max(worst_p99, lookup[1])
            print(f"{size:>9,}  {'folder lookup by number (worker query)':<38} "
                  f"{lookup[0]:>7.3f} {lookup[1]:>7.3f} {lookup[2]:>7.2f}")
            print(f"{'':>9}  {'baseline: folder by primary key':<38} "
                  f"{key[0]:>7.3f} {key[1]:>7.3f} {key[2]:>7.2f}"
                  f"   ratio p50 {lookup[0] / key[0]:.2f}x, p99 {lookup[1] / key[1]:.2f}x", flush=True)
        with engine.connect() as connection:
            explain = sa.text("EXPLAIN SELECT folder_id FROM folder_phones WHERE number = :n")
            plan = connection.execute(explain, {"n": phone(1)}).scalars().all()
        engine.dispose()
    print("\nplan at the largest size: " + " / ".join(line.strip() for line in plan))
    print(f"worst p99 of the lookup: {worst_p99:.3f} ms (target: flat, under 1 ms)")


if __name__ == "__main__":
    main()
