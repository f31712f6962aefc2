"""The library without Snakemake: the README's "From Python" example runs as written (on the smoke
run, moved to another folder, from a third working directory), and the method's sampling and
guidance modules import none of the study's tools."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

EXAMPLE = re.compile(r"<!-- library-example:begin -->\n```python\n(?P<code>.*?)```\n<!-- library-example:end -->", re.S)
RUN_LINE = re.compile(r'^run, guide_set, preset = "path/to/run", "(?P<set>\w+)", "default"', re.M)


def readme_example() -> str:
    match = EXAMPLE.search((REPO / "README.md").read_text())
    assert match, "README.md has no library example between its markers"
    return match.group("code")


def test_the_example_names_the_run_and_guide_set_in_one_line():
    code = readme_example()
    assert RUN_LINE.search(code), code
    assert len(code.strip().splitlines()) <= 16  # about ten lines of work, imports aside


@pytest.mark.slow
def test_the_readme_example_draws_guided_samples_from_a_moved_run(smoke_run, tmp_path):
    import yaml

    ppap_set = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())["methods"]["ppap"]
    moved = tmp_path / "moved_run"
    # the set's own files move; the shipped base model and guide stay in the package, where its manifest names them
    shutil.copytree(smoke_run / f"results/models/guides/{ppap_set}", moved / f"results/models/guides/{ppap_set}")
    code = RUN_LINE.sub(f'run, guide_set, preset = "{moved}", "{ppap_set}", "smoke"', readme_example())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("(16, 8, 8, 1) uint8 [3 3 3 3]"), done.stdout


def test_sampling_and_guidance_import_no_study_tool():
    code = ("import sys; import ppap.sampling, ppap.generate, ppap.guidance, ppap.guidance.training_free, "
            "ppap.experts.sets, ppap.specs, ppap.vocab; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('snakemake', 'yaml', 'pandas', 'papermill', "
            "'harness', 'locks') or m.startswith(('ppap.study', 'ppap.tools'))))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


def test_no_library_module_imports_the_study_or_the_harness():
    library = [path for path in (REPO / "ppap").rglob("*.py") if path.parts[-2] not in ("study", "tools")]
    offenders = []
    for path in library:
        for line in path.read_text().splitlines():
            if re.match(r"\s*(from|import) (ppap\.study|ppap\.tools|snakemake|harness|locks)\b", line):
                offenders.append(f"{path.relative_to(REPO)}: {line.strip()}")
    assert offenders == []


def test_the_output_paths_the_docs_quote_are_the_workflows():
    """docs/study.md's list of outputs, placeholders and all, is what ppap.study.paths spells."""
    from ppap.study import paths

    text = (REPO / "docs" / "study.md").read_text()
    block = text[text.index("- Outputs (every path"):text.index("- Guides that are not trained sets")]
    quoted = set(re.findall(r"`(results/[^`]+)`", block))
    spelled = {paths.real_data("digits"), paths.DIFFUSION, paths.GUIDE, paths.EVALUATOR,
               paths.expert("<set>", "<i>"), paths.manifest("<set>"), paths.samples("<guide>", "<sampling>", "<k>"),
               paths.grid("<guide>", "<sampling>"), paths.compute("<guide>", "<sampling>"),
               paths.metrics("<guide>", "<sampling>"), paths.table("table1"), paths.table("table1", "md")}
    assert quoted == spelled, (quoted - spelled, spelled - quoted)
