"""MMS media: download each attachment from the carrier, guarded, and keep it by its sha256.

A media worker calls `fetch_attachment(runtime, attachment_id)` for every pending
attachment. Everything a customer's phone sends is kept, and nothing else is fetched:

- only from the carrier's media hosts (`media_hosts`), each redirect target checked again,
  at most `max_redirects` hops; a host that resolves to a private, loopback or link-local
  address is refused unless that address (or its network) is in `media_hosts` too, both
  before connecting and on the socket actually connected (no DNS-rebinding gap);
- credentials only to the carrier's own API host, never to the CDN it redirects to;
- size caps (per file, per message) enforced while streaming, never after;
- the content type the host sends must be allowed, agree with the type the carrier
  declared in the webhook, and agree with the file's first bytes (gateway/media_types.py);
- connect, read and whole-download timeouts.

Files are content-addressed under MEDIA_DIR (`ab/abcdef...`), written to a temporary file
in the same tree and moved into place with `os.replace`, so a half-written file never
appears and the same bytes are kept once. Temporary trouble (5xx, timeouts, a 404 in the
first minute, when Twilio may not have the media yet) raises `RetryableMediaError`;
anything else marks the attachment failed with the reason. The message itself is never
held back: routing is done before media is fetched.
"""

from __future__ import annotations

import codecs
import datetime as dt
import hashlib
import ipaddress
import logging
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests
import requests.adapters
import urllib3
import urllib3.connection
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from gateway.broker import MEDIA_QUEUE
from gateway.db import is_sqlite, transaction
from gateway.logs import bind_message
from gateway.media_types import (
    SIGNATURE_BYTES,
    TEXT_TYPES,
    ContentMismatch,
    check_signature,
    normalize_type,
    type_allowed,
    verifiable,
)
from gateway.metrics import MEDIA_FAILURES, media_reason
from gateway.models import Attachment, AttachmentStatus, Direction, InboundEvent, Message, utcnow
from gateway.settings import CarrierSettings, MediaSection

log = logging.getLogger(__name__)

FETCH_ATTACHMENT_ACTOR = "fetch_attachment"
# Twilio may answer 404 for a moment after its webhook: retry a 404 within this window.
NOT_FOUND_GRACE = dt.timedelta(minutes=1)
CHUNK_BYTES = 64 * 1024
MAX_REASON_CHARS = 500


class MediaError(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class PermanentMediaError(MediaError):
    """The attachment cannot be stored, now or later: it is marked failed."""


class RetryableMediaError(MediaError):
    """Worth trying again later (5xx, timeouts, broken connections, an early 404)."""


@dataclass(frozen=True)
class MediaAccess:
    """Where a carrier account's media may come from, and the credentials for its API."""

    api_base: str
    username: str
    password: str
    hosts: tuple[str, ...]

    def is_api_url(self, url: str) -> bool:
        """Same scheme, host and port as the API: the only place credentials are sent."""
        return _origin(url) == _origin(self.api_base)


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    size: int
    content_type: str
    path: Path


# --- hosts -----------------------------------------------------------------------------


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default_port


def host_allowed(host: str, patterns) -> bool:
    """`host` is listed, or a subdomain of a `*.example.com` entry. Ports do not matter."""
    host = host.lower().rstrip(".")
    for pattern in patterns:
        pattern = pattern.lower().strip()
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False


def allowed_networks(patterns) -> list:
    """The addresses and networks (e.g. \"10.0.0.0/8\") among the allowlist entries."""
    networks = []
    for pattern in patterns:
        try:
            networks.append(ipaddress.ip_network(pattern.strip(), strict=False))
        except ValueError:
            continue  # a host name, not an address
    return networks


def check_addresses(host: str, port: int, networks) -> None:
    """Refuse a host that resolves to a non-public address nobody allowlisted, before
    connecting at all. `guarded_session` checks the address actually connected to again:
    a name re-pointed between this lookup and the connection (DNS rebinding) is caught
    there."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise RetryableMediaError(f"cannot resolve {host}: {exc.strerror}") from None
    for info in infos:
        _refuse_unlisted_private(info[4][0], host, networks)


def _refuse_unlisted_private(raw_address: str, host: str, networks) -> None:
    address = ipaddress.ip_address(raw_address.split("%")[0])
    if not address.is_global and not any(address in network for network in networks):
        raise PermanentMediaError(f"{host} resolves to {address}: a non-public address, not allowed")


def guarded_session(networks) -> requests.Session:
    """A requests session whose every new connection is checked on the socket itself:
    a non-public peer address that is not in `networks` is closed before a byte is sent.
    TLS is untouched (the check runs before the handshake, on the TCP connection)."""

    def checked(sock, host: str):
        try:
            _refuse_unlisted_private(sock.getpeername()[0], host, networks)
        except PermanentMediaError:
            sock.close()
            raise
        return sock

    class HTTPConnection(urllib3.connection.HTTPConnection):
        def _new_conn(self):
            return checked(super()._new_conn(), self.host)

    class HTTPSConnection(urllib3.connection.HTTPSConnection):
        def _new_conn(self):
            return checked(super()._new_conn(), self.host)

    class HTTPPool(urllib3.HTTPConnectionPool):
        ConnectionCls = HTTPConnection

    class HTTPSPool(urllib3.HTTPSConnectionPool):
        ConnectionCls = HTTPSConnection

    adapter = requests.adapters.HTTPAdapter(max_retries=0)
    adapter.poolmanager.pool_classes_by_scheme = {"http": HTTPPool, "https": HTTPSPool}
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    # No proxies, .netrc or CA bundles from the environment: a .netrc entry would add
    # credentials to hosts we chose not to send any to, and a proxy would be the peer.
    session.trust_env = False
    return session


# --- fetching --------------------------------------------------------------------------


class Fetcher:
    """One guarded download: redirects, hosts, credentials, types, size and time."""

    def __init__(self, access: MediaAccess, limits: MediaSection):
        self.access, self.limits = access, limits
        self.networks = allowed_networks(access.hosts)
        self.session = guarded_session(self.networks)

    def close(self) -> None:
        self.session.close()

    def download(
        self, url: str, declared_type: str | None, budget: int, budget_name: str, media_dir: Path,
        *, received_at: dt.datetime, now: dt.datetime,
    ) -> StoredFile:
        deadline = time.monotonic() + self.limits.download_timeout_s
        response = self._open(url, received_at, now)
        try:
            content_type = self._content_type(response, declared_type)
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > budget:
                raise PermanentMediaError(f"{int(length)} bytes is over the {budget_name} of {budget} bytes")
            return _stream_to_store(response, content_type, budget, budget_name, media_dir, deadline)
        finally:
            response.close()  # with unread bytes left, this closes the connection

    def _open(self, url: str, received_at: dt.datetime, now: dt.datetime) -> requests.Response:
        for _hop in range(self.limits.max_redirects + 1):
            response = self._get(url)
            if response.is_redirect:
                location = response.headers["Location"]
                response.close()
                url = urljoin(url, location)
                continue
            _check_status(response, received_at, now)
            return response
        raise PermanentMediaError(f"more than {self.limits.max_redirects} redirects")

    def _get(self, url: str) -> requests.Response:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.scheme not in ("http", "https") or not host:
            raise PermanentMediaError(f"not an http(s) URL: {url}")
        if not host_allowed(host, self.access.hosts):
            raise PermanentMediaError(f"{host} is not an allowed media host")
        check_addresses(host, _origin(url)[2], self.networks)
        # Credentials for the carrier's API only; a redirect to its CDN gets none.
        auth = (self.access.username, self.access.password) if self.access.is_api_url(url) else None
        try:
            return self.session.get(
                url, auth=auth, stream=True, allow_redirects=False,
                timeout=(self.limits.connect_timeout_s, self.limits.read_timeout_s),
                # Compressed bodies would defeat the size cap (a small gzip can inflate to
                # gigabytes) and the signature check: ask for the bytes as they are.
                headers={"Accept-Encoding": "identity", "Accept": "*/*"},
            )
        except requests.Timeout:
            raise RetryableMediaError(f"{host} did not answer in time") from None
        except requests.ConnectionError as exc:
            raise RetryableMediaError(f"cannot connect to {host}: {type(exc).__name__}") from None

    def _content_type(self, response: requests.Response, declared_type: str | None) -> str:
        declared = _specific(normalize_type(declared_type))
        sent = _specific(normalize_type(response.headers.get("Content-Type"))) or declared
        # (a host that does not say is taken at the carrier's word; the bytes are still checked)
        if sent is None:
            raise PermanentMediaError("no content type from the host or the carrier")
        if not type_allowed(sent, self.limits.allowed_content_types):
            raise PermanentMediaError(f"content type {sent} is not allowed")
        if declared is not None and declared != sent:
            raise PermanentMediaError(f"content type mismatch: declared {declared}, the host sent {sent}")
        if not verifiable(sent):
            raise PermanentMediaError(f"content type {sent} is allowed but its bytes cannot be checked")
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise PermanentMediaError(f"compressed body ({encoding}) refused")
        return sent


def _specific(content_type: str | None) -> str | None:
    """None for "some bytes": a type that says nothing about the file."""
    return None if content_type in (None, "application/octet-stream", "binary/octet-stream") else content_type


def _check_status(response: requests.Response, received_at: dt.datetime, now: dt.datetime) -> None:
    status = response.status_code
    if status == 200:
        return
    response.close()
    if status == 404 and now - received_at < NOT_FOUND_GRACE:
        raise RetryableMediaError("media not found yet (404); the carrier may still be storing it")
    if status >= 500 or status in (408, 429):
        raise RetryableMediaError(f"media host answered {status}")
    raise PermanentMediaError(f"media host answered {status}")


def _chunks(response: requests.Response, deadline: float):
    try:
        while True:
            # read1: whatever has arrived (up to a chunk), so that a host dripping a byte at
            # a time, each within the read timeout, still meets the whole-download deadline.
            chunk = response.raw.read1(CHUNK_BYTES, decode_content=False)
            if not chunk:
                return
            yield chunk
            if time.monotonic() > deadline:
                raise RetryableMediaError("download took longer than the download timeout")
    except (urllib3.exceptions.ReadTimeoutError, TimeoutError):
        raise RetryableMediaError("media host stopped sending (read timeout)") from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise RetryableMediaError(f"connection broken while downloading: {type(exc).__name__}") from None


def _stream_to_store(
    response, content_type: str, budget: int, budget_name: str, media_dir: Path, deadline: float
) -> StoredFile:
    media_dir.mkdir(parents=True, exist_ok=True)
    digest, size, head, checked = hashlib.sha256(), 0, b"", False
    text = codecs.getincrementaldecoder("utf-8")() if content_type in TEXT_TYPES else None
    fd, temp_name = tempfile.mkstemp(dir=media_dir, prefix=".incoming-")
    try:
        with os.fdopen(fd, "wb") as temp:
            for chunk in _chunks(response, deadline):
                size += len(chunk)
                if size > budget:
                    raise PermanentMediaError(f"larger than the {budget_name} of {budget} bytes")
                if not checked:
                    head += chunk
                    if len(head) >= SIGNATURE_BYTES:
                        _check_signature(content_type, head)
                        checked = True
                _check_text(text, chunk, content_type)
                digest.update(chunk)
                temp.write(chunk)
            if size == 0:
                raise PermanentMediaError("the media host sent an empty file")
            if not checked:
                _check_signature(content_type, head)
            _check_text(text, b"", content_type, final=True)
            temp.flush()
            os.fsync(temp.fileno())
        return _keep(Path(temp_name), media_dir, digest.hexdigest(), size, content_type)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _check_signature(content_type: str, head: bytes) -> None:
    try:
        check_signature(content_type, head)
    except ContentMismatch as exc:
        raise PermanentMediaError(str(exc)) from None


def _check_text(decoder, chunk: bytes, content_type: str, final: bool = False) -> None:
    if decoder is None:
        return
    try:
        decoder.decode(chunk, final)
    except UnicodeDecodeError:
        raise PermanentMediaError(f"the bytes are not {content_type} (not UTF-8 text)") from None
    if b"\x00" in chunk:
        raise PermanentMediaError(f"the bytes are not {content_type} (binary data)")


def media_path(media_dir: Path, sha256: str) -> Path:
    return Path(media_dir) / sha256[:2] / sha256


def _keep(temp: Path, media_dir: Path, sha256: str, size: int, content_type: str) -> StoredFile:
    target = media_path(media_dir, sha256)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        temp.unlink()  # the same bytes are already kept
    else:
        os.replace(temp, target)  # atomic: the file appears whole or not at all
    return StoredFile(sha256, size, content_type, target)


# --- attachments -----------------------------------------------------------------------


@dataclass(frozen=True)
class AttachmentJob:
    id: int
    message_id: int
    source_url: str
    declared_content_type: str | None
    received_at: dt.datetime
    carrier_name: str
    stored_bytes_of_message: int
    message_sid: str | None = None
    conversation_id: int | None = None


def fetch_attachment(runtime, attachment_id: int, *, now: dt.datetime | None = None) -> str:
    """Download and keep one attachment; returns 'stored', 'failed' or 'skipped'.

    Raises RetryableMediaError for trouble worth retrying (the worker retries with
    backoff); once the message is older than `give_up_after_minutes`, such trouble marks
    the attachment failed instead. A stored or failed attachment is left alone.
    """
    now = now or utcnow()
    settings = runtime.settings
    job = _load_job(runtime.sessions, attachment_id)
    if job is None:
        return "skipped"
    carrier = settings.carrier_named(job.carrier_name)
    if carrier is None:
        _mark_failed(runtime.sessions, job.id, f"carrier {job.carrier_name!r} is no longer configured")
        return "failed"
    limits = settings.config.media
    budget, budget_name = _byte_budget(limits, job)
    fetcher = Fetcher(carrier_media_access(carrier), limits)
    try:
        stored = fetcher.download(
            job.source_url, job.declared_content_type, budget, budget_name, Path(settings.media_dir),
            received_at=job.received_at, now=now,
        )
    except PermanentMediaError as exc:
        _mark_failed(runtime.sessions, job.id, exc.reason)
        return "failed"
    except RetryableMediaError as exc:
        MEDIA_FAILURES.labels("retry", media_reason(exc.reason)).inc()
        if now - job.received_at >= dt.timedelta(minutes=limits.give_up_after_minutes):
            _mark_failed(runtime.sessions, job.id, f"gave up after {limits.give_up_after_minutes:g} minutes: "
                         f"{exc.reason}")
            return "failed"
        _mark_retrying(runtime.sessions, job.id)
        raise
    finally:
        fetcher.close()
    if _mark_stored(runtime.sessions, job.id, stored) and carrier.delete_media_after_store:
        _delete_at_carrier(carrier, job, limits)
    return "stored"


def _byte_budget(limits: MediaSection, job: AttachmentJob) -> tuple[int, str]:
    """How many bytes this file may have: the per-file cap, or what the message has left.

    Files of one message downloaded at the same moment each see the allowance as it was
    before the others were stored, so the message total can overshoot then; every file
    still stays within the per-file cap.
    """
    remaining = limits.max_message_bytes - job.stored_bytes_of_message
    if remaining < limits.max_file_bytes:
        return max(remaining, 0), "message's remaining media allowance"
    return limits.max_file_bytes, "per-file limit"


def carrier_media_access(carrier: CarrierSettings) -> MediaAccess:
    """The carrier module's answer: hosts and credentials (the one seam to gateway.carriers)."""
    return _carrier_module(carrier.kind).media_access(carrier)


def _carrier_module(kind: str):
    from gateway.carriers import twilio

    return {twilio.KIND: twilio}[kind]


def _load_job(sessions: sessionmaker[Session], attachment_id: int) -> AttachmentJob | None:
    with sessions() as session:
        row = session.execute(
            select(Attachment, Message.created_at, InboundEvent.carrier, Message.carrier_message_id,
                   Message.conversation_id)
            .join(Message, Message.id == Attachment.message_id)
            .join(InboundEvent, InboundEvent.id == Message.inbound_event_id)
            .where(Attachment.id == attachment_id)
        ).one_or_none()
        if row is None:
            log.warning("attachment not found (or not inbound)", extra={"attachment_id": attachment_id})
            return None
        attachment, received_at, carrier_name, message_sid, conversation_id = row
        bind_message(message_sid, conversation_id, attachment_id=attachment.id)
        if attachment.status != AttachmentStatus.pending:
            return None  # a redelivered task: the work is done
        stored_bytes = session.scalar(
            select(func.coalesce(func.sum(Attachment.size), 0)).where(
                Attachment.message_id == attachment.message_id,
                Attachment.status == AttachmentStatus.stored,
                Attachment.id != attachment.id,
            )
        )
        return AttachmentJob(
            attachment.id, attachment.message_id, attachment.source_url, attachment.declared_content_type,
            received_at, carrier_name, int(stored_bytes or 0), message_sid, conversation_id,
        )


def _mark_stored(sessions, attachment_id: int, stored: StoredFile) -> bool:
    """Record the stored file; False when another worker got there first."""
    with transaction(sessions) as session:
        result = session.execute(
            update(Attachment)
            .where(Attachment.id == attachment_id, Attachment.status == AttachmentStatus.pending)
            .values(status=AttachmentStatus.stored, sha256=stored.sha256, size=stored.size,
                    content_type=stored.content_type, error=None)
        )
    if result.rowcount:
        log.info("attachment stored", extra={"attachment_id": attachment_id, "size": stored.size,
                                             "content_type": stored.content_type, "sha256": stored.sha256})
    return bool(result.rowcount)


def _mark_failed(sessions, attachment_id: int, reason: str) -> None:
    reason = reason[:MAX_REASON_CHARS]
    MEDIA_FAILURES.labels("failed", media_reason(reason)).inc()
    with transaction(sessions) as session:
        session.execute(
            update(Attachment)
            .where(Attachment.id == attachment_id, Attachment.status == AttachmentStatus.pending)
            .values(status=AttachmentStatus.failed, error=reason)
        )
    log.warning("attachment failed", extra={"attachment_id": attachment_id, "reason": reason})


def _mark_retrying(sessions, attachment_id: int) -> None:
    # A retry is on its way: the sweeper leaves the attachment alone for a while.
    with transaction(sessions) as session:
        session.execute(update(Attachment).where(Attachment.id == attachment_id).values(enqueued_at=utcnow()))


def _delete_at_carrier(carrier: CarrierSettings, job: AttachmentJob, limits: MediaSection) -> None:
    """Best effort: the file is safely ours; a failed delete is logged for an operator."""
    try:
        _carrier_module(carrier.kind).delete_media(
            job.source_url, carrier, (limits.connect_timeout_s, limits.read_timeout_s)
        )
    except Exception:
        log.warning("could not delete media at the carrier", extra={"attachment_id": job.id}, exc_info=True)


# --- enqueueing ------------------------------------------------------------------------


def enqueue_pending_attachments(runtime, message_id: int) -> int:
    """Hand each pending attachment of an inbound message to a media worker."""
    with transaction(runtime.sessions) as session:
        ids = list(session.scalars(
            select(Attachment.id).where(
                Attachment.message_id == message_id, Attachment.status == AttachmentStatus.pending
            ).order_by(Attachment.position)
        ))
        if ids:
            session.execute(update(Attachment).where(Attachment.id.in_(ids)).values(enqueued_at=utcnow()))
    return _enqueue(runtime, ids)


def find_unenqueued_attachments(
    sessions: sessionmaker[Session], *, grace: dt.timedelta, stale_after: dt.timedelta, limit: int = 500
) -> list[int]:
    """Pending inbound attachments no worker has: never enqueued, or not touched for long.

    Marks each one enqueued now, so two sweepers (or two sweeps) do not both pick it.
    """
    now = utcnow()
    never_enqueued = Attachment.enqueued_at.is_(None) & (Attachment.created_at < now - grace)
    lost = Attachment.enqueued_at < now - stale_after
    with transaction(sessions) as session:
        query = (
            select(Attachment.id)
            .join(Message, Message.id == Attachment.message_id)
            .where(Attachment.status == AttachmentStatus.pending, Message.direction == Direction.inbound,
                   never_enqueued | lost)
            .order_by(Attachment.id)
            .limit(limit)
        )
        if not is_sqlite(session):
            query = query.with_for_update(of=Attachment, skip_locked=True)
        ids = list(session.scalars(query))
        if ids:
            session.execute(update(Attachment).where(Attachment.id.in_(ids)).values(enqueued_at=now))
    return ids


def _enqueue(runtime, attachment_ids: list[int]) -> int:
    for done, attachment_id in enumerate(attachment_ids):
        if not runtime.enqueue(MEDIA_QUEUE, FETCH_ATTACHMENT_ACTOR, attachment_id):
            # The broker is down: leave the rest for the sweeper to find at once.
            with transaction(runtime.sessions) as session:
                session.execute(
                    update(Attachment).where(Attachment.id.in_(attachment_ids[done:])).values(enqueued_at=None)
                )
            return done
    return len(attachment_ids)


# Attachments are enqueued right after their message is threaded; give that a moment.
SWEEP_GRACE = dt.timedelta(seconds=30)
# No attempt for this long (longer than the worker's longest retry backoff): assume lost.
SWEEP_STALE_AFTER = dt.timedelta(minutes=10)


def sweep(runtime, *, grace=SWEEP_GRACE, stale_after=SWEEP_STALE_AFTER) -> int:
    """Re-enqueue pending attachments no worker has, so a lost task never strands media."""
    ids = find_unenqueued_attachments(runtime.sessions, grace=grace, stale_after=stale_after)
    enqueued = _enqueue(runtime, ids)
    if enqueued:
        log.info("sweeper re-enqueued pending attachments", extra={"count": enqueued})
    return enqueued
