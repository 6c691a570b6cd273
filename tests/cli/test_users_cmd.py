"""`gateway users add` and `gateway tokens create`, run as an operator would."""

from __future__ import annotations

from click.testing import CliRunner
from sqlalchemy import select

from gateway.accounts import hash_token
from gateway.cli import main
from gateway.models import ApiToken, User


def run(gateway_env, *args):
    return CliRunner().invoke(main, list(args), env=gateway_env)


def test_a_user_is_added_with_a_role_and_teams(runtime, gateway_env):
    result = run(
        gateway_env, "users", "add", "dana", "--role", "agent", "--team", "service", "--team", "sales"
    )

    assert result.exit_code == 0, result.output
    assert result.output == "added user dana (id 1, agent, teams: service, sales)\n"
    with runtime.sessions() as session:
        user = session.scalar(select(User))
        assert (user.name, str(user.role), user.team_names) == ("dana", "agent", ["sales", "service"])


def test_bad_user_input_is_one_line_and_changes_nothing(runtime, gateway_env):
    unknown_team = run(gateway_env, "users", "add", "dana", "--role", "agent", "--team", "billing")
    bad_role = run(gateway_env, "users", "add", "dana", "--role", "owner")
    run(gateway_env, "users", "add", "dana", "--role", "agent")
    twice = run(gateway_env, "users", "add", "dana", "--role", "agent")

    assert unknown_team.exit_code == 1
    assert unknown_team.output == "Error: unknown team 'billing': teams are service, sales\n"
    assert bad_role.exit_code == 2 and "'owner' is not one of" in bad_role.output
    assert twice.output == "Error: a user named 'dana' already exists\n"
    with runtime.sessions() as session:
        assert [u.name for u in session.scalars(select(User))] == ["dana"]


def test_a_token_is_printed_once_and_only_its_hash_is_stored(runtime, gateway_env, client):
    run(gateway_env, "users", "add", "dana", "--role", "admin")

    result = run(gateway_env, "tokens", "create", "dana")

    token = result.output.strip()
    assert result.exit_code == 0 and token.startswith("gw_")
    with runtime.sessions() as session:
        assert list(session.scalars(select(ApiToken.token_hash))) == [hash_token(token)]
    response = client.get("/api/v1/conversations", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


def test_a_token_for_nobody_is_refused(runtime, gateway_env):
    result = run(gateway_env, "tokens", "create", "ghost")

    assert (result.exit_code, result.output) == (1, "Error: no user named 'ghost'\n")
