"""An owner creates an API key (shown once), writes a record with "Try it", sees its
ciphertext and the decrypted body, and reads it back through the API with the new key —
in headless Chromium."""

import base64
import json
import re

import pytest
from playwright.sync_api import expect

from keys.models import Record

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

KEY_RE = re.compile(r"byok_[0-9a-f]{8}_[A-Za-z0-9_-]{43}")


def test_it_creates_an_api_key_and_tries_the_data_plane(page, live_server, sign_in, shot, alice, environment):
    """GIVEN alice, owner of Alpha Corp, and its environment "production"
    WHEN she creates an API key, then writes a record on the Try it page
    THEN the key is shown once, the page shows the stored ciphertext and the decrypted
    body, and the API answers the same body to the new key."""
    sign_in(alice)
    page.goto(f"{live_server.url}/environments/{environment.public_id}/")
    page.get_by_label("New API key name").fill("billing service")
    shot("1-environment-page")
    page.get_by_role("button", name="Create API key").click()

    page.get_by_role("heading", name="API key “billing service” created").wait_for()
    api_key = page.get_by_label("API key", exact=True).input_value()
    assert KEY_RE.fullmatch(api_key)
    expect(page.get_by_text("shown only this once")).to_be_visible()
    shot("2-key-shown-once")

    page.get_by_role("link", name="Done").click()
    row = page.get_by_role("row").filter(has_text="billing service")
    expect(row.get_by_text("Active")).to_be_visible()
    assert api_key not in page.content()

    page.get_by_role("link", name="Try it").click()
    page.get_by_label("Record key").fill("customer:7")
    page.get_by_label("Body (JSON)").fill('{"name": "Grace Hopper", "born": 1906}')
    shot("3-try-it-form")
    page.get_by_role("button", name="Encrypt, store and read back").click()

    page.locator("#result-ciphertext").wait_for()
    shot("4-try-it-result")
    record = Record.objects.get(environment=environment, record_key="customer:7")
    ciphertext = page.locator("#result-ciphertext").inner_text().strip()
    assert ciphertext == base64.b64encode(bytes(record.ciphertext)).decode()
    assert base64.b64decode(ciphertext)[:3] == b"BKR"
    assert "Grace Hopper" not in ciphertext
    assert json.loads(page.locator("#result-body").inner_text()) == {"name": "Grace Hopper", "born": 1906}
    assert page.locator("#result-key-version").inner_text().startswith("v1")

    response = page.request.get(
        f"{live_server.url}/api/v1/environments/{environment.public_id}/records/customer:7",
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert response.status == 200
    assert response.json()["body"] == {"name": "Grace Hopper", "born": 1906}


def test_it_refuses_try_it_input_that_is_not_json(page, live_server, sign_in, alice, environment):
    sign_in(alice)
    page.goto(f"{live_server.url}/environments/{environment.public_id}/try-it/")
    page.get_by_label("Body (JSON)").fill("{not json")
    page.get_by_role("button", name="Encrypt, store and read back").click()

    expect(page.get_by_text("This is not valid JSON")).to_be_visible()
    assert not Record.objects.exists()
