"""Error reports never show what the record hot path of keys/crypto.py holds.

``RecordCipher.encrypt`` / ``decrypt`` (and the one-shot functions) carry
``keys.crypto.sensitive_frame`` instead of Django's ``@sensitive_variables``: no wrapper
call per record. These tests prove the configured exception reporter filter still cleanses
every variable of those frames (the data key, the record body, the record key and the
associated data built from it), in text, HTML and mail reports, with DEBUG on or off.
"""

from __future__ import annotations

import base64
import sys

import pytest
from django.test import RequestFactory, override_settings
from django.views.debug import ExceptionReporter, get_exception_reporter_class

from keys import crypto

ENVIRONMENT = "5b0c1c9e-6f6e-4d2a-9d38-3f1f6a0d2b7e"
DATA_KEY = bytes(range(90, 122))
RECORD_KEY = "canary-record-key-7f3a1c"
BODY = "canary-record-body-9c1e4d"


def _canaries() -> list[str]:
    return [RECORD_KEY, BODY, DATA_KEY.hex(), repr(DATA_KEY)[2:-1], base64.b64encode(DATA_KEY).decode()]


def _exc_info(function) -> tuple:
    try:
        function()
    except Exception:
        return sys.exc_info()
    raise AssertionError("expected an exception")


def _encrypt_fails() -> None:
    # A str body: AESGCM raises TypeError inside RecordCipher.encrypt, whose frame holds
    # the body, the record key and the associated data.
    cipher = crypto.RecordCipher(DATA_KEY)
    cipher.encrypt(plaintext=BODY, environment_id=ENVIRONMENT, record_key=RECORD_KEY, key_version=1)  # type: ignore[arg-type]


def _decrypt_fails() -> None:
    cipher = crypto.RecordCipher(DATA_KEY)
    envelope = bytearray(
        cipher.encrypt(plaintext=BODY.encode(), environment_id=ENVIRONMENT, record_key=RECORD_KEY, key_version=1)
    )
    envelope[-1] ^= 1
    cipher.decrypt(envelope=bytes(envelope), environment_id=ENVIRONMENT, record_key=RECORD_KEY, key_version=1)


def _one_shot_fails() -> None:
    crypto.encrypt_record(
        data_key=DATA_KEY, plaintext=BODY, environment_id=ENVIRONMENT, record_key=RECORD_KEY, key_version=1  # type: ignore[arg-type]
    )


def _unmarked_fails() -> None:
    """The control: the same values in a frame nobody marked."""
    record_key, body, data_key = RECORD_KEY, BODY, DATA_KEY  # noqa: F841
    raise RuntimeError("forced failure")


def _reports(exc_info: tuple, *, debug: bool) -> dict[str, str]:
    """Every form of report; the HTML ones list each frame's local variables."""
    request = RequestFactory().get("/api/v1/environments/x/records/y")
    with override_settings(DEBUG=debug):
        configured = get_exception_reporter_class(request)
        return {
            "text": configured(request, *exc_info).get_traceback_text(),
            "html": configured(request, *exc_info).get_traceback_html(),
            "mail html": configured(request, *exc_info, is_email=True).get_traceback_html(),
            # Django's own reporter: the configured filter alone must do it.
            "django html": ExceptionReporter(request, *exc_info).get_traceback_html(),
        }


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("failing", [_encrypt_fails, _decrypt_fails, _one_shot_fails])
def test_it_keeps_record_and_key_material_out_of_error_reports(failing, debug: bool) -> None:
    exc_info = _exc_info(failing)

    for form, report in _reports(exc_info, debug=debug).items():
        # The failing frame is in the report, with its variables cleansed...
        assert "keys/crypto.py" in report
        if form != "text":
            assert "record_key" in report and "********************" in report
        # ...and nothing it held shows.
        for canary in _canaries():
            assert canary not in report, form


def test_it_shows_the_same_values_in_a_frame_nobody_marked() -> None:
    """The canaries are detectable: without the mark the report would show them."""
    reports = _reports(_exc_info(_unmarked_fails), debug=False)

    for form in ("html", "mail html", "django html"):
        assert RECORD_KEY in reports[form] and BODY in reports[form]


def test_it_cleanses_frames_called_from_a_marked_function() -> None:
    calls_back = crypto.sensitive_frame(lambda callback: callback())

    def inner() -> None:
        record_key = RECORD_KEY  # noqa: F841
        raise RuntimeError("forced failure")

    for report in _reports(_exc_info(lambda: calls_back(inner)), debug=True).values():
        assert "inner" in report
        assert RECORD_KEY not in report
    # The control: the same inner frame, not called from a marked function.
    assert RECORD_KEY in _reports(_exc_info(inner), debug=True)["html"]
