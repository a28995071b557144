"""The Content-Security-Policy of every page: scripts and styles only from our own static files.

No inline <script>, no on*= handler attribute, no eval (htmx runs with allowEval
off and no indicator <style> of its own: see the htmx-config <meta> in
base.html), no <style> element. Markup may carry style= attributes (a reply's
Markdown tables align their columns with them, filtered down to text-align).
"""

import asyncio

from django.conf import settings
from django.utils.decorators import sync_and_async_middleware


def _with_policy(response):
    # Only pages need it: JSON, event streams and files are not run as documents.
    if response.get("Content-Type", "").startswith("text/html") and "Content-Security-Policy" not in response:
        response["Content-Security-Policy"] = settings.CONTENT_SECURITY_POLICY
    return response


@sync_and_async_middleware
def content_security_policy(get_response):
    if asyncio.iscoroutinefunction(get_response):

        async def middleware(request):
            return _with_policy(await get_response(request))

    else:

        def middleware(request):
            return _with_policy(get_response(request))

    return middleware
