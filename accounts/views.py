from django.conf import settings
from django.contrib import admin
from django.contrib.auth import login as auth_login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.db import transaction
from django.http import Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.views.decorators.http import require_GET, require_http_methods

from accounts.billing.budget import usage_summary
from accounts.forms import SignupForm
from accounts.ratelimits import refusing_window, too_many
from accounts.services import signup_limits_set
from accounts.usage_history import usage_history


def login_refusal(request) -> TemplateResponse | None:
    """The 429 for a posted log-in past RATELIMIT_LOGIN from its address.

    The site's and the admin's log-in share the count: a password guessed at
    one is a password guessed at both.
    """
    if request.method == "POST":
        window = refusing_window(request, group="login", key="ip", setting="RATELIMIT_LOGIN")
        if window:
            return too_many(request, what="log-in attempts from your network", window=window)
    return None


@require_http_methods(["GET", "POST"])
def login(request):
    return login_refusal(request) or LoginView.as_view(redirect_authenticated_user=True)(request)


def admin_login(request):
    """/admin/login/: the admin's own page, behind the same limit as the site's log-in."""
    return login_refusal(request) or admin.site.login(request)


@require_http_methods(["GET", "POST"])
def signup(request):
    if not settings.SIGNUP_ENABLED:
        raise Http404("Sign-up is closed on this site.")
    if request.method == "POST":
        window = refusing_window(request, group="signup", key="ip", setting="RATELIMIT_SIGNUP")
        if window:
            return too_many(request, what="sign-ups from your network", window=window)
    if request.user.is_authenticated:
        return redirect(settings.LOGIN_REDIRECT_URL)
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            user = form.save()
            signup_limits_set(user=user)
        auth_login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect(settings.LOGIN_REDIRECT_URL)
    status = 400 if request.method == "POST" else 200
    return TemplateResponse(request, "accounts/signup.html", {"form": form}, status=status)


@login_required
@require_GET
def usage(request):
    """The user's own usage against their limits, when each resets, and their last 30 days per day and model."""
    context = {"usage": usage_summary(user=request.user), "history": usage_history(user=request.user)}
    return TemplateResponse(request, "accounts/usage.html", context)


# --- API keys: the user's own, made and revoked on one page ----------------------------------------------------

from django.shortcuts import get_object_or_404  # noqa: E402
from django.views.decorators.cache import never_cache  # noqa: E402
from django.views.decorators.http import require_POST  # noqa: E402

from accounts.forms import ApiKeyForm  # noqa: E402
from accounts.models import ApiKey  # noqa: E402
from accounts.services import api_key_create, api_key_revoke  # noqa: E402

API_KEYS_TEMPLATE = "accounts/api_keys.html"


def _api_keys_context(request, **extra) -> dict:
    keys = (
        ApiKey.objects.with_status()
        .filter(user=request.user)
        .prefetch_related("allowed_models")
        .order_by("-created_at", "-id")
    )
    return {"keys": keys, **extra}


@never_cache  # the answer to a create holds the new key: no cache may keep it
@login_required
@require_http_methods(["GET", "POST"])
def api_keys(request):
    """The user's keys and a form for a new one, whose key is shown in this answer and never again."""
    form = ApiKeyForm(request.POST or None, user=request.user)
    new_key = new_secret = None
    if request.method == "POST" and form.is_valid():
        new_key, new_secret = api_key_create(
            user=request.user,
            name=form.cleaned_data["name"],
            expires_at=form.expires_at(),
            allowed_models=form.cleaned_data["allowed_models"],
        )
        form = ApiKeyForm(user=request.user)
    status = 400 if form.is_bound and form.errors else 200
    template = f"{API_KEYS_TEMPLATE}#keys" if request.htmx else API_KEYS_TEMPLATE
    context = _api_keys_context(request, form=form, new_key=new_key, new_secret=new_secret)
    return TemplateResponse(request, template, context, status=status)


@login_required
@require_POST
def revoke_api_key(request, pk: int):
    key = get_object_or_404(ApiKey, pk=pk, user=request.user)
    api_key_revoke(key=key)
    if not request.htmx:
        return redirect("api_keys")
    return TemplateResponse(request, f"{API_KEYS_TEMPLATE}#key-list", _api_keys_context(request))
