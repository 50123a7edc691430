"""Key material: sealing secrets at rest and envelope encryption of records.

This is the only module that touches key material. It holds pure functions
over bytes built on pyca ``cryptography`` (AES-GCM, HMAC-SHA256): no ORM, no
boto3, no Django settings. Callers pass every key in.

Two formats live here, both self-describing and versioned in the way
``django/contrib/auth/hashers.py`` stores ``algorithm$iterations$salt$hash``:
a new algorithm is a new format version, not a data migration.

**Sealed values** (IAM credentials, platform-managed data keys), ASCII text::

    sealed$1$<sealing key id>$<b64url nonce, 12 bytes>$<b64url ciphertext||tag>

AES-256-GCM under the named sealing key. The associated data authenticates the
header (``sealed$1$<sealing key id>``) and the caller's :func:`sealing_aad`
(table, row, field), so a sealed value copied to another row or field fails.

**Record envelopes** (customer records), bytes; see :func:`encrypt_record`::

    offset  size  field
    0       3     magic b"BKR"
    3       1     format version, 0x01
    4       4     key version, uint32 big-endian (1 .. 2**32 - 1)
    8       16    salt, random, selects the per-record subkey
    24      12    nonce, random (96-bit GCM IV)
    36      n+16  AES-256-GCM ciphertext || 128-bit tag

Plaintext copies made by Python (``bytes`` results, derived subkeys) cannot be
wiped reliably; we keep them local to one call and never cache them. Functions
that hold secrets carry ``@sensitive_variables()`` so Django's error reports
redact their frames.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.views.decorators.debug import sensitive_variables

__all__ = [
    "CryptoError",
    "EnvelopeFormatError",
    "RecordIntegrityError",
    "SealedValueInvalid",
    "SealingKey",
    "SealingKeyUnavailable",
    "decrypt_record",
    "encrypt_record",
    "envelope_key_version",
    "fingerprint",
    "generate_data_key",
    "generate_sealing_key",
    "mask_access_key_id",
    "parse_sealing_keys",
    "reseal",
    "seal",
    "sealed_key_id",
    "sealing_aad",
    "unseal",
    "wipe",
]

# AES-256: 32-byte keys for both sealing keys and data keys.
KEY_SIZE = 32
# NIST SP 800-38D §5.2.1.1 / §8.2.2: 96-bit IVs built by the RBG construction.
NONCE_SIZE = 12
# NIST SP 800-38D §5.2.1.2: we always use the full 128-bit tag.
TAG_SIZE = 16

_KEY_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")


# --- Errors -----------------------------------------------------------------


class CryptoError(Exception):
    """Base class of every error this module raises on bad ciphertext."""


class SealedValueInvalid(CryptoError):
    """A sealed value is malformed, was tampered with, or fails its AAD.

    The AAD case covers a value swapped between rows or fields, since
    :func:`sealing_aad` binds each sealed value to its table, row and field.
    """


class SealingKeyUnavailable(CryptoError):
    """A sealed value names a sealing key id that is not configured.

    ``key_id`` is the id named by the value (not secret; safe to log), so the
    operator knows which retired sealing key must be put back into settings.
    """

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        super().__init__(
            f"Sealed value was sealed with sealing key {key_id!r}, "
            "which is not configured."
        )


class RecordIntegrityError(CryptoError):
    """A record envelope failed to decrypt: tampered, moved, or wrong data key.

    The message is safe to show to API clients: it names no key material and
    no plaintext.
    """


class EnvelopeFormatError(RecordIntegrityError):
    """The bytes are not a record envelope we can read.

    Raised for data that is not our envelope at all, an unknown format
    version, or a truncated envelope. A subclass of
    :class:`RecordIntegrityError`, so callers may catch just that one.
    """


# --- Sealing keys -----------------------------------------------------------


@dataclass(frozen=True, repr=False)
class SealingKey:
    """One of the platform's sealing keys, as configured in settings.

    ``key_id``: 1 to 32 characters of ``[A-Za-z0-9_-]``, written into every
    value it seals. ``key``: 32 bytes (AES-256). ``repr()`` never shows the key.

    Raises ``ValueError`` for a bad id or key length, ``TypeError`` if ``key``
    is not ``bytes``.
    """

    key_id: str
    key: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.key_id, str) or not _KEY_ID_RE.fullmatch(self.key_id):
            raise ValueError(
                "sealing key id must be 1-32 characters of A-Z, a-z, 0-9, '_' or '-'"
            )
        if not isinstance(self.key, bytes):
            raise TypeError("sealing key must be bytes")
        if len(self.key) != KEY_SIZE:
            raise ValueError(
                f"sealing key {self.key_id!r} must be {KEY_SIZE} bytes, "
                f"got {len(self.key)}"
            )

    def __repr__(self) -> str:
        return f"SealingKey(key_id={self.key_id!r}, key=<redacted>)"


@sensitive_variables()
def parse_sealing_keys(values: Sequence[str]) -> list[SealingKey]:
    """Parse configured sealing keys, newest (the one that seals) first.

    ``values``: a sequence of ``"key_id:base64"`` strings, where ``key_id``
    matches ``[A-Za-z0-9_-]{1,32}`` and ``base64`` is standard base64 (RFC 4648
    §4, with padding) of exactly 32 bytes. Surrounding whitespace is ignored.

    Raises ``ValueError`` naming the entry (1-based) and what is wrong: empty
    list, a bare string instead of a list, missing ``:``, bad id, bad base64,
    wrong key length, duplicate id. Messages never contain key material, so
    system checks may show them as they are.
    """
    if isinstance(values, (str, bytes)):
        raise ValueError(
            "sealing keys must be a list of 'key_id:base64' entries, not a single string"
        )
    if not values:
        raise ValueError("no sealing keys configured: at least one is required")
    parsed: list[SealingKey] = []
    first_entry: dict[str, int] = {}
    for number, value in enumerate(values, start=1):
        sealing_key = _parse_sealing_key_entry(number, value)
        if sealing_key.key_id in first_entry:
            raise ValueError(
                f"sealing key entry {number}: key id {sealing_key.key_id!r} is "
                f"already used by entry {first_entry[sealing_key.key_id]}"
            )
        first_entry[sealing_key.key_id] = number
        parsed.append(sealing_key)
    return parsed


@sensitive_variables()
def _parse_sealing_key_entry(number: int, value: str) -> SealingKey:
    where = f"sealing key entry {number}"
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected a 'key_id:base64' string")
    key_id, colon, encoded = value.strip().partition(":")
    if not colon:
        # Do not echo the entry: it may be a bare key.
        raise ValueError(f"{where}: expected 'key_id:base64', found no ':'")
    if not _KEY_ID_RE.fullmatch(key_id):
        raise ValueError(
            f"{where}: key id must be 1-32 characters of A-Z, a-z, 0-9, '_' or '-'"
        )
    where = f"{where} ({key_id!r})"
    try:
        key = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{where}: key is not valid base64") from None
    if len(key) != KEY_SIZE:
        raise ValueError(
            f"{where}: key must decode to {KEY_SIZE} bytes, got {len(key)}"
        )
    return SealingKey(key_id=key_id, key=key)


@sensitive_variables()
def generate_sealing_key(key_id: str) -> str:
    """Return ``"key_id:base64"`` for a new random 32-byte sealing key.

    The format is what :func:`parse_sealing_keys` reads (for the dev key file).
    Raises ``ValueError`` if ``key_id`` is not ``[A-Za-z0-9_-]{1,32}``.
    """
    sealing_key = SealingKey(key_id=key_id, key=secrets.token_bytes(KEY_SIZE))
    return f"{sealing_key.key_id}:{base64.b64encode(sealing_key.key).decode('ascii')}"


# --- Sealed values ----------------------------------------------------------

_SEALED_PREFIX = "sealed"
_SEALED_FORMAT = "1"
_SEALING_AAD_LABEL = b"byok-portal/sealing-aad/v1"
_SEALED_AAD_LABEL = b"byok-portal/sealed/v1"


def sealing_aad(*, table: str, row_id: str, field: str) -> bytes:
    """Associated data binding a sealed value to its table, row and field.

    ``row_id`` is the row's public UUID, in any form :class:`uuid.UUID`
    accepts; it is bound in canonical lowercase form. The result is an
    unambiguous length-prefixed encoding (a label, then each field as a
    uint32 big-endian length and its UTF-8 bytes), so ``("ab", "c")`` and
    ``("a", "bc")`` never collide.

    Raises ``ValueError`` for an empty table or field, or a row id that is not
    a UUID.
    """
    if not table or not field:
        raise ValueError("sealing_aad needs a non-empty table and field")
    try:
        row_uuid = uuid.UUID(str(row_id))
    except ValueError:
        raise ValueError("sealing_aad row_id must be a UUID") from None
    return _length_prefixed(
        _SEALING_AAD_LABEL,
        table.encode("utf-8"),
        str(row_uuid).encode("ascii"),
        field.encode("utf-8"),
    )


@sensitive_variables()
def seal(plaintext: bytes | bytearray, *, keys: Sequence[SealingKey], aad: bytes) -> str:
    """Seal ``plaintext`` with ``keys[0]`` and return ASCII text.

    Output: ``sealed$1$<key_id>$<b64url nonce>$<b64url ciphertext||tag>``
    (unpadded base64url, RFC 4648 §5). AES-256-GCM (NIST SP 800-38D) with a
    fresh random 96-bit nonce (§8.2.2); the header ``sealed$1$<key_id>`` and
    ``aad`` (use :func:`sealing_aad`) are authenticated as associated data.

    Sealed values are few (IAM credentials and platform-managed data keys,
    one per registration), far below the 2**32 random-nonce invocations per
    key that SP 800-38D §8.3 allows, and sealing keys rotate; so sealing uses
    the sealing key directly, without per-value subkeys.

    Raises ``ValueError`` if ``keys`` is empty.
    """
    sealing_key = _current_sealing_key(keys)
    header = _sealed_header(sealing_key.key_id)
    nonce = os.urandom(NONCE_SIZE)
    ciphertext = AESGCM(sealing_key.key).encrypt(
        nonce, plaintext, _sealed_associated_data(header, aad)
    )
    return f"{header}${_b64url_encode(nonce)}${_b64url_encode(ciphertext)}"


@sensitive_variables()
def unseal(sealed: str, *, keys: Sequence[SealingKey], aad: bytes) -> bytearray:
    """Open a value made by :func:`seal`; return the plaintext as a bytearray.

    Uses the key among ``keys`` whose id the value names (so values sealed by
    an older key keep opening while it is still configured). The caller
    should :func:`wipe` the result when done.

    Raises :class:`SealedValueInvalid` if the value is malformed (including
    non-canonical base64 and unknown format versions), tampered with, or was
    sealed with other ``aad``; :class:`SealingKeyUnavailable` if the named
    key id is not in ``keys``.
    """
    key_id, nonce, ciphertext = _parse_sealed(sealed)
    sealing_key = _find_sealing_key(keys, key_id)
    try:
        plaintext = AESGCM(sealing_key.key).decrypt(
            nonce, ciphertext, _sealed_associated_data(_sealed_header(key_id), aad)
        )
    except InvalidTag as e:
        raise SealedValueInvalid(
            "Sealed value failed its integrity check: it was altered, or belongs "
            "to another row or field."
        ) from e
    return bytearray(plaintext)


def sealed_key_id(sealed: str) -> str:
    """Return the sealing key id named by a sealed value (no decryption).

    Raises :class:`SealedValueInvalid` if the value is malformed.
    """
    key_id, _nonce, _ciphertext = _parse_sealed(sealed)
    return key_id


@sensitive_variables()
def reseal(sealed: str, *, keys: Sequence[SealingKey], aad: bytes) -> str | None:
    """Move a sealed value to the current sealing key ``keys[0]``.

    Returns ``None`` if the value is already sealed with ``keys[0]``, else the
    value sealed afresh with ``keys[0]`` (same ``aad``). The value is always
    opened first, so a corrupt value is reported even when no move is needed.

    Raises what :func:`unseal` raises, and ``ValueError`` if ``keys`` is empty.
    """
    current = _current_sealing_key(keys)
    plaintext = unseal(sealed, keys=keys, aad=aad)
    try:
        if sealed_key_id(sealed) == current.key_id:
            return None
        return seal(plaintext, keys=keys, aad=aad)
    finally:
        wipe(plaintext)


def _current_sealing_key(keys: Sequence[SealingKey]) -> SealingKey:
    if not keys:
        raise ValueError("no sealing keys given: keys[0] seals new values")
    return keys[0]


def _find_sealing_key(keys: Sequence[SealingKey], key_id: str) -> SealingKey:
    for sealing_key in keys:
        if sealing_key.key_id == key_id:
            return sealing_key
    raise SealingKeyUnavailable(key_id)


def _sealed_header(key_id: str) -> str:
    return f"{_SEALED_PREFIX}${_SEALED_FORMAT}${key_id}"


def _sealed_associated_data(header: str, aad: bytes) -> bytes:
    return _length_prefixed(_SEALED_AAD_LABEL, header.encode("ascii"), aad)


def _parse_sealed(sealed: str) -> tuple[str, bytes, bytes]:
    """Split a sealed value into (key_id, nonce, ciphertext||tag)."""
    if not isinstance(sealed, str):
        raise SealedValueInvalid("Sealed value must be text.")
    parts = sealed.split("$")
    if len(parts) != 5 or parts[0] != _SEALED_PREFIX:
        raise SealedValueInvalid("Value is not a sealed value.")
    _prefix, version, key_id, nonce_text, ciphertext_text = parts
    if version != _SEALED_FORMAT:
        raise SealedValueInvalid("Sealed value has an unknown format version.")
    if not _KEY_ID_RE.fullmatch(key_id):
        raise SealedValueInvalid("Sealed value names an invalid sealing key id.")
    nonce = _b64url_decode(nonce_text)
    ciphertext = _b64url_decode(ciphertext_text)
    if len(nonce) != NONCE_SIZE or len(ciphertext) < TAG_SIZE:
        raise SealedValueInvalid("Sealed value is truncated.")
    return key_id, nonce, ciphertext


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    """Strict unpadded base64url: one encoding per byte string, or raise.

    ``base64.urlsafe_b64decode`` silently drops foreign characters and ignores
    the unused low bits of the last character; both would let a changed
    character still decode, so we check the alphabet and re-encode.
    """
    if not _B64URL_RE.fullmatch(text) or len(text) % 4 == 1:
        raise SealedValueInvalid("Sealed value is not valid base64url.")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64url_encode(data) != text:
        raise SealedValueInvalid("Sealed value is not canonical base64url.")
    return data


# --- Data keys --------------------------------------------------------------


@sensitive_variables()
def generate_data_key() -> bytearray:
    """Return a new random 32-byte AES-256 data key (platform-managed keys).

    A bytearray, so the caller can :func:`wipe` it after sealing it.
    """
    return bytearray(os.urandom(KEY_SIZE))


@sensitive_variables()
def wipe(buffer: bytearray) -> None:
    """Overwrite ``buffer`` with zeros in place.

    Best effort: copies Python made elsewhere (``bytes`` objects) are out of
    reach. Raises ``TypeError`` for anything but a bytearray (immutable
    ``bytes`` cannot be wiped).
    """
    if not isinstance(buffer, bytearray):
        raise TypeError("only a bytearray can be wiped in place")
    # Same-length slice assignment overwrites the existing storage.
    buffer[:] = bytes(len(buffer))


# --- Record envelopes -------------------------------------------------------

_ENVELOPE_MAGIC = b"BKR"
_ENVELOPE_FORMAT_V1 = 0x01
_ENVELOPE_PREFIX = _ENVELOPE_MAGIC + bytes([_ENVELOPE_FORMAT_V1])
SALT_SIZE = 16
_KEY_VERSION_AT = len(_ENVELOPE_PREFIX)
_SALT_AT = _KEY_VERSION_AT + 4
_NONCE_AT = _SALT_AT + SALT_SIZE
ENVELOPE_HEADER_SIZE = _NONCE_AT + NONCE_SIZE  # 36 bytes
ENVELOPE_OVERHEAD = ENVELOPE_HEADER_SIZE + TAG_SIZE  # 52 bytes
_MAX_KEY_VERSION = 2**32 - 1

# RFC 5869 HKDF-Expand "info" for record subkeys; the salt follows it.
_RECORD_SUBKEY_INFO = b"byok-portal/record-subkey/v1\x00"
# RFC 5869 §2.3: T(1) = HMAC-Hash(PRK, T(0) | info | 0x01), with T(0) empty.
_HKDF_BLOCK_1 = b"\x01"
_SHA256 = hashes.SHA256()
_HMAC = hmac.HMAC
_U32 = struct.Struct(">I")  # uint32 big-endian
_TWO_U32 = struct.Struct(">II")
# magic + format version, key version, salt || nonce
_ENVELOPE_HEADER = struct.Struct(f">4sI{SALT_SIZE + NONCE_SIZE}s")
_urandom = os.urandom

_INTEGRITY_MESSAGE = (
    "Record failed its integrity check: it was altered, moved from another "
    "record or environment, or does not match this key version's data key."
)


@sensitive_variables()
def encrypt_record(
    *,
    data_key: bytes | bytearray,
    plaintext: bytes,
    environment_id: str,
    record_key: str,
    key_version: int,
) -> bytes:
    """Encrypt one record under a 32-byte data key; return the envelope bytes.

    Envelope (``len(plaintext) + 52`` bytes; layout in the module docstring)::

        b"BKR" | 0x01 | key_version u32be | salt[16] | nonce[12] | ct || tag[16]

    Cipher: AES-256-GCM (NIST SP 800-38D) with a 128-bit tag and a fresh
    96-bit nonce from ``os.urandom`` for every call (RBG-based IV, §8.2.2);
    callers cannot supply one.

    Per-record subkey: one data key encrypts every record of a key version,
    possibly more than the 2**32 random-nonce invocations SP 800-38D §8.3
    allows per key. So each record is encrypted under its own subkey::

        subkey = HMAC-SHA256(data_key, "byok-portal/record-subkey/v1\\0" || salt || 0x01)

    with a fresh random 128-bit salt. This is RFC 5869 HKDF-Expand with
    PRK = data_key, info = label || salt and L = 32 (one block, T(1)); the
    Extract step is skipped as RFC 5869 §3.3 allows when the input is already
    a uniformly random key, which a KMS data key is. Each subkey then
    encrypts one record, so the §8.3 limit applies per subkey and is never
    approached: two records share a subkey only if their 128-bit salts
    collide (about q**2 / 2**129 for q records), and even then reuse a nonce
    only if their 96-bit nonces collide too. Chosen over full HKDF
    (Extract + Expand, two HMACs) as the cheapest sound construction; the
    benchmark ``bench/bench_crypto.py`` prints the cost of each. The AWS
    Encryption SDK derives per-message keys the same way (HKDF over a random
    message id).

    Associated data, length-prefixed so no two inputs encode alike::

        header[36] || len(env) u32be || len(rec) u32be || env || rec

    where ``env`` and ``rec`` are the UTF-8 bytes of ``environment_id`` and
    ``record_key``. The header (magic, format, key version, salt, nonce) has
    a fixed size and the two lengths fix the split between the ids, so a
    ciphertext moved to another record, environment or key version fails to
    decrypt.

    Raises ``ValueError`` if ``data_key`` is not 32 bytes, ``key_version`` is
    not in 1..2**32-1, or an id is empty. Nothing secret outlives the call.
    """
    # This is the data plane's hot path (bench/bench_crypto.py): checks and
    # encodings are written inline rather than as helper calls.
    if len(data_key) != KEY_SIZE:
        raise ValueError(f"data key must be {KEY_SIZE} bytes")
    if type(key_version) is not int or not 0 < key_version <= _MAX_KEY_VERSION:
        raise ValueError("key_version must be an integer in 1..2**32-1")
    if not environment_id or not record_key:
        raise ValueError("environment_id and record_key must be non-empty")
    salt_and_nonce = _urandom(SALT_SIZE + NONCE_SIZE)
    header = _ENVELOPE_HEADER.pack(_ENVELOPE_PREFIX, key_version, salt_and_nonce)
    prf = _HMAC(data_key, _SHA256)  # record subkey: see the docstring
    prf.update(_RECORD_SUBKEY_INFO + salt_and_nonce[:SALT_SIZE] + _HKDF_BLOCK_1)
    environment = environment_id.encode()
    record = record_key.encode()
    associated_data = (
        header + _TWO_U32.pack(len(environment), len(record)) + environment + record
    )
    return header + AESGCM(prf.finalize()).encrypt(
        salt_and_nonce[SALT_SIZE:], plaintext, associated_data
    )


@sensitive_variables()
def decrypt_record(
    *,
    data_key: bytes | bytearray,
    envelope: bytes,
    environment_id: str,
    record_key: str,
    key_version: int,
) -> bytes:
    """Decrypt an envelope made by :func:`encrypt_record`; return the plaintext.

    ``envelope`` may be any bytes-like object (``memoryview`` is what
    PostgreSQL ``bytea`` columns return). ``environment_id``, ``record_key``
    and ``key_version`` must be those the record was encrypted with.

    Raises :class:`EnvelopeFormatError` if the bytes are not an envelope of a
    known format (too short, wrong magic, unknown format version, key version
    0); :class:`RecordIntegrityError` if the header names another key version
    or the GCM tag does not verify (tampered, moved to another record or
    environment, wrong data key). GCM verifies before releasing anything, so
    no partial plaintext is ever returned. Both messages are safe to show to
    API clients. Raises ``ValueError`` for a data key that is not 32 bytes
    or an empty id (caller bugs, not bad data).
    """
    if len(data_key) != KEY_SIZE:
        raise ValueError(f"data key must be {KEY_SIZE} bytes")
    if type(envelope) is not bytes:
        envelope = _as_bytes(envelope)
    if len(envelope) < ENVELOPE_OVERHEAD or envelope[:_KEY_VERSION_AT] != _ENVELOPE_PREFIX:
        _parse_envelope_header(envelope)  # raises EnvelopeFormatError with the reason
    stored_version = _U32.unpack_from(envelope, _KEY_VERSION_AT)[0]
    if stored_version != key_version:
        _parse_envelope_header(envelope)  # version 0 is a format error
        raise RecordIntegrityError(
            f"Record was encrypted under key version {stored_version}, "
            f"not key version {key_version}."
        )
    if not environment_id or not record_key:
        raise ValueError("environment_id and record_key must be non-empty")
    prf = _HMAC(data_key, _SHA256)  # record subkey: see encrypt_record
    prf.update(_RECORD_SUBKEY_INFO + envelope[_SALT_AT:_NONCE_AT] + _HKDF_BLOCK_1)
    environment = environment_id.encode()
    record = record_key.encode()
    associated_data = (
        envelope[:ENVELOPE_HEADER_SIZE]
        + _TWO_U32.pack(len(environment), len(record))
        + environment
        + record
    )
    try:
        return AESGCM(prf.finalize()).decrypt(
            envelope[_NONCE_AT:ENVELOPE_HEADER_SIZE],
            envelope[ENVELOPE_HEADER_SIZE:],
            associated_data,
        )
    except InvalidTag as e:
        raise RecordIntegrityError(_INTEGRITY_MESSAGE) from e


def envelope_key_version(envelope: bytes) -> int:
    """Return the key version (1..2**32-1) named in an envelope's header.

    Does not authenticate: the version is only trusted once
    :func:`decrypt_record` succeeds. Raises :class:`EnvelopeFormatError` if
    the header cannot be parsed.
    """
    return _parse_envelope_header(_as_bytes(envelope))


def _parse_envelope_header(envelope: bytes) -> int:
    if len(envelope) < ENVELOPE_OVERHEAD:
        raise EnvelopeFormatError("Stored record is truncated or is not an encrypted record.")
    if envelope[: len(_ENVELOPE_MAGIC)] != _ENVELOPE_MAGIC:
        raise EnvelopeFormatError("Stored record is not an encrypted record.")
    if envelope[len(_ENVELOPE_MAGIC)] != _ENVELOPE_FORMAT_V1:
        raise EnvelopeFormatError("Stored record has an unknown envelope format version.")
    key_version: int = _U32.unpack_from(envelope, _KEY_VERSION_AT)[0]
    if key_version == 0:
        raise EnvelopeFormatError("Stored record names no key version.")
    return key_version


def _as_bytes(envelope: object) -> bytes:
    if isinstance(envelope, bytes):
        return envelope
    if isinstance(envelope, (bytearray, memoryview)):
        return bytes(envelope)
    raise EnvelopeFormatError("Stored record is not bytes.")


def _length_prefixed(*fields: bytes) -> bytes:
    """Each field as a uint32 big-endian length followed by its bytes."""
    return b"".join(_U32.pack(len(field)) + field for field in fields)


# --- Safe summaries ---------------------------------------------------------

_MASK = "\u2022" * 16
_FINGERPRINT_LABEL = b"byok-portal/fingerprint/v1\x00"


def mask_access_key_id(access_key_id: str) -> str:
    """Show only the last four characters: ``"••••••••••••••••WXYZ"``.

    Always 16 bullets, so the length is not shown either. IAM access key IDs
    are 16 to 128 characters (IAM API reference, ``AccessKey.AccessKeyId``);
    for anything shorter nothing is shown, since four characters would be
    too much of it.
    """
    if len(access_key_id) < 16:
        return _MASK
    return _MASK + access_key_id[-4:]


@sensitive_variables()
def fingerprint(data: bytes | bytearray) -> str:
    """Short display id for key material: 8 lowercase hex characters.

    The first 32 bits of SHA-256 over a domain-separated input
    (``"byok-portal/fingerprint/v1\\0" || data``), so it never equals a
    fingerprint some other tool computes over the same bytes. Not reversible
    for high-entropy input (keys, ciphertext blobs); do not fingerprint
    guessable values, and do not treat it as unique: it tells values apart
    on screen, it does not identify them.
    """
    digest = hashlib.sha256(_FINGERPRINT_LABEL)
    digest.update(data)
    return digest.hexdigest()[:8]
