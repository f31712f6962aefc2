"""The README and the docs quote only what the reference results say (ppap.tools.readme)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ppap.tools import readme

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "results" / "reference"
PAGES = readme.pages(REPO)
DOCS = [page for page in PAGES if page.parent.name == "docs"]


def _text(name: str) -> str:
    return (REPO / name).read_text()


def test_the_command_line_checks_the_readme_and_every_docs_page(monkeypatch, capsys):
    assert PAGES[0] == REPO / "README.md"
    assert sorted(DOCS) == sorted((REPO / "docs").glob("*.md")) and len(DOCS) >= 8
    monkeypatch.chdir(REPO)
    assert readme.main([]) == 0  # python -m ppap.tools.readme, in check mode
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.endswith(": OK")] == [
        f"{page.relative_to(REPO).as_posix()}: OK" for page in PAGES]


@pytest.mark.parametrize("page", PAGES, ids=[page.relative_to(REPO).as_posix() for page in PAGES])
def test_page_is_true_to_the_reference_results(page):
    problems = readme.check_page(page, REFERENCE)
    assert not problems, "\n".join(problems)


def test_readme_is_a_front_door():
    text = _text("README.md")
    assert len(text.splitlines()) < 250
    assert text.count("<!-- generated: ") == 1 and "<!-- generated: table1.csv " in text  # one Table 1
    assert text.count("<!-- results:begin -->") >= 1 and text.count("<!-- ref: ") >= 20  # its findings, checked
    for page in DOCS:  # every docs page is one link away
        assert f"(docs/{page.name})" in text, page.name
    assert "## From Python" in text and "<!-- library-example:begin -->" in text


def test_the_docs_have_checked_results():
    texts = {page.name: page.read_text() for page in DOCS}
    everything = _text("README.md") + "".join(texts.values())
    assert everything.count("<!-- ref: ") >= 200  # the findings quote the tables through checked references
    assert everything.count("<!-- results:begin -->") >= 6
    assert "<!-- generated: table1_trainings.csv " in texts["results.md"]
    assert "<!-- generated: ablations/supervision.csv " in texts["results.md"]
    assert "<!-- generated: guidance_methods.csv " in texts["guidance-methods.md"]
    assert "<!-- generated: table_dense.md -->" in texts["dense.md"]
    for name, text in texts.items():  # a page that quotes results has a section where none can go unchecked
        quotes = text.count("<!-- ref: ") - text.count("<!-- ref: none -->")
        assert not quotes or "<!-- results:begin -->" in text, name


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


def test_links_of_a_page(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "figure.png").write_bytes(b"")
    page = tmp_path / "docs" / "page.md"
    (tmp_path / "docs" / "other.md").write_text("# Other page\n\n## The part (`x.yaml`)\n")
    page.write_text("# Page\n\n## Mine\n\n![f](../figure.png) [o](other.md#the-part-xyaml) [m](#mine) "
                    "[web](https://example.org/x.md) `[code](nowhere.md)`\n")
    assert readme.check_links(page.read_text(), page) == []
    page.write_text("![f](figure.png) [o](other.md#nope) [m](#nope) [gone](gone.md)\n")
    problems = readme.check_links(page.read_text(), page)
    assert len(problems) == 4, problems
    assert any("figure.png names nothing" in p for p in problems)
    assert any("has no heading #nope" in p for p in problems)


def test_command_line_checks_and_updates_every_page(tmp_path, reference, capsys):
    (tmp_path / "docs").mkdir()
    good = "PPAP 0.513<!-- ref: t.csv[method=ppap].accuracy -->\n<!-- generated: t.md -->\n| a |\n<!-- /generated -->\n"
    stale = "<!-- generated: t.md -->\nold\n<!-- /generated -->\n"
    (tmp_path / "README.md").write_text(good)
    (tmp_path / "docs" / "a.md").write_text(stale)
    (tmp_path / "docs" / "b.md").write_text("PPAP 0.9<!-- ref: t.csv[method=ppap].accuracy -->\n")
    pages = readme.pages(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in pages] == ["README.md", "docs/a.md", "docs/b.md"]
    args = [str(p) for p in pages] + ["--reference", str(reference)]
    assert readme.main(args) == 1
    out = capsys.readouterr().out
    assert "README.md: OK" in out and "a.md: generated block t.md differs" in out and "says 0.9 but" in out
    assert readme.main(args + ["--update"]) == 1  # b.md's number is still wrong; a.md is rewritten
    assert (tmp_path / "docs" / "a.md").read_text() == "<!-- generated: t.md -->\n| a |\n<!-- /generated -->\n"
    assert (tmp_path / "README.md").read_text() == good
    (tmp_path / "docs" / "b.md").write_text("PPAP 0.51<!-- ref: t.csv[method=ppap].accuracy -->\n")
    assert readme.main(args) == 0
    assert readme.main([str(tmp_path / "docs" / "missing.md"), "--reference", str(reference)]) == 1
