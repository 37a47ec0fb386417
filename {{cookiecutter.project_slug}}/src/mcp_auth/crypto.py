"""AES-256-GCM envelope for stored tokens, and the keyring that opens it.

One format: ``Envelope(key_id, nonce, ciphertext)`` where ``ciphertext`` carries the 16-byte GCM
tag. The additional authenticated data binds the envelope to its (service, key), so a ciphertext
copied onto another row fails to decrypt instead of silently handing out the wrong token.
The key id is a one-way fingerprint of the key: it tells an operator *which* key a row needs
without revealing anything about the key itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from mcp_auth.errors import ConfigError, DecryptionError

KEY_BYTES = 32
NONCE_BYTES = 12
_KEY_ID_DOMAIN = b"mcp-auth key id v1\x00"
_AAD_PREFIX = b"mcp-auth token v1\x00"


def generate_key() -> str:
    """A new MCP_AUTH_ENCRYPTION_KEY: standard base64 of 32 random bytes."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def key_id(key: bytes) -> str:
    """16 hex chars of a domain-separated SHA-256 of the key (never the key itself)."""
    return hashlib.sha256(_KEY_ID_DOMAIN + key).hexdigest()[:16]


def parse_key(text: str, *, name: str, slug: str = "mcp-server") -> bytes:
    """Decode a base64 key; ``name`` is what the error message calls it (e.g. the env var).

    Both the standard and the URL-safe alphabet are accepted, with or without padding, because
    ``openssl rand -base64 32`` and ``secrets.token_urlsafe(32)`` are both common ways to mint one.
    """
    raw = text.strip().replace("-", "+").replace("_", "/")
    raw += "=" * (-len(raw) % 4)
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{name} is not a base64-encoded 32-byte key (generate one with '{slug} keygen')")
    return key


def _aad(service: str, key: str) -> bytes:
    # Length-prefixed, so no two (service, key) pairs encode alike whatever characters they hold.
    service_bytes, key_bytes = service.encode("utf-8"), key.encode("utf-8")
    return b"".join(
        (
            _AAD_PREFIX,
            len(service_bytes).to_bytes(4, "big"),
            service_bytes,
            len(key_bytes).to_bytes(4, "big"),
            key_bytes,
        )
    )


@dataclass(frozen=True, slots=True)
class Envelope:
    key_id: str
    nonce: bytes
    ciphertext: bytes


class MissingKeyError(DecryptionError):
    """The envelope names a key id this keyring does not hold."""

    def __init__(self, message: str, *, service: str, key: str, key_id: str) -> None:
        super().__init__(message)
        self.service, self.key, self.key_id = service, key, key_id


class Keyring:
    """The current key (encrypts) plus previous keys (still decrypt during a rotation)."""

    def __init__(self, current: bytes, previous: Iterable[bytes] = ()) -> None:
        if len(current) != KEY_BYTES:
            raise ValueError("encryption keys are 32 bytes")
        self.current_id = key_id(current)
        self._ciphers: dict[str, AESGCM] = {self.current_id: AESGCM(current)}
        self._keys: dict[str, bytes] = {self.current_id: current}
        for key in previous:
            if len(key) != KEY_BYTES:
                raise ValueError("encryption keys are 32 bytes")
            kid = key_id(key)
            if kid not in self._ciphers:
                self._ciphers[kid] = AESGCM(key)
                self._keys[kid] = key

    @classmethod
    def from_base64(cls, current: str | None, previous: Sequence[str] = (), *, slug: str = "mcp-server") -> Keyring:
        """MCP_AUTH_ENCRYPTION_KEY (current) + MCP_AUTH_PREVIOUS_KEYS; ConfigError when malformed."""
        old = [
            parse_key(text, name=f"MCP_AUTH_PREVIOUS_KEYS entry {index}", slug=slug)
            for index, text in enumerate(previous, 1)
        ]
        if current is None:
            raise ConfigError(
                "MCP_AUTH_ENCRYPTION_KEY is not set (generate one with "
                f"'{slug} keygen'; MCP_AUTH_PREVIOUS_KEYS only adds old keys to it)"
            )
        return cls(parse_key(current, name="MCP_AUTH_ENCRYPTION_KEY", slug=slug), old)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._ciphers)

    @property
    def previous_ids(self) -> tuple[str, ...]:
        return tuple(kid for kid in self._ciphers if kid != self.current_id)

    def __contains__(self, kid: object) -> bool:
        return kid in self._ciphers

    def rotated_to(self, new_current: bytes) -> Keyring:
        """The keyring after a rotation: ``new_current`` encrypts, everything known still decrypts."""
        return Keyring(new_current, self._keys.values())

    def encrypt(self, service: str, key: str, plaintext: str) -> Envelope:
        # A fresh random 96-bit nonce per write; with one key that is safe far beyond any
        # realistic number of token writes (the GCM birthday bound is ~2**32 messages).
        nonce = secrets.token_bytes(NONCE_BYTES)
        ciphertext = self._ciphers[self.current_id].encrypt(nonce, plaintext.encode("utf-8"), _aad(service, key))
        return Envelope(self.current_id, nonce, ciphertext)

    def decrypt(self, service: str, key: str, envelope: Envelope) -> str:
        cipher = self._ciphers.get(envelope.key_id)
        if cipher is None:
            raise _missing_key(service, key, envelope.key_id)
        try:
            if len(envelope.nonce) != NONCE_BYTES:  # AESGCM itself accepts 8 to 128 bytes
                raise InvalidTag
            plaintext = cipher.decrypt(envelope.nonce, envelope.ciphertext, _aad(service, key))
            return plaintext.decode("utf-8")
        except (InvalidTag, UnicodeDecodeError):
            # UnicodeDecodeError: authentic, but not written by set_token (which stores UTF-8 text).
            raise DecryptionError(
                f"Decryption failed for token {service}/{key} (key id {envelope.key_id}): the stored "
                "ciphertext does not authenticate; the row was modified or copied from another token"
            ) from None

    def reseal(self, target: Keyring, items: Iterable[tuple[str, str, Envelope]]) -> Iterator[tuple[bytes, bytes]]:
        """Re-encrypt (service, key, envelope) items from this keyring to ``target``'s current key,
        yielding (ciphertext, nonce) in order; raises DecryptionError at the first that does not open.

        The bulk path of a key rotation: one AAD per item, because going through
        decrypt()/encrypt() per item doubled the cost of rotating 100k tokens.
        """
        sealer = target._ciphers[target.current_id]
        for service, key, envelope in items:
            opener = self._ciphers.get(envelope.key_id)
            if opener is None:
                raise _missing_key(service, key, envelope.key_id)
            aad = _aad(service, key)
            try:
                plaintext = opener.decrypt(envelope.nonce, envelope.ciphertext, aad)
            except InvalidTag:
                self.decrypt(service, key, envelope)  # raises the tampering DecryptionError
                raise
            nonce = secrets.token_bytes(NONCE_BYTES)
            yield sealer.encrypt(nonce, plaintext, aad), nonce


def _missing_key(service: str, key: str, kid: str) -> MissingKeyError:
    return MissingKeyError(
        f"Invalid encryption key: token {service}/{key} was encrypted with key id {kid}, which is not "
        "configured (set MCP_AUTH_ENCRYPTION_KEY or add the key to MCP_AUTH_PREVIOUS_KEYS)",
        service=service,
        key=key,
        key_id=kid,
    )
