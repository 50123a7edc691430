"""A signed-in user in no organization creates one, then its first environment, in
headless Chromium; no page asks for something that answers 404 (favicon.ico included)."""

import pytest
from playwright.sync_api import expect

from environments.models import Membership, Organization

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_user_without_an_organization_creates_one_then_an_environment(page, live_server, sign_in, shot, make_user):
    """GIVEN nora, a user in no organization
    WHEN she signs in, follows "Create an organization", names it, then follows the
    empty organization's pointer to "New environment"
    THEN she owns the organization and its first environment, and no request answered 404."""
    not_found: list[str] = []
    page.on("response", lambda response: not_found.append(response.url) if response.status == 404 else None)
    nora = make_user("nora")

    sign_in(nora)
    page.get_by_text("You are not a member of any organization yet.").wait_for()
    shot("1-no-organization")
    page.get_by_role("link", name="Create an organization").click()
    page.get_by_label("Organization name").fill("Nora's Shop")
    shot("2-new-organization")
    page.get_by_role("button", name="Create organization").click()
    page.get_by_text("Organization “Nora's Shop” created; you are its owner.").wait_for()
    expect(page.get_by_text("No environments yet. Create one with New environment above.")).to_be_visible()
    shot("3-empty-organization")

    page.locator("p.muted").get_by_role("link", name="New environment").click()
    name = page.get_by_label("Name")
    help_id = name.get_attribute("aria-describedby")
    assert help_id == "id_name_helptext"
    assert "For example production" in page.locator(f"#{help_id}").inner_text()
    name.fill("production")
    page.get_by_role("button", name="Create environment").click()
    page.get_by_role("heading", name="production").wait_for()
    shot("4-first-environment")

    organization = Organization.objects.get(name="Nora's Shop")
    assert Membership.objects.get(user=nora, organization=organization).role == Membership.Role.OWNER
    assert organization.environments.get().name == "production"
    # The last page's own requests (its favicon, asked for after load) are answered too.
    page.wait_for_load_state("networkidle")
    assert not_found == []
