"""POST /v1/embeddings: vectors from a catalog model marked as an embedding model, metered like every call.

An embedding call has no output tokens: its reservation is the prompt bound of
its inputs at the model's input price, settled to the provider's own count.
The provider's answer is passed on as it is (floats, or base64 when asked:
the openai SDKs ask for base64 by default and decode it themselves).
"""

from dataclasses import dataclass

from django.http import JsonResponse

from conversations.llm import UpstreamError, embeddings_create, on_request_sent, usage_from
from conversations.replies.runner import reply_runner
from gateway.chat_request import InvalidRequest, _positive_int
from gateway.decorators import api_view
from gateway.errors import upstream_passed_through
from gateway.metering import CallAsk, body_checked, metered_call_open

# OpenAI's own limits: inputs per request, and token ids (a vocabulary of at most 2^31 - 1 entries).
MAX_INPUTS = 2048
MAX_TOKEN_ID = 2**31 - 1
DROPPED = {"user"}  # OpenAI's bookkeeping


@dataclass
class EmbeddingsRequest:
    model: str
    inputs: list[str] | list[list[int]]
    options: dict  # encoding_format, dimensions


def _tokens(where: str, value) -> list[int]:
    if not value or not all(
        not isinstance(token, bool) and isinstance(token, int) and 0 <= token <= MAX_TOKEN_ID for token in value
    ):
        raise InvalidRequest(f"'{where}' must be a non-empty list of token ids (whole numbers from 0).", where)
    return value


def _inputs(value) -> list[str] | list[list[int]]:
    """`input` as a list: of strings, or of token arrays; empty ones are refused, as OpenAI does."""
    if isinstance(value, str) or (isinstance(value, list) and value and isinstance(value[0], int)):
        value = [value]
    if not isinstance(value, list) or not value or len(value) > MAX_INPUTS:
        raise InvalidRequest(
            f"'input' must be a string, a list of 1 to {MAX_INPUTS} strings, or token arrays.", "input"
        )
    if all(isinstance(item, str) and item for item in value):
        return value
    if all(isinstance(item, list) for item in value):
        return [_tokens(f"input[{n}]", item) for n, item in enumerate(value)]
    raise InvalidRequest("'input' must hold non-empty strings only, or token arrays only.", "input")


def embeddings_request_parse(body) -> EmbeddingsRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    for name in body:
        if name not in {"model", "input", "encoding_format", "dimensions"} | DROPPED:
            raise InvalidRequest(f"Unrecognized request argument supplied: {name}", name)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("You must provide a model parameter.", "model")
    if "input" not in body:
        raise InvalidRequest("Missing required parameter: 'input'.", "input")
    options = {}
    if body.get("encoding_format") is not None:
        if body["encoding_format"] not in ("float", "base64"):
            raise InvalidRequest("'encoding_format' must be float or base64.", "encoding_format")
        options["encoding_format"] = body["encoding_format"]
    if body.get("dimensions") is not None:
        options["dimensions"] = _positive_int("dimensions", body["dimensions"])
    return EmbeddingsRequest(model=model, inputs=_inputs(body["input"]), options=options)


def _call_ask(asked: EmbeddingsRequest) -> CallAsk:
    # Every input counts at its worst (see prompt_bound): a token array's JSON has a byte per token at least.
    return CallAsk(asked.model, [{"content": item} for item in asked.inputs], 0, embedding=True)


@api_view(methods=("POST",), authenticate=False)
async def embeddings(request):
    asked = body_checked(request, embeddings_request_parse)
    call = await metered_call_open(request, asked, _call_ask)
    reply_runner().timer_ensure()  # this process must say it is alive while the call is in flight
    on_request_sent.set(call.sent)
    async with call:
        try:
            answer = await embeddings_create({"model": call.model.model_id, "input": asked.inputs} | asked.options)
        except UpstreamError as failure:
            call.refused()
            raise upstream_passed_through(failure) from None
        call.usage = usage_from(answer["usage"]) if isinstance(answer.get("usage"), dict) else None
    return JsonResponse(answer)
