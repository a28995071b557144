from django.conf import settings


def signup(request) -> dict:
    return {"signup_enabled": settings.SIGNUP_ENABLED}


def costs(request) -> dict:
    """Whether users see what replies cost (SHOW_COSTS); without it they see tokens only."""
    return {"show_costs": settings.SHOW_COSTS}
