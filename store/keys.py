"""API keys: made here, shown once, stored only as a SHA-256 hash, found by that hash, revocable.

A key is 32 random bytes (256 bits) from `secrets`, so a fast hash is enough: slow password hashes
(bcrypt, argon2) exist to protect guessable, low-entropy secrets, and these are not guessable. Looking
a key up by its hash does not leak the key through timing: an attacker cannot steer the hash of what
they send towards a stored hash, and the final comparison uses `hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlmodel import Session, col, select

from core.errors import Conflict, InvalidInput, NotFound
from store.models import ApiKey, utcnow

KEY_MARK = "dsk_"  # makes leaked keys easy to find with secret scanners
PREFIX_CHARS = 12  # KEY_MARK + 8 characters: shown in listings, enough to tell keys apart


def hash_key(key: str) -> str:
    """The stored form of a key: hex SHA-256."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(*, session: Session, name: str) -> tuple[ApiKey, str]:
    """A new key called name: its row (hash and prefix only) and the key itself, to show once."""
    name = name.strip()
    if not name or len(name) > 64:
        raise InvalidInput("a key name needs 1 to 64 characters")
    key = KEY_MARK + secrets.token_urlsafe(32)
    row = ApiKey(name=name, prefix=key[:PREFIX_CHARS], key_hash=hash_key(key))
    session.add(row)
    session.flush()
    return row, key


def verify_key(*, session: Session, key: str) -> ApiKey | None:
    """The live (not revoked) key row matching key, or None."""
    if not key.startswith(KEY_MARK) or len(key) > 256:
        return None
    digest = hash_key(key)
    row = session.exec(select(ApiKey).where(ApiKey.key_hash == digest)).first()
    if row is None or row.revoked_at is not None:
        return None
    return row if hmac.compare_digest(row.key_hash, digest) else None


def list_keys(*, session: Session) -> list[ApiKey]:
    """Every key, revoked ones included, oldest first."""
    return list(session.exec(select(ApiKey).order_by(col(ApiKey.id))))


def find_key(*, session: Session, ident: str) -> ApiKey:
    """The key whose id, prefix or whole text is ident; NotFound, or Conflict if a prefix is ambiguous."""
    ident = ident.strip()
    if ident.isdigit():
        row = session.get(ApiKey, int(ident))
        if row is None:
            raise NotFound(f"no API key with id {ident}")
        return row
    if ident.startswith(KEY_MARK) and len(ident) > PREFIX_CHARS:  # the whole key
        by_hash = session.exec(select(ApiKey).where(ApiKey.key_hash == hash_key(ident))).first()
        if by_hash is None:
            raise NotFound("no such API key")
        return by_hash
    query = select(ApiKey).where(col(ApiKey.prefix).startswith(ident, autoescape=True))
    rows = list(session.exec(query))
    if not ident or not rows:
        raise NotFound(f"no API key with prefix {ident!r}")
    if len(rows) > 1:
        raise Conflict(f"prefix {ident!r} matches {len(rows)} keys; give the id")
    return rows[0]


def revoke_key(*, session: Session, ident: str) -> ApiKey:
    """Revoke the key whose id or prefix is ident; revoking twice keeps the first time."""
    row = find_key(session=session, ident=ident)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
        session.flush()
    return row
