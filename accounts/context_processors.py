from django.conf import settings


def signup(request) -> dict:
    return {"signup_enabled": settings.SIGNUP_ENABLED}
