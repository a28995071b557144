from datetime import datetime, time

from django import forms
from django.conf import settings
from django.contrib.auth.forms import UserCreationForm
from django.utils import timezone

from accounts.models import ApiKey, User, local_today
from conversations.models import ChatModel


class SignupForm(UserCreationForm):
    """A username and a password; and an e-mail address at an allowed domain when SIGNUP_EMAIL_DOMAINS is set."""

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ["username", "email"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if settings.SIGNUP_EMAIL_DOMAINS:
            self.fields["email"].required = True
        else:
            del self.fields["email"]

    def clean_email(self):
        email = self.cleaned_data["email"]
        domain = email.rpartition("@")[2].lower()
        if domain not in settings.SIGNUP_EMAIL_DOMAINS:
            allowed = " or ".join(f"@{d}" for d in settings.SIGNUP_EMAIL_DOMAINS)
            raise forms.ValidationError(f"Sign-up is open to e-mail addresses ending in {allowed} only.")
        return email


def models_for_keys(user: User):
    """The models a key of the user's may be limited to: the enabled ones they may use, chat and realtime."""
    models = ChatModel.objects.enabled()
    if user.allowed_models.exists():
        models = models.filter(pk__in=user.allowed_models.values("pk"))
    return models


class ApiKeyForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        help_text="Where it is used, such as “laptop” or “mobile app”.",
        error_messages={"required": "A key needs a name."},
    )
    expires_on = forms.DateField(
        label="Expires on",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="Optional: the key stops working as this day begins. Empty: it never expires.",
    )
    allowed_models = forms.ModelMultipleChoiceField(
        label="Allowed models",
        queryset=ChatModel.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: all your models.",
    )

    def __init__(self, *args, user: User, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["allowed_models"].queryset = models_for_keys(user)

    def clean_expires_on(self):
        day = self.cleaned_data["expires_on"]
        if day is not None and day <= local_today():
            raise forms.ValidationError("The expiry date must be in the future.")
        return day

    def expires_at(self) -> datetime | None:
        """The moment the chosen day begins in the site's TIME_ZONE."""
        day = self.cleaned_data["expires_on"]
        return None if day is None else timezone.make_aware(datetime.combine(day, time.min))


class ApiKeyAdminAddForm(forms.ModelForm):
    """Staff make a key for anyone; the key itself comes from api_key_create, never from the form."""

    class Meta:
        model = ApiKey
        fields = ["user", "name", "expires_at", "allowed_models"]

    def clean_expires_at(self):
        expires_at = self.cleaned_data["expires_at"]
        if expires_at is not None and expires_at <= timezone.now():
            raise forms.ValidationError("The expiry must be in the future.")
        return expires_at

    def clean(self):
        cleaned = super().clean()
        user, models = cleaned.get("user"), cleaned.get("allowed_models")
        if user is not None and models:
            permitted = set(models_for_keys(user).values_list("pk", flat=True))
            refused = [str(model) for model in models if model.pk not in permitted]
            if refused:
                self.add_error("allowed_models", f"{user} may not use: {', '.join(refused)}.")
        return cleaned
