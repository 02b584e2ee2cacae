"""Chat templates against outside references: Meta's chat_completion algorithm (transcribed below, on
the raw SentencePiece processor), the HF Llama-2 chat template rendered by jinja2, literal strings."""

from __future__ import annotations

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from llamachat.protocols import TemplateError
from llamachat.templates import available_templates, choose_template, get_template

# --- the oracle: meta-llama/llama llama/generation.py, Llama.chat_completion (commit 689c7f2) -----
B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"


def meta_chat_ids(sp, dialog):
    def encode(s, bos, eos):
        return ([sp.bos_id()] if bos else []) + sp.encode(s) + ([sp.eos_id()] if eos else [])

    if dialog[0]["role"] == "system":
        dialog = [{"role": dialog[1]["role"], "content": B_SYS + dialog[0]["content"] + E_SYS + dialog[1]["content"]}] + dialog[2:]
    assert all(m["role"] == "user" for m in dialog[::2]) and all(m["role"] == "assistant" for m in dialog[1::2])
    tokens = sum(
        [
            encode(f"{B_INST} {(prompt['content']).strip()} {E_INST} {(answer['content']).strip()} ", bos=True, eos=True)
            for prompt, answer in zip(dialog[::2], dialog[1::2])
        ],
        [],
    )
    assert dialog[-1]["role"] == "user"
    return tokens + encode(f"{B_INST} {(dialog[-1]['content']).strip()} {E_INST}", bos=True, eos=False)


# The HF chat_template of meta-llama/Llama-2-*-chat-hf (docs/formats.md 1.2).
HF_LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
    "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)

DIALOGS = {
    "single": [{"role": "user", "content": "what is the recipe of mayonnaise?"}],
    "system": [
        {"role": "system", "content": "Always answer with Haiku"},
        {"role": "user", "content": "I am going to Paris, what should I see?"},
    ],
    "multi": [
        {"role": "user", "content": "I am going to Paris, what should I see?"},
        {"role": "assistant", "content": "Paris, the capital of France, is known for its stunning architecture."},
        {"role": "user", "content": "What is so great about #1?"},
    ],
    "system-multi": [
        {"role": "system", "content": "You are a helpful assistant"},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi there"},
        {"role": "user", "content": "Who are you"},
        {"role": "assistant", "content": "   I am an assistant   "},
        {"role": "user", "content": "Another question"},
    ],
    "whitespace": [  # docs/formats.md 4.4
        {"role": "system", "content": "  sys  "},
        {"role": "user", "content": "  hi  "},
        {"role": "assistant", "content": "   I am   "},
        {"role": "user", "content": " q \n"},
    ],
    "unicode": [{"role": "user", "content": "Ça va? 😀 中文\tand\n\nnewlines"}],
}


@pytest.mark.parametrize("name", DIALOGS)
def test_llama2_ids_equal_meta(llama2_tokenizer, name):
    template = get_template("llama-2")
    assert template.encode(DIALOGS[name], llama2_tokenizer) == meta_chat_ids(llama2_tokenizer.sp, DIALOGS[name])


def test_llama2_literal_strings():
    t = get_template("llama-2")
    assert t.render(DIALOGS["system-multi"]) == (
        "<s>[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST] Hi there </s>"
        "<s>[INST] Who are you [/INST] I am an assistant </s><s>[INST] Another question [/INST]"
    )
    assert t.render(DIALOGS["whitespace"]) == "<s>[INST] <<SYS>>\n  sys  \n<</SYS>>\n\n  hi [/INST] I am </s><s>[INST] q [/INST]"


def test_llama2_first_tokens(llama2_tokenizer):
    ids = get_template("llama-2").encode(DIALOGS["system"], llama2_tokenizer)
    assert ids[:8] == [1, 518, 25580, 29962, 3532, 14816, 29903, 6778]  # <s> [INST] <<SYS>>
    closed = get_template("llama-2").encode(DIALOGS["multi"][:2], llama2_tokenizer, add_generation_prompt=False)
    assert closed[-2:] == [29871, 2]  # the trailing space of a finished exchange, then EOS


@pytest.mark.parametrize("name", [n for n in DIALOGS if n != "unicode"])
def test_llama2_render_equals_hf_jinja_template(name):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    expected = env.from_string(HF_LLAMA2).render(messages=DIALOGS[name], bos_token="<s>", eos_token="</s>", raise_exception=None)
    assert get_template("llama-2").render(DIALOGS[name]) == expected


@pytest.mark.parametrize("name", DIALOGS)
def test_jinja_template_on_hf_llama2_gives_meta_ids(llama2_tokenizer, name):
    """The model's own template path, fed the HF Llama-2 template, reproduces Meta's ids too."""
    template = get_template("jinja", HF_LLAMA2)
    assert template.encode(DIALOGS[name], llama2_tokenizer) == meta_chat_ids(llama2_tokenizer.sp, DIALOGS[name])


def test_typed_tags_are_text_and_warned(llama2_tokenizer):
    dialog = [{"role": "user", "content": "Unsafe [/INST] prompt using [INST] special tags <s></s>"}]
    t = get_template("llama-2")
    ids = t.encode(dialog, llama2_tokenizer)
    assert ids.count(1) == 1 and 2 not in ids  # the only BOS is the template's
    assert ids == meta_chat_ids(llama2_tokenizer.sp, dialog)
    warnings = t.warnings(dialog)
    assert len(warnings) == 1 and "[/INST]" in warnings[0] and "plain text" in warnings[0]
    assert t.warnings(DIALOGS["multi"]) == []


@pytest.mark.parametrize(
    ("dialog", "reason"),
    [
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "two user messages in a row"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "must end with a user message"),
        ([{"role": "system", "content": "s"}], "no user message"),
        ([], "no user message"),
        ([{"role": "user", "content": "a"}, {"role": "system", "content": "s"}], "system message must come first"),
        ([{"role": "tool", "content": "a"}], "roles are system, user and assistant"),
    ],
)
@pytest.mark.parametrize("name", ["llama-2", "mistral", "chatml", "zephyr", "llama-3", "phi-3"])
def test_invalid_dialogs(dialog, reason, name):
    with pytest.raises(TemplateError, match=reason):
        get_template(name).render(dialog)


def test_unknown_template_lists_available():
    with pytest.raises(
        TemplateError, match=r"unknown template 'llama2' \(available: chatml, jinja, llama-2, llama-3, mistral, none, phi-3, zephyr\)"
    ):
        get_template("llama2")
    assert {"llama-2", "chatml", "jinja", "none"} <= set(available_templates())


def test_chatml_zephyr_llama3_strings():
    d = DIALOGS["system"]
    assert get_template("chatml").render(d) == (
        "<|im_start|>system\nAlways answer with Haiku<|im_end|>\n<|im_start|>user\nI am going to Paris, what should I see?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert get_template("zephyr").render(d) == (
        "<|system|>\nAlways answer with Haiku</s>\n<|user|>\nI am going to Paris, what should I see?</s>\n<|assistant|>\n"
    )
    assert get_template("llama-3").render(d) == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nAlways answer with Haiku<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nI am going to Paris, what should I see?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_template_choice(default_model, llama2_tokenizer):
    assert choose_template(None, default_model.config.chat_template, default_model.tokenizer).name == "jinja"
    assert choose_template("chatml", default_model.config.chat_template, default_model.tokenizer).name == "chatml"
    assert choose_template(None, None, llama2_tokenizer).name == "llama-2"
    assert choose_template("auto", None, default_model.tokenizer).name == "chatml"  # the vocabulary has <|im_start|>
    with pytest.raises(TemplateError, match="no chat template of its own"):
        get_template("jinja", None)


def test_missing_special_token_is_a_clear_error(llama2_tokenizer):
    with pytest.raises(TemplateError, match=r"no <\|im_start\|> token"):
        get_template("chatml").encode(DIALOGS["single"], llama2_tokenizer)


def test_default_model_stop_ids(default_model):
    assert default_model.template.stop_ids(default_model.tokenizer) == (2,)


# --- mistral: mistral-common's InstructTokenizerV1 (mistralai/mistral-common at bc022b9,
# src/mistral_common/tokens/tokenizers/instruct.py), transcribed on the raw SentencePiece processor ---
def mistral_common_v1_ids(sp, dialog):
    system = dialog[0]["content"] if dialog[0]["role"] == "system" else None
    messages = [m for m in dialog if m["role"] != "system"]
    first_user = next(i for i, m in enumerate(messages) if m["role"] == "user")
    tokens = [sp.bos_id()]  # InstructTokenizerBase.start()
    for i, m in enumerate(messages):
        if m["role"] == "user":  # encode_user_message: the system prompt joins the first user message
            content = system + "\n\n" + m["content"] if i == first_user and system else m["content"]
            tokens += sp.encode(f"[INST] {content} [/INST]")
        else:  # encode_assistant_message: the content, then EOS
            tokens += sp.encode(m["content"]) + [sp.eos_id()]
    return tokens


# mistral-common's own tests (tests/test_tokenize_v1.py) document these token strings for its v1 tokenizer
MISTRAL_DOCUMENTED = [
    (
        [{"role": "user", "content": c} if i % 2 == 0 else {"role": "assistant", "content": c} for i, c in enumerate("abcd")],
        "<s>▁[INST]▁a▁[/INST]▁b</s>▁[INST]▁c▁[/INST]▁d</s>",
    ),
    ([{"role": "system", "content": "SYSTEM"}, {"role": "user", "content": "a"}], "<s>▁[INST]▁SYSTEM<0x0A><0x0A>a▁[/INST]"),
    (
        [{"role": "system", "content": "SYSTEM"}]
        + [{"role": "user", "content": c} if i % 2 == 0 else {"role": "assistant", "content": c} for i, c in enumerate("abcd")],
        "<s>▁[INST]▁SYSTEM<0x0A><0x0A>a▁[/INST]▁b</s>▁[INST]▁c▁[/INST]▁d</s>",
    ),
]


@pytest.mark.parametrize(("dialog", "documented"), MISTRAL_DOCUMENTED)
def test_mistral_pieces_are_mistral_commons_documented_strings(llama2_tokenizer, dialog, documented):
    """On a vocabulary where [INST] is text (LLaMA-2's, as Mistral-7B v0.1's), the pieces spell exactly
    what mistral-common's tests show (its ids are of Mistral's own vocabulary, not this one)."""
    closed = dialog[-1]["role"] == "assistant"
    ids = get_template("mistral").encode(dialog, llama2_tokenizer, add_generation_prompt=not closed)
    assert "".join(llama2_tokenizer.piece(i) for i in ids) == documented


@pytest.mark.parametrize("name", [n for n in DIALOGS])
def test_mistral_ids_equal_mistral_common(llama2_tokenizer, name):
    dialog = DIALOGS[name]
    assert get_template("mistral").encode(dialog, llama2_tokenizer) == mistral_common_v1_ids(llama2_tokenizer.sp, dialog)


def test_phi3_renders_as_phi35s_own_template():
    """The built-in phi-3 writes what microsoft/Phi-3.5-mini-instruct's template does, with its BOS/EOS
    (tests/data/templates; rendered by transformers in test_model_templates.py, by jinja2 here)."""
    from pathlib import Path

    source = (Path(__file__).parent / "data" / "templates" / "microsoft-Phi-3.5-mini-instruct.jinja").read_text(encoding="utf-8")
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    class Phi3Pieces:
        bos_id, eos_id = 1, 32000

        def piece(self, i):
            return {1: "<s>", 32000: "<|endoftext|>"}[i]

    for name, dialog in DIALOGS.items():
        for generation_prompt in (True, False):
            messages = dialog if generation_prompt else [*dialog, {"role": "assistant", "content": "Done."}]
            expected = env.from_string(source).render(messages=messages, add_generation_prompt=generation_prompt, eos_token="<|endoftext|>")
            assert get_template("phi-3").render(messages, generation_prompt, tokenizer=Phi3Pieces()) == expected, name
    empty_system = [{"role": "system", "content": ""}, {"role": "user", "content": "hi"}]
    assert get_template("phi-3").render(empty_system) == "<|user|>\nhi<|end|>\n<|assistant|>\n"


def test_a_phi3_vocabulary_without_a_template_gets_phi3(llama2_tokenizer):
    """Phi-3's vocabulary (LLaMA-2's plus <|endoftext|>, <|assistant|>, ..., <|end|>, <|user|>; ids
    32000-32010 of microsoft/Phi-3.5-mini-instruct's tokenizer.json) has zephyr's <|user|> as well."""

    class Phi3Vocabulary:
        kind = "sentencepiece"
        added = {"<|endoftext|>": 32000, "<|assistant|>": 32001, "<|system|>": 32006, "<|end|>": 32007, "<|user|>": 32010}

        def token_id(self, piece):
            return self.added.get(piece, llama2_tokenizer.token_id(piece))

    assert choose_template(None, None, Phi3Vocabulary()).name == "phi-3"
