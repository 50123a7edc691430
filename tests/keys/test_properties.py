"""Property tests: arbitrary input never raises anything but our own validation errors.

What tests/keys/test_crypto.py and test_parsers.py already prove with hypothesis (arbitrary
bytes into ``decrypt_record``, header-shaped prefixes, a limited alphabet into ``unseal``,
seven parser variants on tricky text) is completed here with what they leave out:

* crypto: bytes-like and non-bytes envelopes, any key version (0, negative, past 2**32),
  any non-empty text as environment id and record key; every single-bit flip of a real
  envelope; ``unseal`` and ``sealed_key_id`` on any text or object;
* parsers: *every* public ``parse_*`` of keys/parsers.py (found by introspection, so a new
  parser is covered without editing this file), on any Unicode text (surrogates included)
  and very long text, with and without a KMS key ARN for the region;
* the data plane: ``validate_record_key`` against an independent oracle; arbitrary bytes
  as a PUT, batch or find body, arbitrary record keys in the URL and arbitrary
  ``Authorization`` headers never give a 500; any JSON body round-trips exactly.
"""

from __future__ import annotations

import inspect
import json
import string
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, assume, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from keys import crypto, parsers
from keys.api import ratelimit
from keys.services import records
from keys.crypto import CryptoError, RecordIntegrityError
from keys.parsers import InputError

DATA_KEY = bytes(range(32))
ENVIRONMENT_ID = "0b6f3a52-3c1e-4bbf-9a63-6d1e9f1c2a10"
HEADER = b"BKR\x01"
HEADER_V2 = b"BKR\x02"

# Any Unicode, lone surrogates included (hypothesis leaves them out by default).
ANY_UNICODE = st.text(st.characters(codec=None, exclude_categories=()), max_size=80)
NON_EMPTY_TEXT = st.text(min_size=1, max_size=40)
FUNCTION_SCOPED = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


# ---------------------------------------------------------------------------
# Envelope decoder (keys/crypto.py)
# ---------------------------------------------------------------------------

ENVELOPE_BYTES = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda tail: HEADER + tail),
    st.tuples(st.integers(0, 2**32 - 1), st.binary(max_size=300)).map(
        lambda v: HEADER + v[0].to_bytes(4, "big") + v[1]
    ),
    st.binary(max_size=300).map(lambda tail: HEADER_V2 + tail),
    st.tuples(st.integers(0, 2**32 - 1), st.binary(max_size=300)).map(
        lambda v: HEADER_V2 + v[0].to_bytes(4, "big") + v[1]
    ),
)
BYTES_LIKE = st.one_of(ENVELOPE_BYTES, ENVELOPE_BYTES.map(bytearray), ENVELOPE_BYTES.map(memoryview))
NOT_BYTES = st.one_of(st.none(), st.integers(), st.floats(), ANY_UNICODE, st.lists(st.integers(0, 255), max_size=60))


@hypothesis_settings(max_examples=400, deadline=None)
@given(
    envelope=st.one_of(BYTES_LIKE, NOT_BYTES),
    key_version=st.integers(min_value=-(2**40), max_value=2**40),
    environment_id=NON_EMPTY_TEXT,
    record_key=NON_EMPTY_TEXT,
)
def test_it_raises_only_record_integrity_errors_for_any_envelope_and_any_ids(envelope, key_version, environment_id, record_key):
    with pytest.raises(RecordIntegrityError):
        crypto.decrypt_record(
            data_key=DATA_KEY, envelope=envelope, environment_id=environment_id, record_key=record_key,
            key_version=key_version,
        )


@hypothesis_settings(max_examples=300, deadline=None)
@given(envelope=st.one_of(BYTES_LIKE, NOT_BYTES))
def test_it_reads_a_key_version_or_raises_envelope_format_error_for_anything(envelope):
    try:
        version = crypto.envelope_key_version(envelope)
    except crypto.EnvelopeFormatError:
        return
    assert isinstance(version, int) and 1 <= version <= 2**32 - 1


@hypothesis_settings(max_examples=150, deadline=None)
@given(
    plaintext=st.binary(max_size=200),
    record_key=st.text(string.ascii_letters + string.digits + "._:-", min_size=1, max_size=40),
    key_version=st.integers(1, 2**32 - 1),
    data=st.data(),
)
def test_it_refuses_every_single_bit_flip_of_a_real_envelope(plaintext, record_key, key_version, data):
    arguments = {"environment_id": ENVIRONMENT_ID, "record_key": record_key, "key_version": key_version}
    envelope = crypto.encrypt_record(data_key=DATA_KEY, plaintext=plaintext, **arguments)
    assert crypto.decrypt_record(data_key=DATA_KEY, envelope=envelope, **arguments) == plaintext

    bit = data.draw(st.integers(0, len(envelope) * 8 - 1), label="bit")
    flipped = bytearray(envelope)
    flipped[bit // 8] ^= 1 << (bit % 8)

    with pytest.raises(RecordIntegrityError):
        crypto.decrypt_record(data_key=DATA_KEY, envelope=bytes(flipped), **arguments)


SEALING_KEYS = crypto.parse_sealing_keys(["k1:" + "A" * 43 + "="])


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    sealed=st.one_of(
        ANY_UNICODE,
        ANY_UNICODE.map(lambda tail: "sealed$1$k1$" + tail),
        st.lists(st.text("AZaz09_-=$", max_size=30), max_size=6).map(lambda parts: "sealed$" + "$".join(parts)),
        st.none(), st.binary(max_size=40), st.integers(),
    )
)
def test_it_raises_only_crypto_errors_when_unsealing_anything(sealed):
    aad = crypto.sealing_aad(table="t", row_id=ENVIRONMENT_ID, field="f")
    with pytest.raises(CryptoError):
        crypto.unseal(sealed, keys=SEALING_KEYS, aad=aad)
    try:
        key_id = crypto.sealed_key_id(sealed)
    except crypto.SealedValueInvalid:
        return
    assert isinstance(key_id, str) and key_id


# ---------------------------------------------------------------------------
# Registration parsers (keys/parsers.py)
# ---------------------------------------------------------------------------


def _public_parsers() -> list:
    return [
        function
        for name, function in inspect.getmembers(parsers, inspect.isfunction)
        if name.startswith("parse_") and function.__module__ == parsers.__name__
    ]


ARNS = [
    None,
    parsers.parse_kms_key_arn("arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"),
    parsers.parse_kms_key_arn("arn:aws-cn:kms:cn-north-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab"),
    parsers.parse_kms_key_arn("arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"),
]
PARSER_TEXT = st.one_of(
    ANY_UNICODE,
    st.text(st.characters(codec=None, exclude_categories=()), min_size=2000, max_size=6000),
    st.builds(lambda a, b: a + b, st.sampled_from(["arn:aws:kms:", "{", '{"CiphertextBlob":', "AKIA", "eu-", "k="]), ANY_UNICODE),
)


def test_it_finds_all_six_registration_parsers():
    assert {f.__name__ for f in _public_parsers()} >= {
        "parse_kms_key_arn", "parse_region", "parse_encrypted_data_key", "parse_access_key_id",
        "parse_secret_access_key", "parse_encryption_context",
    }


@pytest.mark.parametrize("parser", _public_parsers(), ids=lambda f: f.__name__)
@hypothesis_settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=PARSER_TEXT, arn=st.sampled_from(ARNS))
def test_every_parser_raises_nothing_but_input_error_for_any_text(parser, value, arn):
    keyword = {"kms_key_arn": arn} if "kms_key_arn" in inspect.signature(parser).parameters else {}
    try:
        parser(value, **keyword)
    except InputError as error:
        assert isinstance(error.message, str) and error.message
        assert error.message.encode("utf-8")  # showable: no lone surrogate echoed back


# ---------------------------------------------------------------------------
# The data plane: record keys and request bodies
# ---------------------------------------------------------------------------

RECORD_KEY_FIRST = set(string.ascii_letters + string.digits)
RECORD_KEY_REST = RECORD_KEY_FIRST | set("._:-")


def _allowed(record_key: object) -> bool:
    """The README's rule, written independently of the regular expression."""
    return (
        isinstance(record_key, str)
        and 1 <= len(record_key) <= 255
        and record_key[0] in RECORD_KEY_FIRST
        and all(c in RECORD_KEY_REST for c in record_key)
        and record_key not in ("batch", "find")
    )


RECORD_KEYS = st.one_of(
    st.text(string.ascii_letters + string.digits + "._:-", max_size=300),
    st.text(string.ascii_letters + "._:-/\n \x00é", max_size=20),
    ANY_UNICODE,
    st.sampled_from(["batch", "find", "Batch", "a" * 255, "a" * 256, "a\n", "\u0661", "ａ"]),
    st.none(), st.integers(), st.lists(st.text(max_size=3), max_size=2), st.binary(max_size=10),
)


@hypothesis_settings(max_examples=500, deadline=None)
@given(record_key=RECORD_KEYS)
def test_it_accepts_exactly_the_record_keys_the_rule_allows(record_key):
    if _allowed(record_key):
        assert records.validate_record_key(record_key) == record_key
    else:
        with pytest.raises(records.InvalidRecordKey):
            records.validate_record_key(record_key)


@pytest.fixture
def no_rate_limit(settings):
    settings.API_RATE_LIMIT_PER_MINUTE = 0
    ratelimit._limiter = None
    yield
    ratelimit._limiter = None


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=FUNCTION_SCOPED)
@given(
    body=st.one_of(
        st.binary(max_size=400),
        st.binary(max_size=200).map(lambda tail: b'{"body": ' + tail),
        st.sampled_from([b"", b"{}", b"[]", b"null", b'{"body": NaN}', b'{"body": Infinity}', b'{"body": 1e999}',
                         b"\xef\xbb\xbf{\"body\": 1}", b'{"body": "\\ud800"}', b"[" * 5000, b'{"body": 1}{']),
        # Deep nesting: json.loads recurses once per level (RecursionError was a 500).
        st.sampled_from([10, 500, 900, 950, 1000, 5000]).map(lambda n: b'{"body": ' + b"[" * n + b"]" * n + b"}"),
    )
)
def test_arbitrary_bytes_as_a_put_body_never_give_a_500(api, no_rate_limit, body):  # noqa: F811
    response = api.put("prop-1", body)

    assert response.status_code in (200, 400), (body, response.status_code, response.content)
    assert response["Content-Type"] == "application/json"
    if response.status_code == 400:
        assert response.json()["error"]["code"] in ("invalid_json", "invalid_request")


@hypothesis_settings(max_examples=100, deadline=None, suppress_health_check=FUNCTION_SCOPED)
@given(what=st.sampled_from(["batch", "find"]), body=st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=100).map(lambda tail: b'{"records": [' + tail),
    st.binary(max_size=100).map(lambda tail: b'{"record_keys": [' + tail),
))
def test_arbitrary_bytes_as_a_batch_or_find_body_never_give_a_500(api, no_rate_limit, what, body):  # noqa: F811
    response = api.post(what, body)

    assert response.status_code in (200, 400), (what, body, response.status_code, response.content)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@hypothesis_settings(max_examples=100, deadline=None, suppress_health_check=FUNCTION_SCOPED)
@given(body=JSON_VALUES)
def test_any_json_body_round_trips_exactly_through_the_api(api, no_rate_limit, body):  # noqa: F811
    assert api.put("prop-json", {"body": body}).status_code == 200

    got = api.get("prop-json")

    assert got.status_code == 200
    assert json.dumps(got.json()["body"], sort_keys=True) == json.dumps(body, sort_keys=True)


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=FUNCTION_SCOPED)
@given(record_key=st.one_of(ANY_UNICODE, st.text(string.printable, max_size=300)), method=st.sampled_from(["GET", "PUT", "DELETE"]))
def test_arbitrary_record_keys_in_the_url_never_give_a_500(api, no_rate_limit, record_key, method):  # noqa: F811
    assume(record_key.encode("utf-8", "surrogatepass"))
    path = f"{api.base}/" + quote(record_key.encode("utf-8", "surrogatepass"), safe="")

    response = api.call(method, path, data=b'{"body": 1}', content_type="application/json")

    assert response.status_code in (200, 204, 400, 404, 405), (record_key, response.status_code)
    assert response["Content-Type"] == "application/json" or response.status_code == 204


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=FUNCTION_SCOPED)
@given(header=st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=300),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=80).map(lambda t: "Bearer " + t),
    st.text(string.ascii_letters + string.digits + "_-", max_size=80).map(lambda t: "Bearer byok_" + t),
    st.text(string.hexdigits.lower(), min_size=8, max_size=8).map(lambda p: f"Bearer byok_{p}_" + "A" * 43),
))
def test_arbitrary_authorization_headers_never_give_a_500(client, api, no_rate_limit, header):  # noqa: F811
    response = client.get(f"{api.base}/prop-1", HTTP_AUTHORIZATION=header)

    assert response.status_code == 401, (header, response.status_code)
    assert response.json()["error"]["code"] in ("unauthenticated", "invalid_api_key")


@pytest.mark.parametrize("what", ["put", "batch", "find"])
def test_it_answers_400_for_a_body_nested_too_deeply(api, no_rate_limit, what):  # noqa: F811
    nested = b"[" * 100_000

    response = api.put("deep", nested) if what == "put" else api.post(what, nested)

    assert response.status_code == 400
    assert response.json()["error"] == {"code": "invalid_json", "message": "The request body is nested too deeply."}
