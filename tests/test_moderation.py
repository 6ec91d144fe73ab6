"""Moderation assist: spans and guidelines, the labelled set's precision and recall, the command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dispatcher.agencies.moderation import GUIDELINES, RULES, moderate_request, moderate_text
from dispatcher.cli import app
from tests.factories import request_payload
from tests.moderation_examples.measure import load_examples, measure, table

#: The floor each rule must keep on the labelled set (the figures themselves go in the README).
MIN_PRECISION = 0.9
MIN_RECALL = 0.8


def test_labelled_set_is_large_enough_and_covers_every_rule() -> None:
    examples = load_examples()
    assert len(examples) >= 200
    for rule in RULES:
        assert sum(rule in e.expected for e in examples) >= 15, rule
    assert sum(not e.expected for e in examples) >= 80  # good requests too


def test_precision_and_recall_per_rule(capsys: pytest.CaptureFixture[str]) -> None:
    examples = load_examples()
    scores, _ = measure(examples)
    print(table(scores, len(examples)))  # shown with -s; the README quotes it
    for rule, score in scores.items():
        assert score.precision >= MIN_PRECISION, (rule, score)
        assert score.recall >= MIN_RECALL, (rule, score)


def test_flags_carry_the_exact_span_and_the_guideline() -> None:
    details = ("Break-in at 4410 N Broadway Ave; victim Maria Lopez. Call 303-555-0199. "
               "Suspect a white male, 6 ft, 30s.")
    flags = moderate_text(details, incident_type="burglary", investigator_name="Det. Jo Park",
                          investigator_phone="+1 303 555 0100")
    found = {(f.rule, f.text) for f in flags}
    assert found == {("street_address", "4410 N Broadway Ave"), ("personal_name", "Maria Lopez"),
                     ("phone_number", "303-555-0199"), ("vague_suspect", "Suspect a white male, 6 ft, 30s.")}
    for flag in flags:
        assert details[flag.start:flag.end] == flag.text and flag.field == "details"
        assert flag.guideline == GUIDELINES[flag.rule]


def test_the_investigators_own_phone_and_name_are_not_flagged() -> None:
    details = "Contact Det. Jo Park at (303) 555-0100 or Jo Park's desk."
    assert moderate_text(details, incident_type="theft", investigator_name="Det. Jo Park",
                         investigator_phone="+1 303 555 0100") == []


def test_a_missing_person_may_be_named_and_placed() -> None:
    details = "Maria Lopez, 82, walked away from 4410 N Broadway Ave wearing a pink robe and slippers."
    assert moderate_text(details, incident_type="missing_person") == []
    assert {f.rule for f in moderate_text(details, incident_type="burglary")} == {"street_address",
                                                                                  "personal_name"}


def test_vague_incident_type_is_flagged_on_its_field() -> None:
    flags = moderate_request({**request_payload(), "incident_type": "suspicious_activity"})
    assert [(f.rule, f.field, f.text) for f in flags] == [
        ("non_specific_incident", "incident_type", "suspicious_activity")]


def test_moderate_command_advises_and_never_blocks(tmp_path: Path) -> None:
    path = tmp_path / "request.json"
    path.write_text(json.dumps({**request_payload(), "details": "Call 720-555-0142 about 88 Elm Ave."}))
    result = CliRunner().invoke(app, ["moderate", str(path), "--json"])
    assert result.exit_code == 0, result.output
    flags = json.loads(result.output)["flags"]
    assert [(f["rule"], f["text"]) for f in flags] == [("street_address", "88 Elm Ave"),
                                                      ("phone_number", "720-555-0142")]
    clean = tmp_path / "clean.json"
    clean.write_text(json.dumps(request_payload()))
    result = CliRunner().invoke(app, ["moderate", str(clean)])
    assert result.exit_code == 0 and "no flags" in result.output
