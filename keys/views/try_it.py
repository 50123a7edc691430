"""The "Try it" page of an environment: write a record through the records service, show
the stored ciphertext, read it back.

Thin: resolve access with ``get_environment_for_user`` (404 outside the user's
organizations, 403 for viewers), validate a form, call the records service, render.

The record key and body are customer data: they never reach an error report
(docs/architecture.md, "Invariants", 1). ``sensitive_post_parameters`` hides the posted
fields and ``keys.crypto.sensitive_frame`` every variable of this view and of everything it
calls (the form, the records service, ``json``), even on a genuine 500.
"""

from __future__ import annotations

import base64
import json

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods

from environments.models import Membership
from environments.selectors import get_environment_for_user
from keys.crypto import envelope_format, sensitive_frame
from keys.forms import TryItForm
from keys.services import records


@login_required
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
@sensitive_post_parameters("record_key", "body")
@sensitive_frame
def try_it(request: HttpRequest, environment_id) -> HttpResponse:
    environment, membership = get_environment_for_user(request.user, environment_id, requirement=Membership.CHANGE)
    form = TryItForm(request.POST or None)
    context = {"environment": environment, "membership": membership, "form": form}
    if request.method == "POST" and form.is_valid():
        try:
            context["result"] = _write_and_read_back(environment, form.cleaned_data["record_key"], form.cleaned_data["body"])
        except records.RecordError as e:
            context["error"] = str(e)
    return render(request, "keys/try_it.html", context)


def _write_and_read_back(environment, record_key: str, body) -> dict:
    """Write the record, then read its stored ciphertext and its decrypted body back.

    The form has parsed, encoded and pretty-printed the body already, deeper in the stack
    than this function reads and prints it again, so no nesting depth the form accepted
    can exhaust the stack here (``TryItForm.clean_body``)."""
    records.record_put(environment=environment, record_key=record_key, body=body)
    stored = records.record_stored(environment=environment, record_key=record_key)
    read_back = records.record_get(environment=environment, record_key=record_key)
    return {
        "record_key": record_key,
        "ciphertext_base64": base64.b64encode(bytes(stored.ciphertext)).decode("ascii"),
        "ciphertext_bytes": len(stored.ciphertext),
        "envelope_format": envelope_format(bytes(stored.ciphertext)),
        "key_version": stored.key_version,
        "kind": stored.registration.get_kind_display(),
        "body": json.dumps(read_back.body, indent=2, ensure_ascii=False),
        "updated_at": read_back.updated_at,
    }


urlpatterns = [
    path("environments/<uuid:environment_id>/try-it/", try_it, name="try_it"),
]
