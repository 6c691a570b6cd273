"""People: users, their teams and roles, and their API tokens (stored hashed)."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.models import ApiToken, Role, User, UserTeam, utcnow

TOKEN_PREFIX = "gw_"
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


class AccountError(ValueError):
    pass


def hash_token(token: str) -> str:
    # Tokens are 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


def add_user(session: Session, name: str, role: str, teams: list[str], known_teams: list[str]) -> User:
    name = name.strip()
    if not name:
        raise AccountError("user name must not be empty")
    try:
        role_value = Role(role)
    except ValueError:
        raise AccountError(f"unknown role {role!r}: use admin, supervisor or agent") from None
    unknown = [t for t in teams if t not in known_teams]
    if unknown:
        raise AccountError(f"unknown team {unknown[0]!r}: teams are {', '.join(known_teams) or 'none'}")
    if session.scalar(select(User.id).where(User.name == name)) is not None:
        raise AccountError(f"a user named {name!r} already exists")
    user = User(name=name, role=role_value, teams=[UserTeam(team=t) for t in sorted(set(teams))])
    session.add(user)
    session.flush()
    return user


def create_token(session: Session, user_name: str) -> str:
    """A new token for the user; only its hash is stored, so it is returned just once."""
    user = session.scalar(select(User).where(User.name == user_name))
    if user is None:
        raise AccountError(f"no user named {user_name!r}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, token_hash=hash_token(token)))
    session.flush()
    return token


def tokens_of(session: Session, user_name: str) -> list[ApiToken]:
    """The user's tokens, oldest first (their hashes only: the tokens were shown once)."""
    user = session.scalar(select(User).where(User.name == user_name))
    if user is None:
        raise AccountError(f"no user named {user_name!r}")
    return list(session.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)))


def revoke_tokens(session: Session, tokens: list[str]) -> list[ApiToken]:
    """Delete tokens named by id (as `tokens list` shows it) or by the token itself (one
    found in a log or a repository); every one must exist, or none is revoked."""
    found = []
    for given in tokens:
        given = given.strip()
        if given.isascii() and given.isdigit():
            # An id past the 64-bit keys is no token; it must not reach the database.
            row = session.get(ApiToken, int(given)) if int(given) < 2**63 else None
        elif given.startswith(TOKEN_PREFIX):
            row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(given)))
        else:
            raise AccountError(f"{given!r} is neither a token id nor a token ({TOKEN_PREFIX}...)")
        if row is None:
            shown = given if given.isascii() and given.isdigit() else given[: len(TOKEN_PREFIX) + 4] + "..."
            raise AccountError(f"no token {shown}: already revoked, or never made")
        found.append(row)
    for row in found:
        session.delete(row)
    session.flush()
    return found


def token_is_live(session: Session, token_hash: str) -> bool:
    """Whether the token with this hash is still there (not revoked)."""
    return session.scalar(select(ApiToken.id).where(ApiToken.token_hash == token_hash)) is not None


def user_for_token_hash(session: Session, token_hash: str) -> User | None:
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash))
    if row is None:
        return None
    now = utcnow()
    # Coarse on purpose: a write per API request would serialize readers on SQLite.
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        row.last_used_at = now
    return row.user
