"""Encode speed of Meta's Llama-3 tokenizer.model: llamachat's tiktoken tokenizer against the same ranks
handed to the `tokenizers` library (transformers' TikTokenConverter), in one run.

    .venv/bin/python benchmarks/llama3_tokenizer.py [--kb 100] [--reps 5]

The text is the project's own Markdown (README.md, docs/*.md) repeated up to `kb` kilobytes: English
prose, code, tables and a little Unicode. Best of `reps` encodes of the whole text, single-threaded
(both libraries encode one string on one thread). Both must give the same ids, or the run stops.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from llamachat.tokenizer import llama3_special_tokens, load_tokenizer

ROOT = Path(__file__).parents[1]
MODEL = ROOT / "tests" / "data" / "llama3-tokenizer.model"


def sample_text(kb: int) -> str:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    text = "\n\n".join(p.read_text(encoding="utf-8") for p in docs)
    return (text * (kb * 1000 // len(text.encode()) + 1)).encode()[: kb * 1000].decode("utf-8", "ignore")


def best_seconds(fn, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kb", type=int, default=100)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--model", type=Path, default=MODEL)
    args = p.parse_args()
    from transformers.convert_slow_tokenizer import TikTokenConverter

    text = sample_text(args.kb)
    ours = load_tokenizer(args.model)
    peer = TikTokenConverter(vocab_file=str(args.model), extra_special_tokens=llama3_special_tokens()).converted()
    peer.encode_special_tokens = True
    ids = ours.encode(text)
    if peer.encode(text, add_special_tokens=False).ids != ids:
        raise SystemExit("the two tokenizers disagree on the text; no timing")
    rows = {
        "llamachat (tiktoken, Meta's chunking)": best_seconds(lambda: ours.encode(text), args.reps),
        "tiktoken encode_ordinary, no chunking": best_seconds(lambda: ours.encoding.encode_ordinary(text), args.reps),
        "tokenizers BPE (TikTokenConverter)": best_seconds(lambda: peer.encode(text, add_special_tokens=False), args.reps),
    }
    size = len(text.encode())
    print(f"{size:,} bytes, {len(text):,} characters, {len(ids):,} tokens; best of {args.reps}")
    base = rows["llamachat (tiktoken, Meta's chunking)"]
    for name, s in rows.items():
        print(f"{name:40} {s * 1e3:8.1f} ms  {size / s / 1e6:6.2f} MB/s  {s / base:5.2f}x llamachat's time")


if __name__ == "__main__":
    main()
