"""Secrets at rest: Fernet encryption of integration credentials and provider tokens.

A stored value is ``fernet:<token>``. A value without the prefix is plaintext written
before encryption existed: it is still read, and `crm-sync secrets rotate` encrypts it.
The keys come from ``CRM_SYNC_SECRET_KEY`` (or the file named by
``CRM_SYNC_SECRET_KEY_FILE``): comma-separated Fernet keys, the first encrypts and all
decrypt (``MultiFernet``), so values written under an older key stay readable while a
rotation is under way. No error here ever contains a key or a value.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from crm_sync.settings import Settings, get_settings

PREFIX = "fernet:"
KEY_ENV = "CRM_SYNC_SECRET_KEY"
KEY_FILE_ENV = "CRM_SYNC_SECRET_KEY_FILE"
HOW_TO = (
    f"make one with `crm-sync secrets generate-key` and set {KEY_ENV} to it "
    f"(or {KEY_FILE_ENV} to a file holding it)"
)


class EncryptionError(RuntimeError):
    """Secrets cannot be encrypted or decrypted; the message says why (never the value)."""


class SecretKeyError(EncryptionError):
    """No usable key is configured (missing, unreadable or not a Fernet key)."""


class DecryptError(EncryptionError):
    """A stored value was encrypted with a key that is not configured."""


def generate_key() -> str:
    """A new random Fernet key (32 bytes, URL-safe base64)."""
    return Fernet.generate_key().decode("ascii")


def parse_keys(raw: str, source: str = KEY_ENV) -> list[str]:
    """Comma-separated Fernet keys, checked (the error names which one, never its text)."""
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    if not keys:
        raise SecretKeyError(f"{source} holds no key: {HOW_TO}")
    for number, key in enumerate(keys, 1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise SecretKeyError(
                f"{source}: key {number} of {len(keys)} is not a Fernet key "
                f"(32 bytes in URL-safe base64); {HOW_TO}"
            ) from None
    return keys


def configured_keys(settings: Settings | None = None) -> list[str]:
    """The keys of this process: ``CRM_SYNC_SECRET_KEY``, else the key file; else an error."""
    settings = settings or get_settings()
    if settings.secret_key is not None:
        return parse_keys(settings.secret_key.get_secret_value())
    path = settings.secret_key_file
    if path is not None:
        try:
            raw = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise SecretKeyError(
                f"{KEY_FILE_ENV}={path} cannot be read ({reason}); {HOW_TO}"
            ) from None
        return parse_keys(raw, f"{KEY_FILE_ENV} ({path})")
    raise SecretKeyError(
        f"no encryption key: {KEY_ENV} is not set, and credentials are stored encrypted; {HOW_TO}"
    )


def is_encrypted(value: object) -> bool:
    """True for a value written by :meth:`Cipher.encrypt`."""
    return isinstance(value, str) and value.startswith(PREFIX)


class Cipher:
    """Encrypts with the first key, decrypts with any of them."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise SecretKeyError(f"no encryption key: {HOW_TO}")
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    def encrypt(self, plaintext: str) -> str:
        """``fernet:<token>`` for ``plaintext``."""
        return PREFIX + self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, stored: str, what: str) -> str:
        """The plaintext of a stored value (plaintext without the prefix is returned as is).

        ``what`` names the value in errors (e.g. "credentials of integration 3").
        """
        if not is_encrypted(stored):
            return stored
        try:
            return self._fernet.decrypt(stored[len(PREFIX) :].encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise DecryptError(
                f"cannot decrypt {what}: it was encrypted with a key that is not in {KEY_ENV} "
                "(a wrong key, or an old one dropped before `crm-sync secrets rotate` finished)"
            ) from None


@lru_cache(maxsize=8)
def _cipher(keys: tuple[str, ...]) -> Cipher:
    return Cipher(keys)


def current_cipher(settings: Settings | None = None) -> Cipher:
    """The cipher of this process's configured keys (SecretKeyError when there are none)."""
    return _cipher(tuple(configured_keys(settings)))


def encrypt(plaintext: str) -> str:
    """Encrypt with the current key; SecretKeyError (naming CRM_SYNC_SECRET_KEY) without one."""
    return current_cipher().encrypt(plaintext)


def decrypt(stored: str, what: str) -> str:
    """Decrypt a stored value; plaintext (written before encryption) needs no key."""
    if not is_encrypted(stored):
        return stored
    try:
        cipher = current_cipher()
    except SecretKeyError as exc:
        raise DecryptError(f"cannot decrypt {what}: {exc}") from None
    return cipher.decrypt(stored, what)
