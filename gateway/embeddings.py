"""POST /v1/embeddings: vectors from a catalog model marked as an embedding model, metered like every call.

An embedding call has no output tokens: its reservation is the prompt bound of
its inputs at the model's input price, settled to the provider's own count.
The provider's answer is passed on as it is (floats, or base64 when asked:
the openai SDKs ask for base64 by default and decode it themselves).
"""

from dataclasses import dataclass

from django.http import JsonResponse

from conversations.llm import UpstreamError, embeddings_create, usage_from
from gateway.chat_request import CHAT_BODY, DROPPED
from gateway.decorators import api_view
from gateway.errors import upstream_passed_through
from gateway.metering import CallAsk, body_checked, metered_call_open
from gateway.schema import Array, Integer, InvalidRequest, Object, OneOf, String, schema_check

# OpenAI's own limits: inputs per request, and token ids (a vocabulary of at most 2^31 - 1 entries).
MAX_INPUTS = 2048
TOKENS = Array(Integer(0, 2**31 - 1), min_items=1)


def _one_kind_of_input(body: dict, path: str) -> None:
    inputs = body.get("input")
    if isinstance(inputs, list) and len({type(item) for item in inputs}) > 1:
        raise InvalidRequest("'input' must hold strings only, token ids only, or token arrays only.", "input")


EMBEDDINGS_BODY = Object(
    {
        "model": CHAT_BODY.fields["model"],
        # OpenAI refuses empty inputs: they have no embedding.
        "input": OneOf(
            String(min_length=1),
            Array(OneOf(String(min_length=1), Integer(0, 2**31 - 1), TOKENS), min_items=1, max_items=MAX_INPUTS),
        ),
        "encoding_format": String(choices=["float", "base64"]),
        "dimensions": Integer(1),
    },
    required=["model", "input"],
    dropped=DROPPED,
    rule=_one_kind_of_input,
)


@dataclass
class EmbeddingsRequest:
    model: str
    inputs: list[str] | list[list[int]]
    options: dict  # encoding_format, dimensions


def embeddings_request_parse(body) -> EmbeddingsRequest:
    """The request as checked against EMBEDDINGS_BODY, its input as a list; InvalidRequest names what does not fit."""
    checked = schema_check(EMBEDDINGS_BODY, body)
    inputs = checked.pop("input")
    if isinstance(inputs, str) or isinstance(inputs[0], int):  # one text, or one token array
        inputs = [inputs]
    return EmbeddingsRequest(model=checked.pop("model"), inputs=inputs, options=checked)


def _call_ask(asked: EmbeddingsRequest) -> CallAsk:
    # Every input counts at its worst (see prompt_bound): a token array's JSON has a byte per token at least.
    return CallAsk(asked.model, [{"content": item} for item in asked.inputs], 0, embedding=True)


@api_view(methods=("POST",), authenticate=False)
async def embeddings(request):
    asked = body_checked(request, embeddings_request_parse)
    call = await metered_call_open(request, asked, _call_ask)
    async with call:
        try:
            answer = await embeddings_create({"model": call.model.model_id, "input": asked.inputs} | asked.options)
        except UpstreamError as failure:
            call.refused()
            raise upstream_passed_through(failure) from None
        call.usage = usage_from(answer["usage"]) if isinstance(answer.get("usage"), dict) else None
    return JsonResponse(answer)
