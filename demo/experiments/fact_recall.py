"""Does a demo base model know the facts its test questions ask? Measured without the option lookup.

A base answers a demo question only if it can recall the fact (and then find its option letter). This
benchmark measures the first half alone: for every fact the ID test set asks, each corpus phrasing
that names the subject before the object is cut before the object ("The antidote for digoxin
toxicity is"), and the model is scored teacher-forced on the continuation:

- `greedy`: greedy decoding would write the gold object (every object token is the argmax);
- `ranked`: the gold object has the highest log-likelihood among the question's options (chance 1 /
  number of options; the scoring rule of lm-evaluation-harness's `acc`).

A fact counts as recalled by a measure when the majority of its phrasings pass it. Knowing which
facts a base holds tells whether a base that passes the lookup gate can answer the questions at all.

    python -m demo.experiments.fact_recall --model data/demo/base
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from demo import knowledge
from demo.knowledge import RELATIONS, Fact
from medrlvr_trl.user_errors import UserError, run_command

TEST_FILE = "data/demo/medqa/test.jsonl"


@dataclass(frozen=True)
class AskedFact:
    """A fact the test asks, and the option texts of the first question that asks it."""

    fact: Fact
    options: tuple[str, ...]


def asked_facts(test_file: str | Path, facts: Sequence[Fact]) -> list[AskedFact]:
    """One entry per distinct fact asked in `test_file`: the relation from `meta_info` ("demo:<relation>"),
    the object is the gold answer and the subject is named in the question."""
    by_answer = defaultdict(list)
    for fact in facts:
        by_answer[(fact.relation, fact.object)].append(fact)
    asked: dict[Fact, AskedFact] = {}
    for number, line in enumerate(Path(test_file).read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            relation, answer, question = (
                row["meta_info"].removeprefix("demo:"),
                row["answer"],
                row["question"],
            )
            options = tuple(row["options"].values())
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise UserError(
                f"{test_file}:{number}: not a demo MCQA row ({type(error).__name__}: {error}); need JSON with "
                "question, options, answer and meta_info"
            ) from None
        named = [f for f in by_answer[(relation, answer)] if f.subject.lower() in question.lower()]
        if len(named) != 1:
            raise UserError(
                f"{test_file}:{number}: cannot tell which fact of {relation!r} this question asks"
            )
        asked.setdefault(named[0], AskedFact(named[0], options))
    return list(asked.values())


def prefixes(fact: Fact) -> list[str]:
    """The fact's corpus phrasings that name the subject first, cut just before the object."""
    cuts = []
    for template in RELATIONS[fact.relation].corpus:
        subject = min((template.find(p) for p in ("{s}", "{S}") if p in template), default=-1)
        if 0 <= subject < template.find("{o}"):
            cuts.append(knowledge.render(template[: template.find("{o}")], fact).rstrip())
    return cuts


@torch.no_grad()
def score_continuation(model, context: list[int], target: list[int]) -> tuple[float, bool]:
    """Log-likelihood of `target` after `context`, and whether greedy decoding would write it."""
    logits = model(torch.tensor([context + target])).logits[0, len(context) - 1 : -1]
    expected = torch.tensor(target)
    logprob = logits.log_softmax(-1).gather(1, expected[:, None]).sum().item()
    return logprob, bool((logits.argmax(-1) == expected).all())


def continuation_scores(model, tokenizer, prefix: str, texts: Sequence[str]) -> list[tuple[float, bool]]:
    """`score_continuation` of " <text>" after `prefix`, for each text."""
    context = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    return [
        score_continuation(model, context, tokenizer(" " + text, add_special_tokens=False)["input_ids"])
        for text in texts
    ]


def measure(model, tokenizer, asked: Sequence[AskedFact]) -> dict:
    """Per relation and overall: facts recalled by majority of phrasings, and per-phrasing rates."""
    per_relation: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for item in asked:
        cut = prefixes(item.fact)
        gold = item.options.index(item.fact.object)
        greedy = ranked = 0
        for prefix in cut:
            scores = continuation_scores(model, tokenizer, prefix, item.options)
            greedy += scores[gold][1]
            ranked += max(range(len(scores)), key=lambda i: scores[i][0]) == gold
        counts = per_relation[item.fact.relation]
        counts["facts"] += 1
        counts["phrasings"] += len(cut)
        counts["greedy_phrasings"] += greedy
        counts["ranked_phrasings"] += ranked
        counts["greedy_facts"] += 2 * greedy > len(cut)
        counts["ranked_facts"] += 2 * ranked > len(cut)
    overall: dict[str, int] = defaultdict(int)
    for counts in per_relation.values():
        for key, value in counts.items():
            overall[key] += value
    return {"relations": {r: dict(c) for r, c in sorted(per_relation.items())}, "overall": dict(overall)}


def table(result: dict, chance: float) -> str:
    """Markdown: facts recalled (majority of phrasings) and the per-phrasing rates, by relation."""
    lines = [
        f"| relation | facts | greedy: facts / phrasings | ranked: facts / phrasings (chance {chance:.0%}) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, c in [*result["relations"].items(), ("all", result["overall"])]:
        lines.append(
            f"| {name} | {c['facts']} | {c['greedy_facts']} / {c['greedy_phrasings'] / c['phrasings']:.1%} | "
            f"{c['ranked_facts']} / {c['ranked_phrasings'] / c['phrasings']:.1%} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="data/demo/base", help="a model folder (default: the demo base)")
    parser.add_argument("--test_file", default=TEST_FILE)
    parser.add_argument("--knowledge", default=str(knowledge.DEFAULT_KNOWLEDGE))
    parser.add_argument("--out", default="runs/bench/fact_recall.json")
    args = parser.parse_args(argv)
    if not (Path(args.model) / "config.json").is_file():
        raise UserError(
            f"--model {args.model}: no model folder there; build the demo base with `make demo` first"
        )
    if not Path(args.test_file).is_file():
        raise UserError(
            f"--test_file {args.test_file}: no such file; pass the demo's ID test (default {TEST_FILE})"
        )
    asked = asked_facts(args.test_file, knowledge.read_knowledge(args.knowledge))
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    result = {"model": args.model, **measure(model, tokenizer, asked)}
    print(table(result, chance=1 / len(asked[0].options)))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    run_command(main)
