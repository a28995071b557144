"""Rate limits (django-ratelimit) and where a request comes from.

A limit setting holds one or more windows, such as "10/m,50/h,200/d" (the
seeds' flask-limiter habit): a request passes only if every window has room.
Counters live in the cache: Redis when REDIS_URL is set, so every server
process counts against the same limit; in-memory in the embedded default.
"""

import ipaddress
from dataclasses import dataclass

from django.conf import settings
from django.template.response import TemplateResponse
from django_ratelimit.core import is_ratelimited

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


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


@dataclass(frozen=True)
class Window:
    """One window of a limit: `rate` in django-ratelimit's notation (10/m, 5/10s)."""

    rate: str

    @property
    def seconds(self) -> int:
        """The window's length: how long until it has surely passed, for Retry-After."""
        _, _, period = self.rate.partition("/")
        return int(period[:-1] or 1) * UNIT_SECONDS[period[-1]]


def windows(setting: str) -> list[Window]:
    """The windows of a limit setting, as read at request time ("off": none). Checked at start-up by env_rate."""
    value = getattr(settings, setting)
    return [] if value == "off" else [Window(rate.strip()) for rate in value.split(",")]


def refusing_window(request, *, group: str, key, setting: str) -> Window | None:
    """Count the request against each window of the setting, in order; the first one that is full, or None.

    A refused request counts in the window that refused it and the ones before
    it, as a single window always did; a later window is not charged for it.
    """
    for window in windows(setting):
        if is_ratelimited(request, group=group, key=key, rate=window.rate, increment=True):
            return window
    return None


WAIT_WORDS = {1: "a second", 60: "a minute", 3600: "an hour", 86400: "a day"}


def too_many(request, *, what: str, window: Window) -> TemplateResponse:
    """The 429 answer: a page, or for htmx the composer's error slot. Retry-After is the refusing window's."""
    wait = window.seconds
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
