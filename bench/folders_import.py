"""Benchmark: `gateway folders import` of 100k folders (1-3 phones each) into a fresh database.

    python3 bench/folders_import.py                                   # SQLite in a temp dir
    python3 bench/folders_import.py --database-url postgresql://postgres@127.0.0.1:5432/test

With a PostgreSQL URL the script creates a database of its own on that server
(`bench_folders_<random>`), migrates it, and drops it at the end; the named database
is only used to connect.

Figures, all measured in the same run so the ratios hold on a noisy machine:
- baseline: parsing and normalising the file in-process, writing nothing (the floor);
- the real command, `python -m gateway.cli folders import FILE`, into the empty database;
- with --again, the same command again on the same file (every folder unchanged);
- a naive import (one select and one insert per row, a transaction per row) of a
  2,000-row sample, extrapolated to the whole file: what the batching saves.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from harness import scratch_database
from sqlalchemy import select
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.db import create_db_engine, make_sessionmaker  # noqa: E402
from gateway.folders import FolderRow, open_folder_file, read_folders  # noqa: E402
from gateway.migrate import upgrade_database  # noqa: E402
from gateway.models import Folder, FolderPhone  # noqa: E402

NAIVE_SAMPLE_ROWS = 2_000
PHONE_SHAPES = ("({a}) {b}-{c}", "+1 {a} {b} {c}", "{a}.{b}.{c}", "1{a}{b}{c}")


def write_folders_csv(path: Path, rows: int, seed: int = 7) -> int:
    """A CSV as a CRM would export it; returns the number of phones written."""
    rng = random.Random(seed)
    phones_written = 0
    with path.open("w") as out:
        out.write("external_id,name,phones,sales_resource,service_resource\n")
        for index in range(rows):
            count = rng.randint(1, 3)
            phones = [_phone(rng) for _ in range(count)]
            phones_written += count
            resources = f"sales-{index % 40},svc-{index % 25}"
            out.write(f"CRM-{index:07d},Customer {index},{';'.join(phones)},{resources}\n")
    return phones_written


def _phone(rng: random.Random) -> str:
    area = rng.choice(("415", "212", "617", "303", "512", "206"))
    shape = rng.choice(PHONE_SHAPES)
    return shape.format(a=area, b=f"{rng.randint(200, 999)}", c=f"{rng.randint(0, 9999):04d}")


@contextmanager
def fresh_database(url: str | None, workdir: Path):
    """A migrated, empty database: a SQLite file, or a new database on the given PostgreSQL server."""
    if url is None or make_url(url).get_backend_name() == "sqlite":
        fresh = url or f"sqlite:///{workdir / 'bench.db'}"
        upgrade_database(fresh)
        yield fresh
        return
    with scratch_database(url, "bench_folders") as fresh:
        yield fresh


def time_parse_only(csv_path: Path) -> tuple[float, int]:
    started = time.perf_counter()
    valid = sum(1 for item in read_folders(open_folder_file(csv_path), "US") if isinstance(item, FolderRow))
    return time.perf_counter() - started, valid


def time_cli_import(csv_path: Path, database_url: str, config_dir: Path) -> tuple[float, str]:
    env = {**os.environ, "DATABASE_URL": database_url, "GATEWAY_CONFIG": str(config_dir)}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "folders", "import", str(csv_path)],
        env=env, cwd=ROOT, capture_output=True, text=True, check=False,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"import failed: {result.stderr.strip() or result.stdout.strip()}")
    return elapsed, result.stdout.splitlines()[0]


def time_naive_sample(csv_path: Path, database_url: str, rows: int) -> float:
    """Row at a time, as a first script would do it: look the folder up, insert it, commit."""
    sample = []
    for item in read_folders(open_folder_file(csv_path), "US"):
        if isinstance(item, FolderRow):
            sample.append(item)
        if len(sample) == rows:
            break
    engine = create_db_engine(database_url)
    sessions = make_sessionmaker(engine)
    started = time.perf_counter()
    for row in sample:
        with sessions() as session, session.begin():
            external_id = f"naive-{row.external_id}"
            if session.scalar(select(Folder.id).where(Folder.external_id == external_id)) is None:
                folder = Folder(external_id=external_id, name=row.name, sales_resource=row.sales_resource,
                                service_resource=row.service_resource)
                folder.phones = [FolderPhone(number=number) for number in row.phones]
                session.add(folder)
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--database-url", help="a PostgreSQL server to create a scratch database on "
                        "(default: SQLite in a temporary directory)")
    parser.add_argument("--again", action="store_true",
                        help="also time importing the same file a second time (every folder unchanged)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-folders-") as tmp:
        workdir = Path(tmp)
        config_dir = workdir / "config"
        config_dir.mkdir()
        (config_dir / "gateway.toml").write_text('[gateway]\ndefault_region = "US"\n')
        csv_path = workdir / "folders.csv"
        phones = write_folders_csv(csv_path, args.rows)

        with fresh_database(args.database_url, workdir) as database_url:
            backend = make_url(database_url).get_backend_name()
            print(f"folders import: {args.rows} folders, {phones} phones, {backend}")

            parse_s, valid = time_parse_only(csv_path)
            assert valid == args.rows, f"{args.rows - valid} generated rows were rejected"
            _report("baseline: parse + normalise only", parse_s, args.rows)

            import_s, summary = time_cli_import(csv_path, database_url, config_dir)
            _report("gateway folders import (empty db)", import_s, args.rows,
                    f"{import_s / parse_s:.2f}x baseline")
            print(f"    {summary}")

            if args.again:
                again_s, summary = time_cli_import(csv_path, database_url, config_dir)
                _report("same file again (all unchanged)", again_s, args.rows,
                        f"{again_s / parse_s:.2f}x baseline")
                print(f"    {summary}")

            naive_s = time_naive_sample(csv_path, database_url, NAIVE_SAMPLE_ROWS)
            naive_total = naive_s * args.rows / NAIVE_SAMPLE_ROWS
            _report(f"naive row at a time ({NAIVE_SAMPLE_ROWS} rows, extrapolated)", naive_total, args.rows,
                    f"{naive_total / import_s:.1f}x slower than the import")


def _report(label: str, seconds: float, rows: int, note: str = "") -> None:
    print(f"  {label:<48} {seconds:7.2f} s  {rows / seconds:9,.0f} rows/s  {note}".rstrip())


if __name__ == "__main__":
    main()
