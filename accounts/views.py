from django.conf import settings
from django.contrib.auth import login as auth_login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.http import Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.views.decorators.http import require_GET, require_http_methods
from django_ratelimit.decorators import ratelimit

from accounts.forms import SignupForm
from accounts.ratelimits import rate, too_many
from accounts.services import usage_summary


@require_http_methods(["GET", "POST"])
@ratelimit(key="ip", rate=rate("RATELIMIT_LOGIN"), method="POST", group="login")
def login(request):
    if getattr(request, "limited", False):
        return too_many(request, what="log-in attempts from your network", setting="RATELIMIT_LOGIN")
    return LoginView.as_view(redirect_authenticated_user=True)(request)


@require_http_methods(["GET", "POST"])
@ratelimit(key="ip", rate=rate("RATELIMIT_SIGNUP"), method="POST", group="signup")
def signup(request):
    if not settings.SIGNUP_ENABLED:
        raise Http404("Sign-up is closed on this site.")
    if getattr(request, "limited", False):
        return too_many(request, what="sign-ups from your network", setting="RATELIMIT_SIGNUP")
    if request.user.is_authenticated:
        return redirect(settings.LOGIN_REDIRECT_URL)
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        auth_login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect(settings.LOGIN_REDIRECT_URL)
    status = 400 if request.method == "POST" else 200
    return TemplateResponse(request, "accounts/signup.html", {"form": form}, status=status)


@login_required
@require_GET
def usage(request):
    """The user's own usage against their limits, and when each resets."""
    return TemplateResponse(request, "accounts/usage.html", {"usage": usage_summary(user=request.user)})
