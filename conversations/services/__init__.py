"""Multi-step writes of conversations, one module per sub-domain. Sync functions; async code runs them through
conversations.db.db_step.

- catalog: the model catalog's seed.
- chats: sending a message (which reserves its reply's budget), resetting a chat.
- context: what is sent upstream for a reply (the turns that fit, the summary of the rest).
- replies: a reply's text and outcome as it is written, and replies whose process died.
- versions: regenerating, retrying, editing and continuing, and choosing which version of a message shows.
"""
