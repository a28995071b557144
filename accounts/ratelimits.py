"""Rate limits (django-ratelimit) and where a request comes from.

Counters live in the cache: Redis when REDIS_URL is set, so every server
process counts against the same limit; in-memory in the embedded default.
"""

import ipaddress

from django.conf import settings
from django.template.response import TemplateResponse


def client_ip(request) -> str:
    """The client's address.

    Behind a reverse proxy it comes from TRUSTED_PROXY_HEADER, but only on
    requests that really came from one of TRUSTED_PROXIES: a client that sends
    the header itself, or forges X-Forwarded-For, is still counted by its own
    address. Of a list (X-Forwarded-For), the last entry is the one our proxy
    saw; earlier ones were written by the client.
    """
    peer = request.META.get("REMOTE_ADDR", "")
    header = settings.TRUSTED_PROXY_HEADER
    if header and peer in settings.TRUSTED_PROXIES:
        forwarded = request.META.get("HTTP_" + header.upper().replace("-", "_"), "")
        candidate = forwarded.split(",")[-1].strip()
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            pass
    return peer


def rate(setting: str):
    """A rate callable for django-ratelimit that reads the setting at request time ("off": no limit)."""

    def current(group, request):
        value = getattr(settings, setting)
        return None if value == "off" else value

    return current


def retry_after_seconds(setting: str) -> int:
    """How long until a limit's window has surely passed, for Retry-After."""
    _, _, period = getattr(settings, setting).partition("/")
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[period[-1]]
    return int(period[:-1] or 1) * unit


WAIT_WORDS = {1: "a second", 60: "a minute", 3600: "an hour", 86400: "a day"}


def too_many(request, *, what: str, setting: str) -> TemplateResponse:
    """The 429 answer: a page, or for htmx the composer's error slot."""
    wait = retry_after_seconds(setting)
    text = f"Too many {what}. Wait {WAIT_WORDS.get(wait, f'{wait} seconds')} and try again."
    if request.htmx:
        response = TemplateResponse(
            request, "conversations/chat.html#composer-errors", {"composer_errors": [text]}, status=429
        )
        response["HX-Retarget"] = "#composer-errors"
        response["HX-Reswap"] = "innerHTML"
    else:
        response = TemplateResponse(request, "429.html", {"text": text}, status=429)
    response["Retry-After"] = str(wait)
    return response
