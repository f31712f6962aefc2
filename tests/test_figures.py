"""Figures a newcomer reads first: sample grids (no blank cells, class rows, aligned panels) and
ablation plots (the factor on the x-axis, integer ticks, every dashed line named)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest

from ppap import data
from ppap.study import report

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def _samples(n: int, guided: bool, num_classes: int = 10):
    """n 2x2 grey images (pixel value 1 + index mod 250: no sample is black, the first 250 are
    distinct) and balanced targets in the order ppap.generate.balanced_labels gives (arange % K)."""
    images = (1 + np.arange(n) % 250).astype(np.uint8)[:, None, None, None].repeat(2, 1).repeat(2, 2)
    return images, (np.arange(n) % num_classes if guided else None)


def _cells(grid: np.ndarray, layout: dict) -> list[np.ndarray]:
    pad = layout["padding"]
    pitch_y = (grid.shape[0] + pad) // layout["rows"]
    pitch_x = (grid.shape[1] + pad) // layout["cols"]
    return [[grid[r * pitch_y: (r + 1) * pitch_y - pad, c * pitch_x: (c + 1) * pitch_x - pad]
             for c in range(layout["cols"])] for r in range(layout["rows"])]


@pytest.mark.parametrize("guided", [True, False])
def test_grid_cells_are_all_samples_and_rows_hold_their_class(tmp_path, guided):
    # 37 samples over 10 classes: classes 7-9 have 3 samples, the others 4. The old grid filled the
    # missing slots with black cells; now every row is as long as the rarest class allows.
    images, labels = _samples(37, guided)
    cells = data.class_rows(images, labels, per_class=10, num_classes=10)
    row_labels = list(range(10)) if guided else None
    data.save_sample_grid(tmp_path / "grid.png", cells, 10, row_labels, upscale=2, padding=1)
    grid, layout = data.load_sample_grid(tmp_path / "grid.png")
    assert layout == dict(rows=10, cols=3, padding=1, row_labels=None if not guided else [str(c) for c in range(10)])
    seen = []
    for r, row in enumerate(_cells(grid, layout)):
        for cell in row:
            assert cell.shape == (4, 4, 1) and len(np.unique(cell)) == 1   # one upscaled sample, no padding
            index = int(cell[0, 0, 0]) - 1
            assert 0 <= index < 37, "a cell that is not a sample"
            if guided:
                assert labels[index] == r, "a row holds another class"
            seen.append(index)
    assert len(set(seen)) == 30            # 10 rows x 3 distinct samples
    with pytest.raises(ValueError, match="whole rows"):
        data.image_grid(images[:7], nrow=3)    # a partial row is refused, not padded with blanks


def test_a_class_without_samples_is_an_error():
    images, labels = _samples(8, guided=True)   # classes 8 and 9 have none
    with pytest.raises(ValueError, match="target class 8"):
        data.class_rows(images, labels, per_class=10, num_classes=10)


@pytest.mark.parametrize("n", [40, 500])
def test_unguided_and_guided_grids_have_the_same_shape(tmp_path, n):
    shapes, layouts = {}, {}
    for name, guided in (("unguided", False), ("guided", True)):
        images, labels = _samples(n, guided)
        cells = data.class_rows(images, labels, per_class=10, num_classes=10)
        data.save_sample_grid(tmp_path / f"{name}.png", cells, 10, list(range(10)) if guided else None, upscale=4)
        grid, layouts[name] = data.load_sample_grid(tmp_path / f"{name}.png")
        shapes[name] = grid.shape
    assert shapes["unguided"] == shapes["guided"]
    assert (layouts["unguided"]["rows"], layouts["unguided"]["cols"]) == (10, min(10, n // 10))
    assert {k: v for k, v in layouts["unguided"].items() if k != "row_labels"} == \
        {k: v for k, v in layouts["guided"].items() if k != "row_labels"}


def test_sample_grid_figure_labels_class_rows_and_lines_panels_up(tmp_path):
    """Guided panels name each row's target class, the unguided one shows "—"; panels of other
    sizes (a 5-class guide, fewer samples) are cropped to the rows and columns all have."""
    grids, layouts = {}, {}
    for name, n, classes in (("unguided", 100, None), ("guided", 100, 10), ("five_classes", 40, 5)):
        images, labels = _samples(n, classes is not None, classes or 10)
        rows = 10 if classes is None else classes
        cells = data.class_rows(images, labels, per_class=10, num_classes=rows)
        path = tmp_path / f"{name}.png"
        data.save_sample_grid(path, cells, rows, None if classes is None else list(range(rows)), upscale=3)
        grids[name], layouts[name] = data.load_sample_grid(path)
    assert layouts["five_classes"]["rows"] == 5 and layouts["five_classes"]["cols"] == 8
    fig = report.plot_sample_grids(grids, layouts)
    panels = {ax.get_title(): ax for ax in fig.axes}
    shapes = {name: ax.images[0].get_array().shape for name, ax in panels.items()}
    assert len(set(shapes.values())) == 1, shapes            # 5 rows x 8 columns everywhere
    assert shapes["guided"][:2] == (5 * 8 - 2, 8 * 8 - 2)     # 6 px cells, 2 px padding
    ticks = {name: [t.get_text() for t in ax.get_yticklabels()] for name, ax in panels.items()}
    assert ticks["guided"] == ticks["five_classes"] == ["0", "1", "2", "3", "4"]
    assert ticks["unguided"] == ["—"] * 5
    # each label sits on its row: the middle pixel row of cell r
    centres = panels["guided"].get_yticks()
    np.testing.assert_allclose(centres, [r * 8 + 2.5 for r in range(5)])
    # grids without a layout (older PNGs) are still drawn, unlabeled
    fig = report.plot_sample_grids({"plain": grids["guided"]})
    assert not any(t.get_text() for t in fig.axes[0].get_yticklabels())


# ------------------------------------------------------------------------------------- ablations

def _ablation_frame(values, guide="datafree_lora4_n{value}", sampling="ddim25_s1", methods=("ppap",)):
    rng = np.random.default_rng(0)
    rows = []
    for method in methods:
        for value in values:
            rows.append(dict(ablation="sweep", value=value, method=method,
                             guide=guide.format(value=value, method=method),
                             sampling=sampling.format(value=value), accuracy=rng.uniform(0.2, 0.6), accuracy_sd=0.02,
                             fid=rng.uniform(5, 15), fid_sd=0.5))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("values, guide, sampling, methods, factor", [
    ([1, 2, 3, 5, 8, 10], "datafree_lora4_n{value}", "ddim25_s1", ("ppap",), "number of experts N"),
    ([0.5, 1, 2, 4, 8], "{method}", "ddim25_s{value}", ("off_the_shelf", "labeled_full_n1"), "guidance scale s"),
    ([250, 1000, 4000], "datafree_lora4_n5_syn{value}", "ddim25_s1", ("ppap",), "synthetic set size M"),
    (["lora1", "lora4", "full"], "datafree_{value}_n5", "ddim25_s1", ("ppap",), "adapter (LoRA rank or full)"),
    (["ddim10", "ddpm50"], "datafree_lora4_n5", "{value}_s1", ("ppap",), "sampler and steps"),
])
def test_ablation_x_label_is_the_factor(values, guide, sampling, methods, factor):
    frame = _ablation_frame(values, guide, sampling, methods)
    fig = report.plot_ablation(frame, "my_sweep")
    assert [ax.get_xlabel() for ax in fig.axes[:2]] == [factor, factor]
    assert "my_sweep" in fig.get_suptitle()           # the ablation's name stays in the title
    fig = report.plot_ablation(frame, "my_sweep", factor="what the config calls it")
    assert fig.axes[0].get_xlabel() == fig.axes[1].get_xlabel() == "what the config calls it"


def test_ablation_label_falls_back_to_the_name_without_run_names():
    frame = _ablation_frame([1, 2]).drop(columns=["guide", "sampling"])
    assert report.plot_ablation(frame, "n_experts").axes[0].get_xlabel() == "n experts"


@pytest.mark.parametrize("values, labels", [
    ([1, 2, 3, 5, 8, 10], ["1", "2", "3", "5", "8", "10"]),
    (["1", "2", "4"], ["1", "2", "4"]),                       # values read back from a CSV
    ([0.1, 0.25, 0.5, 1], ["0.1", "0.25", "0.5", "1"]),
    ([250, 1000, 8000], ["250", "1000", "8000"]),            # a wide range: log axis, still the values
])
def test_ablation_ticks_are_the_values(values, labels):
    fig = report.plot_ablation(_ablation_frame(values), "sweep")
    for ax in fig.axes[:2]:
        ticks = ax.get_xticks()
        np.testing.assert_allclose(ticks, [float(v) for v in values])
        assert [t.get_text() for t in ax.get_xticklabels()] == labels
        assert list(ax.xaxis.get_minorticklocs()) == []
        if all(float(v).is_integer() for v in values):
            assert all(float(t).is_integer() for t in ticks)


def test_integer_factor_with_many_values_gets_integer_ticks():
    fig = report.plot_ablation(_ablation_frame(list(range(1, 31))), "sweep")
    ticks = [t for t in fig.axes[0].get_xticks() if 1 <= t <= 30]
    assert len(ticks) >= 3 and all(float(t).is_integer() for t in ticks)


def _dashed_lines_are_named(ax) -> list[str]:
    dashed = [line.get_label() for line in ax.get_lines() if line.get_linestyle() == "--"]
    legend = ax.get_legend()
    named = [t.get_text() for t in legend.get_texts()] if legend else []
    missing = [label for label in dashed if label not in named or label.startswith("_")]
    assert not missing, f"dashed lines without a legend entry in {ax.get_xlabel()!r}: {missing}"
    return dashed


@pytest.mark.parametrize("methods", [("ppap",), ("off_the_shelf", "ppap")])
def test_legend_names_every_dashed_line(methods):
    frame = _ablation_frame([0.5, 1, 2], "{method}", "ddim25_s{value}", methods)
    fig = report.plot_ablation(frame, "guidance_scale", unguided={"mean": {"fid": 4.5}}, chance=0.1)
    named = [_dashed_lines_are_named(ax) for ax in fig.axes]
    assert named[0] == ["chance accuracy (0.1)"] and named[1] == ["unguided FID"]
    if len(methods) > 1:
        assert sorted(named[2]) == ["chance accuracy (0.1)", "unguided FID"]
    fig = report.plot_noisy_accuracy({"guide": {"timesteps": [0, 500, 999], "accuracy": [0.9, 0.3, 0.1]}},
                                     {"set": [200, 400]}, chance=0.1)
    assert _dashed_lines_are_named(fig.axes[0]) == ["chance accuracy (0.1)"]
    assert "expert boundaries" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
