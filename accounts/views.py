from django.conf import settings
from django.contrib.auth import login
from django.http import Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse

from accounts.forms import SignupForm


def signup(request):
    if not settings.SIGNUP_ENABLED:
        raise Http404("Sign-up is closed on this site.")
    if request.user.is_authenticated:
        return redirect(settings.LOGIN_REDIRECT_URL)
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect(settings.LOGIN_REDIRECT_URL)
    status = 400 if request.method == "POST" else 200
    return TemplateResponse(request, "accounts/signup.html", {"form": form}, status=status)
