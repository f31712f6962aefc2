"""The README quotes only what the reference results say (ppap.tools.readme)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ppap.tools import readme

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "results" / "reference"


def test_readme_is_true_to_the_reference_results():
    problems = readme.check((REPO / "README.md").read_text(), REFERENCE)
    assert not problems, "\n".join(problems)


def test_readme_has_checked_results():
    text = (REPO / "README.md").read_text()
    assert text.count("<!-- ref: ") >= 20  # the findings quote the tables through checked references
    assert "<!-- generated: table1.csv " in text and "<!-- generated: table1_trainings.csv " in text
    assert text.count("<!-- results:begin -->") >= 2  # Table 1's findings and the full study's


@pytest.fixture
def reference(tmp_path):
    (tmp_path / "t.csv").write_text("method,accuracy,fid\nppap,0.5134,8.27\noff_the_shelf,0.2061,14.1\n")
    (tmp_path / "g.json").write_text('{"noisy": {"accuracy": [0.99, 0.55]}}')
    (tmp_path / "t.md").write_text("| a |\n")
    return tmp_path


def test_checker_accepts_true_numbers_and_expressions(reference):
    text = ("<!-- results:begin -->\nPPAP 0.513<!-- ref: t.csv[method=ppap].accuracy --> at FID "
            "8.3<!-- ref: t.csv[method=ppap].fid -->, a gain of +0.31<!-- ref: t.csv[method=ppap].accuracy - "
            "t.csv[method=off_the_shelf].accuracy -->; clean 99%<!-- ref: g.json:noisy.accuracy[0] -->; "
            "scale 7.5<!-- ref: none -->.\n<!-- generated: t.md -->\n| a |\n<!-- /generated -->\n"
            "<!-- results:end -->\n")
    assert readme.check(text, reference) == []


@pytest.mark.parametrize("text, problem", [
    ("PPAP 0.514<!-- ref: t.csv[method=ppap].accuracy -->", "README says 0.514"),
    ("PPAP 0.5<!-- ref: t.csv[method=nope].accuracy -->", "selects 0 rows"),
    ("PPAP 0.5<!-- ref: t.csv[method=ppap].nope -->", "no column"),
    ("<!-- generated: t.md -->\n| b |\n<!-- /generated -->", "differs from the file"),
    ("<!-- results:begin -->\nPPAP reaches 0.51 now.\n<!-- results:end -->", "unchecked number 0.51"),
    # a range's dash is not a minus sign: 0.2-0.6 quotes 0.6, not -0.6
    ("from 0.206<!-- ref: t.csv[method=off_the_shelf].accuracy -->-0.6<!-- ref: t.csv[method=ppap].accuracy -->",
     "README says 0.6 but"),
])
def test_checker_catches_drift(reference, text, problem):
    problems = readme.check(text, reference)
    assert any(problem in p for p in problems), problems


def test_update_rewrites_generated_blocks(reference):
    text = "x\n<!-- generated: t.md -->\nold\n<!-- /generated -->\ny"
    assert readme.update(text, reference) == "x\n<!-- generated: t.md -->\n| a |\n<!-- /generated -->\ny"


def test_generated_columns_of_a_csv(reference):
    text = "<!-- generated: t.csv columns=method,accuracy -->\nstale\n<!-- /generated -->"
    updated = readme.update(text, reference)
    assert "| method | accuracy |" in updated and "| ppap | 0.513 |" in updated
    assert readme.check(updated, reference) == []
    assert any("differs" in p for p in readme.check(text, reference))
