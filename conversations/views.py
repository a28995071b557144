import json
import re
from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect
from django.template.response import SimpleTemplateResponse, TemplateResponse
from django.urls import Resolver404, resolve
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect, HttpResponseClientRefresh

from accounts.billing.budget import usage_summary
from accounts.decorators import login_required
from accounts.models import local_today
from accounts.ratelimits import refusing_window, too_many
from chatsite.event_streams import event_stream_response
from conversations.branches import branch_messages
from conversations.db import db_step, db_step_to_end
from conversations.forms import MessageForm, RenameForm, SystemPromptForm
from conversations.models import ChatModel, Conversation, Message, chat_model_served
from conversations.outages import local_model_down
from conversations.replies import watcher
from conversations.replies.fanout import generated_here_for, reply_stop_request
from conversations.replies.runner import in_turn, reply_runner
from conversations.services.chat_list import chat_groups, day_label
from conversations.services.chats import conversation_delete, conversation_reset, message_send, send_target
from conversations.services.context import ReplyPlan
from conversations.services.export import chat_export_json, chat_export_markdown, export_filename
from conversations.services.search import chat_search

CHAT_TEMPLATE = "conversations/chat.html"
SIDEBAR_SIZE = 200
# Offered in an empty chat: a click puts one in the message box.
EXAMPLE_PROMPTS = [
    "Explain how HTTPS keeps my passwords private, in simple terms.",
    "Write a Python function that tells whether a word is a palindrome.",
    "Plan three days in Lisbon on a small budget.",
    "Give me the main arguments for and against a four-day work week.",
]


def _chat_context(request, conversation: Conversation | None, *, search_query: str = "", **extra) -> dict:
    default_model = conversation.model if conversation else ChatModel.objects.usable_by(request.user).default()
    # htmx gets the chat alone (#chat), without the list.
    sidebar = (
        {} if request.htmx else _sidebar_context(request, conversation.pk if conversation else None, query=search_query)
    )
    return {
        **sidebar,
        "conversation": conversation,
        "chat_messages": branch_messages(conversation) if conversation else [],
        "models": ChatModel.objects.usable_by(request.user),
        "selected_model_id": default_model.model_id if default_model else "",
        "chat_model": default_model,
        "example_prompts": EXAMPLE_PROMPTS,
        "system_prompt_form": SystemPromptForm(instance=conversation) if conversation else None,
        "rename_form": RenameForm(instance=conversation) if conversation else None,
        "max_chars": settings.MESSAGE_MAX_CHARS,
        "usage": usage_summary(user=request.user),
        "local_model_down": local_model_down(),
        **extra,
    }


def _sidebar_context(request, open_chat_id: int | None, *, query: str = "") -> dict:
    """The chat list: the chats by day of last activity, or those a search found."""
    if query:
        return {
            "open_chat_id": open_chat_id,
            "search_query": query,
            "search_hits": chat_search(user=request.user, query=query),
        }
    chats = Conversation.objects.for_user(request.user).only("pk", "title", "updated_at")[:SIDEBAR_SIZE]
    return {"open_chat_id": open_chat_id, "chat_groups": chat_groups(chats, today=local_today())}


def _open_chat_id(request) -> int | None:
    """The chat open in the page an htmx request comes from, if any (its HX-Current-URL)."""
    path = request.htmx.current_url_abs_path if request.htmx else None
    if not path:
        return None
    try:
        match = resolve(path.split("?")[0])
    except Resolver404:
        return None
    return match.kwargs.get("pk") if match.view_name == "conversations:detail" else None


def _sidebar(request, *, query: str = "", status: int = 200, **extra) -> TemplateResponse:
    """The chat list alone, for htmx requests made from it (search, rename, delete)."""
    context = _sidebar_context(request, _open_chat_id(request), query=query) | extra
    return TemplateResponse(request, f"{CHAT_TEMPLATE}#sidebar", context, status=status)


def _chat_page(request, conversation: Conversation | None, *, status: int = 200, **extra) -> TemplateResponse:
    template = f"{CHAT_TEMPLATE}#chat" if request.htmx else CHAT_TEMPLATE
    return TemplateResponse(request, template, _chat_context(request, conversation, **extra), status=status)


def _own_conversation(request, pk: int) -> Conversation:
    return get_object_or_404(Conversation.objects.for_user(request.user).select_related("model"), pk=pk)


@login_required
@require_GET
def home(request):
    return _chat_page(request, None)


@login_required
@require_GET
def detail(request, pk: int):
    return _chat_page(request, _own_conversation(request, pk))


@login_required
@require_GET
def search(request):
    """The user's chats whose name or messages have the words searched: the list alone for htmx, else the page."""
    query = " ".join(request.GET.get("q", "").split())[:200]
    if request.htmx:
        return _sidebar(request, query=query)
    return _chat_page(request, None, search_query=query)


def _composer_refused(request, conversation: Conversation | None, errors: list[str], status: int):
    """The user's input is refused: say why beside the composer, keep what they typed, store nothing."""
    if request.htmx:
        response = TemplateResponse(
            request, f"{CHAT_TEMPLATE}#composer-errors", {"composer_errors": errors}, status=status
        )
        response["HX-Retarget"] = "#composer-errors"
        response["HX-Reswap"] = "innerHTML"
        return response
    return _chat_page(request, conversation, status=status, composer_errors=errors, draft=request.POST.get("text", ""))


@dataclass
class MessagePrepared:
    """What message_create's database step did: the chat, and the reply's plan (None when a limit stopped it),
    or on refusal the reasons and the status code."""

    conversation: Conversation | None
    plan: ReplyPlan | None = None
    errors: list[str] = field(default_factory=list)
    status: int = 200
    # The message sent and its reply, as stored.
    turn: list[Message] = field(default_factory=list)
    # Whether the chat list must show the chat at its top now (it was not there yet).
    list_changed: bool = True


def _message_prepare(request, pk: int | None) -> MessagePrepared:
    """Everything message_create does with the database, in one sync step."""
    target = send_target(user=request.user, pk=pk) if pk is not None else None
    if pk is not None and target is None:
        raise Http404("No such chat.")
    conversation = target.conversation if target else None
    form = MessageForm(request.POST, request.FILES, user=request.user)
    if not form.is_valid():
        return MessagePrepared(
            conversation, errors=[error for errors in form.errors.values() for error in errors], status=400
        )
    # A model the form chose, or the default, is among the usable ones; a chat's own model may no longer be.
    model = form.cleaned_data["model"]
    if model is None and conversation is None:
        model = ChatModel.objects.usable_by(request.user).default()
    elif model is None:
        model = target.model()
    if model is None:
        unserved = conversation is not None and not chat_model_served(conversation.model.model_id)
        error = (
            f"The model provider does not serve {conversation.model.display_name} at the moment. Pick another model."
            if unserved
            else "This chat's model is no longer available to you. Pick another."
        )
        return MessagePrepared(conversation, errors=[error], status=400)
    images = form.cleaned_data["images"]
    if images and not model.accepts_images:
        error = f"{model.display_name} does not take images. Pick a model that does, or send the text alone."
        return MessagePrepared(conversation, errors=[error], status=400)
    if target and target.reply_live:
        return MessagePrepared(
            conversation, errors=["Wait for the reply to finish, or press Stop, before sending another."], status=409
        )
    # The usual case, chatting on in the newest chat, leaves the chat list as it is: no need to send it.
    list_changed = target is None or not target.newest
    reply, plan = message_send(
        user=request.user,
        conversation=conversation,
        text=form.cleaned_data["text"],
        model=model,
        system_prompt=form.cleaned_data["system_prompt"],
        images=images,
    )
    return MessagePrepared(reply.conversation, plan, turn=[reply.parent, reply], list_changed=list_changed)


async def _user_loaded(request) -> None:
    """Load the request's user once (sessions are in the database).

    Django caches `auser()` (which login_required awaits) apart from the lazy
    `request.user`, which the view's database step reads on a worker thread:
    without this, that step would load the user a second time.
    """
    request.user = await request.auser()


def rendered(response: HttpResponse) -> HttpResponse:
    """A template response rendered, as a plain HttpResponse; any other response as it is.

    For a step to call on its thread, or a view for a response that reads no
    database (TurnToRender): Django's async handler renders a template response
    that an async view returns in a thread hop of its own (about 100 µs of
    CPU), even one rendered already.
    """
    if not isinstance(response, SimpleTemplateResponse):
        return response
    response.render()
    plain = HttpResponse(response.content, status=response.status_code, headers=response.headers)
    plain.cookies = response.cookies
    return plain


@dataclass
class TurnToRender:
    """A sent turn's answer, left for the view to render once its reply's request is out (the usual answer of a
    message: an open chat's new turn). Its render reads nothing from the database, so it can run on the event loop
    while the provider thinks, rather than before anything is asked of the provider."""

    conversation: Conversation
    turn: list[Message]
    list_changed: bool

    def rendered(self, request) -> HttpResponse:
        return rendered(_render_turn(request, self.conversation, self.turn, list_changed=self.list_changed))


def _message_create_step(request, pk: int | None) -> tuple[HttpResponse | TurnToRender, ReplyPlan | None]:
    """All of message_create's database work, in one sync step: the answer, and the reply to start.

    The answer is rendered here, but for a turn whose reply starts: that one is
    rendered by the view once the reply's request is out (TurnToRender).
    """
    answer, plan = _message_answer(request, pk)
    if isinstance(answer, TurnToRender):
        return (answer, plan) if plan is not None else (answer.rendered(request), plan)
    return rendered(answer), plan


def _message_answer(request, pk: int | None) -> tuple[HttpResponse | TurnToRender, ReplyPlan | None]:
    window = refusing_window(request, group="messages", key="user", setting="RATELIMIT_MESSAGES")
    if window:
        return too_many(request, what="messages", window=window), None
    prepared = _message_prepare(request, pk)
    conversation = prepared.conversation
    if prepared.errors:
        return _composer_refused(request, conversation, prepared.errors, prepared.status), None
    if not request.htmx:
        return redirect(conversation), prepared.plan
    if pk is None:
        response = _render_new_chat(request, conversation)
        response["HX-Push-Url"] = conversation.get_absolute_url()
        response["HX-Retarget"] = "#chat"
        response["HX-Reswap"] = "outerHTML"
        return response, prepared.plan
    return TurnToRender(conversation, prepared.turn, prepared.list_changed), prepared.plan


@login_required
@require_POST
@in_turn
async def message_create(request, pk: int | None = None):
    """Store the message, start the reply in the background, and answer: a new chat's page at once, an open
    chat's turn as soon as the reply's request is out (rendered while the provider thinks).

    The reply is started even if the browser goes away meanwhile: its message
    is stored, and its budget reserved, so it is generated all the same.

    chat.js asks for an event stream (Accept): the answer is then the turn (a
    new chat's page) followed by its reply's events, live in this same request
    until the reply ends, with no second request (its session and user read
    again) between the answer and the reply's first words.
    """
    await _user_loaded(request)
    answer, plan = await db_step_to_end(_message_create_step, request, pk, on_cancel=_reply_start_after_cancel)
    if plan is None:  # refused, or a limit is reached and the reply says so
        return answer
    generation = reply_runner().start(plan)
    await generation.ready_wait()
    if isinstance(answer, TurnToRender):
        await generation.request_out_wait()
        answer = answer.rendered(request)
    return turn_then_reply_if_asked(request, answer, plan)


def turn_then_reply_if_asked(request, turn: HttpResponse, plan: ReplyPlan) -> HttpResponse:
    """The answer to a request that started a reply: as it is, or, when chat.js asked for an event stream
    (Accept), that answer's HTML (`event: turn`) followed by the reply's events as the reply's own stream
    sends them, from the text the turn shows, live until the reply ends."""
    if not (request.htmx and "text/event-stream" in request.headers.get("Accept", "")):
        return turn
    events = watcher.turn_then_reply_events(turn.content.decode(), reply_id=plan.reply_id, offset=len(plan.prefix))
    # Where the turn goes, the same headers say as they say it to htmx (a new chat's: in the chat's place, at
    # the chat's address).
    response = event_stream_response(request, events)
    for header in ("HX-Retarget", "HX-Reswap", "HX-Push-Url"):
        if header in turn:
            response[header] = turn[header]
    response.cookies = turn.cookies
    return response


async def _reply_start_after_cancel(result: tuple[HttpResponse, ReplyPlan | None]) -> None:
    _, plan = result
    if plan is not None:
        reply_runner().start(plan)


def _with_out_of_band(request, response: TemplateResponse, partial: str, context: dict) -> HttpResponse:
    """The response rendered, followed by a partial of the chat page that htmx swaps in out of band."""
    response.render()
    response.content += TemplateResponse(request, f"{CHAT_TEMPLATE}#{partial}", context).render().content
    return response


def _with_sidebar(request, response: TemplateResponse) -> HttpResponse:
    """Add the chat list, swapped out of band, so a renamed chat shows in it at once."""
    conversation = response.context_data["conversation"]
    return _with_out_of_band(
        request, response, "sidebar", {**_sidebar_context(request, conversation.pk), "sidebar_oob": True}
    )


def _with_chat_on_top(request, response: TemplateResponse) -> HttpResponse:
    """Add the chat's own list item, out of band, to go to the top of the list: a message was just sent in it.

    Only the item is sent, not the list (chat_list.js puts it in its place):
    re-rendering every chat with its menu cost more than the rest of the send.
    """
    conversation = response.context_data["conversation"]
    today = local_today()
    context = {"item": conversation, "open_chat_id": conversation.pk, "moved_to": day_label(today, today=today)}
    return _with_out_of_band(request, response, "chat-on-top", context)


def _render_new_chat(request, conversation: Conversation) -> HttpResponse:
    return _with_chat_on_top(request, _chat_page(request, conversation))


def _render_turn(request, conversation: Conversation, turn: list[Message], *, list_changed: bool) -> HttpResponse:
    """The message just sent and its pending reply, to append to the open chat (and move the chat to the list's top).

    They are rendered as the step stored them, images included (`shown_images`), with no query to read them back.
    """
    response = TemplateResponse(request, f"{CHAT_TEMPLATE}#turn", {"conversation": conversation, "chat_messages": turn})
    return _with_chat_on_top(request, response) if list_changed else response


def _own_message(request, pk: int, message_pk: int) -> Message:
    return get_object_or_404(
        Message.objects.select_related("model", "conversation"),
        pk=message_pk,
        conversation_id=pk,
        conversation__user=request.user,
    )


@login_required
@require_GET
def message_detail(request, pk: int, message_pk: int):
    message = _own_message(request, pk, message_pk)
    if not request.htmx:
        return redirect(f"{message.conversation.get_absolute_url()}#message-{message.pk}")
    response = TemplateResponse(
        request, f"{CHAT_TEMPLATE}#message", {"message": message, "conversation": message.conversation}
    )
    # A finished reply changed the user's usage: refresh the meter beside the chat list too.
    meter = {"usage": usage_summary(user=request.user), "usage_oob": True}
    return _with_out_of_band(request, response, "usage-link", meter)


# ASCII digits only, and few of them: str.isdigit() and int() also take "²" and 5,000-digit numbers.
OFFSET = re.compile(r"[0-9]{1,12}")


@login_required
@require_GET
async def reply_stream(request, pk: int, message_pk: int):
    """SSE: the reply's text after `offset` (or Last-Event-ID), live until it ends."""
    await _user_loaded(request)
    if not generated_here_for(message_pk, conversation_id=pk, user_id=request.user.pk):
        reply = await db_step(_own_message, request, pk, message_pk)
        if reply.role != Message.Role.ASSISTANT:
            raise Http404("Only replies stream.")
    raw_offset = request.headers.get("Last-Event-ID") or request.GET.get("offset") or "0"
    if not OFFSET.fullmatch(raw_offset):
        return HttpResponseBadRequest("offset must be a whole number of characters")
    return event_stream_response(request, watcher.reply_events(reply_id=message_pk, offset=int(raw_offset)))


@login_required
@require_POST
async def reply_stop(request, pk: int, message_pk: int):
    await _user_loaded(request)
    reply = await db_step(_own_message, request, pk, message_pk)
    if reply.is_live:
        await reply_stop_request(reply.pk)
    if request.htmx:
        return HttpResponse(status=204)
    return redirect("conversations:detail", pk=pk)


@login_required
@require_POST
def system_prompt_update(request, pk: int):
    conversation = _own_conversation(request, pk)
    form = SystemPromptForm(request.POST, instance=conversation)
    saved = form.is_valid()
    if saved:
        form.save()
    if not request.htmx:
        if saved:
            return redirect("conversations:detail", pk=pk)
        return _chat_page(request, conversation, status=400, system_prompt_form=form)
    context = {"conversation": conversation, "system_prompt_form": form, "saved": saved}
    return TemplateResponse(request, f"{CHAT_TEMPLATE}#system-prompt", context, status=200 if saved else 400)


@login_required
@require_POST
def rename(request, pk: int):
    conversation = _own_conversation(request, pk)
    form = RenameForm(request.POST, instance=conversation)
    saved = form.is_valid()
    if saved:
        form.save()
    else:
        conversation.refresh_from_db(fields=["title"])
    if request.htmx and request.htmx.target == "conversation-list":  # renamed in the chat list
        errors = {} if saved else {"rename_errors": form.errors["title"], "renaming_id": conversation.pk}
        return _sidebar(request, status=200 if saved else 400, **errors)
    if not request.htmx:
        if saved:
            return redirect("conversations:detail", pk=pk)
        return _chat_page(request, conversation, status=400, rename_form=form)
    context = {"conversation": conversation, "rename_form": form}
    response = TemplateResponse(request, f"{CHAT_TEMPLATE}#title", context, status=200 if saved else 400)
    return _with_sidebar(request, response) if saved else response


@login_required
@require_POST
def delete(request, pk: int):
    conversation = _own_conversation(request, pk)
    conversation_delete(conversation=conversation)  # a reply still streaming notices at its next flush and stops
    if request.htmx and request.htmx.current_url and _open_chat_id(request) != pk:
        return _sidebar(request)  # deleted from the chat list while another page is open: it stays
    if request.htmx:
        return HttpResponseClientRedirect("/")
    return redirect("conversations:home")


@login_required
@require_POST
def reset(request, pk: int):
    """Staff empty one of their chats (the admin action does the same for anyone's)."""
    if not request.user.is_staff:
        raise PermissionDenied("Only staff can reset a chat.")
    conversation = _own_conversation(request, pk)
    conversation_reset(conversation=conversation, actor=request.user)
    if request.htmx:
        return HttpResponseClientRefresh()
    return redirect(conversation)


@login_required
@require_GET
async def chat_events(request, pk: int):
    """SSE for an open chat page; see watcher.chat_events."""
    await _user_loaded(request)
    conversation = await db_step(_own_conversation, request, pk)
    return event_stream_response(
        request, watcher.chat_events(conversation_id=conversation.pk, shown_name=request.GET.get("title"))
    )


def _download(content: str, content_type: str, filename: str) -> HttpResponse:
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@login_required
@require_GET
def export_markdown(request, pk: int):
    conversation = _own_conversation(request, pk)
    return _download(
        chat_export_markdown(conversation), "text/markdown; charset=utf-8", export_filename(conversation, "md")
    )


@login_required
@require_GET
def export_json(request, pk: int):
    conversation = _own_conversation(request, pk)
    content = json.dumps(chat_export_json(conversation), indent=2, ensure_ascii=False)
    return _download(content, "application/json", export_filename(conversation, "json"))
