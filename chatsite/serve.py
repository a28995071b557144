"""The site's server: daphne on uvloop's event loop. `python -m chatsite.serve` takes daphne's own arguments.

daphne runs Twisted on an asyncio event loop it makes as it is imported, so
the loop's policy is set before that. On uvloop's loop (libuv's, in C) the
same code relays a streamed chunk for about a sixth less CPU on /v1 and a
tenth less on the web chat (bench/README.md, 30 Nov 2026).
"""

import asyncio

import uvloop

asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

from daphne.cli import CommandLineInterface  # noqa: E402  daphne makes its event loop on import

if __name__ == "__main__":
    CommandLineInterface.entrypoint()
