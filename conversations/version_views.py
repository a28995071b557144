"""The controls below a message: regenerate (or retry) a reply, edit a message and resend it, continue a reply cut
at its length limit, and show another version.

Each answers htmx with the branch now on screen (swapped into #messages) and a
plain form with a redirect to the chat. A reply they start is generated in the
background, as one to a new message is (views.message_create).
"""

from collections.abc import Callable

from django.http import HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.views.decorators.http import require_GET, require_POST

from accounts.decorators import login_required
from accounts.ratelimits import refusing_window, too_many
from conversations.branches import branch_messages, message_with_versions
from conversations.db import db_step_to_end
from conversations.forms import MessageForm
from conversations.models import Message
from conversations.replies.runner import in_turn, reply_runner
from conversations.services import versions
from conversations.services.context import ReplyPlan
from conversations.views import (
    CHAT_TEMPLATE,
    _composer_refused,
    _own_conversation,
    _own_message,
    _reply_start_after_cancel,
    _user_loaded,
    rendered,
    turn_then_reply_if_asked,
)

CONTROLS_TEMPLATE = "conversations/_message_controls.html"
# What a control does to the message it is on: the reply it starts, if any. Raises versions.VersionRefused.
Change = Callable[[Message], ReplyPlan | None]


def _branch_change_step(request, pk: int, message_pk: int, change: Change) -> tuple[HttpResponse, ReplyPlan | None]:
    """A control's database work and rendering, in one sync step: the answer, and the reply to start."""
    message = _own_message(request, pk, message_pk)
    try:
        plan = change(message)
    except versions.VersionRefused as refused:
        return _composer_refused(request, message.conversation, [refused.user_message], refused.status), None
    if not request.htmx:
        return redirect(message.conversation), plan
    conversation = _own_conversation(request, pk)  # read again: its branch changed
    context = {"conversation": conversation, "chat_messages": branch_messages(conversation)}
    return TemplateResponse(request, f"{CHAT_TEMPLATE}#turn", context).render(), plan


def _reply_starting_step(request, pk: int, message_pk: int, change: Change) -> tuple[HttpResponse, ReplyPlan | None]:
    """As _branch_change_step, for a control that calls the model: counted against the user's message rate."""
    window = refusing_window(request, group="messages", key="user", setting="RATELIMIT_MESSAGES")
    if window:
        return rendered(too_many(request, what="messages", window=window)), None
    response, plan = _branch_change_step(request, pk, message_pk, change)
    return rendered(response), plan


@in_turn
async def _reply_start(request, pk: int, message_pk: int, change: Change) -> HttpResponse:
    await _user_loaded(request)
    response, plan = await db_step_to_end(
        _reply_starting_step, request, pk, message_pk, change, on_cancel=_reply_start_after_cancel
    )
    if plan is None:  # refused, or a limit is reached and the new reply says so
        return response
    await reply_runner().start(plan).ready_wait()
    return turn_then_reply_if_asked(request, response, plan)


@login_required
@require_POST
async def reply_regenerate(request, pk: int, message_pk: int):
    """A new version of the reply (Regenerate, or Retry after an error); the earlier ones stay browsable."""

    def regenerate(reply: Message) -> ReplyPlan | None:
        return versions.reply_regenerate(reply=reply, user=request.user)[1]

    return await _reply_start(request, pk, message_pk, regenerate)


@login_required
@require_POST
async def message_edit(request, pk: int, message_pk: int):
    """Send an edited version of the user's message: a new branch, with its own reply."""

    def edit(message: Message) -> ReplyPlan | None:
        form = MessageForm(request.POST, user=request.user)
        if not form.is_valid():
            raise versions.VersionRefused(" ".join(form.errors.get("text", [])) or "Type a message first.", status=400)
        return versions.message_edit(message=message, user=request.user, text=form.cleaned_data["text"])[1]

    return await _reply_start(request, pk, message_pk, edit)


@login_required
@require_POST
async def reply_continue(request, pk: int, message_pk: int):
    """Have the model go on with a reply that reached its length limit, in the same reply."""
    return await _reply_start(
        request, pk, message_pk, lambda reply: versions.reply_continue(reply=reply, user=request.user)
    )


@login_required
@require_GET
def message_controls(request, pk: int, message_pk: int):
    """The controls of a reply that just finished, to put below it (the page asks when it swaps the reply in)."""
    message = _own_message(request, pk, message_pk)
    if not request.htmx:
        return redirect(f"{message.conversation.get_absolute_url()}#message-{message.pk}")
    context = {"message": message_with_versions(message), "conversation": message.conversation}
    return TemplateResponse(request, CONTROLS_TEMPLATE, context)


@login_required
@require_POST
def version_show(request, pk: int, message_pk: int):
    """Show this version of a message and the branch below it (Previous and Next version); a reload shows it too."""
    response, _ = _branch_change_step(request, pk, message_pk, lambda message: versions.version_show(message=message))
    return response
