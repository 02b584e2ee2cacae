"""Stop ids: every end-of-turn id a model declares, read from its files.

The expected ids are the models' own: the eos_token_id lists of meta-llama/Llama-3.1-8B-Instruct's
generation_config.json ([128001, 128008, 128009]), Qwen/Qwen2.5-7B-Instruct's ([151645, 151643]) and
microsoft/Phi-3.5-mini-instruct's ([32007, 32001, 32000]); a GGUF of them declares one EOS
(`tokenizer.ggml.eos_token_id`: 128009, 151645, 32000), and llama.cpp stops at the others by their text
(llama-vocab.cpp, `special_eog_ids`), as llamachat must.
"""

from __future__ import annotations

import json

import gguf
import pytest

from llamachat.checkpoints.gguf import GGUFFile, read_config
from llamachat.checkpoints.hf import read_hf_config

# id -> text of the special tokens that matter, at their real ids in each vocabulary
LLAMA3 = {128000: "<|begin_of_text|>", 128001: "<|end_of_text|>", 128006: "<|start_header_id|>", 128007: "<|end_header_id|>", 128008: "<|eom_id|>", 128009: "<|eot_id|>"}  # fmt: skip
QWEN2 = {151643: "<|endoftext|>", 151644: "<|im_start|>", 151645: "<|im_end|>", 151665: "<tool_call>"}
PHI3 = {0: "<unk>", 1: "<s>", 2: "</s>", 32000: "<|endoftext|>", 32001: "<|assistant|>", 32006: "<|system|>", 32007: "<|end|>", 32010: "<|user|>"}  # fmt: skip


def vocab_gguf(path, specials: dict[int, str], size: int, eos: int, bos: int | None = None):
    """A GGUF with a llama header and a vocabulary (no tensors: read_config needs none)."""
    w = gguf.GGUFWriter(str(path), "llama")
    for add, value in ((w.add_block_count, 1), (w.add_embedding_length, 8), (w.add_feed_forward_length, 16), (w.add_head_count, 2)):
        add(value)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([specials.get(i, f"tok{i}") for i in range(size)])
    w.add_eos_token_id(eos)
    if bos is not None:
        w.add_bos_token_id(bos)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize(
    ("specials", "size", "eos", "expected"),
    [
        (LLAMA3, 128256, 128009, {128001, 128008, 128009}),
        (QWEN2, 151936, 151645, {151645, 151643}),
        (PHI3, 32064, 32000, {32007, 32000, 2}),  # </s> too, on llama.cpp's list (Phi-3's SentencePiece EOS)
    ],
    ids=["llama-3.1", "qwen2.5", "phi-3"],
)
def test_gguf_end_of_turn_ids(tmp_path, specials, size, eos, expected):
    config = read_config(GGUFFile(vocab_gguf(tmp_path / "m.gguf", specials, size, eos)))
    assert set(config.eot_ids) == expected
    assert config.eot_ids[0] == eos  # the declared one first


def hf_dir(tmp_path, eos, generation_eos=None):
    config = {"model_type": "llama", "hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1}
    config |= {"intermediate_size": 16, "vocab_size": 128256, "eos_token_id": eos}
    (tmp_path / "config.json").write_text(json.dumps(config))
    if generation_eos is not None:
        (tmp_path / "generation_config.json").write_text(json.dumps({"bos_token_id": 128000, "eos_token_id": generation_eos}))
    return tmp_path / "config.json"


def test_hf_generation_config_eos_list(tmp_path):
    config, _ = read_hf_config(hf_dir(tmp_path, 128009, [128001, 128008, 128009]))  # Llama-3.1-Instruct's files
    assert config.eot_ids == (128009, 128001, 128008)
    assert config.eos_id == 128009


def test_hf_bad_generation_config_is_one_line(tmp_path):
    from llamachat.errors import LlamachatError

    with pytest.raises(LlamachatError, match=r"eos_token_id must be an id or a list of ids, got \[128009, 'x'\]"):
        read_hf_config(hf_dir(tmp_path, 128009, "x"))


def test_default_model_stops_at_every_end_of_turn(default_model):
    """SmolLM2's GGUF declares EOS <|im_end|> (2); llama.cpp also stops at <|endoftext|> (0)."""
    assert default_model.stop_ids == (2, 0)


def test_converted_folders_keep_every_end_of_turn(tmp_path, default_model_path):
    """convert wrote config.json's eos_token_id as the EOS alone, so the HF and MLX outputs of the
    default model ran on past <|endoftext|> (0). transformers reads the list back for generate."""
    from transformers import AutoConfig, GenerationConfig

    from llamachat.convert import convert

    for to in ("hf", "mlx"):
        dst = convert(default_model_path, tmp_path / to, to)
        assert read_hf_config(dst / "config.json")[0].eot_ids == (2, 0)
        assert GenerationConfig.from_model_config(AutoConfig.from_pretrained(dst)).eos_token_id == [2, 0]
