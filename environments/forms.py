from django import forms

from .models import Organization


class EnvironmentForm(forms.Form):
    """Create an environment in one of the organizations the user may change."""

    organization = forms.ModelChoiceField(queryset=Organization.objects.none(), empty_label=None)
    name = forms.CharField(
        max_length=100,
        help_text="For example production, staging or eu-customers.",
    )

    def __init__(self, *args, organizations, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["organization"].queryset = organizations

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError("Enter a name.")
        if any(not ch.isprintable() for ch in name):
            raise forms.ValidationError("The name contains a control character; use letters, digits, spaces and - _ .")
        return name


class OrganizationForm(forms.Form):
    """Create an organization (its creator becomes its first owner)."""

    name = forms.CharField(
        label="Organization name",
        max_length=200,
        help_text="Your company or team, for example Example Corp. You become its owner.",
    )

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError("Enter a name.")
        if any(not ch.isprintable() for ch in name):
            raise forms.ValidationError("The name contains a control character; use letters, digits, spaces and - _ .")
        return name


class OrganizationSettingsForm(forms.Form):
    """An organization's security settings (owners only)."""

    require_two_factor = forms.BooleanField(
        label="Require two-factor authentication for owners and admins",
        required=False,
        help_text="They must enter a code from their authenticator app before changing anything in this "
        "organization's environments. Viewers are not affected.",
    )
