"""A reply on its way to the people watching it: the fan-out protocol (fanout.py) and the SSE watcher (watcher.py)."""
