"""docs/benchmarks.md's table "What `--tp N` needs per rank": `llamachat info CONFIG --tp N
--bandwidth 3350 --json` (an H100 SXM's 3.35 TB/s) for LLaMA-2 7B/13B/70B and Llama-3.1 8B/70B at
TP = 1, 2, 4, 8, printed as Markdown. Arithmetic from config.json alone, not a measurement.

    .venv/bin/python benchmarks/tp_info_table.py
"""

from __future__ import annotations

import json
import subprocess
import sys

MODELS = {
    "LLaMA-2-7B": "benchmarks/configs/Llama-2-7b-hf/config.json",
    "LLaMA-2-13B": "benchmarks/configs/Llama-2-13b-hf/config.json",
    "LLaMA-2-70B": "benchmarks/configs/Llama-2-70b-hf/config.json",
    "Llama-3.1-8B": "tests/data/arch-configs/Llama-3.1-8B/config.json",
    "Llama-3.1-70B": "benchmarks/configs/Llama-3.1-70B/config.json",
}
WORLDS = (1, 2, 4, 8)
H100_GB_S = "3350"
FORMATS = ("fp16/bf16", "Q4_0")


def info(path: str, world: int) -> dict:
    cmd = [sys.executable, "-m", "llamachat", "info", path, "--tp", str(world), "--bandwidth", H100_GB_S, "--json"]
    return json.loads(subprocess.run(cmd, capture_output=True, check=True).stdout)["tp"]


def row(name: str, world: int, t: dict) -> str:
    cells = [name, str(world)]
    for fmt in FORMATS:
        m = t["memory_per_rank"][fmt]
        bound = m["tok_s_bound"]
        cells += [f"{m['GiB']:,.1f}", f"{m['decode_ceiling_tok_s']:,.0f}", f"{bound['NVLink 4']:,.0f}", f"{bound['100 GbE']:,.0f}"]
    ms = {link: a["seconds_per_token"] * 1e3 for link, a in t["allreduce"].items()}
    cells += [f"{t['kv_bytes_per_token_fp16_per_rank'] / 1024:,.0f}", f"{ms['NVLink 4']:.2f}", f"{ms['100 GbE']:.1f}"]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    print(
        "| model | TP | bf16 GiB/rank | bf16 HBM ceiling | bf16 + NVLink | bf16 + 100 GbE "
        "| Q4_0 GiB/rank | Q4_0 HBM ceiling | Q4_0 + NVLink | Q4_0 + 100 GbE "
        "| KV KiB/token/rank | all-reduce ms/token NVLink | all-reduce ms/token 100 GbE |"
    )
    print("|" + "---|" * 13)
    for name, path in MODELS.items():
        for world in WORLDS:
            print(row(name, world, info(path, world)))


if __name__ == "__main__":
    main()
