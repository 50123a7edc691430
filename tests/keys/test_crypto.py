"""keys/crypto.py: sealing, record envelopes, safe summaries.

Runs without Django settings: ``pytest tests/keys/test_crypto.py -p no:django``.
"""

from __future__ import annotations

import base64
import string
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keys import crypto
from keys.crypto import (
    CryptoError,
    EnvelopeFormatError,
    RecordCipher,
    RecordIntegrityError,
    SealedValueInvalid,
    SealingKey,
    SealingKeyUnavailable,
    decrypt_record,
    encrypt_record,
    envelope_key_version,
    fingerprint,
    generate_data_key,
    generate_sealing_key,
    mask_access_key_id,
    parse_sealing_keys,
    reseal,
    seal,
    sealed_key_id,
    sealing_aad,
    unseal,
    wipe,
)

K1 = SealingKey(key_id="k1", key=bytes(range(32)))
K2 = SealingKey(key_id="k2", key=bytes(range(100, 132)))
ROW_A = "0b7e7d52-3f7c-4a4e-9f0e-2f5b8d0c1a11"
ROW_B = "9d1f2c3b-8a7e-4c6d-b5a4-3e2f1d0c9b8a"
SECRET = b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AAD = sealing_aad(table="keys_registration", row_id=ROW_A, field="secret_access_key")

ENVIRONMENT = "5b0c1c9e-6f6e-4d2a-9d38-3f1f6a0d2b7e"
OTHER_ENVIRONMENT = "c3a9e1d4-1b2c-4d5e-8f90-a1b2c3d4e5f6"
RECORD = b'{"customer_id": "cus_42", "iban": "GB33BUKB20201555555555"}'
DATA_KEY = bytes(range(200, 232))


def _encrypt(**overrides: object) -> bytes:
    arguments: dict[str, object] = {
        "data_key": DATA_KEY,
        "plaintext": RECORD,
        "environment_id": ENVIRONMENT,
        "record_key": "customer/42",
        "key_version": 1,
    }
    arguments.update(overrides)
    return encrypt_record(**arguments)  # type: ignore[arg-type]


def _decrypt(envelope: bytes, **overrides: object) -> bytes:
    arguments: dict[str, object] = {
        "data_key": DATA_KEY,
        "envelope": envelope,
        "environment_id": ENVIRONMENT,
        "record_key": "customer/42",
        "key_version": 1,
    }
    arguments.update(overrides)
    return decrypt_record(**arguments)  # type: ignore[arg-type]


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


# --- Sealing keys -----------------------------------------------------------


def test_it_parses_sealing_keys_in_order() -> None:
    keys = parse_sealing_keys([f"k2:{_b64(K2.key)}", f" k1:{_b64(K1.key)} "])

    assert keys == [K2, K1]


def test_it_generates_sealing_keys_that_parse() -> None:
    first = generate_sealing_key("dev-1")
    second = generate_sealing_key("dev-1")

    assert first != second
    (parsed,) = parse_sealing_keys([first])
    assert parsed.key_id == "dev-1"
    assert len(parsed.key) == 32


def test_it_refuses_to_generate_a_sealing_key_with_a_bad_id() -> None:
    with pytest.raises(ValueError):
        generate_sealing_key("no spaces")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], "no sealing keys"),
        (f"k1:{_b64(bytes(32))}", "not a single string"),
        ([_b64(bytes(range(32)))], "entry 1: expected 'key_id:base64', found no ':'"),
        ([f":{_b64(bytes(32))}"], "entry 1: key id"),
        ([f"bad id:{_b64(bytes(32))}"], "entry 1: key id"),
        ([f"{'k' * 33}:{_b64(bytes(32))}"], "entry 1: key id"),
        ([f"k1:{_b64(bytes(32))}", "k2:not base64!"], "entry 2 ('k2'): key is not valid base64"),
        ([f"k1:{_b64(bytes(range(16)))}"], "entry 1 ('k1'): key must decode to 32 bytes, got 16"),
        ([f"k1:{_b64(bytes(range(33)))}"], "got 33"),
        (
            [f"k1:{_b64(bytes(32))}", f"k1:{_b64(bytes(range(32)))}"],
            "entry 2: key id 'k1' is already used by entry 1",
        ),
        ([None], "entry 1: expected a 'key_id:base64' string"),
    ],
)
def test_it_rejects_bad_sealing_key_settings_with_a_clear_message(
    values: object, expected: str
) -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_sealing_keys(values)  # type: ignore[arg-type]

    assert expected in str(excinfo.value)


def test_it_never_puts_key_material_in_sealing_key_errors() -> None:
    short_key = _b64(bytes(range(50, 66)))
    bare_key = _b64(bytes(range(1, 33)))

    for values in ([f"k1:{short_key}"], [bare_key]):
        with pytest.raises(ValueError) as excinfo:
            parse_sealing_keys(values)
        assert short_key not in str(excinfo.value)
        assert bare_key not in str(excinfo.value)


def test_it_hides_the_key_in_sealing_key_repr() -> None:
    shown = repr(K1) + str(K1) + repr([K1])

    assert "k1" in shown
    assert K1.key.hex() not in shown
    assert _b64(K1.key) not in shown
    assert repr(K1.key) not in shown


def test_it_rejects_sealing_keys_of_the_wrong_size() -> None:
    with pytest.raises(ValueError):
        SealingKey(key_id="k1", key=bytes(16))


# --- Sealed values ----------------------------------------------------------


def test_it_round_trips_a_sealed_value() -> None:
    sealed = seal(SECRET, keys=[K1], aad=AAD)

    assert unseal(sealed, keys=[K1], aad=AAD) == bytearray(SECRET)
    assert isinstance(unseal(sealed, keys=[K1], aad=AAD), bytearray)


def test_it_writes_a_self_describing_ascii_sealed_value() -> None:
    sealed = seal(SECRET, keys=[K1], aad=AAD)

    prefix, version, key_id, nonce, ciphertext = sealed.split("$")
    assert (prefix, version, key_id) == ("sealed", "1", "k1")
    assert sealed.isascii()
    assert len(nonce) == 16  # 12 bytes, base64url
    assert SECRET.decode() not in sealed
    assert sealed_key_id(sealed) == "k1"


def test_it_seals_the_same_secret_differently_each_time() -> None:
    assert seal(SECRET, keys=[K1], aad=AAD) != seal(SECRET, keys=[K1], aad=AAD)


def test_it_round_trips_an_empty_secret() -> None:
    sealed = seal(b"", keys=[K1], aad=AAD)

    assert unseal(sealed, keys=[K1], aad=AAD) == bytearray()


def test_it_refuses_a_sealed_value_swapped_to_another_row() -> None:
    sealed = seal(SECRET, keys=[K1], aad=AAD)
    other_row = sealing_aad(table="keys_registration", row_id=ROW_B, field="secret_access_key")

    with pytest.raises(SealedValueInvalid):
        unseal(sealed, keys=[K1], aad=other_row)


def test_it_refuses_a_sealed_value_swapped_to_another_field() -> None:
    sealed = seal(SECRET, keys=[K1], aad=AAD)
    other_field = sealing_aad(table="keys_registration", row_id=ROW_A, field="access_key_id")

    with pytest.raises(SealedValueInvalid):
        unseal(sealed, keys=[K1], aad=other_field)


def test_it_refuses_a_sealed_value_swapped_to_another_table() -> None:
    sealed = seal(SECRET, keys=[K1], aad=AAD)
    other_table = sealing_aad(table="keys_platformkey", row_id=ROW_A, field="secret_access_key")

    with pytest.raises(SealedValueInvalid):
        unseal(sealed, keys=[K1], aad=other_table)


def test_it_encodes_sealing_aad_unambiguously() -> None:
    assert sealing_aad(table="ab", row_id=ROW_A, field="c") != sealing_aad(
        table="a", row_id=ROW_A, field="bc"
    )


def test_it_binds_the_canonical_form_of_the_row_uuid() -> None:
    assert sealing_aad(table="t", row_id=ROW_A.upper(), field="f") == sealing_aad(
        table="t", row_id=str(uuid.UUID(ROW_A)), field="f"
    )


@pytest.mark.parametrize(
    ("table", "row_id", "field"),
    [("", ROW_A, "f"), ("t", ROW_A, ""), ("t", "42", "f"), ("t", "", "f")],
)
def test_it_rejects_bad_sealing_aad_arguments(table: str, row_id: str, field: str) -> None:
    with pytest.raises(ValueError):
        sealing_aad(table=table, row_id=row_id, field=field)


def test_it_unseals_values_of_the_previous_sealing_key_during_rotation() -> None:
    sealed_by_k1 = seal(SECRET, keys=[K1], aad=AAD)

    assert unseal(sealed_by_k1, keys=[K2, K1], aad=AAD) == bytearray(SECRET)


def test_it_reseals_values_of_the_previous_sealing_key_under_the_current_one() -> None:
    sealed_by_k1 = seal(SECRET, keys=[K1], aad=AAD)

    resealed = reseal(sealed_by_k1, keys=[K2, K1], aad=AAD)

    assert resealed is not None
    assert sealed_key_id(resealed) == "k2"
    assert unseal(resealed, keys=[K2], aad=AAD) == bytearray(SECRET)
    assert reseal(resealed, keys=[K2, K1], aad=AAD) is None


def test_it_names_the_missing_sealing_key_when_it_was_removed_too_early() -> None:
    sealed_by_k1 = seal(SECRET, keys=[K1], aad=AAD)

    with pytest.raises(SealingKeyUnavailable) as excinfo:
        unseal(sealed_by_k1, keys=[K2], aad=AAD)

    assert excinfo.value.key_id == "k1"
    assert "'k1'" in str(excinfo.value)
    with pytest.raises(SealingKeyUnavailable):
        reseal(sealed_by_k1, keys=[K2], aad=AAD)


def test_it_refuses_to_reseal_a_corrupt_value_already_under_the_current_key() -> None:
    sealed = seal(SECRET, keys=[K2], aad=AAD)

    with pytest.raises(SealedValueInvalid):
        reseal(sealed, keys=[K2], aad=sealing_aad(table="t", row_id=ROW_B, field="f"))


def test_it_needs_a_sealing_key_to_seal() -> None:
    with pytest.raises(ValueError):
        seal(SECRET, keys=[], aad=AAD)


def test_it_refuses_a_sealed_value_with_any_character_changed() -> None:
    sealed = seal(SECRET, keys=[K1], aad=AAD)
    key_id_span = range(len("sealed$1$"), len("sealed$1$k1"))

    for position, original in enumerate(sealed):
        for replacement in {"A", "B", "_", "$", "="} - {original}:
            tampered = sealed[:position] + replacement + sealed[position + 1 :]
            # A changed key id may name a sealing key that is not configured.
            expected: type[Exception] | tuple[type[Exception], ...] = SealedValueInvalid
            if position in key_id_span:
                expected = (SealedValueInvalid, SealingKeyUnavailable)
            with pytest.raises(expected):
                unseal(tampered, keys=[K1, K2], aad=AAD)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s[:-1],
        lambda s: s + "A",
        lambda s: s.replace("sealed$1$", "sealed$2$"),
        lambda s: s.replace("sealed$", "Sealed$"),
        lambda s: s + "$",
        lambda s: s.rsplit("$", 1)[0],
        lambda s: s.rsplit("$", 1)[0] + "$" + s.rsplit("$", 1)[1][:10],
        lambda s: "",
        lambda s: "not a sealed value",
        lambda s: s.encode(),
        lambda s: s.replace("$k1$", "$k 1$"),
        lambda s: s + "\n",
    ],
)
def test_it_refuses_malformed_sealed_values(mangle: object) -> None:
    sealed = seal(SECRET, keys=[K1], aad=AAD)
    bad = mangle(sealed)  # type: ignore[operator]

    with pytest.raises(SealedValueInvalid):
        unseal(bad, keys=[K1], aad=AAD)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "sealed$1$k1",
        "sealed$2$k1$AAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA",
        "sealed$1$k 1$x$y",
        b"sealed",
    ],
)
def test_it_refuses_to_name_the_sealing_key_of_a_malformed_value(bad: object) -> None:
    with pytest.raises(SealedValueInvalid):
        sealed_key_id(bad)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=string.ascii_letters + string.digits + "$_-=+/ ", max_size=120))
def test_it_raises_only_crypto_errors_on_arbitrary_text(text: str) -> None:
    with pytest.raises(CryptoError):
        unseal(text, keys=[K1], aad=AAD)


# --- Data keys --------------------------------------------------------------


def test_it_generates_random_32_byte_data_keys() -> None:
    first, second = generate_data_key(), generate_data_key()

    assert isinstance(first, bytearray)
    assert len(first) == 32
    assert first != second


def test_it_wipes_a_buffer_in_place() -> None:
    data_key = generate_data_key()
    same = data_key

    wipe(data_key)

    assert same is data_key
    assert data_key == bytearray(32)


def test_it_refuses_to_pretend_to_wipe_immutable_bytes() -> None:
    with pytest.raises(TypeError):
        wipe(b"secret")  # type: ignore[arg-type]


# --- Record envelopes -------------------------------------------------------


def test_it_round_trips_a_record() -> None:
    assert _decrypt(_encrypt()) == RECORD


def test_it_round_trips_an_empty_and_a_large_record() -> None:
    large = b"x" * (1 << 20)

    assert _decrypt(_encrypt(plaintext=b"")) == b""
    assert _decrypt(_encrypt(plaintext=large)) == large


def test_it_accepts_a_bytearray_data_key_and_a_memoryview_envelope() -> None:
    data_key = bytearray(DATA_KEY)
    envelope = _encrypt(data_key=data_key)

    assert _decrypt(memoryview(envelope), data_key=data_key) == RECORD
    assert _decrypt(bytearray(envelope)) == RECORD


def test_it_round_trips_unicode_record_keys() -> None:
    envelope = _encrypt(record_key="kunde/Müller/🔑")

    assert _decrypt(envelope, record_key="kunde/Müller/🔑") == RECORD


def test_it_encrypts_the_same_record_differently_each_time() -> None:
    first, second = _encrypt(), _encrypt()

    assert first != second
    # Salt and nonce both fresh.
    assert first[8:24] != second[8:24]
    assert first[24:36] != second[24:36]


def test_it_lays_out_the_envelope_as_documented() -> None:
    envelope = _encrypt(key_version=0x01020304)

    assert envelope[:3] == b"BKR"
    assert envelope[3] == 2
    assert envelope[4:8] == bytes([1, 2, 3, 4])
    assert len(envelope) == len(RECORD) + 3 + 1 + 4 + 16 + 12 + 16
    assert RECORD not in envelope


def test_it_reads_the_key_version_from_the_envelope() -> None:
    assert envelope_key_version(_encrypt(key_version=7)) == 7
    assert envelope_key_version(_encrypt(key_version=2**32 - 1)) == 2**32 - 1


def test_it_refuses_an_envelope_with_any_byte_changed() -> None:
    envelope = _encrypt()

    for position in range(len(envelope)):
        for mask in (0x01, 0x80, 0xFF):
            tampered = bytearray(envelope)
            tampered[position] ^= mask
            with pytest.raises(RecordIntegrityError):
                _decrypt(bytes(tampered))


def test_it_refuses_a_record_moved_to_another_record_key() -> None:
    with pytest.raises(RecordIntegrityError) as excinfo:
        _decrypt(_encrypt(), record_key="customer/43")

    assert type(excinfo.value) is RecordIntegrityError


def test_it_refuses_a_record_moved_to_another_environment() -> None:
    with pytest.raises(RecordIntegrityError):
        _decrypt(_encrypt(), environment_id=OTHER_ENVIRONMENT)


def test_it_refuses_a_record_read_with_another_key_version() -> None:
    with pytest.raises(RecordIntegrityError) as excinfo:
        _decrypt(_encrypt(key_version=1), key_version=2)

    assert "key version 1" in str(excinfo.value)


def test_it_refuses_a_record_whose_header_was_relabelled_to_another_key_version() -> None:
    relabelled = bytearray(_encrypt(key_version=1))
    relabelled[4:8] = (2).to_bytes(4, "big")

    with pytest.raises(RecordIntegrityError):
        _decrypt(bytes(relabelled), key_version=2)


def test_it_does_not_confuse_record_key_and_environment_boundaries() -> None:
    envelope = _encrypt(environment_id="env-a", record_key="b/c")

    with pytest.raises(RecordIntegrityError):
        _decrypt(envelope, environment_id="env-a/b", record_key="c")


def test_it_refuses_a_record_decrypted_with_the_wrong_data_key() -> None:
    wrong_data_key = bytes(range(32))

    with pytest.raises(RecordIntegrityError) as excinfo:
        _decrypt(_encrypt(), data_key=wrong_data_key)

    message = str(excinfo.value)
    assert DATA_KEY.hex() not in message
    assert wrong_data_key.hex() not in message
    assert "cus_42" not in message


@pytest.mark.parametrize(
    "envelope",
    [
        b"",
        b"B",
        b"BKR\x01",
        b"BKR\x01" + bytes(47),  # one byte short of header + tag
        b"not an envelope at all, just some bytes that are long enough to parse",
        b'{"customer_id": "cus_42", "iban": "GB33BUKB20201555555555"}',
        b"BKR\x03" + bytes(100),  # unknown format version
        b"BKR\x00" + bytes(100),  # unknown format version
        b"BKR\x01\x00\x00\x00\x00" + bytes(100),  # key version 0
        b"BKR\x02\x00\x00\x00\x00" + bytes(100),  # key version 0
        "BKR\x01 a str, not bytes" + "x" * 64,
        None,
    ],
)
def test_it_raises_envelope_format_error_for_what_is_not_an_envelope(envelope: object) -> None:
    with pytest.raises(EnvelopeFormatError):
        _decrypt(envelope)  # type: ignore[arg-type]
    with pytest.raises(EnvelopeFormatError):
        envelope_key_version(envelope)  # type: ignore[arg-type]


def test_it_raises_envelope_format_error_for_every_truncation() -> None:
    envelope = _encrypt()

    for length in range(crypto.ENVELOPE_OVERHEAD):
        with pytest.raises(EnvelopeFormatError):
            _decrypt(envelope[:length])


def test_it_refuses_a_record_truncated_after_the_header() -> None:
    envelope = _encrypt()

    for length in range(crypto.ENVELOPE_OVERHEAD, len(envelope)):
        with pytest.raises(RecordIntegrityError):
            _decrypt(envelope[:length])


@pytest.mark.parametrize(
    "overrides",
    [
        {"data_key": bytes(16)},
        {"key_version": 0},
        {"key_version": -1},
        {"key_version": 2**32},
        {"key_version": True},
        {"key_version": "1"},
        {"environment_id": ""},
        {"record_key": ""},
    ],
)
def test_it_rejects_bad_arguments_when_encrypting(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        _encrypt(**overrides)


def test_it_rejects_a_data_key_of_the_wrong_size_when_decrypting() -> None:
    with pytest.raises(ValueError):
        _decrypt(_encrypt(), data_key=bytes(31))


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.binary(max_size=200).map(lambda tail: b"BKR" + tail),
        st.binary(max_size=200).map(lambda tail: b"BKR\x01" + tail),
        st.binary(max_size=200).map(lambda tail: b"BKR\x01\x00\x00\x00\x01" + tail),
        st.binary(max_size=200).map(lambda tail: b"BKR\x02" + tail),
        st.binary(max_size=200).map(lambda tail: b"BKR\x02\x00\x00\x00\x01" + tail),
    ),
    st.integers(min_value=1, max_value=3),
)
def test_it_raises_only_record_integrity_errors_on_arbitrary_bytes(
    envelope: bytes, key_version: int
) -> None:
    with pytest.raises(RecordIntegrityError):
        _decrypt(envelope, key_version=key_version)
    try:
        version = envelope_key_version(envelope)
    except RecordIntegrityError:
        pass
    else:
        assert 1 <= version <= 2**32 - 1


# --- Record cipher (envelope version 2, subkey per epoch) --------------------


def _cipher_encrypt(cipher: RecordCipher, **overrides: object) -> bytes:
    arguments: dict[str, object] = {
        "plaintext": RECORD,
        "environment_id": ENVIRONMENT,
        "record_key": "customer/42",
        "key_version": 1,
    }
    arguments.update(overrides)
    return cipher.encrypt(**arguments)  # type: ignore[arg-type]


def _cipher_decrypt(cipher: RecordCipher, envelope: bytes, **overrides: object) -> bytes:
    arguments: dict[str, object] = {
        "envelope": envelope,
        "environment_id": ENVIRONMENT,
        "record_key": "customer/42",
        "key_version": 1,
    }
    arguments.update(overrides)
    return cipher.decrypt(**arguments)  # type: ignore[arg-type]


def _salt(envelope: bytes) -> bytes:
    return envelope[8:24]


def _nonce(envelope: bytes) -> bytes:
    return envelope[24:36]


def test_it_round_trips_records_through_a_cached_cipher() -> None:
    cipher = RecordCipher(DATA_KEY)

    for number in range(5):
        envelope = _cipher_encrypt(cipher, record_key=f"customer/{number}")
        assert envelope[:4] == b"BKR\x02"
        assert _cipher_decrypt(cipher, envelope, record_key=f"customer/{number}") == RECORD


def test_it_reads_what_the_one_shot_functions_write_and_the_other_way_round() -> None:
    cipher = RecordCipher(bytearray(DATA_KEY))

    assert _cipher_decrypt(cipher, _encrypt()) == RECORD
    assert _decrypt(_cipher_encrypt(cipher)) == RECORD


def test_it_shares_one_epoch_salt_and_draws_a_fresh_nonce_per_record() -> None:
    cipher = RecordCipher(DATA_KEY)

    envelopes = [_cipher_encrypt(cipher) for _ in range(20_000)]

    assert len({_salt(envelope) for envelope in envelopes}) == 1
    assert len({_nonce(envelope) for envelope in envelopes}) == len(envelopes)
    assert len(set(envelopes)) == len(envelopes)
    assert cipher.epochs == 1


def test_it_gives_every_cipher_its_own_epoch_salt() -> None:
    salts = {_salt(_cipher_encrypt(RecordCipher(DATA_KEY))) for _ in range(50)}

    assert len(salts) == 50


def test_it_starts_a_new_epoch_exactly_at_the_limit() -> None:
    cipher = RecordCipher(DATA_KEY, records_per_subkey=3)

    envelopes = [_cipher_encrypt(cipher) for _ in range(7)]

    salts = [_salt(envelope) for envelope in envelopes]
    assert salts[0] == salts[1] == salts[2]
    assert salts[3] == salts[4] == salts[5] != salts[2]
    assert salts[6] not in (salts[2], salts[5])
    assert cipher.epochs == 3
    # Records of earlier epochs still decrypt, by this cipher and by a fresh one.
    for envelope in envelopes:
        assert _cipher_decrypt(cipher, envelope) == RECORD
        assert _cipher_decrypt(RecordCipher(DATA_KEY), envelope) == RECORD


def test_it_never_encrypts_more_than_the_limit_under_one_subkey_across_threads() -> None:
    import threading
    from collections import Counter

    limit = 50
    cipher = RecordCipher(DATA_KEY, records_per_subkey=limit)
    envelopes: list[bytes] = []
    collected = threading.Lock()

    def write(count: int) -> None:
        mine = [_cipher_encrypt(cipher, plaintext=b"") for _ in range(count)]
        with collected:
            envelopes.extend(mine)

    threads = [threading.Thread(target=write, args=(1_000,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    per_salt = Counter(_salt(envelope) for envelope in envelopes)
    assert len(envelopes) == 8_000
    assert max(per_salt.values()) <= limit
    assert len(per_salt) >= 8_000 // limit
    assert cipher.epochs == len(per_salt)


def test_it_uses_a_limit_with_a_margin_below_the_nist_bound() -> None:
    # NIST SP 800-38D §8.3: at most 2**32 invocations per key with random 96-bit IVs.
    assert crypto.RECORDS_PER_SUBKEY == 2**28
    assert crypto.RECORDS_PER_SUBKEY * 16 == 2**32
    assert "800-38D" in (RecordCipher.__doc__ or "") and "2**28" in (RecordCipher.__doc__ or "")


@pytest.mark.parametrize("limit", [0, -1, 2**32 + 1])
def test_it_refuses_a_limit_outside_the_bound(limit: int) -> None:
    with pytest.raises(ValueError):
        RecordCipher(DATA_KEY, records_per_subkey=limit)


def test_it_refuses_a_data_key_of_the_wrong_size_for_a_cipher() -> None:
    for size in (0, 16, 31, 33):
        with pytest.raises(ValueError):
            RecordCipher(bytes(size))


def test_it_refuses_a_cached_cipher_envelope_with_any_byte_changed() -> None:
    cipher = RecordCipher(DATA_KEY)
    envelope = _cipher_encrypt(cipher)

    for position in range(len(envelope)):
        for mask in (0x01, 0x80, 0xFF):
            tampered = bytearray(envelope)
            tampered[position] ^= mask
            with pytest.raises(RecordIntegrityError):
                _cipher_decrypt(cipher, bytes(tampered))
    assert _cipher_decrypt(cipher, envelope) == RECORD


def test_it_refuses_each_header_field_changed_to_another_valid_value() -> None:
    cipher = RecordCipher(DATA_KEY)
    envelope = _cipher_encrypt(cipher, key_version=5)
    other_epoch = _cipher_encrypt(RecordCipher(DATA_KEY), key_version=5)

    relabelled_v1 = b"BKR\x01" + envelope[4:]
    other_version = envelope[:4] + (6).to_bytes(4, "big") + envelope[8:]
    other_salt = envelope[:8] + _salt(other_epoch) + envelope[24:]
    other_nonce = envelope[:24] + _nonce(other_epoch) + envelope[36:]
    for tampered, key_version in ((relabelled_v1, 5), (other_version, 6), (other_salt, 5), (other_nonce, 5)):
        with pytest.raises(RecordIntegrityError):
            _cipher_decrypt(cipher, tampered, key_version=key_version)


def test_it_refuses_a_cached_cipher_record_moved_to_another_record_environment_or_version() -> None:
    cipher = RecordCipher(DATA_KEY)
    envelope = _cipher_encrypt(cipher)

    for overrides in (
        {"record_key": "customer/43"},
        {"environment_id": OTHER_ENVIRONMENT},
        {"key_version": 2},
        {"environment_id": ENVIRONMENT + "c", "record_key": "ustomer/42"},
    ):
        with pytest.raises(RecordIntegrityError):
            _cipher_decrypt(cipher, envelope, **overrides)


def test_it_refuses_a_cached_cipher_record_under_the_wrong_data_key() -> None:
    envelope = _cipher_encrypt(RecordCipher(DATA_KEY))
    wrong = RecordCipher(bytes(range(32)))

    with pytest.raises(RecordIntegrityError) as excinfo:
        _cipher_decrypt(wrong, envelope)

    assert "cus_42" not in str(excinfo.value)
    assert DATA_KEY.hex() not in str(excinfo.value)


def test_it_keeps_a_bounded_number_of_decrypt_subkeys_and_only_verified_ones() -> None:
    others = [_cipher_encrypt(RecordCipher(DATA_KEY)) for _ in range(10)]
    reader = RecordCipher(DATA_KEY, max_decrypt_subkeys=4)

    for envelope in others:
        assert _cipher_decrypt(reader, envelope) == RECORD
    assert len(reader._contexts) == 4  # type: ignore[attr-defined]
    assert set(reader._contexts) == {_salt(envelope) for envelope in others[-4:]}  # type: ignore[attr-defined]

    forged = bytearray(others[0])
    forged[8:24] = bytes(16)  # a salt nobody used: derived, fails, not kept
    with pytest.raises(RecordIntegrityError):
        _cipher_decrypt(reader, bytes(forged))
    assert bytes(16) not in reader._contexts  # type: ignore[attr-defined]
    # An evicted subkey is derived again.
    assert _cipher_decrypt(reader, others[0]) == RECORD


def test_it_wipes_the_data_key_and_subkeys_and_then_refuses_to_work() -> None:
    cipher = RecordCipher(DATA_KEY)
    envelope = _cipher_encrypt(cipher)

    cipher.wipe()

    assert cipher.wiped
    assert cipher._data_key == bytearray(32)  # type: ignore[attr-defined]
    assert cipher._contexts == {}  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        _cipher_encrypt(cipher)
    with pytest.raises(ValueError):
        _cipher_decrypt(cipher, envelope)
    with pytest.raises(ValueError):
        _cipher_decrypt(cipher, V1_ENVELOPE_42)


def test_it_copies_the_data_key_so_wiping_the_cipher_leaves_the_callers_buffer() -> None:
    data_key = bytearray(DATA_KEY)
    cipher = RecordCipher(memoryview(data_key))

    cipher.wipe()

    assert data_key == bytearray(DATA_KEY)


def test_it_hides_the_data_key_in_the_cipher_repr() -> None:
    cipher = RecordCipher(DATA_KEY)

    shown = repr(cipher) + str(cipher)

    assert "redacted" in shown
    assert DATA_KEY.hex() not in shown and repr(DATA_KEY) not in shown


def test_it_starts_a_new_epoch_in_a_forked_child() -> None:
    import os

    cipher = RecordCipher(DATA_KEY)
    parent_salt = _salt(_cipher_encrypt(cipher))
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report the salt it encrypts under, then leave at once
        try:
            os.write(write_end, _salt(_cipher_encrypt(cipher)))
        finally:
            os._exit(0)
    os.close(write_end)
    child_salt = os.read(read_end, 16)
    os.close(read_end)
    os.waitpid(pid, 0)

    assert len(child_salt) == 16
    assert child_salt != parent_salt
    assert _salt(_cipher_encrypt(cipher)) == parent_salt


# --- Envelope version 1 (written before the record cipher; still read) ---------

# Known answers written by the version-1 encrypt_record (per-record subkey), data key
# DATA_KEY, environment ENVIRONMENT: (key version, record key, plaintext, envelope).
V1_ENVELOPE_42 = bytes.fromhex(
    "424b5201000000010102030405060708090a0b0c0d0e0f101112131415161718191a1b1c"
    "a63dd0e37bea98585ba88a26baa106feefeffce64b3f4b256d971dd135752624afda07f99e88"
    "129f18b52dc68d2bbe4b42bee80e840bb171efb1de1a94f6c25343da1c4b7f0853732e4097"
)
V1_VECTORS = [
    (1, "customer/42", RECORD, V1_ENVELOPE_42),
    (
        7,
        "kunde/Müller",
        b"",
        bytes.fromhex(
            "424b52010000000765666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f80"
            "b2a3c4b59eb91b7229ab3270c0ec55eb"
        ),
    ),
]


@pytest.mark.parametrize(("key_version", "record_key", "plaintext", "envelope"), V1_VECTORS)
def test_it_still_decrypts_version_1_envelopes(
    key_version: int, record_key: str, plaintext: bytes, envelope: bytes
) -> None:
    assert envelope[3] == 1
    assert _decrypt(envelope, key_version=key_version, record_key=record_key) == plaintext
    cipher = RecordCipher(DATA_KEY)
    assert _cipher_decrypt(cipher, envelope, key_version=key_version, record_key=record_key) == plaintext
    assert envelope_key_version(envelope) == key_version


def test_it_refuses_a_version_1_envelope_with_any_byte_changed_or_moved() -> None:
    cipher = RecordCipher(DATA_KEY)

    for position in range(len(V1_ENVELOPE_42)):
        tampered = bytearray(V1_ENVELOPE_42)
        tampered[position] ^= 0x01
        with pytest.raises(RecordIntegrityError):
            _cipher_decrypt(cipher, bytes(tampered))
    for overrides in ({"record_key": "customer/43"}, {"environment_id": OTHER_ENVIRONMENT}, {"key_version": 2}):
        with pytest.raises(RecordIntegrityError):
            _cipher_decrypt(cipher, V1_ENVELOPE_42, **overrides)
    with pytest.raises(RecordIntegrityError):
        _cipher_decrypt(RecordCipher(bytes(32)), V1_ENVELOPE_42)
    # A version-1 envelope relabelled as version 2 fails too (other subkey label, other AAD).
    with pytest.raises(RecordIntegrityError):
        _cipher_decrypt(cipher, b"BKR\x02" + V1_ENVELOPE_42[4:])


def test_it_does_not_keep_subkeys_of_version_1_records() -> None:
    cipher = RecordCipher(DATA_KEY)

    _cipher_decrypt(cipher, V1_ENVELOPE_42)

    assert cipher._contexts == {}  # type: ignore[attr-defined]


# --- Safe summaries ---------------------------------------------------------


def test_it_masks_all_but_the_last_four_characters_of_an_access_key_id() -> None:
    masked = mask_access_key_id("AKIAIOSFODNN7EXAMPLE")

    assert masked == "\u2022" * 16 + "MPLE"
    assert "AKIAIOSFODNN7EXA" not in masked


def test_it_shows_nothing_of_an_implausibly_short_access_key_id() -> None:
    for short in ("", "ABCD", "AKIAIOSFODNN7EX"):
        masked = mask_access_key_id(short)
        assert masked == "\u2022" * 16
        assert not set(short) & set(masked)


def test_it_fingerprints_without_revealing_the_secret() -> None:
    data_key = bytes(generate_data_key())

    shown = fingerprint(data_key)

    assert len(shown) == 8
    assert set(shown) <= set("0123456789abcdef")
    assert shown == fingerprint(bytearray(data_key))
    assert shown != fingerprint(bytes(32))
    for encoding in (data_key.hex(), _b64(data_key)):
        assert encoding not in shown


def test_it_domain_separates_the_fingerprint_from_a_plain_sha256() -> None:
    import hashlib

    assert fingerprint(DATA_KEY) != hashlib.sha256(DATA_KEY).hexdigest()[:8]


# --- Hygiene ----------------------------------------------------------------


@pytest.mark.parametrize(
    "function",
    [
        parse_sealing_keys,
        generate_sealing_key,
        seal,
        unseal,
        reseal,
        generate_data_key,
        wipe,
        fingerprint,
    ],
)
def test_it_marks_functions_holding_secrets_as_sensitive(function: object) -> None:
    # django.views.decorators.debug.sensitive_variables wraps the function in
    # a frame that Django's error reporter recognises by this code name.
    assert function.__code__.co_name == "sensitive_variables_wrapper"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "function",
    [
        encrypt_record,
        decrypt_record,
        RecordCipher.__init__,
        RecordCipher.encrypt,
        RecordCipher.decrypt,
        RecordCipher._next_epoch,
        RecordCipher._derive,
    ],
)
def test_it_marks_the_record_hot_path_as_sensitive_without_a_wrapper(function: object) -> None:
    # keys.crypto.sensitive_frame registers the code object itself (no wrapper frame);
    # tests/keys/test_crypto_reports.py proves the error reports honour it.
    assert function.__code__ in crypto._SENSITIVE_CODE  # type: ignore[attr-defined]
    assert function.__code__.co_name != "sensitive_variables_wrapper"  # type: ignore[attr-defined]


def test_it_does_not_need_django_settings() -> None:
    from django.conf import settings as django_settings

    if not django_settings.configured:
        assert _decrypt(_encrypt()) == RECORD
