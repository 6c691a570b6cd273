"""`gateway folders import FILE`, run as an operator runs it: what it prints, what the database holds."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from gateway.cli import main
from gateway.models import Folder

HEADER = "external_id,name,phones,sales_resource,service_resource\n"


@pytest.fixture
def gateway(gateway_env):
    """gateway(*args) runs the real command with this test's config and database."""
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(main, list(args), env=gateway_env, catch_exceptions=False)

    return run


def stored_folders(runtime) -> dict[str, tuple]:
    with runtime.sessions() as session:
        return {
            folder.external_id: (folder.name, folder.sales_resource, sorted(p.number for p in folder.phones))
            for folder in session.scalars(select(Folder))
        }


def test_import_prints_the_summary_and_each_rejected_row_and_exits_zero(
    gateway, runtime, make_user, tmp_path
):
    make_user("alice", "agent", ("sales",))
    path = tmp_path / "folders.csv"
    path.write_text(
        HEADER
        + "C-1,Acme,(415) 555-0100;(415) 555-0101,alice,bob\n"
        + "C-2,,4155550102,,\n"
        + "C-3,Beta,call me,,\n"
        + "C-4,Gamma,+44 20 7946 0958,,\n"
    )

    result = gateway("folders", "import", str(path))

    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"imported 2, updated 0, unchanged 0, rejected 2 of 4 rows from {path} in ")
    assert lines[1:] == [
        "line 3: name is missing",
        "line 4: invalid phone: 'call me' is a sender id, not a phone number",
        "note: resource 'bob' on 1 row is no user yet; add it with `gateway users add`",
    ]
    assert stored_folders(runtime) == {
        "C-1": ("Acme", "alice", ["+14155550100", "+14155550101"]),
        "C-4": ("Gamma", None, ["+442079460958"]),
    }


def test_importing_again_reports_updated_and_unchanged_folders(gateway, runtime, tmp_path):
    first = tmp_path / "first.jsonl"
    first.write_text(
        '{"external_id": "C-1", "name": "Acme", "phones": ["4155550100", "4155550101"]}\n'
        '{"external_id": "C-2", "name": "Beta", "phones": "4155550102"}\n'
    )
    second = tmp_path / "second.jsonl"
    second.write_text(
        '{"external_id": "C-1", "name": "Acme", "phones": ["4155550101", "4155550109"], '
        '"sales_resource": "dan"}\n'
        '{"external_id": "C-2", "name": "Beta", "phones": "+1 415 555 0102"}\n'
    )
    gateway("folders", "import", str(first))

    result = gateway("folders", "import", str(second))

    assert result.exit_code == 0
    assert result.stdout.startswith("imported 0, updated 1, unchanged 1, rejected 0 of 2 rows")
    assert stored_folders(runtime) == {
        "C-1": ("Acme", "dan", ["+14155550101", "+14155550109"]),
        "C-2": ("Beta", None, ["+14155550102"]),
    }


def test_a_large_file_shows_progress_on_stderr(gateway, runtime, tmp_path):
    path = tmp_path / "folders.csv"
    path.write_text(HEADER + "".join(f"C-{i},Folder {i},+1415{i:07d},,\n" for i in range(12_000)))

    result = gateway("folders", "import", str(path))

    assert result.exit_code == 0
    assert result.stdout.startswith("imported 12000, updated 0, unchanged 0, rejected 0 of 12000 rows")
    assert "folders import: 10000 rows read, line 10001 of 12001 (83%)" in result.stderr.splitlines()
    assert len(stored_folders(runtime)) == 12_000


@pytest.mark.parametrize(
    "name, content, error",
    [
        pytest.param("missing.csv", None, "Error: cannot read {path}: No such file or directory",
                     id="missing file"),
        pytest.param("folders.csv", "id,title\n1,Acme\n",
                     "Error: {path}: the header row has no 'external_id' column (found 'id', 'title')",
                     id="no external_id column"),
        pytest.param("folders.json", '[{"external_id": "C-1", "name": "Acme"}]',
                     "Error: {path}: holds a JSON array; write one JSON object per line (JSON lines)",
                     id="a JSON array"),
    ],
)
def test_a_file_that_cannot_be_read_exits_non_zero_with_one_line(
    gateway, runtime, tmp_path, name, content, error
):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)

    result = gateway("folders", "import", str(path))

    assert result.exit_code == 1
    assert result.output.splitlines() == [error.format(path=path)]
    assert stored_folders(runtime) == {}


def test_a_database_without_the_schema_is_a_one_line_error(config_dir, tmp_path):
    path = tmp_path / "folders.csv"
    path.write_text(HEADER + "C-1,Acme,4155550100,,\n")
    env = {"GATEWAY_CONFIG": str(config_dir), "DATABASE_URL": f"sqlite:///{tmp_path / 'never-upgraded.db'}"}

    result = CliRunner().invoke(main, ["folders", "import", str(path)], env=env)

    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "Error: database error at line 2: no such table: folders; nothing was saved"
    ]


def test_help_explains_the_file_format_and_the_exit_status():
    result = CliRunner().invoke(main, ["folders", "import", "--help"])

    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "columns or keys named phone, phones, phone2, phone3, ... all hold phones" in text
    assert "the good rows are still imported and the exit status is 0" in text
