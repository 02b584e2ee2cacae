"""How often the default model's first answer to a short factual question is right, at the old
defaults and at the new ones (the model's own recommendation), with greedy decoding beside them.

    .venv/bin/python benchmarks/first_answer.py [--seeds 20] [--max-tokens 40] [--backend numpy]

Each question is asked as the first message of a fresh chat (the chat's own Session, template and
sampler chain), once per seed 0..seeds-1, replies of at most max-tokens tokens. An answer is right
when it contains the question's keyword, case-insensitive; a reply stops as soon as it does (what
follows cannot make it wrong), which saves most of the decoding on a busy machine. `--log FILE`
keeps each finished (setting, question) and a rerun skips those, so `--questions 2` ... `--questions 5`
can run side by side and a last run without it prints the whole table from the log.

- before: the chain and values the default profile used to hard-code (temperature 0.8, top_k 40,
  top_p 0.95, min_p 0.05; sampling.DEFAULT_CHAIN);
- after:  what `llamachat` with no flags now samples with (cli.build_chain over the shipped default
  profile and the default model: its model card's temperature 0.2, top_p 0.9, built-in values below);
- greedy: temperature 0, one answer per question (seed-independent).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import llamachat
from llamachat.checkpoints import open_checkpoint
from llamachat.cli import build_chain, chat_parser
from llamachat.default_model import default_model
from llamachat.plugins import registry
from llamachat.profiles import load_profile
from llamachat.sampling import DEFAULT_CHAIN, SamplerChain
from llamachat.session import Session

QUESTIONS = [
    ("What is the capital of France?", ("paris",)),
    ("How many legs does a spider have?", ("eight", "8")),
    ("What is the largest planet in the solar system?", ("jupiter",)),
    ("What colour is the sky on a clear day?", ("blue",)),
    ("Who wrote Romeo and Juliet?", ("shakespeare",)),
]
OLD_DEFAULTS = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05}  # profiles/default.toml before


def is_right(answer: str, keywords: tuple[str, ...]) -> bool:
    return any(k in answer.lower() for k in keywords)


def old_chain() -> SamplerChain:
    chain = SamplerChain(registry().samplers, DEFAULT_CHAIN)
    chain.update(OLD_DEFAULTS, source="the old default profile")
    return chain


def new_chain(checkpoint) -> SamplerChain:
    """The chain `llamachat` builds with no flags and the shipped default profile."""
    params = SamplerChain(registry().samplers, []).params
    return build_chain(chat_parser().parse_args([]), load_profile("default", params), "default", checkpoint)


class KeywordSeen(KeyboardInterrupt):
    """Ends a reply once it holds the keyword (Session keeps a reply cut short, as after Ctrl-C)."""


def first_answer(session: Session, question: str, keywords: tuple[str, ...] = ()) -> str:
    """The reply to `question` as a fresh chat's first message (the prompt's prefix stays cached),
    cut short once it contains one of `keywords`."""
    session.messages = []
    text = ""

    def watch(piece: str) -> None:
        nonlocal text
        seen = is_right(text, keywords)
        text += piece
        if not seen and is_right(text, keywords):  # once: Session may pass on a last piece after the cut
            raise KeywordSeen

    return session.ask(question, watch if keywords else None).text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--max-tokens", type=int, default=40)
    p.add_argument("--backend", default="numpy")
    p.add_argument("-t", "--threads", type=int, help="the backend's CPU threads (default: its own choice)")
    p.add_argument("--questions", help="only these questions, by number from 1, comma-separated (to run them in parallel with --log)")
    p.add_argument("--log", type=Path, help="JSON lines of finished (setting, question) answers; a rerun skips those")
    args = p.parse_args()
    done = {}
    if args.log and args.log.is_file():
        for line in args.log.read_text().splitlines():
            row = json.loads(line)
            if (row["seeds"], row["max_tokens"]) == (args.seeds, args.max_tokens):
                done[row["setting"], row["question"]] = row["answers"]
    checkpoint = open_checkpoint(default_model())
    model = llamachat.api.load_checkpoint(checkpoint, args.backend, threads=args.threads)
    chains = {"before": old_chain(), "after": new_chain(checkpoint)}
    for label, chain in chains.items():
        print(f"{label}: {chain.describe()}")
        for line in chain.provenance():
            print(f"    {line}")
    greedy = SamplerChain(registry().samplers, DEFAULT_CHAIN)
    greedy.set("temperature", 0)

    start = time.perf_counter()
    totals = dict.fromkeys(chains, 0)
    rows = []
    chosen = [QUESTIONS[int(n) - 1] for n in args.questions.split(",")] if args.questions else QUESTIONS

    def answers(label: str, chain: SamplerChain, question: str, keywords: tuple[str, ...], seeds: int) -> list[str]:
        """The first answers for seeds 0..seeds-1, from the log when it has them (then logged)."""
        if (label, question) in done:
            return done[label, question]
        session = Session(model, chain, max_tokens=args.max_tokens)
        found = []
        for seed in range(seeds):
            chain.seed(seed)
            found.append(first_answer(session, question, keywords))
        if args.log:
            row = {"setting": label, "question": question, "seeds": args.seeds, "max_tokens": args.max_tokens, "answers": found}
            with open(args.log, "a") as f:
                f.write(json.dumps(row) + "\n")
        return found

    for question, keywords in chosen:
        right = {}
        for label, chain in chains.items():
            got = answers(label, chain, question, keywords, args.seeds)
            right[label] = sum(is_right(a, keywords) for a in got)
            totals[label] += right[label]
            wrong = next((a for a in got if not is_right(a, keywords)), None)
            print(f"  {label:6} {question!r}: {right[label]}/{args.seeds} right" + (f"; e.g. wrong: {wrong!r}" if wrong else ""))
        answer = answers("greedy", greedy, question, (), 1)[0]  # the whole reply, not cut at the keyword
        mark = "right" if is_right(answer, keywords) else "wrong"
        print(f"  greedy {question!r}: {answer!r} ({mark})")
        rows.append((question, right["before"], right["after"], answer, mark))

    n = args.seeds * len(chosen)
    print(
        f"\n{n} sampled replies per setting, {args.max_tokens}-token limit, {args.backend} backend, {time.perf_counter() - start:.0f} s\n"
    )
    print("| question | before (temp 0.8) | after (model's defaults) | greedy's answer |")
    print("|---|---|---|---|")
    for question, before, after, answer, mark in rows:
        shown = " ".join(answer.split()).replace("|", "\\|")
        print(f"| {question} | {before}/{args.seeds} | {after}/{args.seeds} | {shown} ({mark}) |")
    print(
        f"| **all** | **{totals['before']}/{n} ({100 * totals['before'] / n:.0f}%)** | **{totals['after']}/{n} ({100 * totals['after'] / n:.0f}%)** | |"
    )


if __name__ == "__main__":
    main()
