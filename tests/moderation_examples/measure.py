"""Precision and recall of moderation assist per rule, on the labelled examples beside this file.

    python -m tests.moderation_examples.measure          # the table
    python -m tests.moderation_examples.measure --misses # and every example a rule got wrong
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from dispatcher.agencies.moderation import RULES, moderate_text

EXAMPLES = Path(__file__).with_name("examples.tsv")
INVESTIGATOR_NAME = "Det. Jo Park"
INVESTIGATOR_PHONE = "+1 303 555 0100"


@dataclass(frozen=True)
class Example:
    line: int
    expected: frozenset[str]
    incident_type: str
    details: str


@dataclass
class Score:
    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0

    @property
    def precision(self) -> float:
        flagged = self.true_positives + self.false_positives
        return self.true_positives / flagged if flagged else 1.0

    @property
    def recall(self) -> float:
        present = self.true_positives + self.false_negatives
        return self.true_positives / present if present else 1.0


def load_examples() -> list[Example]:
    examples = []
    for number, line in enumerate(EXAMPLES.read_text(encoding="utf-8").splitlines(), start=1):
        labels, incident_type, details = line.split("\t")
        expected = frozenset() if labels == "-" else frozenset(labels.split(","))
        unknown = expected - set(RULES)
        if unknown:
            raise ValueError(f"{EXAMPLES.name} line {number}: unknown rules {sorted(unknown)}")
        examples.append(Example(number, expected, incident_type, details))
    return examples


def flagged_rules(example: Example) -> frozenset[str]:
    flags = moderate_text(example.details, incident_type=example.incident_type,
                          investigator_name=INVESTIGATOR_NAME, investigator_phone=INVESTIGATOR_PHONE)
    return frozenset(flag.rule for flag in flags)


def measure(examples: list[Example]) -> tuple[dict[str, Score], list[tuple[Example, frozenset[str]]]]:
    """Scores per rule (an example counts once per rule) and the examples with any rule wrong."""
    scores = {rule: Score() for rule in RULES}
    misses = []
    for example in examples:
        found = flagged_rules(example)
        for rule in RULES:
            if rule in found and rule in example.expected:
                scores[rule].true_positives += 1
            elif rule in found:
                scores[rule].false_positives += 1
            elif rule in example.expected:
                scores[rule].false_negatives += 1
        if found != example.expected:
            misses.append((example, found))
    return scores, misses


def table(scores: dict[str, Score], total: int) -> str:
    lines = [f"{total} examples", "", "| rule | examples with it | flagged | precision | recall |",
             "|---|---:|---:|---:|---:|"]
    for rule, s in scores.items():
        lines.append(f"| `{rule}` | {s.true_positives + s.false_negatives} | {s.true_positives + s.false_positives} "
                     f"| {s.precision:.2f} | {s.recall:.2f} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    examples = load_examples()
    scores, misses = measure(examples)
    print(table(scores, len(examples)))
    if "--misses" in argv:
        for example, found in misses:
            print(f"line {example.line}: expected {sorted(example.expected)}, flagged {sorted(found)}: "
                  f"{example.details}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
