"""Replies of the web chat: the runner that generates them, the fan-out of their text, and their SSE watchers.

- runner: owns this process's reply generations (reading the upstream, saving text, settling the call).
- fanout: the protocol that carries a reply's text to whoever watches it, in this process or another.
- watcher: the SSE stream a browser reads a reply from.
"""
