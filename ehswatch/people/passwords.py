"""Password hashes: argon2id (RFC 9106), as argon2-cffi encodes them.

Hashing is deliberately slow (tens of milliseconds and 64 MiB): callers on the event
loop run it in a thread. A hash made with weaker parameters than today's is upgraded at
the next successful sign-in (`needs_rehash`).
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 8
MAX_LENGTH = 256

_hasher = PasswordHasher()  # argon2id; the library's parameters (RFC 9106's second choice)
# A hash that matches nothing, verified when the name is unknown: a sign-in for a name
# that does not exist takes as long as one with a wrong password.
_NOBODY = _hasher.hash("no such person; this never matches")


def password_problem(password: str) -> str | None:
    """Why `password` cannot be used, or None."""
    if len(password) < MIN_LENGTH:
        return f"a password has at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"a password has at most {MAX_LENGTH} characters"
    if not password.strip():
        return "a password is not only spaces"
    return None


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches the hash (None: an unknown name, never a match, in the
    same time)."""
    try:
        _hasher.verify(password_hash or _NOBODY, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    return password_hash is not None


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)
