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

**Record envelopes** (customer records), bytes; see :class:`RecordCipher`::

    offset  size  field
    0       3     magic b"BKR"
    3       1     format version: 0x02 (written), 0x01 (still read)
    4       4     key version, uint32 big-endian (1 .. 2**32 - 1)
    8       16    salt, random: selects the subkey (v2: the epoch's, v1: the record's)
    24      12    nonce, random (96-bit GCM IV)
    36      n+16  AES-256-GCM ciphertext || 128-bit tag

Version 2 derives a subkey once per epoch of at most 2**28 records, a margin of 16
below the 2**32 invocations NIST SP 800-38D §8.3 allows one key with random 96-bit
nonces; version 1 derived one per record. The data-key cache keeps a
:class:`RecordCipher` (the data key and its derived AES-GCM contexts) per key version
and wipes it with the data key.

Plaintext copies made by Python (``bytes`` results, the HMAC output a subkey is made
from) cannot be wiped reliably; we keep them local to one call. Key buffers we own are
``bytearray`` and are wiped. Functions that hold secrets carry ``@sensitive_variables()``
so Django's error reports redact their frames; those on the record hot path carry the
cheaper :func:`sensitive_frame` (same effect, no wrapper call).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import os
import re
import secrets
import struct
import threading
import types
import uuid
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.views.decorators.debug import sensitive_variables

__all__ = [
    "CryptoError",
    "EnvelopeFormatError",
    "RecordCipher",
    "RecordIntegrityError",
    "SealedValueInvalid",
    "SealingKey",
    "SealingKeyUnavailable",
    "decrypt_record",
    "encrypt_record",
    "envelope_format",
    "envelope_key_version",
    "fingerprint",
    "generate_data_key",
    "generate_sealing_key",
    "in_sensitive_frame",
    "lookup_digest",
    "lookup_digest_key_id",
    "mask_access_key_id",
    "parse_sealing_keys",
    "reseal",
    "seal",
    "sealed_key_id",
    "sealing_aad",
    "sensitive_frame",
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


# --- Error reports ----------------------------------------------------------

# Code objects of the functions whose frames hold secrets or customer data on the
# record hot path. Django's ``@sensitive_variables`` wraps a function in an extra Python
# frame (about 0.5-0.9 us per call, measured by bench/bench_crypto.py); this marks the
# function's own code object instead, for no cost per call, and the project's exception
# reporter filter (``portal.debug.AlwaysSafeExceptionReporterFilter``) cleanses every
# variable of a frame that runs one of these, or that was called from one, exactly as
# Django does for ``@sensitive_variables()`` with no names.
_SENSITIVE_CODE: set[types.CodeType] = set()

_F = TypeVar("_F", bound=Callable[..., Any])


def sensitive_frame(function: _F) -> _F:
    """Mark ``function``'s frames as holding secrets: error reports cleanse all their
    variables (and those of frames it calls). Returns ``function`` itself, unwrapped.

    Only the exception reporter filter of ``portal.debug`` honours the mark (settings'
    ``DEFAULT_EXCEPTION_REPORTER_FILTER``); tests/keys/test_crypto_reports.py proves it.
    """
    _SENSITIVE_CODE.add(function.__code__)
    return function


def in_sensitive_frame(frame: types.FrameType | None) -> bool:
    """True if ``frame`` or one of its callers runs a :func:`sensitive_frame` function."""
    while frame is not None:
        if frame.f_code in _SENSITIVE_CODE:
            return True
        frame = frame.f_back
    return False


# --- Record envelopes -------------------------------------------------------

_ENVELOPE_MAGIC = b"BKR"
_ENVELOPE_FORMAT_V1 = 0x01
_ENVELOPE_FORMAT_V2 = 0x02
_ENVELOPE_FORMATS = (_ENVELOPE_FORMAT_V1, _ENVELOPE_FORMAT_V2)
_ENVELOPE_PREFIX_V1 = _ENVELOPE_MAGIC + bytes([_ENVELOPE_FORMAT_V1])
_ENVELOPE_PREFIX_V2 = _ENVELOPE_MAGIC + bytes([_ENVELOPE_FORMAT_V2])
SALT_SIZE = 16
_FORMAT_AT = len(_ENVELOPE_MAGIC)
_KEY_VERSION_AT = _FORMAT_AT + 1
_SALT_AT = _KEY_VERSION_AT + 4
_NONCE_AT = _SALT_AT + SALT_SIZE
ENVELOPE_HEADER_SIZE = _NONCE_AT + NONCE_SIZE  # 36 bytes
ENVELOPE_OVERHEAD = ENVELOPE_HEADER_SIZE + TAG_SIZE  # 52 bytes
_MAX_KEY_VERSION = 2**32 - 1

# NIST SP 800-38D §8.3: with random 96-bit IVs (§8.2.2) "the total number of
# invocations of the authenticated encryption function shall not exceed 2^32" for
# one key. A version-2 subkey encrypts at most 2^28 records: a margin of 16, which
# also keeps the chance that two of its nonces collide below 2^56 / 2^97 = 2^-41.
RECORDS_PER_SUBKEY = 2**28
# Subkeys a RecordCipher keeps for decrypting records of other epochs (other
# processes, earlier loads), oldest dropped first; a dropped one is derived again.
MAX_DECRYPT_SUBKEYS = 128

# RFC 5869 HKDF-Expand "info" for record subkeys; the salt follows it.
_RECORD_SUBKEY_INFO_V1 = b"byok-portal/record-subkey/v1\x00"
_RECORD_SUBKEY_INFO_V2 = b"byok-portal/record-subkey/v2\x00"
# RFC 5869 §2.3: T(1) = HMAC-Hash(PRK, T(0) | info | 0x01), with T(0) empty.
_HKDF_BLOCK_1 = b"\x01"
_SHA256 = hashes.SHA256()
_HMAC = hmac.HMAC
_U32 = struct.Struct(">I")  # uint32 big-endian
_TWO_U32 = struct.Struct(">II")
# magic + format version, key version, salt, nonce
_ENVELOPE_HEADER = struct.Struct(f">4sI{SALT_SIZE}s{NONCE_SIZE}s")
_urandom = os.urandom

_INTEGRITY_MESSAGE = (
    "Record failed its integrity check: it was altered, moved from another "
    "record or environment, or does not match this key version's data key."
)


# (salt, AESGCM of its subkey, records counted). _NO_EPOCH's counter is past any limit,
# so the first encryption (and any after a wipe or a fork) starts a real epoch.
_Epoch = tuple[bytes, Any, "itertools.count[int]"]
_NO_EPOCH: _Epoch = (b"", None, itertools.count(2**40))


class RecordCipher:
    """Record envelopes under one data key, with the subkey derived once per epoch.

    Made once per data-key load (the data-key cache keeps it beside the data key and
    wipes it with it); thread-safe. ``data_key``: 32 bytes, copied into a buffer the
    cipher owns and :meth:`wipe` overwrites. ``records_per_subkey`` (default
    :data:`RECORDS_PER_SUBKEY` = 2**28) and ``max_decrypt_subkeys`` (default
    :data:`MAX_DECRYPT_SUBKEYS`) are injectable for tests.

    **Envelope, format version 2** (written; ``len(plaintext) + 52`` bytes)::

        b"BKR" | 0x02 | key_version u32be | salt[16] | nonce[12] | ct || tag[16]

    Cipher: AES-256-GCM (NIST SP 800-38D) with a 128-bit tag and a fresh 96-bit nonce
    from ``os.urandom`` for every record (RBG-based IV, §8.2.2); callers cannot
    supply one. The key is a subkey of the data key::

        subkey = HMAC-SHA256(data_key, "byok-portal/record-subkey/v2\\0" || salt || 0x01)

    that is RFC 5869 HKDF-Expand with PRK = data_key, info = label || salt, L = 32
    (one block); Extract is skipped as RFC 5869 §3.3 allows for an input that is
    already a uniformly random key, which a data key is.

    **The bound.** One data key encrypts every record of a key version, in many
    processes, possibly more than the 2**32 invocations SP 800-38D §8.3 allows one key
    with random nonces. So no key is used that often: the cipher draws a random
    128-bit *epoch salt* when it first encrypts, derives that epoch's subkey once, and
    encrypts at most ``records_per_subkey`` (2**28, a margin of 16 below 2**32)
    records under it, counted in the process (thread-safe); the next record starts a new epoch with a
    new salt and subkey. Each process (and each load, and each child after a fork)
    draws its own salt, so two counts share a subkey only if two 128-bit salts
    collide (about n**2 / 2**129 for n epochs). Decryption is not limited by §8.3.

    **Decrypting.** Version 2: the subkey of the envelope's salt is looked up among
    this cipher's own epochs and the last ``max_decrypt_subkeys`` salts it decrypted
    (other processes' epochs), and derived on a miss; a derived subkey is kept only
    once a record has verified under it, so tampered envelopes cannot fill the table.
    **Version 1** (read only; same layout with 0x01, a fresh salt per record and label
    ``byok-portal/record-subkey/v1``): the per-record subkey is derived every time.

    Associated data, length-prefixed so no two inputs encode alike, both versions::

        header[36] || len(env) u32be || len(rec) u32be || env || rec

    where ``env`` and ``rec`` are the UTF-8 bytes of ``environment_id`` and
    ``record_key``. The header (magic, format, key version, salt, nonce) has a fixed
    size and the two lengths fix the split between the ids, so a ciphertext moved to
    another record, environment, key version or format version fails to decrypt.

    Raises ``ValueError`` if ``data_key`` is not 32 bytes or a limit is below 1.
    """

    __slots__ = (
        "__weakref__",
        "_contexts",
        "_data_key",
        "_epoch",
        "_lock",
        "_max_decrypt_subkeys",
        "_records_per_subkey",
        "_wiped",
        "epochs",
    )

    @sensitive_frame
    def __init__(
        self,
        data_key: bytes | bytearray | memoryview,
        *,
        records_per_subkey: int = RECORDS_PER_SUBKEY,
        max_decrypt_subkeys: int = MAX_DECRYPT_SUBKEYS,
    ) -> None:
        if len(data_key) != KEY_SIZE:
            raise ValueError(f"data key must be {KEY_SIZE} bytes")
        if not 1 <= records_per_subkey <= 2**32 or max_decrypt_subkeys < 1:
            raise ValueError("records_per_subkey must be in 1..2**32, max_decrypt_subkeys >= 1")
        self._data_key = bytearray(data_key)
        self._records_per_subkey = records_per_subkey
        self._max_decrypt_subkeys = max_decrypt_subkeys
        # Guards starting an epoch and writing _contexts; never taken per record.
        self._lock = threading.Lock()
        # The current epoch: (salt, its subkey's AESGCM, a counter of the records it
        # encrypted). The first encryption starts one (a cipher that only decrypts
        # derives none).
        self._epoch: _Epoch = _NO_EPOCH
        #: Epochs started so far (tests, metrics).
        self.epochs = 0
        # salt -> AESGCM for decryption. Read without the lock (a dict lookup is atomic
        # under the GIL); written under it.
        self._contexts: dict[bytes, AESGCM] = {}
        self._wiped = False
        _live_ciphers.add(self)

    def __repr__(self) -> str:
        return f"RecordCipher(data_key=<redacted>, epochs={self.epochs}, wiped={self._wiped})"

    @property
    def wiped(self) -> bool:
        return self._wiped

    @sensitive_frame
    def encrypt(self, *, plaintext: bytes, environment_id: str, record_key: str, key_version: int) -> bytes:
        """Encrypt one record; return the version-2 envelope bytes.

        Raises ``ValueError`` if ``key_version`` is not in 1..2**32-1, an id is empty,
        or the cipher was wiped.
        """
        # The data plane's hot path (bench/bench_crypto.py): checks and encodings are
        # written inline rather than as helper calls.
        if type(key_version) is not int or not 0 < key_version <= _MAX_KEY_VERSION:
            raise ValueError("key_version must be an integer in 1..2**32-1")
        if not environment_id or not record_key:
            raise ValueError("environment_id and record_key must be non-empty")
        # Counting without a lock (0.2 us saved per record): next() on an itertools.count
        # is one C call under the GIL, so every caller gets a distinct number, as
        # CPython's own threading._newname relies on. Numbers 0 .. limit-1 encrypt under
        # this epoch's subkey; a caller that draws the limit starts the next epoch.
        epoch = self._epoch
        salt, aead, counter = epoch
        if next(counter) >= self._records_per_subkey:
            salt, aead = self._next_epoch(epoch)
        nonce = _urandom(NONCE_SIZE)
        header = _ENVELOPE_HEADER.pack(_ENVELOPE_PREFIX_V2, key_version, salt, nonce)
        environment = environment_id.encode()
        record = record_key.encode()
        associated_data = header + _TWO_U32.pack(len(environment), len(record)) + environment + record
        return header + aead.encrypt(nonce, plaintext, associated_data)

    @sensitive_frame
    def decrypt(self, *, envelope: bytes, environment_id: str, record_key: str, key_version: int) -> bytes:
        """Decrypt a version-2 or version-1 envelope; return the plaintext.

        ``envelope`` may be any bytes-like object (``memoryview`` is what PostgreSQL
        ``bytea`` columns return). ``environment_id``, ``record_key`` and
        ``key_version`` must be those the record was encrypted with.

        Raises :class:`EnvelopeFormatError` if the bytes are not an envelope of a known
        format (too short, wrong magic, unknown format version, key version 0);
        :class:`RecordIntegrityError` if the header names another key version or the
        GCM tag does not verify (tampered, moved to another record or environment,
        wrong data key). GCM verifies before releasing anything, so no partial
        plaintext is ever returned. Both messages are safe to show to API clients.
        Raises ``ValueError`` for an empty id or a wiped cipher (caller bugs).
        """
        if type(envelope) is not bytes:
            envelope = _as_bytes(envelope)
        if len(envelope) < ENVELOPE_OVERHEAD or envelope[:_FORMAT_AT] != _ENVELOPE_MAGIC:
            _parse_envelope_header(envelope)  # raises EnvelopeFormatError with the reason
        stored_version = _U32.unpack_from(envelope, _KEY_VERSION_AT)[0]
        if stored_version != key_version:
            _parse_envelope_header(envelope)  # version 0 is a format error
            raise RecordIntegrityError(
                f"Record was encrypted under key version {stored_version}, not key version {key_version}."
            )
        if not environment_id or not record_key:
            raise ValueError("environment_id and record_key must be non-empty")
        salt = envelope[_SALT_AT:_NONCE_AT]
        format_version = envelope[_FORMAT_AT]
        derived = None
        if format_version == _ENVELOPE_FORMAT_V2:
            aead = self._contexts.get(salt)
            if aead is None:
                aead = derived = self._derive(_RECORD_SUBKEY_INFO_V2, salt)
        elif format_version == _ENVELOPE_FORMAT_V1:
            aead = self._derive(_RECORD_SUBKEY_INFO_V1, salt)  # one subkey per record
        else:
            raise EnvelopeFormatError("Stored record has an unknown envelope format version.")
        environment = environment_id.encode()
        record = record_key.encode()
        associated_data = (
            envelope[:ENVELOPE_HEADER_SIZE] + _TWO_U32.pack(len(environment), len(record)) + environment + record
        )
        try:
            plaintext = aead.decrypt(envelope[_NONCE_AT:ENVELOPE_HEADER_SIZE], envelope[ENVELOPE_HEADER_SIZE:], associated_data)
        except InvalidTag as e:
            raise RecordIntegrityError(_INTEGRITY_MESSAGE) from e
        if derived is not None:
            self._remember(salt, derived)
        return plaintext

    def wipe(self) -> None:
        """Overwrite the data key with zeros and drop every subkey; later calls raise
        ``ValueError``. The subkeys live in OpenSSL cipher contexts, which OpenSSL
        cleanses when they are freed (``EVP_CIPHER_CTX_free``); the bytes they were made
        from were wiped as soon as each context was built."""
        with self._lock:
            self._wiped = True
            self._epoch = _NO_EPOCH
            self._contexts.clear()
            wipe(self._data_key)

    @sensitive_frame
    def _next_epoch(self, exhausted: _Epoch) -> tuple[bytes, AESGCM]:
        """Draw a number from a fresh epoch, starting one if ``exhausted`` is current."""
        while True:
            with self._lock:
                if self._epoch is exhausted:
                    salt = _urandom(SALT_SIZE)
                    aead = self._derive(_RECORD_SUBKEY_INFO_V2, salt)
                    self._epoch = (salt, aead, itertools.count())
                    self.epochs += 1
                    self._remember_locked(salt, aead)
                epoch = self._epoch
            salt, aead, counter = epoch
            if next(counter) < self._records_per_subkey:
                return salt, aead
            exhausted = epoch  # used up by other threads meanwhile (tiny limits in tests)

    @sensitive_frame
    def _derive(self, info: bytes, salt: bytes) -> AESGCM:
        if self._wiped:
            raise ValueError("This record cipher was wiped.")
        prf = _HMAC(self._data_key, _SHA256)  # RFC 5869 HKDF-Expand, one block
        prf.update(info + salt + _HKDF_BLOCK_1)
        subkey = bytearray(prf.finalize())
        try:
            return AESGCM(subkey)  # the OpenSSL context keeps its own copy
        finally:
            wipe(subkey)

    def _remember(self, salt: bytes, aead: AESGCM) -> None:
        with self._lock:
            if not self._wiped:
                self._remember_locked(salt, aead)

    def _remember_locked(self, salt: bytes, aead: AESGCM) -> None:
        contexts = self._contexts
        contexts[salt] = aead
        while len(contexts) > self._max_decrypt_subkeys:
            del contexts[next(iter(contexts))]  # oldest first; it is derived again if needed

    def _after_fork_in_child(self) -> None:
        # The parent keeps encrypting under its epoch's subkey and counting; the child
        # must not add to that count unseen, so it starts an epoch of its own.
        self._lock = threading.Lock()
        self._epoch = _NO_EPOCH


# Every live cipher, so a forked child moves each to a fresh epoch (see the class docstring).
# after_in_child hooks run in registration order: this one (keys.crypto is imported first)
# gives each cipher a new lock before keys.cache's hook wipes the inherited ones, so a lock
# held by another parent thread at fork time cannot block the child.
_live_ciphers: weakref.WeakSet[RecordCipher] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for cipher in list(_live_ciphers):
        cipher._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


@sensitive_frame
def encrypt_record(
    *,
    data_key: bytes | bytearray | memoryview,
    plaintext: bytes,
    environment_id: str,
    record_key: str,
    key_version: int,
) -> bytes:
    """Encrypt one record under a 32-byte data key; return a version-2 envelope.

    A one-shot :class:`RecordCipher` (its own epoch, wiped before returning): for
    callers without a cached cipher. The data plane uses the cipher the data-key cache
    keeps, which derives its subkey once per epoch instead of once per call.

    Raises ``ValueError`` if ``data_key`` is not 32 bytes, ``key_version`` is not in
    1..2**32-1, or an id is empty.
    """
    cipher = RecordCipher(data_key, records_per_subkey=1)
    try:
        return cipher.encrypt(
            plaintext=plaintext, environment_id=environment_id, record_key=record_key, key_version=key_version
        )
    finally:
        cipher.wipe()


@sensitive_frame
def decrypt_record(
    *,
    data_key: bytes | bytearray | memoryview,
    envelope: bytes,
    environment_id: str,
    record_key: str,
    key_version: int,
) -> bytes:
    """Decrypt a version-2 or version-1 envelope with a one-shot :class:`RecordCipher`.

    Raises what :meth:`RecordCipher.decrypt` raises, and ``ValueError`` for a data key
    that is not 32 bytes.
    """
    cipher = RecordCipher(data_key)
    try:
        return cipher.decrypt(
            envelope=envelope, environment_id=environment_id, record_key=record_key, key_version=key_version
        )
    finally:
        cipher.wipe()


def envelope_format(envelope: bytes) -> int:
    """Return the format version (1 or 2; the byte after ``b"BKR"``) of an envelope's header,
    as stored: :meth:`RecordCipher.encrypt` writes format 2, older records may be format 1
    (docs/architecture.md §6). Does not authenticate. Raises :class:`EnvelopeFormatError` if
    the header cannot be parsed."""
    envelope = _as_bytes(envelope)
    _parse_envelope_header(envelope)
    return envelope[_FORMAT_AT]


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
    if envelope[_FORMAT_AT] not in _ENVELOPE_FORMATS:
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


# --- Lookup digests ---------------------------------------------------------

# RFC 5869 HKDF-Expand "info" of a digest key; the purpose follows it.
_LOOKUP_DIGEST_INFO_V1 = b"byok-portal/lookup-digest/v1\x00"
_HEX64_RE = re.compile(r"[0-9a-f]{64}")


@sensitive_variables()
def lookup_digest(value: bytes | bytearray, *, sealing_key: SealingKey, purpose: str) -> str:
    """A keyed digest of ``value`` to find a row by a value stored only sealed (the IAM
    access key ID): ``"<sealing key id>$<64 lowercase hex>"``, at most 97 characters.

    ``HMAC-SHA256(digest_key, value)`` with ``digest_key = HMAC-SHA256(sealing_key.key,
    "byok-portal/lookup-digest/v1\0" || purpose || 0x01)`` (RFC 5869 HKDF-Expand, one block;
    Extract skipped as §3.3 allows for a uniformly random key): one sealing key gives
    unrelated digest keys per ``purpose``, and the digest never reveals the sealing key.
    Deterministic (that is what makes it a lookup): use it only for high-entropy or
    secret-adjacent values, never display it. Like sealed values it names the sealing key
    it was made with, so digests move to a new key with the sealed values
    (``manage.py reseal_secrets``) and lookups try every configured key meanwhile.
    """
    key = _HMAC(sealing_key.key, _SHA256)
    key.update(_LOOKUP_DIGEST_INFO_V1 + purpose.encode("ascii") + _HKDF_BLOCK_1)
    mac = _HMAC(key.finalize(), _SHA256)
    mac.update(bytes(value))
    return f"{sealing_key.key_id}${mac.finalize().hex()}"


def lookup_digest_key_id(digest: str) -> str | None:
    """The sealing key id a :func:`lookup_digest` names; None for anything else (empty,
    or a digest of an older format that names no key)."""
    key_id, dollar, hex_digest = digest.partition("$")
    if not dollar or not _KEY_ID_RE.fullmatch(key_id) or not _HEX64_RE.fullmatch(hex_digest):
        return None
    return key_id


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
