"""Access to key versions: one helper per object (404 outside the user's organizations, 403 for
a role that may not act), the role rules on ``Membership``, the one 403 page, and the one base
class of service refusals that ``run_action`` turns into a message."""

import pytest
from django.contrib.messages import get_messages
from django.contrib.messages.storage.fallback import FallbackStorage
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.test import RequestFactory
from django.urls import reverse

from environments.models import Membership
from keys.models import KeyRegistration
from keys.selectors import get_registration_for_user, lifecycle_context, validation_context
from keys.services import lifecycle, reencryption, registrations, validation
from keys.services.api_keys import ApiKeyAlreadyRevoked
from keys.services.refusals import Refused
from keys.views.actions import run_action
from tests.factories import new_managed_version

pytestmark = pytest.mark.django_db

Status = KeyRegistration.Status


def membership(user) -> Membership:
    return Membership.objects.get(user=user)


@pytest.fixture
def valid_version(environment, alice) -> KeyRegistration:
    registration = new_managed_version(environment, alice, activate=False)
    assert registration.status == Status.VALID
    return registration


# --- the role rules -----------------------------------------------------------------


@pytest.mark.parametrize("role, change, own", [("owner", True, True), ("admin", True, False), ("viewer", False, False)])
def test_it_answers_each_requirement_by_role(role, change, own):
    m = Membership(role=role)
    assert (m.may(Membership.VIEW), m.may(Membership.CHANGE), m.may(Membership.OWN)) == (True, change, own)


def test_it_refuses_an_unknown_requirement():
    with pytest.raises(ValueError):
        Membership(role="owner").may("delete everything")


@pytest.mark.parametrize("status", [s for s in Status.values if s != Status.VALID])
def test_it_lets_nobody_activate_a_version_that_is_not_valid(status):
    registration = KeyRegistration(status=status)
    assert not Membership(role="owner").can_activate(registration)


@pytest.mark.parametrize("role, allowed", [("owner", True), ("admin", True), ("viewer", False)])
def test_it_lets_owners_and_admins_activate_a_valid_version(role, allowed):
    assert Membership(role=role).can_activate(KeyRegistration(status=Status.VALID)) is allowed


def test_the_validation_panel_and_the_lifecycle_card_apply_the_same_activation_rule(
    environment, alice, carol, bob, valid_version
):
    """GIVEN a valid platform-managed version
    THEN the owner and the admin see its Activate button in both places, the viewer in neither
    (a BYOK version's button is only in its validation panel: placement, not a second rule)."""
    for user, expected in ((alice, True), (carol, True), (bob, False)):
        m = membership(user)
        panel = validation_context(valid_version, m)["can_activate"]
        card = next(r for r in lifecycle_context(environment, m)["rows"] if r["registration"].pk == valid_version.pk)
        assert (panel, card["can_activate"]) == (expected, expected), user.username


# --- the access helper ----------------------------------------------------------------


def test_it_gives_the_version_and_membership_to_a_member(environment, bob, valid_version):
    registration, m = get_registration_for_user(bob, environment.public_id, valid_version.public_id)
    assert registration == valid_version and m.role == Membership.Role.VIEWER


def test_it_answers_404_outside_the_users_organizations(environment, charlie, valid_version):
    with pytest.raises(Http404):
        get_registration_for_user(charlie, environment.public_id, valid_version.public_id)


def test_it_answers_404_for_a_version_of_another_environment(environment, environment_b, charlie):
    other = environment_b.key_registrations.get()
    with pytest.raises(Http404):
        get_registration_for_user(charlie, environment_b.public_id, environment.key_registrations.get().public_id)
    # The right pair works for the same user.
    assert get_registration_for_user(charlie, environment_b.public_id, other.public_id)[0] == other


def test_it_answers_403_to_a_role_below_the_requirement(environment, bob, carol, valid_version):
    with pytest.raises(PermissionDenied):
        get_registration_for_user(bob, environment.public_id, valid_version.public_id, requirement=Membership.CHANGE)
    with pytest.raises(PermissionDenied):
        get_registration_for_user(carol, environment.public_id, valid_version.public_id, requirement=Membership.OWN)
    get_registration_for_user(carol, environment.public_id, valid_version.public_id, requirement=Membership.CHANGE)


def test_a_viewer_gets_the_one_403_page_and_nothing_changes(client_for, bob, environment, valid_version):
    response = client_for(bob).post(
        reverse("registration_activate", args=[environment.public_id, valid_version.public_id])
    )
    assert response.status_code == 403
    assert "Not allowed" in response.content.decode()
    valid_version.refresh_from_db()
    assert valid_version.status == Status.VALID


def test_an_admin_gets_403_for_an_owner_only_action(client_for, carol, environment):
    response = client_for(carol).get(reverse("revocation_drill", args=[environment.public_id]))
    assert response.status_code == 403
    assert "Not allowed" in response.content.decode()


# --- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "refusal",
    [
        registrations.TransitionError,
        registrations.TransitionConflict,
        registrations.DuplicateAccessKey,
        validation.ValidationRequestRefused,
        validation.ActivationError,
        reencryption.ReencryptionRefused,
        lifecycle.LifecycleRefused,
        ApiKeyAlreadyRevoked,
    ],
)
def test_every_service_refusal_is_a_refused(refusal):
    assert issubclass(refusal, Refused)


def _request():
    request = RequestFactory().post("/")
    request.session = {}
    request._messages = FallbackStorage(request)
    return request


def test_run_action_turns_any_refusal_into_an_error_message():
    request = _request()

    def refuse():
        raise lifecycle.LifecycleRefused("Version 2 still has 3 records.")

    run_action(request, refuse, success="done")
    assert [(m.level_tag, m.message) for m in get_messages(request)] == [("error", "Version 2 still has 3 records.")]


def test_run_action_says_success_with_the_result():
    request = _request()
    run_action(request, lambda: 7, success=lambda n: f"{n} moved.")
    assert [(m.level_tag, m.message) for m in get_messages(request)] == [("success", "7 moved.")]


def test_run_action_lets_a_fault_through():
    with pytest.raises(RuntimeError):
        run_action(_request(), lambda: (_ for _ in ()).throw(RuntimeError("KMS down")), success="done")
