"""Issue 17's families (Mistral, Qwen2, Qwen3, Phi-3) against transformers: tiny random models saved as
HF folders (tests/tiny_models.py: ARCH_SPECS), read by llamachat, logits within 1e-4 of the
transformers model itself, prefill and cached decode steps, per backend; mlx-lm itself loading what
`llamachat convert --to mlx` writes of them; and the reader's bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli
from test_cli import assert_one_line_error
from tiny_models import ARCH_SPECS, DATA, cached_logits, hf_from_mlx_lm, hf_logits, hf_model, write_hf

import llamachat
from llamachat.checkpoints import read_config_only
from llamachat.costs import param_counts
from llamachat.errors import LlamachatError
from llamachat.info import report

IDS = [1, 450, 4996, 17354, 1701, 432, 17204, 975, 278, 17366, 11203, 29889] * 3  # longer than every window
# Longrope (phi3-longrope, phi3-longrope-short) runs in the regimes where llamachat's rule (long factors
# for a cache of more than the original context: 64 > 16 here, 64 <= 128 for -short) and transformers'
# (long for a forward whose positions pass it: every call below reaches past 16, none past 128) agree.
RUNNABLE = sorted(ARCH_SPECS)
BACKENDS = {"numpy": {}, "numpy-plain": {"plain": True}, "torch": {"device": "cpu"}, "mlx": {"device": "cpu"}}


@pytest.fixture(scope="module", params=RUNNABLE)
def family(request, tmp_path_factory):
    spec = ARCH_SPECS[request.param]
    hf = hf_model(spec, seed=11)
    path = write_hf(tmp_path_factory.mktemp(request.param) / "hf", hf)
    return path, hf_logits(hf, IDS), spec, hf


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_prefill_matches_transformers(family, backend):
    path, reference, *_ = family
    model = llamachat.load(path, backend.split("-")[0], **BACKENDS[backend])
    logits = model.runner.forward(IDS, model.runner.new_cache(64), all_logits=True)
    assert np.abs(logits - reference).max() < 1e-4


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_cached_decode_matches_transformers(family, backend):
    """A prefill, a short chunk on the warm cache, then one token at a time: each step's logits are
    transformers' at that position (the window slides past the prefill's first tokens)."""
    path, reference, *_ = family
    runner = llamachat.load(path, backend.split("-")[0], **BACKENDS[backend]).runner
    assert np.abs(cached_logits(runner, IDS[:30], 20, chunk=3) - reference[20:30]).max() < 1e-4


@pytest.mark.parametrize("bits", [None, 4])
def test_mlx_lm_loads_what_convert_writes(family, bits):
    """`llamachat convert SRC DST --to mlx [-q 4]` (the real command) of each family's HF folder,
    opened by mlx-lm itself (`mlx_lm.load`: model and tokenizer; `load_model` for -q) and by llamachat's
    numpy, torch and mlx backends (prefill and cached decode): the logits are
    within 1e-4 of transformers on the same weights, the source model's or, quantized, the written
    ones as mx.dequantize unpacks them (and those within half a step of the source's). mlx-lm runs these models without a sliding window (its qwen2 and
    phi3 have none; its llama, which mistral maps to, needs a full-attention layer), as it runs
    Mistral-7B-v0.1 and Phi-3-mini: with a window, only the positions it cannot reach are compared,
    and llamachat's own reading of the folder is checked at every position."""
    import mlx.core as mx
    import mlx_lm
    from mlx_lm.utils import load_model

    path, reference, spec, source = family
    out = path.parent / f"mlx-{bits or 'float'}"
    quantize = ["-q", str(bits), "--group-size", "32"] if bits else []  # the FFN's 96 columns: groups of 32
    done = run_cli("convert", str(path), str(out), "--to", "mlx", *quantize, "--force")
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    if bits:
        written = hf_from_mlx_lm(out, spec)
        assert_quantized_from(written, source, bits, 32)
        reference = hf_logits(written, IDS)
    # the tokenizer once per family (mlx_lm.load, ~1 s); the quantized folder's is the same files
    model = mlx_lm.load(str(out))[0] if bits is None else load_model(out)[0]
    theirs = np.array(model(mx.array([IDS]))[0].astype(mx.float32))
    reach = spec.sliding_window or len(IDS)
    if spec.longrope_original is None or len(IDS) > spec.longrope_original:  # mlx-lm's phi3 always runs the long factors
        assert np.abs(theirs[:reach] - reference[:reach]).max() < 1e-4
    for backend in ("numpy", "torch", "mlx"):  # llamachat's own reading of the folder: prefill and cached decode
        runner = llamachat.load(out, backend, **BACKENDS[backend]).runner
        assert np.abs(runner.forward(IDS, runner.new_cache(64), all_logits=True) - reference).max() < 1e-4, backend
        assert np.abs(cached_logits(runner, IDS[:30], 20, chunk=3) - reference[20:30]).max() < 1e-4, backend


def assert_quantized_from(written, source, bits: int, group: int) -> None:
    """Every weight of `written` is `source`'s, within half a min-max quantization step of its group
    (a weight in the wrong place, or wrongly permuted, is off by about its own size); 1-D ones exact."""
    theirs = source.state_dict()
    for name, w in written.state_dict().items():
        w, src = w.numpy(), theirs[name].numpy()
        if w.ndim == 1:
            np.testing.assert_array_equal(w, src, err_msg=name)
            continue
        groups = src.reshape(*src.shape[:-1], -1, group)
        half_step = (groups.max(-1, keepdims=True) - groups.min(-1, keepdims=True)) / ((1 << bits) - 1) / 2
        error = np.abs(w.reshape(groups.shape) - groups)
        assert (error <= half_step * 1.001 + 1e-6).all(), name


def _config(tmp_path, **changes):
    path = write_hf(tmp_path / "hf", hf_model(ARCH_SPECS["qwen2"], seed=1))
    cfg = json.loads((path / "config.json").read_text()) | changes
    (path / "config.json").write_text(json.dumps(cfg))
    return path


BAD_CONFIGS = [
    ({"model_type": "gemma"}, "'gemma' model; llamachat runs these architectures: llama, mistral, qwen2, qwen3, phi3"),
    ({"model_type": "llama"}, "declares no q/k/v biases"),  # the file's biases contradict a llama config
    ({"model_type": "qwen3"}, "declares no q/k/v biases"),
    ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6}}, "RoPE scaling 'yarn' is not supported"),
    ({"use_sliding_window": True, "sliding_window": 8, "max_window_layers": 1}, "only some layers"),
]


@pytest.mark.parametrize(("changes", "words"), BAD_CONFIGS)
def test_bad_configs_refused_in_one_line(tmp_path, changes, words):
    path = _config(tmp_path, **changes)
    with pytest.raises(LlamachatError) as e:
        llamachat.load(path, "numpy")
    assert words in str(e.value) and "\n" not in str(e.value) and str(path) in str(e.value)


@pytest.mark.parametrize(("changes", "words"), BAD_CONFIGS[:2])
def test_bad_configs_exit_2_through_the_cli(tmp_path, changes, words):
    """The real command: one line naming the folder and what is accepted, exit 2, no traceback."""
    path = _config(tmp_path, **changes)
    assert_one_line_error(run_cli("--model", str(path), "--backend", "numpy", "-p", "hi"), str(path), words)


def test_gguf_of_an_unknown_architecture_exits_2_through_the_cli(default_model_path, tmp_path):
    """The default model relabelled 'gemma' (the arch and its keys renamed, same length): refused."""
    from llamachat.checkpoints.gguf import GGUFFile

    data, header = default_model_path.read_bytes(), GGUFFile(default_model_path).data_offset
    bad = tmp_path / "gemma.gguf"
    bad.write_bytes(data[:header].replace(b"llama", b"gemma") + data[header:])
    result = run_cli("--model", str(bad), "--backend", "numpy", "-p", "hi")
    assert_one_line_error(result, str(bad), "a 'gemma' model; llamachat runs the architectures llama, qwen2, qwen3, phi3")


def _phi3_config(tmp_path, **rope_changes):
    """A phi3-longrope folder whose config.json's rope_parameters are changed as given."""
    path = write_hf(tmp_path / "hf", hf_model(ARCH_SPECS["phi3-longrope"], seed=1))
    cfg = json.loads((path / "config.json").read_text())
    cfg["rope_parameters"] |= rope_changes
    (path / "config.json").write_text(json.dumps(cfg))
    return path


BAD_LONGROPE = [
    ({"long_factor": [1.0] * 5}, "longrope's long_factor must be a list of 8 numbers (head_dim / 2), got 5 values"),
    ({"short_factor": None}, "longrope's short_factor must be a list of 8 numbers (head_dim / 2), got None"),
    ({"rope_type": "dynamic", "factor": 2.0}, "RoPE scaling 'dynamic' is not supported for 'phi3' (supported: default, linear, llama3; longrope for phi3)"),
    ({"rope_type": "yarn", "factor": 4.0}, "RoPE scaling 'yarn' is not supported for 'phi3' (supported: default, linear, llama3; longrope for phi3)"),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "words"), BAD_LONGROPE)
def test_bad_longrope_exits_2_through_the_cli(tmp_path, changes, words):
    """A factor list of the wrong length (not head_dim / 2), or a RoPE type llamachat does not run: one
    line naming the folder and what is accepted, exit 2."""
    path = _phi3_config(tmp_path, **changes)
    assert_one_line_error(run_cli("--model", str(path), "--backend", "numpy", "-p", "hi"), str(path), words)


def test_su_is_longrope_and_the_top_level_original_context_wins(tmp_path):
    """As Phi3Config reads them: "su" (Phi-3-mini-128k's first name) is longrope, and config.json's
    top-level original_max_position_embeddings overrides rope_parameters' own copy."""
    path = _phi3_config(tmp_path, rope_type="su", original_max_position_embeddings=999)
    scaling = read_config_only(path).config.rope_scaling
    assert (scaling.kind, scaling.original_context, scaling.factor) == ("longrope", 16, 256 / 16)
    assert scaling.attention_factor == pytest.approx(np.sqrt(2))  # sqrt(1 + ln 16 / ln 16)


def test_longrope_outside_phi3_is_refused(tmp_path):
    path = _config(tmp_path, rope_parameters={"rope_type": "longrope", "long_factor": [1.0] * 8, "short_factor": [1.0] * 8})
    with pytest.raises(LlamachatError, match="RoPE scaling 'longrope' is not supported for 'qwen2'"):
        llamachat.load(path, "numpy")


CONFIGS = DATA / "arch-configs"  # the published config.json of each model (see tests/data/README.md)


@pytest.mark.parametrize("model", sorted(p.name for p in CONFIGS.iterdir() if p.is_dir()))
def test_info_counts_match_transformers(model):
    """`info`'s count from config.json alone equals transformers' own count of the model built from the
    same file on the meta device (no memory): biases and q/k norms included, a tied head once."""
    import torch
    import transformers

    directory = CONFIGS / model
    counted = read_config_only(directory).config
    hf_config = transformers.AutoConfig.from_pretrained(directory)
    with torch.device("meta"):
        built = transformers.AutoModelForCausalLM.from_config(hf_config)
    assert param_counts(counted).total == sum(p.numel() for p in built.parameters())
    assert report(counted)["architecture"]["arch"] == hf_config.model_type


def test_info_on_phi35_mini_is_transformers_longrope():
    """Phi-3.5-mini exists only in its 128k longrope form: info's factor, original context and
    attention factor from its published config.json are those transformers' own longrope computes."""
    import transformers
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    directory = CONFIGS / "Phi-3.5-mini-instruct"
    hf_config = transformers.AutoConfig.from_pretrained(directory)
    inv_freq, attention = ROPE_INIT_FUNCTIONS["longrope"](hf_config, "cpu")
    rope = report(read_config_only(directory).config)["architecture"]["rope_scaling"]
    assert (rope["rope_type"], rope["original_max_position_embeddings"]) == ("longrope", 4096)
    assert rope["factor"] == hf_config.max_position_embeddings / 4096 == 32
    assert rope["attention_factor"] == pytest.approx(attention, rel=1e-12)
    assert len(inv_freq) == len(hf_config.rope_parameters["long_factor"]) == 48  # head_dim 96 / 2


@pytest.mark.parametrize("name", ["qwen2-swa", "qwen3", "phi3", "mistral-swa", "phi3-longrope", "phi3-longrope-short"])
def test_convert_to_hf_is_read_by_transformers(tmp_path, name):
    """convert --to hf writes the family's own model_type, biases, norms and fused Phi-3 weights:
    transformers loads the folder and gives the source model's logits (an outside reader)."""
    import transformers

    from llamachat.convert import convert

    spec = ARCH_SPECS[name]
    hf = hf_model(spec, seed=11)
    out = convert(write_hf(tmp_path / "src", hf), tmp_path / "out", "hf", dtype="f32")
    assert json.loads((out / "config.json").read_text())["model_type"] == spec.arch
    again = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").float().eval()
    assert np.abs(hf_logits(again, IDS) - hf_logits(hf, IDS)).max() < 1e-4


@pytest.mark.parametrize("bits", [None, 4])
def test_convert_to_mlx_longrope_is_read_by_mlx_lm(tmp_path, bits):
    """convert --to mlx writes longrope as mlx-lm's phi3 reads it (SuScaledRoPE: `type`, the factors,
    the top-level original context). mlx-lm always rotates with the long factors, so this is checked
    where every rule agrees on long: the 36 ids pass phi3-longrope's original context of 16. Float
    weights give transformers' logits; 4-bit ones give llamachat's own reading of the same folder."""
    import mlx.core as mx
    import mlx_lm

    from llamachat.convert import convert

    hf = hf_model(ARCH_SPECS["phi3-longrope"], seed=11)
    out = convert(write_hf(tmp_path / "src", hf), tmp_path / "out", "mlx", bits=bits, group_size=32 if bits else None, dtype="f32")
    model, _ = mlx_lm.load(str(out))
    theirs = np.array(model(mx.array([IDS]))[0].astype(mx.float32))
    if bits is None:
        assert np.abs(theirs - hf_logits(hf, IDS)).max() < 1e-4
    else:
        ours = llamachat.load(out, "mlx", device="cpu").logits(IDS)
        assert np.abs(theirs - ours).max() < 1e-3


def test_saved_longrope_cache_is_reused_only_on_its_side(tmp_path):
    """A longrope cache's keys are rotated with the factors of its side, so a chat saved with a context
    within the original one (short factors) and resumed with a larger one (long) is re-evaluated, not
    resumed on keys rotated the other way; on the same side the cache is reused."""
    from llamachat import transcript
    from llamachat.plugins import registry
    from llamachat.sampling import SamplerChain
    from llamachat.session import Session

    model = llamachat.load(write_hf(tmp_path / "hf", hf_model(ARCH_SPECS["phi3-longrope-short"], seed=3)), "numpy")
    chain = SamplerChain(registry().samplers, ["greedy"], seed=0)
    session = Session(model, chain, max_tokens=4, context=128)  # the original context: short factors
    session.ask("Hi")
    transcript.save(session, "lr")
    saved = transcript.read("lr")
    assert transcript.restore(Session(model, chain, max_tokens=4, context=100), saved).endswith("(no re-evaluation)")
    notice = transcript.restore(Session(model, chain, max_tokens=4, context=129), saved)
    assert notice.endswith("re-evaluated on the next turn (saved with a different rope)")


def test_info_describes_longrope(tmp_path):
    from llamachat.info import describe_rope_scaling

    path = _phi3_config(tmp_path)
    rope = report(read_config_only(path).config)["architecture"]["rope_scaling"]
    assert describe_rope_scaling(rope) == "longrope, factor 16 (attention 1.41421, original context 16)"
