"""Customer folders: import them from CSV or JSON lines, idempotent on `external_id`.

The file format (also printed by `gateway folders import --help`):

- CSV with a header row, or JSON lines (one object per line). `.csv` is CSV; `.jsonl`,
  `.ndjson` and `.json` are JSON lines; any other name is decided by the content (a
  first character `{` means JSON lines).
- Fields: `external_id` and `name` (required), `phones`, `sales_resource`,
  `service_resource` (optional). Header names are case-insensitive; unknown columns or
  keys are ignored, because CRM exports carry many.
- Phones: every field named `phone`, `phones`, `phone2`, `phones3`, ... holds phones, and
  one value may hold several separated by `;`, `|` or `,` (quote a CSV value that uses
  commas). In JSON a phone field is a string, a number or a list of those. A folder may
  have no phones. Each phone is normalised to E.164 with the config's default region, the
  same way inbound senders are, so that folder matching compares equal strings.

A row that fails validation is rejected with its line number and the reason, and
changes nothing; the other rows are imported. Importing an `external_id` that exists
updates its name and resources and replaces its phone set; a row identical to what is
stored is counted as unchanged and not written at all.

Speed: rows are validated in Python, then written in batches of `DEFAULT_BATCH_SIZE`,
one transaction each, with a handful of set-based statements per batch (one select of
the batch's folders, one of their phones, one upsert, one phone delete, one phone
insert), never a query per row.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, String, Table, any_, delete, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from gateway.db import is_sqlite, transaction
from gateway.models import Folder, FolderPhone, User, utcnow
from gateway.phone import NumberError, normalize_phone

DEFAULT_BATCH_SIZE = 2_000
CSV_SUFFIXES = frozenset({".csv"})
JSON_LINES_SUFFIXES = frozenset({".jsonl", ".ndjson", ".json"})

REQUIRED_FIELDS = ("external_id", "name")
OPTIONAL_FIELDS = ("sales_resource", "service_resource")
# Column widths from the models: longer values would fail the whole batch in PostgreSQL.
MAX_LENGTHS = {"external_id": 120, "name": 255, "sales_resource": 120, "service_resource": 120}
PHONE_FIELD = re.compile(r"^phones?\d*$")
PHONE_SEPARATORS = re.compile(r"[;|,]")
# Bound on the ids in one IN (...) list; SQLite allows 32,766 parameters, PostgreSQL 65,535.
MAX_IDS_PER_STATEMENT = 5_000


class FolderFileError(Exception):
    """The file as a whole cannot be imported (missing, not UTF-8, no usable header)."""


class FolderImportError(Exception):
    """The database failed mid-import; the batches before the failure stay committed."""


class RowError(ValueError):
    """One row is invalid; the message is the reason shown to the operator."""


@dataclass(frozen=True)
class FolderRow:
    line: int
    external_id: str
    name: str
    phones: frozenset[str]
    sales_resource: str | None
    service_resource: str | None


@dataclass(frozen=True)
class Rejection:
    line: int
    reason: str


@dataclass
class ImportReport:
    rows: int = 0
    imported: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    # Resources are user names, resolved when a text arrives (gateway/notifications.py).
    # A name with no user yet is imported, but the operator should hear about it now:
    # name -> how many imported rows use it.
    unknown_resources: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class FolderFile:
    """A readable UTF-8 file whose format is known; `lines` lets callers show progress."""

    path: Path
    format: str  # "csv" | "jsonl"
    lines: int


ProgressCallback = Callable[[int, int], None]  # (rows read, line reached)


# --- the file ---------------------------------------------------------------------------


def open_folder_file(path: str | Path) -> FolderFile:
    """Check the file before anything is written: readable, UTF-8, a format we know."""
    path = Path(path)
    lines, first_char = _scan(path)
    if path.suffix.lower() in CSV_SUFFIXES:
        file_format = "csv"
    elif path.suffix.lower() in JSON_LINES_SUFFIXES or first_char == "{":
        file_format = "jsonl"
    else:
        file_format = "csv"
    if file_format == "jsonl" and first_char == "[":
        raise FolderFileError(f"{path}: holds a JSON array; write one JSON object per line (JSON lines)")
    return FolderFile(path, file_format, lines)


def _scan(path: Path) -> tuple[int, str]:
    """Count the lines and find the first non-blank character, failing on bytes that are not UTF-8."""
    lines, first_char = 0, ""
    try:
        with path.open("rb") as stream:
            for lines, raw in enumerate(stream, start=1):  # noqa: B007 - the count is the result
                try:
                    text = raw.decode("utf-8-sig" if lines == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    raise FolderFileError(
                        f"{path}: line {lines} is not UTF-8 text (byte {exc.start + 1}); "
                        "save the file as UTF-8"
                    ) from None
                if not first_char:
                    first_char = text.strip()[:1]
    except OSError as exc:
        raise FolderFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not first_char:
        raise FolderFileError(f"{path}: the file is empty")
    return lines, first_char


def read_folders(source: FolderFile, default_region: str) -> Iterator[FolderRow | Rejection]:
    """Every row of the file, validated: a FolderRow, or a Rejection with its line and reason."""
    records = _csv_records(source.path) if source.format == "csv" else _json_records(source.path)
    first_seen: dict[str, int] = {}
    for line, record in records:
        try:
            if isinstance(record, RowError):
                raise record
            row = validate_record(line, record, default_region)
            if row.external_id in first_seen:
                raise RowError(
                    f"external_id {row.external_id!r} already appears on line {first_seen[row.external_id]}"
                )
        except RowError as exc:
            yield Rejection(line, str(exc))
            continue
        first_seen[row.external_id] = line
        yield row


def _csv_records(path: Path) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    with path.open(newline="", encoding="utf-8-sig") as stream:
        reader = csv.reader(stream)
        header = [name.strip().lower() for name in next(reader, [])]
        missing = [name for name in REQUIRED_FIELDS if name not in header]
        if missing:
            found = ", ".join(repr(h) for h in header if h) or "nothing"
            raise FolderFileError(f"{path}: the header row has no {missing[0]!r} column (found {found})")
        line_reached = reader.line_num
        for values in reader:
            line, line_reached = line_reached + 1, reader.line_num  # a quoted value may span lines
            if not any(value.strip() for value in values):
                continue
            if len(values) != len(header):
                yield line, RowError(
                    f"has {len(values)} fields but the header has {len(header)} "
                    "(a value holding a comma must be quoted)"
                )
                continue
            yield line, _record_from_columns(header, values)


def _record_from_columns(header: list[str], values: list[str]) -> dict[str, Any]:
    record: dict[str, Any] = {"phones": []}
    for name, value in zip(header, values, strict=True):
        if PHONE_FIELD.match(name):
            record["phones"].append(value)
        elif name in REQUIRED_FIELDS or name in OPTIONAL_FIELDS:
            record[name] = value
    return record


def _json_records(path: Path) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    with path.open(encoding="utf-8-sig") as stream:
        for line, text in enumerate(stream, start=1):
            if not text.strip():
                continue
            try:
                value = json.loads(text.rstrip())  # without the newline, so the column is on this line
            except json.JSONDecodeError as exc:
                yield line, RowError(f"malformed JSON: {exc.msg} (column {exc.colno})")
                continue
            if not isinstance(value, dict):
                yield line, RowError(f"expected a JSON object, got {_json_type(value)}")
                continue
            yield line, _record_from_object(value)


def _record_from_object(value: dict[str, Any]) -> dict[str, Any] | RowError:
    record: dict[str, Any] = {"phones": []}
    for key, item in value.items():
        name = str(key).strip().lower()
        if PHONE_FIELD.match(name):
            phones = item if isinstance(item, list) else [item]
            for phone in phones:
                if phone is None:
                    continue
                if isinstance(phone, bool) or not isinstance(phone, str | int):
                    return RowError(
                        f"{key} must be a string, a number or a list of those, not {_json_type(phone)}"
                    )
                record["phones"].append(str(phone))
        elif name in REQUIRED_FIELDS or name in OPTIONAL_FIELDS:
            # A numeric CRM id is common and unambiguous; any other non-string is a mistake.
            if item is None:
                continue
            if name == "external_id" and isinstance(item, int) and not isinstance(item, bool):
                item = str(item)
            if not isinstance(item, str):
                return RowError(f"{name} must be a string, not {_json_type(item)}")
            record[name] = item
    return record


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


# --- one row ----------------------------------------------------------------------------


def validate_record(line: int, record: dict[str, Any], default_region: str) -> FolderRow:
    """A FolderRow from raw field values, or RowError naming the first problem."""
    values: dict[str, str | None] = {}
    for name in REQUIRED_FIELDS + OPTIONAL_FIELDS:
        value = (record.get(name) or "").strip()
        if not value and name in REQUIRED_FIELDS:
            raise RowError(f"{name} is missing")
        if len(value) > MAX_LENGTHS[name]:
            raise RowError(f"{name} is longer than {MAX_LENGTHS[name]} characters")
        values[name] = value or None
    return FolderRow(
        line=line,
        external_id=values["external_id"],
        name=values["name"],
        phones=frozenset(normalize_folder_phones(record.get("phones", []), default_region)),
        sales_resource=values["sales_resource"],
        service_resource=values["service_resource"],
    )


def normalize_folder_phones(raw_values: Iterable[str], default_region: str) -> list[str]:
    phones = []
    for raw_value in raw_values:
        for raw in PHONE_SEPARATORS.split(raw_value):
            if raw.strip():
                phones.append(normalize_folder_phone(raw.strip(), default_region))
    return phones


def normalize_folder_phone(raw: str, default_region: str) -> str:
    try:
        return normalize_phone(raw, default_region)
    except NumberError as exc:
        raise RowError(f"invalid phone: {exc}") from None


# --- writing ----------------------------------------------------------------------------


def import_folders(
    sessions: sessionmaker[Session],
    source: FolderFile,
    default_region: str,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_progress: ProgressCallback | None = None,
) -> ImportReport:
    """Validate every row and write the good ones, one transaction per batch."""
    report = ImportReport()
    resources: Counter[str] = Counter()
    batch: list[FolderRow] = []
    for item in read_folders(source, default_region):
        report.rows += 1
        if isinstance(item, Rejection):
            report.rejected.append(item)
            continue
        batch.append(item)
        resources.update({name for name in (item.sales_resource, item.service_resource) if name})
        if len(batch) >= batch_size:
            _write_batch(sessions, batch, report)
            if on_progress:
                on_progress(report.rows, item.line)
            batch = []
    if batch:
        _write_batch(sessions, batch, report)
    if on_progress:
        on_progress(report.rows, source.lines)
    report.unknown_resources = _unknown_user_names(sessions, resources)
    return report


def _unknown_user_names(sessions: sessionmaker[Session], names: Counter[str]) -> dict[str, int]:
    known: set[str] = set()
    with sessions() as session:
        for chunk in _chunks(sorted(names), MAX_IDS_PER_STATEMENT):
            known.update(session.scalars(select(User.name).where(_among(session, User.name, chunk, String))))
    return {name: count for name, count in sorted(names.items()) if name not in known}


def _write_batch(sessions: sessionmaker[Session], rows: list[FolderRow], report: ImportReport) -> None:
    try:
        with transaction(sessions) as session:
            imported, updated, unchanged = write_folders(session, rows)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        written = report.imported + report.updated + report.unchanged
        kept = f"the {written} good rows before it are saved" if written else "nothing was saved"
        raise FolderImportError(f"database error at line {rows[0].line}: {reason}; {kept}") from exc
    report.imported += imported
    report.updated += updated
    report.unchanged += unchanged


def write_folders(session: Session, rows: list[FolderRow]) -> tuple[int, int, int]:
    """Upsert a batch of folders and bring their phone sets in line; (imported, updated, unchanged)."""
    stored = _stored_folders(session, [row.external_id for row in rows])
    stored_phones = _stored_phones(session, [folder_id for folder_id, *_ in stored.values()])
    new = [row for row in rows if row.external_id not in stored]
    changed = [
        row for row in rows
        if row.external_id in stored and _differs(row, stored[row.external_id], stored_phones)
    ]
    folder_ids = _upsert_folders(session, new + changed)

    stale_phone_ids = [
        phone_id
        for row in changed
        for number, phone_id in stored_phones[folder_ids[row.external_id]].items()
        if number not in row.phones
    ]
    fresh_phones = [
        {"folder_id": folder_ids[row.external_id], "number": number}
        for row in new + changed
        for number in sorted(row.phones - stored_phones[folder_ids[row.external_id]].keys())
    ]
    for chunk in _chunks(stale_phone_ids, MAX_IDS_PER_STATEMENT):
        session.execute(delete(FolderPhone).where(_among(session, FolderPhone.id, chunk, BigInteger)))
    if fresh_phones:
        insert, params = _bulk_insert(session, FolderPhone.__table__, fresh_phones)
        session.execute(insert.on_conflict_do_nothing(index_elements=["folder_id", "number"]), params)
    return len(new), len(changed), len(rows) - len(new) - len(changed)


def _stored_folders(session: Session, external_ids: list[str]) -> dict[str, tuple]:
    stored = {}
    for chunk in _chunks(external_ids, MAX_IDS_PER_STATEMENT):
        query = select(
            Folder.external_id, Folder.id, Folder.name, Folder.sales_resource, Folder.service_resource
        ).where(_among(session, Folder.external_id, chunk, String))
        stored.update({external_id: tuple(rest) for external_id, *rest in session.execute(query)})
    return stored


def _stored_phones(session: Session, folder_ids: list[int]) -> defaultdict[int, dict[str, int]]:
    """folder id -> {number: phone row id}."""
    phones: defaultdict[int, dict[str, int]] = defaultdict(dict)
    for chunk in _chunks(folder_ids, MAX_IDS_PER_STATEMENT):
        query = select(FolderPhone.folder_id, FolderPhone.number, FolderPhone.id).where(
            _among(session, FolderPhone.folder_id, chunk, BigInteger)
        )
        for folder_id, number, phone_id in session.execute(query):
            phones[folder_id][number] = phone_id
    return phones


def _differs(row: FolderRow, stored: tuple, stored_phones: dict[int, dict[str, int]]) -> bool:
    folder_id, name, sales_resource, service_resource = stored
    return (
        (row.name, row.sales_resource, row.service_resource) != (name, sales_resource, service_resource)
        or row.phones != stored_phones[folder_id].keys()
    )


def _upsert_folders(session: Session, rows: list[FolderRow]) -> dict[str, int]:
    """INSERT ... ON CONFLICT (external_id) DO UPDATE; external_id -> folder id."""
    if not rows:
        return {}
    now = utcnow()
    values = [
        {
            "external_id": row.external_id,
            "name": row.name,
            "sales_resource": row.sales_resource,
            "service_resource": row.service_resource,
            "created_at": now,
            "updated_at": now,
        }
        for row in rows
    ]
    table = Folder.__table__
    insert, params = _bulk_insert(session, table, values)
    upsert = insert.on_conflict_do_update(
        index_elements=["external_id"],
        set_={
            "name": insert.excluded.name,
            "sales_resource": insert.excluded.sales_resource,
            "service_resource": insert.excluded.service_resource,
            "updated_at": insert.excluded.updated_at,
        },
    ).returning(table.c.external_id, table.c.id)
    return dict(session.execute(upsert, params).all())


# Many rows in one statement, per dialect. SQLite: an executemany, which its driver runs
# in C without re-parsing. PostgreSQL: one array per column and `unnest`, so the statement
# carries a handful of parameters; an executemany or a VALUES list with thousands of
# placeholders is parsed and sent row by row by psycopg, which made imports 3x slower.


def _bulk_insert(session: Session, table: Table, rows: list[dict[str, Any]]):
    """(INSERT of all `rows`, parameters to execute it with); callers add ON CONFLICT and RETURNING."""
    if is_sqlite(session):
        return sqlite.insert(table), rows
    columns = list(rows[0])
    source = func.unnest(
        *(literal([row[name] for row in rows], ARRAY(table.c[name].type)) for name in columns)
    ).table_valued(*columns).render_derived()
    insert = postgresql.insert(table).from_select(columns, select(*(source.c[name] for name in columns)))
    return insert, None


def _among(session: Session, column, values: list, item_type):
    """`column IN (values)`; on PostgreSQL `column = ANY(array)`, one parameter (see above)."""
    if is_sqlite(session):
        return column.in_(values)
    return column == any_(literal(values, ARRAY(item_type)))


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
