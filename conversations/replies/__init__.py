"""Replies of the web chat, from the upstream to the people watching them.

- runner.py: the reply runner, the one owner of the replies generated in this process.
- fanout.py: the fan-out protocol that carries a reply's text to its watchers, in this process or another.
- watcher.py: the SSE stream a browser reads a reply from.
"""
