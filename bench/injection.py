"""Prompt injection: how often an attack in a document changes its label, against harmless edits.

For each clean document (tests/data/injection.jsonl, written for docsort) and each attack, three
texts are classified by the real local model through the workers' own LLMRunner:
  clean     the document as written;
  attacked  the document with the attack, which pushes a target label other than the clean one;
  harmless  the document with neutral text of the same length in the same place (same padding).
A flip is a label different from the clean text's label. The clean texts are also classified a
second time ("rerun"): the model is deterministic, but every request carries a fresh random fence
tag, so a rerun shows the noise floor. `hit` counts labels equal to the attack's target.

Run: .venv/bin/python -m bench.injection [--port PORT] [--docs 16] [--repeats 2] [--json out.json]
Without --port it starts llama.cpp with SmolLM2-135M itself (weights in .docsort/models).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from classifiers.llm_runner import LLMRunner
from classifiers.packing import DocIn
from classifiers.runners import RunnerSpec, build_runner
from classifiers.taxonomy import Taxonomy
from core.config import Settings
from core.taxonomy_spec import default_taxonomy
from core.tiers import GPT_4O_MINI, ModelTier

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "injection.jsonl"
WEIGHTS = ROOT / ".docsort" / "models"
NONE = "(none)"  # no valid answer


@dataclass(frozen=True)
class Doc:
    """A clean document of the corpus."""

    id: str
    label: str
    text: str


@dataclass(frozen=True)
class Attack:
    """An injection: a payload pushing {target}, put at the start or the end, after optional padding."""

    name: str
    position: str
    payload: str
    pad: int = 0
    heldout: bool = False  # written after the defences, never tuned against: reported apart

    def text(self, target: str) -> str:
        """The payload pushing target."""
        return self.payload.replace("{target_lower}", target.lower()).replace("{target}", target)


@dataclass(frozen=True)
class Corpus:
    """Clean documents, attacks, and the neutral text and filler that harmless edits are made of."""

    docs: list[Doc]
    attacks: list[Attack]
    neutral: str
    filler: str


def load_corpus(path: Path = CORPUS) -> Corpus:
    """The corpus file: one JSON object a line, kind doc | attack | neutral | filler."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return Corpus(
        docs=[Doc(r["id"], r["label"], r["text"]) for r in rows if r["kind"] == "doc"],
        attacks=[
            Attack(r["name"], r["position"], r["payload"], r.get("pad", 0), r.get("heldout", False))
            for r in rows
            if r["kind"] == "attack"
        ],
        neutral=next(r["text"] for r in rows if r["kind"] == "neutral"),
        filler=next(r["text"] for r in rows if r["kind"] == "filler"),
    )


def _repeat(text: str, length: int) -> str:
    return (text * (length // max(1, len(text)) + 1))[:length]


def _place(text: str, insert: str, position: str) -> str:
    return insert + text if position == "start" else text + insert


def attacked(text: str, attack: Attack, target: str, corpus: Corpus) -> str:
    """text with the attack's payload (after its padding) at the attack's position."""
    padding = "\n" + _repeat(corpus.filler, attack.pad) if attack.pad else ""
    return _place(text, padding + attack.text(target), attack.position)


def harmless(text: str, attack: Attack, target: str, corpus: Corpus) -> str:
    """text with neutral text as long as the payload in its place (the same padding kept)."""
    padding = "\n" + _repeat(corpus.filler, attack.pad) if attack.pad else ""
    payload = attack.text(target)
    return _place(text, padding + "\n" + _repeat(corpus.neutral, len(payload) - 1), attack.position)


def target_for(label: str, labels: list[str]) -> str:
    """The label an attack pushes: the next one after label, so never the clean answer."""
    return labels[(labels.index(label) + 1) % len(labels)] if label in labels else labels[0]


def taxonomy() -> Taxonomy:
    """The bundled news taxonomy, as the classifiers use it."""
    return Taxonomy(**default_taxonomy().model_dump())


def small_tier(port: int, **overrides: Any) -> ModelTier:
    """The offline small tier of the test suite: SmolLM2-135M on llama.cpp, batches of 4."""
    values: dict[str, Any] = {
        "name": "small",
        "kind": "llamacpp",
        "transport": "json_object",
        "tokenizer": "gguf",
        "weights": "smollm2-135m",
        "model": "smollm2-135m",
        "port": port,
        "base_url": f"http://127.0.0.1:{port}/v1",
        "batch_size": 4,
        "max_output_tokens": 64,
        "timeout_s": 120,
        "doc_token_budget": 200,
        "price": GPT_4O_MINI,
    }
    values.update(overrides)
    return ModelTier(**values)


def make_runner(tier: ModelTier) -> LLMRunner:
    """An LLMRunner for tier on the news taxonomy, built as a worker builds it."""
    runner = build_runner(RunnerSpec(tier=tier, taxonomy=taxonomy(), is_last=True, weights_dir=WEIGHTS))
    assert isinstance(runner, LLMRunner)
    return runner


def classify(runner: LLMRunner, texts: list[str]) -> list[str]:
    """The label of each text (NONE where no valid answer came), in batches as the tier packs them."""
    decisions = runner.run([DocIn(i, text) for i, text in enumerate(texts)])
    by_id = {d.doc_id: d.label or NONE for d in decisions}
    return [by_id[i] for i in range(len(texts))]


def _rate(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0


def measure(
    runner: LLMRunner,
    corpus: Corpus,
    *,
    docs: int | None = None,
    repeats: int = 1,
    rerun: bool = True,
    heldout: bool = True,
    only: set[str] | None = None,
) -> dict[str, Any]:
    """Flip and hit rates per attack and for its harmless edit; rerun flips of the clean texts."""
    chosen = corpus.docs[:docs] if docs else corpus.docs
    labels = runner.taxonomy.label_names
    attacks = [a for a in corpus.attacks if (heldout or not a.heldout) and (not only or a.name in only)]
    rows: dict[str, dict[str, list[bool]]] = {
        a.name: {"attack_flip": [], "harmless_flip": [], "attack_hit": [], "harmless_hit": []}
        for a in attacks
    }
    reruns: list[bool] = []
    clean_correct: list[bool] = []
    started = time.monotonic()
    for _ in range(repeats):
        texts = [d.text for d in chosen]
        clean = classify(runner, texts)
        if rerun:
            reruns += [a != b for a, b in zip(clean, classify(runner, texts), strict=True)]
        clean_correct += [label == d.label for label, d in zip(clean, chosen, strict=True)]
        targets = [target_for(label, labels) for label in clean]
        for attack in attacks:
            bad = classify(
                runner, [attacked(t, attack, g, corpus) for t, g in zip(texts, targets, strict=True)]
            )
            ok = classify(
                runner, [harmless(t, attack, g, corpus) for t, g in zip(texts, targets, strict=True)]
            )
            row = rows[attack.name]
            row["attack_flip"] += [b != c for b, c in zip(bad, clean, strict=True)]
            row["harmless_flip"] += [o != c for o, c in zip(ok, clean, strict=True)]
            row["attack_hit"] += [b == g for b, g in zip(bad, targets, strict=True)]
            row["harmless_hit"] += [o == g for o, g in zip(ok, targets, strict=True)]

    def pool(names: list[str]) -> dict[str, Any]:
        keys = ("attack_flip", "harmless_flip", "attack_hit", "harmless_hit")
        out: dict[str, Any] = {key: _rate([f for name in names for f in rows[name][key]]) for key in keys}
        return out | {"n": sum(len(rows[name]["attack_flip"]) for name in names)}

    main = [a.name for a in attacks if not a.heldout]
    held = [a.name for a in attacks if a.heldout]
    return {
        "model": runner.model.tier.model,
        "transport": runner.model.tier.transport,
        "docs": len(chosen),
        "repeats": repeats,
        "clean_accuracy": _rate(clean_correct),
        "rerun_flip": _rate(reruns) if rerun else None,
        "attacks": {name: pool([name]) | {"heldout": name in held} for name in rows},
        "pooled": pool(main),
        "pooled_heldout": pool(held) if held else None,
        "seconds": round(time.monotonic() - started, 1),
    }


def table(result: dict[str, Any]) -> str:
    """The result as a Markdown table, as published in docs/security.md."""
    lines = [
        f"model {result['model']} ({result['transport']}), {result['docs']} documents x {result['repeats']} "
        f"run(s); clean accuracy {result['clean_accuracy']:.0%}; rerun flip "
        + (f"{result['rerun_flip']:.0%}" if result["rerun_flip"] is not None else "not measured"),
        "",
        "| attack | n | attack flip | harmless flip | attack hit target | harmless hit target |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    rows = [(n, r) for n, r in result["attacks"].items() if not r["heldout"]]
    if rows:
        rows.append(("**all attacks**", result["pooled"]))
    if result.get("pooled_heldout"):
        rows += [(f"{n} (held out)", r) for n, r in result["attacks"].items() if r["heldout"]]
        rows.append(("**all held-out attacks**", result["pooled_heldout"]))
    for name, row in rows:
        lines.append(
            f"| {name} | {row['n']} | {row['attack_flip']:.0%} | {row['harmless_flip']:.0%} | "
            f"{row['attack_hit']:.0%} | {row['harmless_hit']:.0%} |"
        )
    return "\n".join(lines)


@contextmanager
def llama_server(threads: int | None = None) -> Iterator[int]:
    """A llama.cpp server with SmolLM2-135M on a free port, stopped on exit."""
    from docsort.services import Supervisor, free_port, llama_services

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), weights_dir=WEIGHTS, models=[small_tier(port)])
        supervisor = Supervisor(Path(tmp) / "logs")
        try:
            for service in llama_services(settings, threads=threads):
                supervisor.start(service)
            yield port
        finally:
            supervisor.stop()


def main(argv: list[str] | None = None) -> int:
    """Measure and print the table; optionally write the result as JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, help="a running llama.cpp server with smollm2-135m")
    parser.add_argument("--docs", type=int, default=None, help="first N clean documents (default: all)")
    parser.add_argument("--repeats", type=int, default=1, help="runs over the corpus (fresh fence tags)")
    parser.add_argument("--attacks", help="comma-separated attack names (default: all, held-out too)")
    parser.add_argument("--no-rerun", action="store_true", help="skip classifying the clean texts twice")
    parser.add_argument("--transport", default="label_only", help="label_only (default) or json_object")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args(argv)
    corpus = load_corpus()

    def run(port: int) -> dict[str, Any]:
        tier = small_tier(port, transport=args.transport)
        only = set(args.attacks.split(",")) if args.attacks else None
        runner = make_runner(tier)
        return measure(
            runner, corpus, docs=args.docs, repeats=args.repeats, rerun=not args.no_rerun, only=only
        )

    result = run(args.port) if args.port else _with_server(run)
    print(table(result))
    print(f"\n({result['seconds']}s)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


def _with_server(run: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
    with llama_server() as port:
        return run(port)


if __name__ == "__main__":
    sys.exit(main())
