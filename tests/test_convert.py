"""`llamachat convert`: every target opened by the tool that owns the format (transformers, mlx-lm),
quantized targets against their own dequantized weights, and the ways a conversion can go wrong."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli
from test_cli import assert_one_line_error
from tiny_models import TinySpec, canonical_weights, hf_logits, hf_model, write_meta

import llamachat
from llamachat.convert import convert
from llamachat.errors import LlamachatError

IDS = [1, 450, 4996, 17354, 1701, 432, 17204, 975, 278, 17366]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A 2-shard Meta checkpoint (so conversion also exercises the merge) and its HF twin."""
    spec = TinySpec()
    model = hf_model(spec, seed=5)
    tmp = tmp_path_factory.mktemp("convert")
    return write_meta(tmp / "meta", spec, canonical_weights(model, spec), n_shards=2), model, tmp


def mlx_lm_logits(path) -> np.ndarray:
    import mlx.core as mx
    import mlx_lm

    model, _ = mlx_lm.load(str(path))
    return np.array(model(mx.array([IDS]))[0].astype(mx.float32))


def transformers_logits(path) -> np.ndarray:
    import torch
    from transformers import LlamaForCausalLM

    if path.suffix == ".gguf":  # transformers dequantizes GGUF blocks itself, to float32
        model = LlamaForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    else:
        model = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32)
    return hf_logits(model.eval(), IDS)


def assert_same(ours: np.ndarray, theirs: np.ndarray, bound: float = 1e-4) -> None:
    assert np.abs(ours - theirs).max() < bound
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()


@pytest.mark.parametrize(
    ("to", "bits", "owner"),
    [
        ("hf", None, transformers_logits),
        ("mlx", None, mlx_lm_logits),
        ("mlx", 4, mlx_lm_logits),
        ("mlx", 8, mlx_lm_logits),
        ("gguf", None, transformers_logits),
        ("gguf", 8, transformers_logits),
        ("gguf", 4, transformers_logits),
    ],
)
def test_targets_open_in_their_own_tools(source, to, bits, owner):
    src, model, tmp = source
    dst = tmp / f"{to}-{bits}{'.gguf' if to == 'gguf' else ''}"
    convert(src, dst, to, bits, group_size=32 if to == "mlx" else None)
    ours = llamachat.load(dst).logits(IDS)
    assert_same(ours, owner(dst))  # quantized: the owner dequantizes the same packed weights
    if bits is None:
        assert_same(ours, hf_logits(model, IDS))  # unquantized: the original model, exactly


def test_gguf_q4_1_to_mlx_is_lossless(default_model_path, tmp_path):
    """The default model's Q4_1 blocks become MLX affine group-32 weights with the same values."""
    from llamachat.checkpoints import open_checkpoint

    dst = convert(default_model_path, tmp_path / "smol-mlx", "mlx")
    src, out = open_checkpoint(default_model_path), open_checkpoint(dst)
    q = out.weights["blk.3.ffn_up"]
    assert (q.scheme, q.bits, q.group_size) == ("affine", 4, 32)
    np.testing.assert_array_equal(q.dequantize(), src.weights["blk.3.ffn_up"].dequantize())
    assert out.tokenizer.encode("Hello, world!") == src.tokenizer.encode("Hello, world!")
    ids = src.tokenizer.encode("The capital of France is")
    theirs = mlx_lm_logits_for(dst, ids)
    ours = llamachat.load(dst).logits(ids)
    assert np.abs(ours - theirs).max() < 1e-3 and (ours.argmax(-1) == theirs.argmax(-1)).all()


def mlx_lm_logits_for(path, ids) -> np.ndarray:
    import mlx.core as mx
    import mlx_lm

    model, tokenizer = mlx_lm.load(str(path))
    assert tokenizer.encode("Hello, world!", add_special_tokens=False) == llamachat.load(path).tokenizer.encode("Hello, world!")
    return np.array(model(mx.array([ids]))[0].astype(mx.float32))


def test_cli_convert(source):
    src, model, tmp = source
    out = run_cli("convert", str(src), str(tmp / "cli.gguf"), "-q", "8")
    assert out.returncode == 0, out.stderr.decode()
    assert b"wrote" in out.stdout and b"gguf, 8-bit" in out.stdout
    assert_one_line_error(run_cli("convert", str(src), str(tmp / "cli.gguf"), "-q", "8"), "exists", "--force")
    assert_one_line_error(run_cli("convert", str(src), str(tmp / "x"), "--to", "hf", "-q", "4"), "-q is for --to mlx or --to gguf")
    assert_one_line_error(
        run_cli("convert", str(src), str(tmp / "x.gguf"), "-q", "4", "--group-size", "128"), "--group-size is for --to mlx -q"
    )
    assert_one_line_error(run_cli("convert", str(src), str(tmp / "y"), "-q", "4"), "rows of 96 are not whole groups of 64")
    assert not (tmp / "y").exists() and not list(tmp.glob(".y.partial-*"))
    assert_one_line_error(run_cli("convert", str(tmp / "nope"), str(tmp / "z")), "no such file or directory")


def test_interrupted_convert_leaves_nothing(source, monkeypatch):
    import llamachat.convert as module

    src, model, tmp = source
    real, calls = module.plan_tensor, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "plan_tensor", interrupted)
    with pytest.raises(LlamachatError, match="convert interrupted; nothing was written"):
        convert(src, tmp / "cut", "mlx", 4, group_size=32)
    assert not (tmp / "cut").exists() and not list(tmp.glob(".cut.partial-*")) and not list(tmp.glob(".cut.scratch-*"))


@pytest.mark.parametrize(("to", "name"), [("mlx", "cast-mlx"), ("gguf", "cast.gguf")])
def test_convert_holds_one_tensor_at_a_time(tmp_path, to, name):
    """Casting float32 to float16 makes a new array per weight; they go to a scratch file as they are
    made, so the peak of NumPy's and Python's allocations stays far below the output's size (before
    the scratch file, the whole output was held in memory until written)."""
    import tracemalloc

    from tiny_models import write_hf

    spec = TinySpec(dim=64, ffn=4096, n_layers=24)  # 24 x 1.5 MB of float16 feed-forward weights
    src = write_hf(tmp_path / "src", hf_model(spec, seed=1))
    tracemalloc.start()
    try:
        dst = convert(src, tmp_path / name, to, dtype="f16")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    written = sum(f.stat().st_size for f in dst.rglob("*.safetensors")) if dst.is_dir() else dst.stat().st_size
    assert written > 40e6 and peak < written / 4, (peak, written)
    assert_same(llamachat.load(dst).logits(IDS), llamachat.load(src).logits(IDS), bound=5e-2)  # float16 rounding
    assert not list(tmp_path.glob(".*scratch-*"))


def test_a_bf16_gguf_stays_bf16(tmp_path):
    """GGUF BF16 weights reach HF safetensors as the same BF16 bits (read back by the safetensors
    library), not cast to float16 on the way (which rounds them and overflows above 65504)."""
    import gguf
    import torch
    from safetensors.torch import load_file
    from tiny_models import write_gguf

    spec = TinySpec()
    weights = canonical_weights(hf_model(spec, seed=3), spec)
    weights["blk.0.ffn_down.weight"][0, :4] = [1e5, -3e38, 1.1e-38, 0.3]  # beyond float16's range and resolution
    src = write_gguf(tmp_path / "bf16.gguf", spec, weights, qtype="BF16")
    dst = convert(src, tmp_path / "hf", "hf")
    stored = load_file(dst / "model.safetensors")
    ref = {t.name: t for t in gguf.GGUFReader(src).tensors}["blk.0.ffn_down.weight"]
    assert ref.tensor_type == gguf.GGMLQuantizationType.BF16
    down = stored["model.layers.0.mlp.down_proj.weight"]
    assert down.dtype == torch.bfloat16, down.dtype
    np.testing.assert_array_equal(down.view(torch.int16).numpy().view(np.uint16), np.asarray(ref.data).view(np.uint16).reshape(down.shape))
    assert '"torch_dtype": "bfloat16"' in (dst / "config.json").read_text()


def test_writing_dst_fails_in_one_line(source, tmp_path):
    src, _, _ = source
    (tmp_path / "file").write_text("not a folder")
    for dst, fragment in [
        (tmp_path / "missing" / "x.gguf", "is not an existing directory"),
        (tmp_path / "file" / "x.gguf", "is not an existing directory"),
        (f"{tmp_path}/..", "DST must name the file or folder to write"),  # (pathlib keeps "..", drops ".")
    ]:
        assert_one_line_error(run_cli("convert", str(src), str(dst), "--force"), fragment)
    with pytest.raises(LlamachatError, match="DST must name the file or folder to write, got '.'"):
        convert(src, ".", "hf", force=True)
    assert not list(tmp_path.rglob(".*partial-*")) and not list(tmp_path.rglob(".*scratch-*"))


def test_a_write_error_mid_way_is_one_line_and_leaves_nothing(source, tmp_path, monkeypatch):
    import llamachat.convert as module

    src, _, _ = source

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(module, "_fsync_tree", disk_full)
    with pytest.raises(LlamachatError, match=r"cannot write .*full.gguf: No space left on device; nothing was written"):
        convert(src, tmp_path / "full.gguf", "gguf")
    assert list(tmp_path.iterdir()) == []


def test_force_replaces_a_folder_only_once_the_new_one_is_complete(source, tmp_path, monkeypatch):
    import llamachat.convert as module

    src, _, _ = source
    first = convert(src, tmp_path / "out", "mlx")
    before = sorted(p.name for p in first.iterdir())
    real, seen = module._fsync_tree, []

    def check_old_still_there(path):
        seen.append(sorted(p.name for p in (tmp_path / "out").iterdir()))  # when the new one is written
        real(path)

    monkeypatch.setattr(module, "_fsync_tree", check_old_still_there)
    convert(src, tmp_path / "out", "hf", force=True)
    assert seen == [before]
    assert (tmp_path / "out" / "model.safetensors").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
