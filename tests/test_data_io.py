"""Data conversions, the ADM sample format, atomic writes, checkpoints, guide and UNet files."""

from __future__ import annotations

import os
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from ppap.data import ImagePool, load_digits_split, load_samples, open_samples, save_samples, to_float, to_uint8
from ppap.io import atomic_path, read_json, save_npz, write_json
from ppap.models.checkpoints import CheckpointError, load_checkpoint, load_state_dict_strict, save_checkpoint
from ppap.models.classifiers import build_timm_guide, guide_spec, load_guide, read_guide_spec, save_guide
from ppap.models.unet import EpsilonModel, build_unet, load_diffusion_model, save_diffusion_model
from ppap.schedules import alphas_cumprod_from_scheduler, make_ddpm_scheduler, q_sample

pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def listing(directory) -> list[str]:
    return sorted(os.listdir(directory))


# --------------------------------------------------------------------------------- conversions ----

def test_uint8_float_round_trip_is_exact():
    images = np.arange(256, dtype=np.uint8).reshape(4, 8, 8, 1)
    x = to_float(images)
    assert x.dtype == torch.float32 and x.shape == (4, 1, 8, 8)
    assert x.min() == -1 and x.max() == 1
    assert np.array_equal(to_uint8(x), images)
    rgb = np.random.default_rng(0).integers(0, 256, size=(3, 5, 7, 3), dtype=np.uint8)
    assert to_float(rgb).shape == (3, 3, 5, 7)
    assert np.array_equal(to_uint8(to_float(rgb)), rgb)


def test_to_uint8_rounds_and_clips():
    x = torch.tensor([-3.0, -1.0, 0.0, 1.0, 2.5]).view(1, 1, 1, 5)
    assert to_uint8(x).flatten().tolist() == [0, 0, 128, 255, 255]  # 127.5 rounds to even: 128


@pytest.mark.parametrize("bad", [np.zeros((2, 4, 4, 1), np.float32), np.zeros((4, 4, 1), np.uint8)])
def test_to_float_rejects_non_uint8_nhwc(bad):
    with pytest.raises(ValueError, match="uint8 NHWC"):
        to_float(bad)


# -------------------------------------------------------------------------------------- digits ----

def test_load_digits_split_deterministic_stratified_shapes():
    a = load_digits_split(seed=0)
    b = load_digits_split(seed=0)
    c = load_digits_split(seed=1)
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    assert not np.array_equal(a["test_labels"], c["test_labels"]) or not np.array_equal(a["test_images"], c["test_images"])

    n_train, n_test = len(a["train_labels"]), len(a["test_labels"])
    assert n_train + n_test == 1797 and abs(n_test - 0.2 * 1797) <= 1
    assert a["train_images"].shape == (n_train, 8, 8, 1) and a["test_images"].shape == (n_test, 8, 8, 1)
    assert a["train_images"].dtype == np.uint8 and a["train_labels"].dtype == np.int64
    assert a["train_images"].max() == 255 and a["train_images"].min() == 0

    all_counts = np.bincount(np.concatenate([a["train_labels"], a["test_labels"]]), minlength=10)
    from sklearn.datasets import load_digits

    assert np.array_equal(all_counts, np.bincount(load_digits().target, minlength=10))
    test_counts = np.bincount(a["test_labels"], minlength=10)
    assert np.all(np.abs(test_counts - 0.2 * all_counts) <= 1), test_counts  # stratified


def test_load_digits_split_resizes():
    split = load_digits_split(image_size=16, test_fraction=0.5, seed=3)
    assert split["train_images"].shape[1:] == (16, 16, 1) and split["train_images"].dtype == np.uint8
    assert abs(len(split["test_labels"]) - 1797 / 2) <= 1


# ----------------------------------------------------------------------------- ADM sample files ----

def test_save_load_samples_round_trip_adm_convention(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 8, 8, 1), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5])
    path = tmp_path / "guided.npz"
    save_samples(path, images, labels)
    with np.load(path) as data:
        assert data.files == ["arr_0", "arr_1"]
        assert data["arr_1"].dtype == np.int64
    loaded_images, loaded_labels = load_samples(path)
    assert np.array_equal(loaded_images, images) and loaded_images.dtype == np.uint8
    assert np.array_equal(loaded_labels, labels)

    unguided = tmp_path / "unguided.npz"
    save_samples(unguided, images)
    with np.load(unguided) as data:
        assert data.files == ["arr_0"]
    loaded_images, loaded_labels = load_samples(unguided)
    assert np.array_equal(loaded_images, images) and loaded_labels is None
    assert listing(tmp_path) == ["guided.npz", "unguided.npz"]  # no temporary files left


def test_save_samples_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="uint8 NHWC"):
        save_samples(tmp_path / "a.npz", np.zeros((2, 8, 8, 1), np.float32))
    with pytest.raises(ValueError, match="3 labels for 2 images"):
        save_samples(tmp_path / "a.npz", np.zeros((2, 8, 8, 1), np.uint8), np.zeros(3))
    assert listing(tmp_path) == []


def test_load_samples_errors_name_the_file(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="garbage.npz"):
        load_samples(garbage)
    with pytest.raises(ValueError, match="missing.npz"):
        load_samples(tmp_path / "missing.npz")
    floats = tmp_path / "floats.npz"
    np.savez(floats, arr_0=np.zeros((2, 8, 8, 1), np.float32))
    with pytest.raises(ValueError, match="floats.npz.*uint8"):
        load_samples(floats)


def random_images(n: int, seed: int = 0, shape=(8, 8, 1)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def test_open_samples_memory_maps_our_files_and_reads_compressed_ones(tmp_path):
    images = random_images(37, shape=(6, 5, 3))
    save_samples(tmp_path / "stored.npz", images, np.arange(37) % 10)
    mapped = open_samples(tmp_path / "stored.npz")
    assert isinstance(mapped, np.memmap) and mapped.shape == images.shape
    np.testing.assert_array_equal(mapped, images)
    np.savez_compressed(tmp_path / "compressed.npz", arr_0=images)
    np.testing.assert_array_equal(open_samples(tmp_path / "compressed.npz"), images)


def test_open_samples_errors_name_the_file(tmp_path):
    save_samples(tmp_path / "whole.npz", random_images(50))
    data = (tmp_path / "whole.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    for name in ("cut.npz", "missing.npz"):
        with pytest.raises(ValueError, match=name):
            open_samples(tmp_path / name)
    np.savez(tmp_path / "floats.npz", arr_0=np.zeros((2, 8, 8, 1), np.float32))
    with pytest.raises(ValueError, match="floats.npz.*uint8"):
        open_samples(tmp_path / "floats.npz")


def test_synthetic_shards_split_evenly_with_consecutive_seeds():
    from ppap.study.config import ConfigError, synthetic_shards

    assert synthetic_shards(10, 1, 40) == [(10, 40)]          # one shard: the unsharded pool
    assert synthetic_shards(10, 3, 40) == [(4, 40), (3, 41), (3, 42)]
    assert sum(count for count, _ in synthetic_shards(500_000, 100, 40)) == 500_000
    for bad in (0, 11):
        with pytest.raises(ConfigError, match="synthetic.shards"):
            synthetic_shards(10, bad, 40)


def test_image_pool_serves_the_rows_to_float_gives_across_shards():
    images = random_images(30)
    pool = ImagePool([images[:7], images[7:20], images[20:]])
    everything = to_float(images)
    rows = torch.tensor([29, 0, 6, 7, 19, 20, 6])
    assert len(pool) == 30 and pool.image_shape == (8, 8, 1)
    assert torch.equal(pool[rows], everything[rows])
    assert torch.equal(pool[5:23], everything[5:23])
    assert torch.equal(pool[:], everything)
    limited = ImagePool([images[:7], images[7:]], limit=10)
    assert len(limited) == 10 and torch.equal(limited[:], everything[:10])
    with pytest.raises(IndexError, match="outside a pool of 10"):
        limited[torch.tensor([3, 10])]
    with pytest.raises(ValueError, match="limit 31"):
        ImagePool([images], limit=31)
    with pytest.raises(ValueError, match="one shape"):
        ImagePool([images, random_images(3, shape=(8, 8, 3))])


# -------------------------------------------------------------------------------- atomic writes ----

def test_atomic_path_leaves_nothing_when_the_block_raises(tmp_path):
    target = tmp_path / "sub" / "out.json"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_text("half written")
            assert tmp.parent == target.parent and tmp.name.endswith(".json") and tmp != target
            raise RuntimeError("boom")
    assert not target.exists()
    assert listing(target.parent) == []


def test_atomic_outputs_get_the_usual_permissions_not_mkstemps_private_ones(tmp_path):
    from ppap.io import atomic_directory, write_text

    umask = os.umask(0o022)
    try:
        write_text(tmp_path / "table.csv", "a,b\n")
        with atomic_directory(tmp_path / "model") as tmp:
            (tmp / "weights.bin").write_bytes(b"0")
    finally:
        os.umask(umask)
    assert (tmp_path / "table.csv").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o755


def test_atomic_path_keeps_the_old_file_when_an_overwrite_fails(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(KeyError):
        with atomic_path(target) as tmp:
            tmp.write_text("new")
            raise KeyError("interrupted")
    assert target.read_text() == "old"
    assert listing(tmp_path) == ["out.txt"]


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    write_json(tmp_path / "a.json", {"b": [1, 2], "a": 0.5})
    save_npz(tmp_path / "b.npz", x=np.arange(3))
    with atomic_path(tmp_path / "c.txt") as tmp:
        tmp.write_text("done")
    assert listing(tmp_path) == ["a.json", "b.npz", "c.txt"]
    assert read_json(tmp_path / "a.json") == {"a": 0.5, "b": [1, 2]}
    with np.load(tmp_path / "b.npz") as data:
        assert data["x"].tolist() == [0, 1, 2]
    assert (tmp_path / "c.txt").read_text() == "done"


# --------------------------------------------------------------------------------- checkpoints ----

def small_state() -> dict:
    return {"w": torch.randn((3, 4), generator=gen(0)), "b": torch.arange(3.0)}


def test_checkpoint_round_trip(tmp_path):
    path = tmp_path / "ck.pt"
    state = small_state()
    save_checkpoint(path, "thing", state, spec={"width": 3}, note="hi")
    payload = load_checkpoint(path, "thing")
    assert payload["kind"] == "thing" and payload["spec"] == {"width": 3} and payload["note"] == "hi"
    for key, value in state.items():
        assert torch.equal(payload["state_dict"][key], value)
    assert listing(tmp_path) == ["ck.pt"]
    with pytest.raises(CheckpointError, match="ck.pt holds a 'thing' checkpoint, expected 'other'"):
        load_checkpoint(path, "other")


def test_truncated_checkpoint_raises_naming_the_file(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, "thing", small_state())
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_checkpoint(truncated)


@pytest.mark.parametrize("write", [
    lambda p: torch.save([1, 2, 3], p),                                     # a foreign torch file
    lambda p: torch.save({"state_dict": {}}, p),                            # a dict without 'kind'
    lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)),          # random bytes
    lambda p: p.write_bytes(pickle.dumps(SimpleNamespace(a=1), protocol=2)),  # a plain pickle of an object
    lambda p: torch.save(SimpleNamespace(kind="x", state_dict={}), p),      # arbitrary code: refused
], ids=["list", "no-kind", "random-bytes", "pickle", "object"])
def test_foreign_files_raise_checkpoint_error_naming_the_file(tmp_path, write):
    path = tmp_path / "foreign.pt"
    write(path)
    with pytest.raises(CheckpointError, match="foreign.pt"):
        load_checkpoint(path)


def test_missing_checkpoint_raises_naming_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="nothing_here.pt"):
        load_checkpoint(tmp_path / "nothing_here.pt")


def test_load_state_dict_strict(tmp_path):
    module = nn.Linear(4, 3)
    state = {"weight": torch.randn((3, 4), generator=gen(1)), "bias": torch.randn(3, generator=gen(2))}
    load_state_dict_strict(module, state, "source.pt")
    assert torch.equal(module.weight, state["weight"]) and torch.equal(module.bias, state["bias"])
    with pytest.raises(CheckpointError, match=r"source.pt.*missing 1: \['bias'\]"):
        load_state_dict_strict(module, {"weight": state["weight"]}, "source.pt")
    with pytest.raises(CheckpointError, match=r"source.pt.*unexpected 1: \['extra'\]"):
        load_state_dict_strict(module, {**state, "extra": torch.zeros(1)}, "source.pt")
    with pytest.raises(CheckpointError, match="(?s)source.pt.*size mismatch for weight"):
        load_state_dict_strict(module, {**state, "weight": torch.zeros((3, 5))}, "source.pt")
    assert torch.equal(module.weight, state["weight"])  # failed loads changed nothing


# ----------------------------------------------------------------------------- guide save/load ----

def test_guide_save_load_round_trip(tmp_path):
    spec = guide_spec("test_resnet", 10, 1, None, [0.5], [0.5])
    guide = build_timm_guide(**spec, seed=3).eval()  # not the seed load_guide builds with
    path = tmp_path / "guide.pt"
    save_guide(path, guide, spec, accuracy=0.5)
    assert read_guide_spec(path) == spec
    loaded = load_guide(path)
    assert not loaded.training
    x = torch.rand((3, 1, 8, 8), generator=gen(0)) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x, None), guide(x, None))
        assert not torch.allclose(build_timm_guide(**spec, seed=0).eval()(x), guide(x))  # the seed mattered


def test_guide_file_not_matching_its_spec_raises(tmp_path):
    spec = guide_spec("test_resnet", 10, 1, None, [0.5], [0.5])
    path = tmp_path / "guide.pt"
    save_guide(path, build_timm_guide(**spec), {**spec, "num_classes": 5})
    with pytest.raises(CheckpointError, match="guide.pt"):
        load_guide(path)


# ------------------------------------------------------------------------- diffusion model files ----

@pytest.fixture(scope="module")
def tiny_unet():
    return build_unet(8, 1, [8, 16], 1, [False, False], 4, seed=0).eval()


def test_diffusion_model_save_load_round_trip(tiny_unet, tmp_path):
    scheduler = make_ddpm_scheduler(500, "linear", 1e-4, 0.03)
    directory = tmp_path / "model"
    save_diffusion_model(directory, tiny_unet, scheduler)
    assert {"unet", "scheduler"} <= set(listing(directory))
    unet, loaded_scheduler = load_diffusion_model(directory)
    x = torch.randn((2, 1, 8, 8), generator=gen(0))
    t = torch.tensor([3, 400])
    with torch.no_grad():
        assert torch.equal(unet(x, t).sample, tiny_unet(x, t).sample)
    assert torch.equal(alphas_cumprod_from_scheduler(loaded_scheduler), alphas_cumprod_from_scheduler(scheduler))
    # Overwriting an existing directory works and leaves no temporary siblings behind.
    save_diffusion_model(directory, build_unet(8, 1, [8, 16], 1, [False, False], 4, seed=1), scheduler)
    assert listing(tmp_path) == ["model"]
    with torch.no_grad():
        assert not torch.equal(load_diffusion_model(directory)[0](x, t).sample, tiny_unet(x, t).sample)


@pytest.mark.parametrize("missing", ["unet", "scheduler"])
def test_diffusion_model_missing_subfolder_is_named(tiny_unet, tmp_path, missing):
    import shutil

    directory = tmp_path / "model"
    save_diffusion_model(directory, tiny_unet, make_ddpm_scheduler())
    shutil.rmtree(directory / missing)
    with pytest.raises(FileNotFoundError, match=f"no {missing}/ subfolder"):
        load_diffusion_model(directory)


# ------------------------------------------------------------------------------- EpsilonModel ----

class FixedOutput(nn.Module):
    """Stands in for a diffusers UNet: returns a fixed `.sample` whatever the input."""

    def __init__(self, output: torch.Tensor):
        super().__init__()
        self.output = output

    def forward(self, x, t):
        return SimpleNamespace(sample=self.output)


@pytest.fixture(scope="module")
def abar():
    return alphas_cumprod_from_scheduler(make_ddpm_scheduler())


def noisy_pair(abar, channels: int = 3):
    x0 = torch.rand((4, channels, 8, 8), generator=gen(0)) * 2 - 1
    eps = torch.randn(x0.shape, generator=gen(1))
    t = torch.tensor([0, 250, 600, 999])
    return x0, eps, t, q_sample(x0, t, abar, eps)


def test_epsilon_model_slices_learned_variance(abar):
    from diffusers import UNet2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # diffusers initialises from the global RNG: forked, so ours is untouched
        unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=2, block_out_channels=(8, 16),
                           layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                           up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4).eval()
    model = EpsilonModel(unet, abar)
    x = torch.randn((3, 1, 8, 8), generator=gen(0))
    t = torch.tensor([10, 500, 900])
    with torch.no_grad():
        full = unet(x, t).sample
        eps = model(x, t)
    assert full.shape == (3, 2, 8, 8) and eps.shape == (3, 1, 8, 8)
    assert torch.equal(eps, full[:, :1])
    # The same slice happens before a v -> eps conversion (ADM-style output with v-prediction).
    eps_v = EpsilonModel(FixedOutput(torch.cat([full[:, :1], 100 + full[:, 1:]], 1)), abar, "v_prediction")(x, t)
    expected = EpsilonModel(FixedOutput(full[:, :1]), abar, "v_prediction")(x, t)
    assert torch.equal(eps_v, expected)


def test_epsilon_model_converts_v_prediction(abar):
    from diffusers import DDPMScheduler

    x0, eps, t, x_t = noisy_pair(abar)
    scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type="v_prediction")
    v = scheduler.get_velocity(x0, eps, t)  # diffusers' v = sqrt(abar) eps - sqrt(1 - abar) x0
    a = abar[t].float().view(-1, 1, 1, 1)
    assert torch.allclose(v, a.sqrt() * eps - (1 - a).sqrt() * x0, atol=1e-6)
    converted = EpsilonModel(FixedOutput(v), abar, "v_prediction")(x_t, t)
    assert torch.allclose(converted, eps, atol=1e-4)
    assert torch.allclose(converted, a.sqrt() * v + (1 - a).sqrt() * x_t, atol=1e-6)


def test_epsilon_model_converts_sample_prediction(abar):
    x0, eps, t, x_t = noisy_pair(abar)
    keep = t > 0  # at t = 0, 1 - abar ~ 1e-4 amplifies float32 rounding in the x0 -> eps map
    converted = EpsilonModel(FixedOutput(x0[keep]), abar, "sample")(x_t[keep], t[keep])
    assert torch.allclose(converted, eps[keep], atol=1e-4)
    plain = EpsilonModel(FixedOutput(eps), abar, "epsilon")(x_t, t)
    assert torch.equal(plain, eps)


def test_epsilon_model_rejects_unknown_prediction_type(abar):
    with pytest.raises(ValueError, match="unsupported prediction_type"):
        EpsilonModel(FixedOutput(torch.zeros(1)), abar, "score")
