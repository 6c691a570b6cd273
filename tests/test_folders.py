"""Folder import: files in, folders and their E.164 phones in the database, bad rows named.

Each case is a file as an operator would write it and what the database holds after
importing it; every test runs on SQLite and PostgreSQL (the `runtime` fixture).
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from gateway.folders import FolderFileError, Rejection, import_folders, open_folder_file
from gateway.models import Folder
from tests.conftest import wait_until

HEADER = "external_id,name,phones,sales_resource,service_resource\n"


def import_text(runtime, tmp_path, name: str, text: str | bytes, **options):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    source = open_folder_file(path)
    return import_folders(runtime.sessions, source, runtime.settings.default_region, **options)


def stored_folders(runtime) -> dict[str, tuple]:
    """external_id -> (name, sales resource, service resource, sorted phones)."""
    with runtime.sessions() as session:
        return {
            folder.external_id: (
                folder.name,
                folder.sales_resource,
                folder.service_resource,
                sorted(phone.number for phone in folder.phones),
            )
            for folder in session.scalars(select(Folder))
        }


def jsonl(*objects) -> str:
    return "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objects)


GOOD_FILES = [
    pytest.param(
        "folders.csv",
        HEADER + 'C-1,Acme Corp,(415) 555-0100,alice,bob\n',
        {"C-1": ("Acme Corp", "alice", "bob", ["+14155550100"])},
        id="csv numbers are normalised to E.164 with the default region",
    ),
    pytest.param(
        "folders.csv",
        HEADER + 'C-1,Acme,+1 415 555 0100; 415.555.0101 | 14155550102,,\n'
        + 'C-2,Beta,"(415) 555-0103, (415) 555-0104",,\n',
        {
            "C-1": ("Acme", None, None, ["+14155550100", "+14155550101", "+14155550102"]),
            "C-2": ("Beta", None, None, ["+14155550103", "+14155550104"]),
        },
        id="csv several phones in one value separated by semicolon pipe or quoted comma",
    ),
    pytest.param(
        "folders.csv",
        "External_ID,Name,Phone,Phone2,Phone3,Region\n"
        "C-1,Acme,415-555-0100,+442079460958,,west\n",
        {"C-1": ("Acme", None, None, ["+14155550100", "+442079460958"])},
        id="csv phone phone2 phone3 columns all hold phones and unknown columns are ignored",
    ),
    pytest.param(
        "folders.csv",
        HEADER + "C-1,Acme,,,\n\n   \nC-2,Beta,4155550100;4155550100,,\n",
        {"C-1": ("Acme", None, None, []), "C-2": ("Beta", None, None, ["+14155550100"])},
        id="csv blank lines are skipped and a folder may have no phones or a phone twice",
    ),
    pytest.param(
        "folders.csv",
        "\ufeff" + HEADER + 'C-1,"Acme, ""West""",4155550100,,\n',
        {"C-1": ('Acme, "West"', None, None, ["+14155550100"])},
        id="csv with a byte order mark and quoted values",
    ),
    pytest.param(
        "folders.jsonl",
        jsonl(
            {"external_id": "C-1", "name": "Acme", "phones": ["(415) 555-0100", "+44 20 7946 0958"],
             "sales_resource": "alice", "service_resource": "bob"},
            {"external_id": "C-2", "name": "Beta", "phones": "415 555 0101; 415 555 0102"},
            {"external_id": 3, "name": "Gamma", "phone": 14155550103, "sales_resource": None},
        ),
        {
            "C-1": ("Acme", "alice", "bob", ["+14155550100", "+442079460958"]),
            "C-2": ("Beta", None, None, ["+14155550101", "+14155550102"]),
            "3": ("Gamma", None, None, ["+14155550103"]),
        },
        id="json lines phones as a list a separated string or a number",
    ),
    pytest.param(
        "export.txt",
        jsonl({"external_id": "C-1", "name": "Acme", "phones": ["4155550100"]}),
        {"C-1": ("Acme", None, None, ["+14155550100"])},
        id="json lines recognised by content when the extension says nothing",
    ),
    pytest.param(
        "export.ndjson",
        jsonl({"external_id": "  C-1 ", "name": " Acme ", "phones": [], "notes": "vip"}),
        {"C-1": ("Acme", None, None, [])},
        id="json lines values are trimmed and unknown keys ignored",
    ),
]


@pytest.mark.parametrize("name, text, expected", GOOD_FILES)
def test_a_good_file_imports_every_folder_with_its_phones(runtime, tmp_path, name, text, expected):
    report = import_text(runtime, tmp_path, name, text)

    assert report.rejected == []
    assert (report.imported, report.updated, report.unchanged) == (len(expected), 0, 0)
    assert stored_folders(runtime) == expected


BAD_ROWS = [
    pytest.param("folders.csv", ",Acme,4155550100,,\n", 3, "external_id is missing",
                 id="csv missing external_id"),
    pytest.param("folders.csv", "C-2,  ,4155550100,,\n", 3, "name is missing",
                 id="csv blank name"),
    pytest.param("folders.csv", "C-2,Beta,not a phone,,\n", 3,
                 "invalid phone: 'not a phone' is a sender id, not a phone number",
                 id="csv words for a phone"),
    pytest.param("folders.csv", "C-2,Beta,4155550100;12,,\n", 3,
                 "invalid phone: '12' is not a possible phone number",
                 id="csv one bad phone among good ones"),
    pytest.param("folders.csv", "C-2,Beta,555-0100,,\n", 3,
                 "invalid phone: '555-0100' is not a possible phone number",
                 id="csv local number without area code"),
    pytest.param("folders.csv", "C-2,Beta,38438,,\n", 3,
                 "invalid phone: '38438' is a shortcode, not a phone number", id="csv short code"),
    pytest.param("folders.csv", "C-2,Beta,4155550100,alice\n", 3,
                 "has 4 fields but the header has 5 (a value holding a comma must be quoted)",
                 id="csv too few fields"),
    pytest.param("folders.csv", "C-2,Beta, Inc,4155550100,,\n", 3,
                 "has 6 fields but the header has 5 (a value holding a comma must be quoted)",
                 id="csv unquoted comma"),
    pytest.param("folders.csv", f"C-2,{'x' * 256},,,\n", 3, "name is longer than 255 characters",
                 id="csv name too long"),
    pytest.param("folders.csv", "C-0,Dup,,,\n", 3, "external_id 'C-0' already appears on line 2",
                 id="csv external_id twice in one file"),
    pytest.param("folders.jsonl", '{"external_id": "C-2", "name": "Beta",\n', 2,
                 "malformed JSON: Expecting property name enclosed in double quotes (column 39)",
                 id="json lines malformed JSON"),
    pytest.param("folders.jsonl", '["C-2", "Beta"]\n', 2, "expected a JSON object, got a list",
                 id="json lines not an object"),
    pytest.param("folders.jsonl", jsonl({"external_id": "C-2", "name": ["Beta"]}), 2,
                 "name must be a string, not a list", id="json lines name of the wrong type"),
    pytest.param("folders.jsonl", jsonl({"external_id": "C-2", "name": "Beta", "phones": [{"n": 1}]}), 2,
                 "phones must be a string, a number or a list of those, not an object",
                 id="json lines phone of the wrong type"),
    pytest.param("folders.jsonl", jsonl({"name": "Beta"}), 2, "external_id is missing",
                 id="json lines missing external_id"),
]


@pytest.mark.parametrize("name, bad_row, line, reason", BAD_ROWS)
def test_a_bad_row_is_rejected_with_its_line_and_reason_and_the_others_are_imported(
    runtime, tmp_path, name, bad_row, line, reason
):
    # Given a file with one good row ("C-0") and then the bad row
    if name.endswith(".csv"):
        text = HEADER + "C-0,Good,4155550199,,\n" + bad_row
    else:
        text = jsonl({"external_id": "C-0", "name": "Good", "phones": "4155550199"}) + bad_row

    report = import_text(runtime, tmp_path, name, text)

    assert report.rejected == [Rejection(line, reason)]
    assert (report.imported, report.rows) == (1, 2)
    assert stored_folders(runtime) == {"C-0": ("Good", None, None, ["+14155550199"])}


def test_reimporting_updates_names_and_resources_and_replaces_the_phone_set(runtime, tmp_path):
    import_text(runtime, tmp_path, "first.csv", HEADER
                + "C-1,Acme,4155550100;4155550101,alice,bob\n"
                + "C-2,Beta,4155550102,,\n"
                + "C-3,Gamma,4155550103,carol,\n")

    report = import_text(runtime, tmp_path, "second.csv", HEADER
                         + "C-1,Acme Corp,(415) 555-0101;(415) 555-0109,dave,\n"  # renamed, a phone swapped
                         + "C-2,Beta,+14155550102,,\n"                         # same as stored
                         + "C-3,Gamma,,carol,\n"                               # phones removed
                         + "C-4,Delta,4155550104,,\n")                         # new

    assert (report.imported, report.updated, report.unchanged, report.rejected) == (1, 2, 1, [])
    assert stored_folders(runtime) == {
        "C-1": ("Acme Corp", "dave", None, ["+14155550101", "+14155550109"]),
        "C-2": ("Beta", None, None, ["+14155550102"]),
        "C-3": ("Gamma", "carol", None, []),
        "C-4": ("Delta", None, None, ["+14155550104"]),
    }


def test_importing_the_same_file_twice_reports_every_folder_unchanged(runtime, tmp_path):
    text = HEADER + "C-1,Acme,4155550100;4155550101,alice,bob\nC-2,Beta,,,\n"
    import_text(runtime, tmp_path, "folders.csv", text)
    before = stored_folders(runtime)

    report = import_text(runtime, tmp_path, "folders.csv", text)

    assert (report.imported, report.updated, report.unchanged) == (0, 0, 2)
    assert stored_folders(runtime) == before


def test_a_rejected_row_leaves_the_stored_folder_as_it_was(runtime, tmp_path):
    import_text(runtime, tmp_path, "first.csv", HEADER + "C-1,Acme,4155550100,alice,bob\n")

    report = import_text(runtime, tmp_path, "second.csv", HEADER + "C-1,Acme Renamed,4155550100;nonsense,,\n")

    assert report.rejected == [
        Rejection(2, "invalid phone: 'nonsense' is a sender id, not a phone number")
    ]
    assert stored_folders(runtime) == {"C-1": ("Acme", "alice", "bob", ["+14155550100"])}


def test_a_large_file_is_written_in_batches_and_reports_progress(runtime, tmp_path):
    rows = [f"C-{i},Folder {i},415555{i:04d};415666{i:04d},,\n" for i in range(25)]
    rows[7] = "C-7,,,,\n"
    progress = []

    report = import_text(
        runtime, tmp_path, "folders.csv", HEADER + "".join(rows),
        batch_size=10, on_progress=lambda rows_read, line: progress.append((rows_read, line)),
    )

    assert (report.imported, report.rows, report.rejected) == (24, 25, [Rejection(9, "name is missing")])
    assert progress == [(11, 12), (21, 22), (25, 26)]
    folders = stored_folders(runtime)
    assert len(folders) == 24
    assert folders["C-24"] == ("Folder 24", None, None, ["+14155550024", "+14156660024"])


def test_resources_that_name_no_user_are_imported_and_reported(runtime, make_user, tmp_path):
    make_user("alice", "agent", ("sales",))

    report = import_text(runtime, tmp_path, "folders.csv", HEADER
                         + "C-1,Acme,,alice,bob\n"
                         + "C-2,Beta,,bob,\n"
                         + "C-3,Gamma,,,Carol\n")

    assert report.unknown_resources == {"Carol": 1, "bob": 2}
    assert stored_folders(runtime)["C-1"] == ("Acme", "alice", "bob", [])


@pytest.mark.parametrize(
    "name, content, message",
    [
        pytest.param("folders.csv", "id,title\n1,Acme\n",
                     "the header row has no 'external_id' column (found 'id', 'title')",
                     id="csv without the required header"),
        pytest.param("folders.csv", "external_id,phones\nC-1,4155550100\n",
                     "the header row has no 'name' column", id="csv without a name column"),
        pytest.param("folders.json", '[{"external_id": "C-1", "name": "Acme"}]\n',
                     "holds a JSON array; write one JSON object per line (JSON lines)", id="json array"),
        pytest.param("folders.csv", HEADER.encode() + "C-1,Caf\xe9,,,\n".encode("latin-1"),
                     "line 2 is not UTF-8 text (byte 8); save the file as UTF-8", id="latin-1 file"),
        pytest.param("folders.csv", "\n  \n", "the file is empty", id="empty file"),
    ],
)
def test_a_file_that_cannot_be_read_as_a_whole_imports_nothing(runtime, tmp_path, name, content, message):
    with pytest.raises(FolderFileError) as error:
        import_text(runtime, tmp_path, name, content)

    assert message in str(error.value)
    assert stored_folders(runtime) == {}


def test_a_missing_file_is_named_in_the_error(tmp_path):
    with pytest.raises(FolderFileError, match=r"cannot read .*missing\.csv: No such file or directory"):
        open_folder_file(tmp_path / "missing.csv")


@pytest.mark.processes
def test_texts_from_imported_phones_land_in_the_matched_ambiguous_or_no_folder(
    runtime, tmp_path, carrier, client, admin_headers, workers
):
    # Given folders imported with phones written the way a CRM writes them
    import_text(runtime, tmp_path, "folders.csv", HEADER
                + "C-1,Acme,(415) 555-0100,,\n"
                + "C-2,Beta,415.555.0177,,\n"
                + "C-3,Gamma,+1 415 555 0177,,\n")
    ids = {external_id: folder_id for external_id, folder_id in _folder_ids(runtime)}
    workers(threads=2)

    # When the carrier delivers texts from those numbers and from an unknown one
    for sender in ("+14155550100", "+14155550177", "+14155550999"):
        assert carrier.inbound(sender, "hello").status_code == 200

    # Then each conversation is matched the way the folders say
    def conversations():
        data = client.get("/api/v1/conversations", headers=admin_headers).get_json()["data"]
        return data if len(data) == 3 else None

    by_sender = {c["contact"]["number"]: c for c in wait_until(conversations, message="three conversations")}
    assert by_sender["+14155550100"]["folder_match"] == "matched"
    assert by_sender["+14155550100"]["folder"] == {"id": ids["C-1"], "name": "Acme"}
    assert by_sender["+14155550177"]["folder_match"] == "ambiguous"
    assert by_sender["+14155550177"]["candidate_folder_ids"] == sorted([ids["C-2"], ids["C-3"]])
    assert by_sender["+14155550999"]["folder_match"] == "none"


def _folder_ids(runtime):
    with runtime.sessions() as session:
        return session.execute(select(Folder.external_id, Folder.id)).all()
