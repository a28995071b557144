"""The prompt's bound against a real byte-level BPE tokenizer and chat template: the local model's own.

tiktoken downloads its encodings on first use, which a machine without the
internet cannot; SmolLM2's GGUF (installed with the local model) carries a
GPT-2 style byte-level BPE and its chat template, which llama.cpp's server
renders and counts exactly as here (llama_cpp.llama_chat_format).
"""

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from accounts.billing.prompt_bound import prompt_tokens_bound
from tests.servers import local_model_gguf

llama_cpp = pytest.importorskip("llama_cpp")
from llama_cpp.llama_chat_format import Jinja2ChatFormatter  # noqa: E402

SCRIPTS = st.sampled_from(list("a Zé\u0301\u0308ß中文字日本語かなカナ한국어😀🎉👍🏽\u200d🧑‍💻<|>\n"))
TEXTS = st.text(alphabet=SCRIPTS | st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200)
MESSAGES = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": TEXTS}),
    min_size=1,
    max_size=6,
)


class LocalModelTokenizer:
    """What llama.cpp's server counts as a chat's prompt tokens: the template rendered, then tokenized."""

    def __init__(self):
        self.llm = llama_cpp.Llama(model_path=local_model_gguf(), vocab_only=True, verbose=False)
        model = self.llm._model
        self.template = Jinja2ChatFormatter(
            template=self.llm.metadata["tokenizer.chat_template"],
            eos_token=model.token_get_text(self.llm.token_eos()),
            bos_token=model.token_get_text(self.llm.token_bos()),
            add_generation_prompt=True,
        )

    def text_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode(), add_bos=False, special=False))

    def prompt_tokens(self, messages: list[dict]) -> int:
        rendered = self.template(messages=messages)
        return len(self.llm.tokenize(rendered.prompt.encode(), add_bos=not rendered.added_special, special=True))


@pytest.fixture(scope="module")
def tokenizer() -> LocalModelTokenizer:
    return LocalModelTokenizer()


@hypothesis_settings(max_examples=300, deadline=None)
@given(text=TEXTS)
def test_a_text_never_has_more_tokens_than_bytes(tokenizer, text):
    assert tokenizer.text_tokens(text) <= len(text.encode())


def test_a_lone_short_message_is_bounded_with_the_system_message_the_template_adds(tokenizer):
    messages = [{"role": "user", "content": "Hi"}]

    assert tokenizer.prompt_tokens(messages) <= prompt_tokens_bound(messages)


@hypothesis_settings(max_examples=300, deadline=None)
@given(messages=MESSAGES)
def test_no_chat_in_any_script_has_more_tokens_than_its_bound(tokenizer, messages):
    assert tokenizer.prompt_tokens(messages) <= prompt_tokens_bound(messages)
