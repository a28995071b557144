"""What is sent upstream for a reply: the system prompt, a summary of turns that no longer fit, the newest turns."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings

from accounts.billing.budget import QuotaExceeded
from accounts.billing.metered import MeteredCall
from accounts.models import UsageRecord, User
from conversations.branches import Turn, branch_through
from conversations.models import ChatModel, Conversation, Message, MessageImage
from conversations.services.images import content_with_images

SUMMARY_PREFIX = "Summary of the earlier part of this conversation:\n"
# Longest summary asked for when earlier turns no longer fit the context window.
SUMMARY_MAX_TOKENS = 400
# The turn that asks for the rest of a reply cut at its length limit (see reply_plan).
CONTINUE_PROMPT = "Continue your last reply exactly where it stopped. Do not repeat any of it."


@dataclass
class ReplyPlan:
    """What is sent upstream for one reply, fixed when it begins, and the metered call that sends it.

    Turns too old to fit the model's context window are left out of
    `messages`; `to_summarise` holds them until the generator has summarised
    them (up to message `summary_upto`).
    """

    reply_id: int
    user_id: int
    conversation_id: int
    model: ChatModel
    messages: list[dict]
    max_tokens: int
    call: MeteredCall | None = None
    to_summarise: list[dict] = field(default_factory=list)
    summary_upto: int | None = None
    earlier_summary: str = ""
    # The text the reply already has: a continuation appends to it.
    prefix: str = ""

    def with_summary(self, summary: str) -> list[dict]:
        """The messages to send once the left-out turns are summarised: after the system prompt, the summary."""
        head = [m for m in self.messages if m["role"] == "system" and not m["content"].startswith(SUMMARY_PREFIX)]
        turns = [m for m in self.messages if m["role"] != "system"]
        return [*head, {"role": "system", "content": SUMMARY_PREFIX + summary}, *turns]

    def trimmed_harder(self) -> list[dict]:
        """For a second try after the upstream said the prompt is too long: half the turns, newest kept."""
        head = [m for m in self.messages if m["role"] == "system"]
        turns = [m for m in self.messages if m["role"] != "system"]
        return [*head, *turns[len(turns) // 2 :]] if len(turns) > 1 else self.messages


def context_tokens(messages: list[dict]) -> int:
    """About how much of a context window messages take (three characters a token, plus framing).

    For packing the newest turns into the window only: erring high would throw
    away history the model could read, and when it errs low the upstream says
    so and the reply is retried with fewer turns. Budgets use the prompt's
    upper bound instead (accounts/billing/prompt_bound.py).
    """
    return sum(len(message["content"]) // 3 + 4 for message in messages) + 3


def _turns_fitting(turns: list[dict], room: int) -> int:
    """How many of the newest turns fit in `room` tokens; the newest one always counts."""
    kept = 0
    for turn in reversed(turns):
        room -= context_tokens([turn])
        if room < 0 and kept:
            break
        kept += 1
    return kept


def _images_by_message(turns: list[Turn]) -> dict[int, list[MessageImage]]:
    images = {}
    with_images = [turn.pk for turn in turns if turn.has_images]
    for image in MessageImage.objects.filter(message_id__in=with_images) if with_images else ():
        images.setdefault(image.message_id, []).append(image)
    return images


def reply_plan(*, reply: Message, continuing: bool = False, path: list[Turn] | None = None) -> ReplyPlan:
    """What to send upstream for a pending reply: the system prompt, any summary, and as many turns as fit.

    Only the branch on screen counts: the messages the reply follows, not
    other versions of them. The newest turns are kept; the model's context
    window must hold them plus max_tokens (their text is counted: an image's
    share is the upstream's to judge). A user message's images go with it as
    image parts. The newest message is always sent, fitting or not: the
    upstream then says the chat is too long, which the user is told.

    `continuing`: the reply was cut at its length limit and goes on. The model
    gets its text so far, then a user turn asking it to go on. An assistant
    prefill (ending the prompt with the partial reply) would be neater, but
    OpenAI's Chat Completions and most compatible servers answer a trailing
    assistant message with a new reply rather than extending it; a turn asking
    to continue works with all of them.

    `path`: the branch the reply follows, first first, when the caller has read
    it already (branch_through of the reply's parent).
    """
    conversation = reply.conversation
    model = reply.model
    head = []
    if conversation.system_prompt.strip():
        head.append({"role": "system", "content": conversation.system_prompt})
    start = reply.pk if continuing else reply.parent_id
    if path is None:
        path = branch_through(start) if start is not None else []
    # The summary stands for the first turns of the branch it was made on: of this branch, if it ends on it.
    earlier_summary = ""
    ids = [turn.pk for turn in path]
    if conversation.summary and conversation.summary_upto in ids:
        earlier_summary = conversation.summary
        head.append({"role": "system", "content": SUMMARY_PREFIX + earlier_summary})
        path = path[ids.index(conversation.summary_upto) + 1 :]
    path = [turn for turn in path if turn.content]
    images = _images_by_message(path)
    turns = [{"pk": turn.pk, "role": turn.role, "content": turn.content} for turn in path]
    if continuing:
        turns.append({"pk": None, "role": "user", "content": CONTINUE_PROMPT})
    room = model.context_window - model.max_output_tokens - context_tokens(head)
    kept = _turns_fitting(turns, room)
    if kept < len(turns):  # some turns will be summarised: leave room for the summary too
        kept = _turns_fitting(turns, room - SUMMARY_MAX_TOKENS)
    dropped, fitting = turns[: len(turns) - kept], turns[len(turns) - kept :]
    return ReplyPlan(
        reply_id=reply.pk,
        user_id=reply.user_id,
        conversation_id=conversation.pk,
        model=model,
        messages=head
        + [{"role": t["role"], "content": content_with_images(t["content"], images.get(t["pk"], []))} for t in fitting],
        max_tokens=model.max_output_tokens,
        to_summarise=[{"role": t["role"], "content": t["content"]} for t in dropped],
        summary_upto=dropped[-1]["pk"] if dropped else None,
        earlier_summary=earlier_summary,
        prefix=reply.content if continuing else "",
    )


SUMMARY_INSTRUCTIONS = (
    "Summarise the conversation below in a few sentences for the assistant who continues it. "
    "Keep facts, names, numbers, decisions and open questions; leave out pleasantries."
)


def summary_model(*, plan: ReplyPlan) -> ChatModel:
    """The cheap model summaries are made with: SUMMARY_MODEL if it is enabled, else the chat's own."""
    if settings.SUMMARY_MODEL:
        chosen = ChatModel.objects.enabled().filter(model_id=settings.SUMMARY_MODEL).first()
        if chosen:
            return chosen
    return plan.model


def summary_call(*, plan: ReplyPlan) -> MeteredCall | None:
    """The call that summarises the turns left out, reserved; None when the user's budget has no room for it."""
    transcript = "\n\n".join(f"{m['role']}: {m['content']}" for m in plan.to_summarise)
    if plan.earlier_summary:
        transcript = f"(summary so far) {plan.earlier_summary}\n\n{transcript}"
    return side_call(
        plan=plan, kind=UsageRecord.Kind.SUMMARY, instructions=SUMMARY_INSTRUCTIONS, text=transcript,
        max_tokens=SUMMARY_MAX_TOKENS,
    )  # fmt: skip


def side_call(*, plan: ReplyPlan, kind: str, instructions: str, text: str, max_tokens: int) -> MeteredCall | None:
    """A short call the site makes about a chat (a summary, a title) on the cheap model, billed to the chat's
    user and reserved; None when their budget has no room for it."""
    call = MeteredCall(
        user=User(pk=plan.user_id),
        model=summary_model(plan=plan),
        kind=kind,
        prompt=[{"role": "system", "content": instructions}, {"role": "user", "content": text}],
        max_tokens=max_tokens,
    )
    try:
        call.reserve()
    except QuotaExceeded:
        return None
    return call


def summary_record(*, plan: ReplyPlan, text: str) -> None:
    """Keep a summary on the chat, so later turns send it in place of the turns it covers."""
    Conversation.objects.filter(pk=plan.conversation_id).update(summary=text, summary_upto=plan.summary_upto)
