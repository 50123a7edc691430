"""Recovery codes in headless Chromium: shown once after setting up the authenticator app,
then one of them signs the owner in instead of the phone."""

import re
from binascii import unhexlify

import pytest
from django_otp.oath import totp
from playwright.sync_api import expect

from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_owner_saves_recovery_codes_and_signs_in_with_one(page, live_server, sign_in, shot, alice):
    """GIVEN alice signed in
    WHEN she turns on two-factor authentication, generates recovery codes, signs out and
    signs in again with one of them instead of a 6-digit code
    THEN she is in, and the page counts nine codes left."""
    sign_in(alice)
    page.get_by_role("link", name="Account security").click()
    uri = page.locator("#totp-uri").inner_text()
    from base64 import b32decode

    secret = re.search(r"secret=([A-Z2-7]+)", uri).group(1)
    secret_hex = b32decode(secret + "=" * (-len(secret) % 8)).hex()
    page.get_by_label("Code from your authenticator app").fill(f"{totp(unhexlify(secret_hex), digits=6):06d}")
    page.get_by_role("button", name="Turn on two-factor authentication").click()
    # The page the set-up redirects to (its link "Account security" is on this page too: a
    # click before the answer arrived could load the set-up page again, without the codes).
    expect(page.get_by_text("Two-factor authentication is on.")).to_be_visible()
    page.get_by_role("link", name="Account security").click()
    page.get_by_role("button", name="Generate recovery codes").click()
    page.get_by_role("heading", name="Your recovery codes").wait_for()
    # all() does not wait: the list must be there in full (the heading comes before it).
    expect(page.locator("#recovery-codes code")).to_have_count(10)
    codes = [c.inner_text() for c in page.locator("#recovery-codes code").all()]
    assert len(codes) == 10 and all(re.fullmatch(r"[a-z2-9]{4}(-[a-z2-9]{4}){3}", c) for c in codes)
    shot("1-codes-shown-once")

    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Enter your code").wait_for()
    page.get_by_label("Code from your authenticator app, or a recovery code").fill(codes[0])
    shot("2-recovery-code-typed")
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(f"{live_server.url}/")
    page.get_by_role("link", name="Account security").click()
    expect(page.get_by_text("You have 9 unused recovery codes.")).to_be_visible()
    assert codes[1] not in page.content()
    shot("3-nine-left")
