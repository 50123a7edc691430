"""Tenancy: every environment URL tried by an owner, a viewer and an outsider, with each method."""

import pytest
from django.urls import reverse

from environments.models import Environment
from keys.models import KeyRegistration

pytestmark = pytest.mark.django_db


def test_it_lists_only_my_organizations_environments(client_for, alice, environment, environment_b):
    response = client_for(alice).get(reverse("home"))
    assert response.status_code == 200
    assert b"production" in response.content
    assert b"b-production" not in response.content
    assert b"Alpha Corp" in response.content
    assert b"Beta Ltd" not in response.content


def test_it_shows_the_active_key_status_column(client_for, alice, environment):
    response = client_for(alice).get(reverse("home"))
    assert b"v1 \xc2\xb7 Platform-managed" in response.content
    assert b'class="status s-active"' in response.content


def test_it_redirects_anonymous_users_to_sign_in(client, environment):
    for url in (reverse("home"), reverse("environment_new"), reverse("environment_detail", args=[environment.public_id])):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


def test_it_creates_an_environment_with_an_active_managed_key(client_for, alice, org_a):
    response = client_for(alice).post(reverse("environment_new"), {"organization": org_a.pk, "name": "staging"})
    environment = Environment.objects.get(name="staging")
    assert response.status_code == 302
    assert response["Location"] == reverse("environment_detail", args=[environment.public_id])
    assert environment.created_by == alice
    version = environment.key_registrations.get()
    assert (version.version, version.kind, version.status) == (1, "managed", "active")
    assert version.sealed_data_key.startswith("sealed$")


def test_it_lets_an_admin_create_an_environment(client_for, carol, org_a):
    response = client_for(carol).post(reverse("environment_new"), {"organization": org_a.pk, "name": "qa"})
    assert response.status_code == 302
    assert Environment.objects.filter(name="qa", organization=org_a).exists()


def test_it_refuses_a_duplicate_environment_name(client_for, alice, org_a, environment):
    response = client_for(alice).post(reverse("environment_new"), {"organization": org_a.pk, "name": "Production"})
    assert response.status_code == 200
    assert "already has an environment named" in response.content.decode()
    assert Environment.objects.filter(organization=org_a).count() == 1


def test_it_refuses_a_blank_name_and_stores_nothing(client_for, alice, org_a):
    response = client_for(alice).post(reverse("environment_new"), {"organization": org_a.pk, "name": "   "})
    assert response.status_code == 200
    assert Environment.objects.count() == 0


def test_it_does_not_let_a_viewer_create_an_environment(client_for, bob, org_a):
    client = client_for(bob)
    assert client.get(reverse("environment_new")).status_code == 403
    assert client.post(reverse("environment_new"), {"organization": org_a.pk, "name": "x"}).status_code == 403
    assert not Environment.objects.filter(name="x").exists()


def test_it_does_not_let_an_owner_create_in_another_organization(client_for, alice, org_b):
    response = client_for(alice).post(reverse("environment_new"), {"organization": org_b.pk, "name": "sneaky"})
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not Environment.objects.filter(name="sneaky").exists()


def test_it_hides_the_new_button_from_viewers(client_for, bob, environment):
    response = client_for(bob).get(reverse("home"))
    assert b"New environment" not in response.content


def test_it_shows_the_environment_page_to_owner_and_viewer(client_for, alice, bob, environment):
    url = reverse("environment_detail", args=[environment.public_id])
    for user in (alice, bob):
        response = client_for(user).get(url)
        assert response.status_code == 200
        assert str(environment.public_id) in response.content.decode()


PLATFORM = "arn:aws:iam::999988887777:role/byok-platform"


def _external_id_row(html: str) -> str:
    start = html.index("<dt>External ID</dt>")
    return html[start:html.index("</dd>", start)]


def test_it_shows_each_member_the_environment_external_id_with_a_copy_button_in_role_mode(
    client_for, alice, bob, environment, environment_b, settings
):
    settings.PLATFORM_AWS_PRINCIPAL_ARN = PLATFORM
    url = reverse("environment_detail", args=[environment.public_id])
    for user in (alice, bob):
        html = client_for(user).get(url).content.decode()

        row = _external_id_row(html)
        assert f'<code id="external-id">{environment.aws_external_id}</code>' in row
        assert 'data-copy-target="external-id"' in row and "js/copy.js" in html and "<script>" not in html
        assert "sts:ExternalId" in row and "The confused deputy problem" in row
        assert environment_b.aws_external_id not in html


def test_it_shows_no_external_id_when_role_mode_is_off(client_for, alice, environment, settings):
    settings.PLATFORM_AWS_PRINCIPAL_ARN = ""

    html = client_for(alice).get(reverse("environment_detail", args=[environment.public_id])).content.decode()

    assert "External ID" not in html and environment.aws_external_id not in html


def test_it_answers_404_to_an_outsider_on_every_environment_url_and_method(client_for, charlie, environment):
    client = client_for(charlie)
    urls = [
        reverse("environment_detail", args=[environment.public_id]),
        reverse("registration_new", args=[environment.public_id]),
    ]
    for url in urls:
        for method in ("get", "post", "put", "delete"):
            response = getattr(client, method)(url)
            # 405 for a method the URL never accepts reveals nothing: any id gets it.
            assert response.status_code in (404, 405), (url, method, response.status_code)
        assert client.get(url).status_code == 404, url


def test_it_answers_404_for_an_unknown_environment(client_for, alice):
    response = client_for(alice).get("/environments/00000000-0000-0000-0000-000000000000/")
    assert response.status_code == 404


def test_it_refuses_the_wrong_method(client_for, alice, environment):
    client = client_for(alice)
    assert client.post(reverse("environment_detail", args=[environment.public_id])).status_code == 405
    assert client.post(reverse("home")).status_code == 405
    assert client.delete(reverse("environment_new")).status_code == 405


def test_it_keeps_version_one_managed_per_environment(environment, environment_b):
    assert KeyRegistration.objects.filter(kind="managed", version=1, status="active").count() == 2


def test_it_points_an_empty_organization_at_the_new_environment_button(client_for, alice, org_a):
    page = client_for(alice).get(reverse("home")).content.decode()
    assert f'No environments yet. Create one with <a href="{reverse("environment_new")}">New environment</a> above.' in page


def test_it_tells_a_viewer_of_an_empty_organization_who_can_create_one(client_for, bob, org_a):
    page = client_for(bob).get(reverse("home")).content.decode()
    assert "No environments yet. An owner or admin of Alpha Corp can create one." in page


def test_every_aria_describedby_of_the_new_environment_form_names_an_element_on_the_page(client_for, alice, org_a):
    import re

    client = client_for(alice)
    for response in (client.get(reverse("environment_new")), client.post(reverse("environment_new"), {"organization": org_a.pk, "name": " "})):
        page = response.content.decode()
        described = [i for ids in re.findall(r'aria-describedby="([^"]+)"', page) for i in ids.split()]
        assert "id_name_helptext" in described
        for element_id in described:
            assert f'id="{element_id}"' in page, element_id


def test_it_serves_a_favicon_instead_of_a_404(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/x-icon"
    assert response.content[:4] == b"\x00\x00\x01\x00"  # ICO header
