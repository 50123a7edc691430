"""An owner signs in, creates an environment and sees it listed, in headless Chromium."""

import pytest
from playwright.sync_api import expect

from environments.models import Environment

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_it_signs_in_creates_an_environment_and_lists_it(page, live_server, sign_in, shot, alice):
    """GIVEN alice, owner of Alpha Corp
    WHEN she signs in and creates the environment "staging"
    THEN she lands on its page and sees it listed on her environments page."""
    sign_in(alice)
    shot("1-signed-in")
    page.locator("a.button", has_text="New environment").click()
    page.get_by_label("Name").fill("staging")
    shot("2-new-environment")
    page.get_by_role("button", name="Create environment").click()
    page.get_by_role("heading", name="staging").wait_for()
    shot("3-environment-page")
    environment = Environment.objects.get(name="staging")
    assert page.url == f"{live_server.url}/environments/{environment.public_id}/"
    expect(page.get_by_text("Platform-managed").first).to_be_visible()
    page.get_by_role("link", name="Environments").first.click()
    page.wait_for_url(f"{live_server.url}/")
    row = page.get_by_role("row").filter(has_text="staging")
    expect(row.get_by_text("Active")).to_be_visible()
    shot("4-listed")


def test_it_rejects_a_wrong_password(page, live_server, alice):
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_be_visible()
    assert "/accounts/login/" in page.url
