"""The GGUF reader against gguf's own GGUFReader and dequantizers."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from tiny_models import TinySpec, write_gguf

from llamachat.checkpoints import open_checkpoint
from llamachat.checkpoints.gguf import GGUFFile, read_config
from llamachat.errors import LlamachatError


def _contents(field):
    value = field.contents()
    return list(value) if isinstance(value, list) else value


def test_header_matches_gguf_reader(default_model_path):
    ours = GGUFFile(default_model_path)
    ref = gguf.GGUFReader(default_model_path)
    for name, field in ref.fields.items():
        if name.startswith("GGUF."):
            continue
        mine = ours.metadata[name]
        theirs = _contents(field)
        if isinstance(mine, np.ndarray):
            np.testing.assert_array_equal(mine, np.asarray(theirs), err_msg=name)
        else:
            assert mine == theirs, name
    assert set(ours.metadata) == {n for n in ref.fields if not n.startswith("GGUF.")}
    for t in ref.tensors:
        info = ours.tensors[t.name]
        assert info.shape == tuple(int(d) for d in reversed(t.shape)), t.name
        assert info.ggml_type == int(t.tensor_type)
        ours_data = ours.tensor(t.name)
        raw = ours_data.data if hasattr(ours_data, "scheme") else ours_data
        np.testing.assert_array_equal(raw, t.data, err_msg=t.name)


def test_default_model_config(default_model_path):
    c = read_config(GGUFFile(default_model_path))
    assert (c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn_dim, c.vocab_size) == (576, 30, 9, 3, 64, 1536, 49152)
    assert c.tied_embeddings and c.rope_theta == 100000.0 and c.context_length == 8192
    assert c.bos_id == 1 and c.eos_id == 2 and c.eot_ids == (2, 0)  # EOS <|im_end|>, and <|endoftext|> as llama.cpp stops at it
    assert c.norm_eps == pytest.approx(1e-5) and c.chat_template.startswith("{% for message in messages %}")


def _random_blocks(qtype: gguf.GGMLQuantizationType, rows: int, rng) -> np.ndarray:
    """Random bytes for a K-quant (gguf has no K-quant quantizer), with sane fp16 scales."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    data = rng.integers(0, 256, (rows, 2 * size), dtype=np.uint8)
    blocks = data.reshape(rows, 2, size)
    scale = rng.uniform(0.001, 0.05, (rows, 2, 2)).astype(np.float16).view(np.uint8)
    if qtype == gguf.GGMLQuantizationType.Q4_K:  # d and dmin lead the block
        blocks[..., :4] = scale.reshape(rows, 2, 4)
    else:  # Q6_K: d ends the block
        blocks[..., -2:] = scale[..., 0, :].reshape(rows, 2, 2)
    return data


@pytest.mark.parametrize("qtype", ["F16", "BF16", "Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q6_K"])
def test_tensor_dequantization_matches_gguf(tmp_path, qtype):
    rng = np.random.default_rng(1)
    q = gguf.GGMLQuantizationType[qtype]
    values = rng.standard_normal((8, 512)).astype(np.float32)
    w = gguf.GGUFWriter(str(tmp_path / "t.gguf"), "llama")
    if qtype == "F16":
        w.add_tensor("t", values.astype(np.float16))
    elif qtype in ("Q4_K", "Q6_K"):
        w.add_tensor("t", _random_blocks(q, 8, rng), raw_dtype=q)
    else:
        w.add_tensor("t", gguf.quants.quantize(values, q), raw_dtype=q)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    ours = GGUFFile(tmp_path / "t.gguf").tensor("t")
    ref = gguf.GGUFReader(tmp_path / "t.gguf").tensors[0]
    expected = gguf.quants.dequantize(ref.data, ref.tensor_type).reshape(8, 512) if qtype != "F16" else ref.data.astype(np.float32)
    got = ours.dequantize() if hasattr(ours, "dequantize") else ours.astype(np.float32)
    assert got.dtype == np.float32 and got.shape == (8, 512)
    np.testing.assert_array_equal(got, expected)
    if qtype in ("Q8_0", "Q4_1"):  # and the values are what was quantized, within the format's resolution
        assert np.abs(got - values).max() < (0.05 if qtype == "Q8_0" else 0.5)


def test_quantized_weights_stay_packed(default_model_path):
    ckpt = open_checkpoint(default_model_path)
    q = ckpt.weights["blk.0.attn_q"]
    assert q.scheme == "gguf:Q4_1" and q.shape == (576, 576) and q.data.dtype == np.uint8
    assert ckpt.weights["token_embd"].scheme == "gguf:Q8_0"
    assert isinstance(ckpt.weights["blk.0.attn_norm"], np.ndarray)


# -- bad input ---------------------------------------------------------------------------------


def test_truncated_file(tmp_path, default_model_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(default_model_path.read_bytes()[:5_000_000])
    with pytest.raises(LlamachatError, match="truncated"):
        open_checkpoint(cut)


def test_corrupt_header(tmp_path, default_model_path):
    bad = tmp_path / "bad.gguf"
    data = bytearray(default_model_path.read_bytes()[:4096])
    data[24:32] = (2**62).to_bytes(8, "little")  # the first key's length, absurd
    bad.write_bytes(bytes(data))
    with pytest.raises(LlamachatError, match="truncated or corrupt"):
        open_checkpoint(bad)


def test_not_gguf(tmp_path):
    (tmp_path / "x.gguf").write_bytes(b"not a model at all")
    with pytest.raises(LlamachatError, match="not a GGUF file"):
        open_checkpoint(tmp_path / "x.gguf")


def test_other_architecture(tmp_path):
    spec = TinySpec(n_layers=1)
    path = write_gguf(tmp_path / "gpt.gguf", spec, {"token_embd.weight": np.zeros((spec.vocab, spec.dim), np.float32)}, arch="gpt2")
    with pytest.raises(LlamachatError, match="'gpt2' model; llamachat runs the architectures llama, qwen2, qwen3, phi3"):
        open_checkpoint(path)


def test_missing_tensor(tmp_path):
    spec = TinySpec(n_layers=1)
    path = write_gguf(tmp_path / "m.gguf", spec, {"token_embd.weight": np.zeros((spec.vocab, spec.dim), np.float32)})
    with pytest.raises(LlamachatError, match="missing tensor"):
        open_checkpoint(path)


def test_directory_without_model(tmp_path):
    with pytest.raises(LlamachatError, match="no model in this directory"):
        open_checkpoint(tmp_path)


def test_missing_path(tmp_path):
    with pytest.raises(LlamachatError, match="no such file or directory"):
        open_checkpoint(tmp_path / "nope.gguf")
