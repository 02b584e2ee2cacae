"""A random-weight Hugging Face checkpoint of a real model's shape, for speed measurements only.

    .venv/bin/python benchmarks/random_model.py {1b,8b} DIR
    .venv/bin/llamachat convert DIR DIR.Q4_0.gguf -q 4        # then any backend can run the file

The weights are random (normal, std 0.02, norms 1; windows of one pool of 128M draws): fine for speed, meaningless for text. Shapes:
`1b` is Llama-3.2-1B's (16 layers, dim 2048, 32/8 heads, FFN 8192, 128,256-token vocabulary, tied
embedding), `8b` Llama-3.1-8B's (32 layers, dim 4096, 32/8 heads, FFN 14336, untied). Both keep
rope theta 500000 but not Llama-3.1's long-context RoPE scaling, and say a context of 8192.

The file is bf16 safetensors (16 GB for 8b), written one tensor at a time straight to disk, so
nothing near the model's size is ever in memory. The tokenizer is the LLaMA-2 SentencePiece model
(tests/data) padded with placeholder pieces to the 128,256 rows of the embedding: llama.cpp checks
that the vocabulary and the embedding agree, and the benchmarks feed token ids, never text.
"""

from __future__ import annotations

import argparse
import json
import struct
from pathlib import Path

import numpy as np

SHAPES = {
    "1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "tie_word_embeddings": True},
    "8b": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "tie_word_embeddings": False},
}
VOCAB = 128256
LLAMA2_VOCAB = Path(__file__).parents[1] / "tests" / "data" / "llama2-vocab.gguf"


def config(shape: str) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": SHAPES[shape]["hidden_size"] // 32,
        "vocab_size": VOCAB,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "bfloat16",
        **SHAPES[shape],
    }


def tensor_shapes(c: dict) -> dict[str, tuple[int, ...]]:
    dim, ffn, kv = c["hidden_size"], c["intermediate_size"], c["num_key_value_heads"] * c["head_dim"]
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (VOCAB, dim), "model.norm.weight": (dim,)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (dim,),
            p + "self_attn.q_proj.weight": (dim, dim),
            p + "self_attn.k_proj.weight": (kv, dim),
            p + "self_attn.v_proj.weight": (kv, dim),
            p + "self_attn.o_proj.weight": (dim, dim),
            p + "post_attention_layernorm.weight": (dim,),
            p + "mlp.gate_proj.weight": (ffn, dim),
            p + "mlp.up_proj.weight": (ffn, dim),
            p + "mlp.down_proj.weight": (dim, ffn),
        }
    if not c["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (VOCAB, dim)
    return shapes


def bf16_bits(values: np.ndarray) -> np.ndarray:
    return (values.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)  # truncation: random data needs no rounding


def write_safetensors(path: Path, shapes: dict[str, tuple[int, ...]], seed: int = 0, chunk: int = 1 << 26) -> None:
    """The safetensors layout (8-byte header length, JSON header, raw little-endian data), streamed."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        nbytes = 2 * int(np.prod(shape))
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    rng = np.random.default_rng(seed)
    pool = bf16_bits(rng.standard_normal(2 * chunk, dtype=np.float32) * 0.02)  # drawn once: 8e9 draws would take the CPU for minutes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for shape in shapes.values():
            n = int(np.prod(shape))
            if len(shape) == 1:
                f.write(bf16_bits(np.ones(n, np.float32)).tobytes())
                continue
            for start in range(0, n, chunk):
                at = int(rng.integers(0, chunk))  # each chunk a different window of the pool
                f.write(pool[at : at + min(chunk, n - start)].tobytes())


def write_tokenizer(directory: Path) -> None:
    """LLaMA-2's SentencePiece model with placeholder pieces up to VOCAB."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    from llamachat.tokenizer import load_tokenizer

    load_tokenizer(LLAMA2_VOCAB).save(directory)
    proto = pb.ModelProto()
    proto.ParseFromString((directory / "tokenizer.model").read_bytes())
    for i in range(VOCAB - len(proto.pieces)):
        proto.pieces.add(piece=f"<random-{i}>", score=-1e6, type=pb.ModelProto.SentencePiece.USER_DEFINED)
    (directory / "tokenizer.model").write_bytes(proto.SerializeToString())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("shape", choices=sorted(SHAPES))
    p.add_argument("out", type=Path)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    c = config(args.shape)
    (args.out / "config.json").write_text(json.dumps(c, indent=1))
    write_tokenizer(args.out)
    write_safetensors(args.out / "model.safetensors", tensor_shapes(c))
    print(f"wrote {args.out} (random weights of the {args.shape} shape)")


if __name__ == "__main__":
    main()
