"""The "Try it" page names the envelope format of the bytes it shows (the byte after "BKR"),
not a fixed "format 1": records are written in format 2 (docs/architecture.md §6)."""

from __future__ import annotations

import base64
import re

import pytest

from keys import crypto
from keys.models import Record


def test_it_names_the_format_the_stored_bytes_carry(client_for, environment, alice):
    response = client_for(alice).post(
        f"/environments/{environment.public_id}/try-it/", {"record_key": "r1", "body": '{"a": 1}'}
    )

    text = response.content.decode()
    shown = base64.b64decode(re.search(r'<pre id="result-ciphertext">([^<]+)</pre>', text).group(1))
    stored = bytes(Record.objects.get(record_key="r1").ciphertext)
    assert shown == stored and stored[:4] == b"BKR\x02"
    assert '“BKR”, format <span id="result-envelope-format">2</span>' in text
    assert "format 1" not in text


def test_it_reads_the_format_from_an_envelope_header():
    version_1 = b"BKR\x01" + (7).to_bytes(4, "big") + bytes(crypto.ENVELOPE_OVERHEAD)
    assert crypto.envelope_format(version_1) == 1
    assert crypto.envelope_format(b"BKR\x02" + version_1[4:]) == 2
    with pytest.raises(crypto.EnvelopeFormatError):
        crypto.envelope_format(b"BKR\x07" + bytes(crypto.ENVELOPE_OVERHEAD))
