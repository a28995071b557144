"""Names of the channels-layer groups that connect generators, watchers and open chat pages."""


def watch_group(reply_id: int) -> str:
    """A reply's text frames and its end, for whoever watches it."""
    return f"reply.{reply_id}"


def control_group(reply_id: int) -> str:
    """Where a reply's generator listens for Stop and for requests for the text so far."""
    return f"replyctl.{reply_id}"


def chat_group(conversation_id: int) -> str:
    """Events for every page that has the chat open (a staff reset)."""
    return f"chat.{conversation_id}"
