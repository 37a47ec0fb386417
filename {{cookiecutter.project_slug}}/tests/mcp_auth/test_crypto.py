"""AES-256-GCM envelope and keyring: round trip, AAD binding, key ids, key parsing."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable

import pytest
from mcp_auth.crypto import KEY_BYTES, NONCE_BYTES, Keyring, generate_key, key_id, parse_key
from mcp_auth.errors import ConfigError, DecryptionError
from mcp_auth.testing.settings import DEMO_BEARER, make_settings


def keyring(*texts: str) -> Keyring:
    current, *previous = [parse_key(text, name="test key") for text in texts]
    return Keyring(current, previous)


def test_generate_key_is_base64_of_32_random_bytes() -> None:
    first, second = generate_key(), generate_key()
    assert len(base64.b64decode(first, validate=True)) == KEY_BYTES
    assert first != second


def test_key_id_is_a_stable_fingerprint_not_the_key() -> None:
    raw = parse_key(generate_key(), name="k")
    kid = key_id(raw)
    assert kid == key_id(raw) and len(kid) == 16 and int(kid, 16) >= 0
    assert kid not in raw.hex() and kid != key_id(parse_key(generate_key(), name="k"))


def test_round_trip_with_fresh_nonce_per_write() -> None:
    ring = keyring(generate_key())
    first = ring.encrypt("coda", "default", "secret-value")
    second = ring.encrypt("coda", "default", "secret-value")
    assert len(first.nonce) == NONCE_BYTES and first.nonce != second.nonce
    assert first.ciphertext != second.ciphertext
    assert b"secret-value" not in first.ciphertext
    assert ring.decrypt("coda", "default", first) == "secret-value"
    assert ring.decrypt("coda", "default", second) == "secret-value"


@pytest.mark.parametrize(("service", "key"), [("coda", "alice@example.com"), ("github", "default")])
def test_ciphertext_is_bound_to_service_and_key(service: str, key: str) -> None:
    ring = keyring(generate_key())
    envelope = ring.encrypt("coda", "default", "secret-value")
    with pytest.raises(DecryptionError, match=rf"token {service}/{key} .*does not authenticate"):
        ring.decrypt(service, key, envelope)


def test_binding_is_unambiguous() -> None:
    ring = keyring(generate_key())
    envelope = ring.encrypt("ab", "c", "secret-value")
    with pytest.raises(DecryptionError):
        ring.decrypt("a", "bc", envelope)


def test_unknown_key_names_the_key_id_it_needs() -> None:
    writer = keyring(generate_key())
    envelope = writer.encrypt("coda", "default", "secret-value")
    reader = keyring(generate_key())
    with pytest.raises(DecryptionError) as caught:
        reader.decrypt("coda", "default", envelope)
    assert caught.value.message.startswith(
        f"Invalid encryption key: token coda/default was encrypted with key id {writer.current_id}, "
        "which is not configured"
    )


def test_tampered_ciphertext_or_key_id_is_rejected() -> None:
    ring = keyring(generate_key())
    envelope = ring.encrypt("coda", "default", "secret-value")
    flipped = bytes([envelope.ciphertext[0] ^ 1]) + envelope.ciphertext[1:]
    with pytest.raises(DecryptionError, match="coda/default"):
        ring.decrypt("coda", "default", dataclasses.replace(envelope, ciphertext=flipped))
    with pytest.raises(DecryptionError, match="not configured"):
        ring.decrypt("coda", "default", dataclasses.replace(envelope, key_id="0" * 16))


def test_previous_keys_decrypt_and_the_current_key_encrypts() -> None:
    old, new = generate_key(), generate_key()
    envelope = keyring(old).encrypt("coda", "default", "v1")
    ring = keyring(new, old)
    assert ring.decrypt("coda", "default", envelope) == "v1"
    assert ring.encrypt("coda", "default", "v2").key_id == ring.current_id == key_id(parse_key(new, name="k"))
    assert ring.previous_ids == (envelope.key_id,)
    rotated = keyring(old).rotated_to(parse_key(new, name="k"))
    assert rotated.current_id == ring.current_id and envelope.key_id in rotated


@pytest.mark.parametrize(
    "variant",
    [
        lambda raw: base64.b64encode(raw).decode(),
        lambda raw: base64.urlsafe_b64encode(raw).decode(),
        lambda raw: base64.urlsafe_b64encode(raw).decode().rstrip("="),
        lambda raw: "  " + base64.b64encode(raw).decode() + "\n",
    ],
)
def test_parse_key_accepts_the_common_base64_spellings(variant: Callable[[bytes], str]) -> None:
    raw = bytes(range(32))
    assert parse_key(variant(raw), name="MCP_AUTH_ENCRYPTION_KEY") == raw


@pytest.mark.parametrize("text", ["", "not base64!", base64.b64encode(b"short").decode(), "QUJD" * 20])
def test_parse_key_rejects_anything_but_32_bytes(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_key(text, name="MCP_AUTH_ENCRYPTION_KEY", slug="demo-mcp")
    message = caught.value.message
    assert message.startswith("MCP_AUTH_ENCRYPTION_KEY is not a base64-encoded 32-byte key")
    assert "demo-mcp keygen" in message
    if text:
        assert text not in message


def test_keyring_from_settings() -> None:
    current, old = generate_key(), generate_key()
    ring = make_settings(MCP_AUTH_ENCRYPTION_KEY=current, MCP_AUTH_PREVIOUS_KEYS=f"{old}, {current}").keyring()
    assert ring.current_id == key_id(parse_key(current, name="k"))
    assert ring.previous_ids == (key_id(parse_key(old, name="k")),)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"MCP_AUTH_ENCRYPTION_KEY": "nope"}, "MCP_AUTH_ENCRYPTION_KEY"),
        ({"MCP_AUTH_ENCRYPTION_KEY": "", "MCP_AUTH_PREVIOUS_KEYS": "x"}, "MCP_AUTH_PREVIOUS_KEYS entry 1"),
        ({"MCP_AUTH_PREVIOUS_KEYS": generate_key()}, "MCP_AUTH_ENCRYPTION_KEY is not set"),
    ],
)
def test_malformed_keys_stop_start_up_naming_the_variable(env: dict[str, str], variable: str) -> None:
    settings = make_settings(MCP_AUTH_MODE="bearer", MCP_BEARER_TOKENS=f"ci={DEMO_BEARER}", **env)
    with pytest.raises(ConfigError) as caught:
        settings.validate_startup()
    assert variable in caught.value.message and "demo-mcp keygen" in caught.value.message
