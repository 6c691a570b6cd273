"""`gateway users add` and `gateway tokens create|list|revoke`, run as an operator would."""

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


def test_tokens_are_listed_without_their_values_and_revoked_by_id_or_by_the_token(runtime, gateway_env, client):
    run(gateway_env, "users", "add", "dana", "--role", "admin")
    first, second, third = (run(gateway_env, "tokens", "create", "dana").output.strip() for _ in range(3))
    headers = {token: {"Authorization": f"Bearer {token}"} for token in (first, second, third)}
    assert client.get("/api/v1/conversations", headers=headers[first]).status_code == 200

    listed = run(gateway_env, "tokens", "list", "dana")
    by_id = run(gateway_env, "tokens", "revoke", "1")
    by_value = run(gateway_env, "tokens", "revoke", second)

    assert listed.exit_code == 0
    lines = listed.output.splitlines()
    assert [line.split(":")[0] for line in lines] == ["token 1", "token 2", "token 3"]
    assert "last used" in lines[0] and lines[1].endswith("never used")
    assert not any(token in listed.output for token in (first, second, third))
    assert (by_id.exit_code, by_id.output) == (0, "revoked token 1 of dana\n")
    assert (by_value.exit_code, by_value.output) == (0, "revoked token 2 of dana\n")
    # The revoked tokens stop working at once; the other one still works.
    for token in (first, second):
        response = client.get("/api/v1/conversations", headers=headers[token])
        assert response.status_code == 401
        assert response.json["error"]["message"] == "invalid or revoked token"
    assert client.get("/api/v1/conversations", headers=headers[third]).status_code == 200


def test_a_bad_revoke_names_the_token_and_revokes_nothing(runtime, gateway_env):
    run(gateway_env, "users", "add", "dana", "--role", "admin")
    token = run(gateway_env, "tokens", "create", "dana").output.strip()

    unknown = run(gateway_env, "tokens", "revoke", "1", "7")
    not_a_token = run(gateway_env, "tokens", "revoke", "hunter2")
    unknown_value = run(gateway_env, "tokens", "revoke", "gw_" + "x" * 43)
    nobody = run(gateway_env, "tokens", "list", "ghost")
    superscript = run(gateway_env, "tokens", "revoke", "²")
    too_large = run(gateway_env, "tokens", "revoke", "99999999999999999999")

    assert (unknown.exit_code, unknown.output) == (1, "Error: no token 7: already revoked, or never made\n")
    assert not_a_token.output == "Error: 'hunter2' is neither a token id nor a token (gw_...)\n"
    assert unknown_value.output == "Error: no token gw_xxxx...: already revoked, or never made\n"
    assert (nobody.exit_code, nobody.output) == (1, "Error: no user named 'ghost'\n")
    assert (superscript.exit_code, superscript.output) == (
        1, "Error: '²' is neither a token id nor a token (gw_...)\n")
    assert (too_large.exit_code, too_large.output) == (
        1, "Error: no token 99999999999999999999: already revoked, or never made\n")
    with runtime.sessions() as session:
        assert list(session.scalars(select(ApiToken.token_hash))) == [hash_token(token)]
