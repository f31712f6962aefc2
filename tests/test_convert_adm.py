"""The ADM -> diffusers converter against an independent reference forward of the ADM UNet.

The reference below is written here from the architecture's description (Dhariwal & Nichol 2021,
appendix; guided-diffusion's module and parameter names), not from diffusers: its modules carry
ADM's state-dict names, so a tiny randomly initialised instance *is* an ADM-format checkpoint.
The converted ``UNet2DModel`` must reproduce its output.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ppap.models import convert_adm
from ppap.models.checkpoints import CheckpointError

# ------------------------------------------------------------------------- reference ADM UNet

def gn(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels)


class RefResBlock(nn.Module):
    def __init__(self, ch, emb_ch, out_ch, scale_shift, up=False, down=False):
        super().__init__()
        self.scale_shift, self.up, self.down = scale_shift, up, down
        self.in_layers = nn.Sequential(gn(ch), nn.SiLU(), nn.Conv2d(ch, out_ch, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_ch, 2 * out_ch if scale_shift else out_ch))
        self.out_layers = nn.Sequential(gn(out_ch), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip_connection = nn.Identity() if ch == out_ch else nn.Conv2d(ch, out_ch, 1)

    def forward(self, x, emb):
        h = self.in_layers[1](self.in_layers[0](x))
        if self.up:  # resample after norm + activation, before the conv; the skip path too
            h, x = F.interpolate(h, scale_factor=2, mode="nearest"), F.interpolate(x, scale_factor=2, mode="nearest")
        if self.down:
            h, x = F.avg_pool2d(h, 2), F.avg_pool2d(x, 2)
        h = self.in_layers[2](h)
        e = self.emb_layers(emb)[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[3](self.out_layers[1](h))
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class RefAttention(nn.Module):
    def __init__(self, ch, head_ch, new_order):
        super().__init__()
        self.heads, self.new_order = ch // head_ch, new_order
        self.norm = gn(ch)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.proj_out = nn.Conv1d(ch, ch, 1)

    def forward(self, x, emb=None):
        b, c, hgt, wid = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        d = c // self.heads
        if self.new_order:
            q, k, v = (t.reshape(b * self.heads, d, -1) for t in qkv.chunk(3, dim=1))
        else:
            q, k, v = qkv.reshape(b * self.heads, 3 * d, -1).split(d, dim=1)
        weights = torch.softmax(torch.einsum("bcl,bcs->bls", q, k) / math.sqrt(d), dim=-1)
        out = torch.einsum("bls,bcs->bcl", weights, v).reshape(b, c, -1)
        return (x + self.proj_out(out)).reshape(b, c, hgt, wid)


class RefDown(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.op = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x, emb=None):
        return self.op(x)


class RefUp(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x, emb=None):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Seq(nn.Sequential):
    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, RefResBlock) else layer(x)
        return x


class RefADM(nn.Module):
    """The ADM UNet: input blocks, a middle block, output blocks with concatenated skips."""

    def __init__(self, image_size=32, in_ch=3, mc=32, out_ch=6, mult=(1, 2), nrb=1, attn_res=(16,), head_ch=32,
                 updown=True, scale_shift=True, new_order=False, up_head_ch=None):
        super().__init__()
        self.mc = mc
        emb = 4 * mc
        self.time_embed = nn.Sequential(nn.Linear(mc, emb), nn.SiLU(), nn.Linear(emb, emb))
        attn_ds = {image_size // r for r in attn_res}
        self.input_blocks = nn.ModuleList([Seq(nn.Conv2d(in_ch, mc, 3, padding=1))])
        chans, ch, ds = [mc], mc, 1
        for level, m in enumerate(mult):
            for _ in range(nrb):
                layers = [RefResBlock(ch, emb, m * mc, scale_shift)]
                ch = m * mc
                if ds in attn_ds:
                    layers.append(RefAttention(ch, head_ch, new_order))
                self.input_blocks.append(Seq(*layers))
                chans.append(ch)
            if level != len(mult) - 1:
                down = RefResBlock(ch, emb, ch, scale_shift, down=True) if updown else RefDown(ch)
                self.input_blocks.append(Seq(down))
                chans.append(ch)
                ds *= 2
        self.middle_block = Seq(RefResBlock(ch, emb, ch, scale_shift), RefAttention(ch, head_ch, new_order),
                                RefResBlock(ch, emb, ch, scale_shift))
        self.output_blocks = nn.ModuleList()
        for level, m in reversed(list(enumerate(mult))):
            for i in range(nrb + 1):
                layers = [RefResBlock(ch + chans.pop(), emb, m * mc, scale_shift)]
                ch = m * mc
                if ds in attn_ds:  # the output blocks' heads may differ (guided-diffusion's num_heads_upsample)
                    layers.append(RefAttention(ch, up_head_ch or head_ch, new_order))
                if level and i == nrb:
                    layers.append(RefResBlock(ch, emb, ch, scale_shift, up=True) if updown else RefUp(ch))
                    ds //= 2
                self.output_blocks.append(Seq(*layers))
        self.out = nn.Sequential(gn(ch), nn.SiLU(), nn.Conv2d(ch, out_ch, 3, padding=1))

    def forward(self, x, t):
        half = self.mc // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
        args = t.float()[:, None] * freqs[None]
        emb = self.time_embed(torch.cat([torch.cos(args), torch.sin(args)], dim=1))
        skips, h = [], x
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)


def reference(seed=0, **kwargs) -> RefADM:
    torch.manual_seed(seed)
    model = RefADM(**kwargs)
    with torch.no_grad():  # ADM zero-initialises some output convs; random everything, norms included
        for name, p in model.named_parameters():
            if ".norm" in name or "in_layers.0" in name or "out_layers.0" in name or name.startswith("out.0"):
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / math.sqrt(max(1, p[0].numel())))
    return model.eval()


CASES = {
    "adm256-like": dict(updown=True, scale_shift=True, new_order=False),
    "conv-resample": dict(updown=False, scale_shift=True, new_order=False),
    "plain-emb-new-order": dict(updown=True, scale_shift=False, new_order=True, out_ch=3),
}


def flags_for(kwargs):
    return dict(num_res_blocks=kwargs.get("nrb", 1), channel_mult=kwargs.get("mult", (1, 2)),
                attention_resolutions=kwargs.get("attn_res", (16,)), num_head_channels=kwargs.get("head_ch", 32),
                use_new_attention_order=kwargs.get("new_order", False))


@pytest.mark.parametrize("case", sorted(CASES))
def test_converted_unet_matches_reference_forward(case):
    kwargs = CASES[case]
    ref = reference(**kwargs)
    state = ref.state_dict()
    arch = convert_adm.infer_architecture(state, 32, **flags_for(kwargs))
    assert arch.resblock_updown == kwargs["updown"] and arch.use_scale_shift_norm == kwargs["scale_shift"]
    unet = convert_adm.build_unet(state, arch)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 417, 999])
    with torch.no_grad():
        expected = ref(x, t)
        got = unet(x, t).sample
    assert got.shape == expected.shape
    assert expected.abs().mean() > 0.1  # a non-trivial output
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_cli_writes_a_directory_ppap_loads(tmp_path):
    from ppap.models.unet import EpsilonModel, load_diffusion_model
    from ppap.schedules import alphas_cumprod_from_scheduler

    ref = reference(seed=3)
    checkpoint = tmp_path / "adm.pt"
    torch.save(ref.state_dict(), checkpoint)
    convert_adm.main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "adm"), "--image-size", "32",
                      "--num-res-blocks", "1", "--channel-mult", "1,2", "--attention-resolutions", "16",
                      "--num-head-channels", "32"])
    unet, scheduler = load_diffusion_model(tmp_path / "adm")
    assert unet.config.out_channels == 6 and scheduler.config.variance_type == "learned_range"
    betas = scheduler.betas.double()
    assert len(betas) == 1000
    torch.testing.assert_close(betas[[0, -1]], torch.tensor([1e-4, 0.02], dtype=torch.float64), rtol=1e-5, atol=0)
    alphas_cumprod = alphas_cumprod_from_scheduler(scheduler)
    eps = EpsilonModel(unet, alphas_cumprod).eval()
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([10, 900])
    with torch.no_grad():
        torch.testing.assert_close(eps(x, t), ref(x, t)[:, :3], rtol=1e-4, atol=1e-4)  # epsilon = first 3 channels
    assert (tmp_path / "adm" / "adm_conversion.json").is_file()


def test_legacy_qkv_layout_is_split_per_head():
    """Hand-checked: with 2 heads of width 2, the legacy fused rows are [q0 k0 v0 q1 k1 v1]."""
    rows = torch.arange(12.0)                       # bias of a fused qkv for C = 4
    q, k, v = convert_adm._split_qkv(rows, heads=2, new_order=False)
    assert q.tolist() == [0, 1, 6, 7] and k.tolist() == [2, 3, 8, 9] and v.tolist() == [4, 5, 10, 11]
    q, k, v = convert_adm._split_qkv(rows, heads=2, new_order=True)
    assert q.tolist() == [0, 1, 2, 3] and v.tolist() == [8, 9, 10, 11]


def test_wrong_flags_fail_naming_keys():
    state = reference().state_dict()
    arch = convert_adm.infer_architecture(state, 32, **{**flags_for({}), "num_res_blocks": 2})
    with pytest.raises(CheckpointError, match="--num-res-blocks"):
        convert_adm.build_unet(state, arch)
    arch = convert_adm.infer_architecture(state, 32, **{**flags_for({}), "attention_resolutions": (8,)})
    with pytest.raises(CheckpointError, match="unconverted checkpoint keys .*qkv"):
        convert_adm.build_unet(state, arch)


def test_class_conditional_and_foreign_files_are_refused(tmp_path):
    state = reference().state_dict()
    state["label_emb.weight"] = torch.zeros(10, 128)
    with pytest.raises(CheckpointError, match="class-conditional"):
        convert_adm.infer_architecture(state, 32, **flags_for({}))
    state = reference().state_dict()
    state["time_embed.0.weight"] = torch.zeros(128, 64)   # a stem narrower than the timestep width (512x512 model)
    with pytest.raises(CheckpointError, match=r"only channel_mult\[0\] = 1 converts"):
        convert_adm.infer_architecture(state, 32, **flags_for({}))
    foreign = tmp_path / "foreign.pt"
    torch.save({"conv.weight": torch.zeros(1)}, foreign)
    with pytest.raises(CheckpointError, match="not a guided-diffusion UNet"):
        convert_adm.read_adm_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="not found"):
        convert_adm.read_adm_checkpoint(tmp_path / "missing.pt")


def test_full_size_adm256_layout_converts_key_for_key():
    """The released model's layout (flag defaults), on the meta device: every tensor maps, shapes match."""
    from diffusers import UNet2DModel

    with torch.device("meta"):
        ref = RefADM(image_size=256, mc=256, mult=(1, 1, 2, 2, 4, 4), nrb=2, attn_res=(32, 16, 8), head_ch=64)
    state = ref.state_dict()
    assert len(state) > 500
    arch = convert_adm.infer_architecture(state, 256)   # the CLI's defaults
    with torch.device("meta"):
        unet = UNet2DModel(**convert_adm.diffusers_config(arch))
    expected = {k: v.shape for k, v in unet.state_dict().items()}
    converted = convert_adm.convert_state_dict(state, arch, expected)
    assert set(converted) == set(expected)


def test_adm256_configuration_is_what_the_released_model_needs():
    """The flag defaults give the unconditional 256x256 model's shape (552M parameters, on meta)."""
    from diffusers import UNet2DModel

    arch = convert_adm.ADMArchitecture(image_size=256, model_channels=256)
    config = convert_adm.diffusers_config(arch)
    assert config["block_out_channels"] == [256, 256, 512, 512, 1024, 1024]
    assert arch.attention_levels == [False, False, False, True, True, True]
    assert config["attention_head_dim"] == 64 and config["resnet_time_scale_shift"] == "scale_shift"
    with torch.device("meta"):
        unet = UNet2DModel(**config)
    assert 540e6 < sum(p.numel() for p in unet.parameters()) < 560e6
    plan = convert_adm.module_plan(arch)
    assert ("resblock", "down_blocks.0.downsamplers.0", "input_blocks.3.0") in plan
    assert plan[-3][2].startswith("output_blocks.17")  # 6 levels x 3 output blocks


def test_converted_model_samples_with_guidance_in_bf16(tmp_path, make_guide, one_thread):
    """The converted directory drives ppap's guided DDIM (epsilon = first 3 of 6 channels), bf16 autocast included."""

    from ppap.generate import Guidance, generate_samples
    from ppap.guidance import ClassifierGuidance
    from ppap.models.denoisers import load_eps_model
    from ppap.models.unet import save_diffusion_model
    from ppap.sampling import Denoiser
    from ppap.specs import SamplingSpec

    state = reference(seed=4).state_dict()
    arch = convert_adm.infer_architecture(state, 32, **flags_for({}))
    save_diffusion_model(tmp_path / "adm", convert_adm.build_unet(state, arch), convert_adm.adm_scheduler())
    eps, alphas_cumprod, shape = load_eps_model(tmp_path / "adm", torch.device("cpu"))
    assert shape == (3, 32, 32)
    guide = make_guide(seed=0, in_chans=3).requires_grad_(False)
    guidance = Guidance(Denoiser(eps, alphas_cumprod.float(), shape), ClassifierGuidance(guide))
    images, labels = generate_samples(guidance, SamplingSpec(steps=2, scale=2.0, precision="bf16", batch_size=2), 4, 0,
                                      show_progress=False)
    assert images.shape == (4, 32, 32, 3) and images.dtype.name == "uint8" and len(labels) == 4


# --------------------------------------------- flags the checkpoint cannot show; the command line

def _max_difference(ref: RefADM, arch) -> float:
    unet = convert_adm.build_unet(ref.state_dict(), arch)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([3, 700])
    with torch.no_grad():
        return (unet(x, t).sample - ref(x, t)).abs().max().item()


def test_num_heads_upsample_is_honoured_or_refused():
    """guided-diffusion's output blocks attend with num_heads_upsample heads when the head count
    (num_head_channels = -1) is fixed. diffusers has one head width for all layers: a different
    count is refused (it converted silently wrong before), an equal one converts exactly, and with
    a fixed head width the flag changes nothing in guided-diffusion, nor here."""
    by_heads = dict(flags_for({}), num_head_channels=-1, num_heads=2)        # 2 heads of 32 at width 64
    other_up = reference(seed=5, up_head_ch=16)                                # 4 heads in the up blocks
    with pytest.raises(ValueError, match="--num-heads-upsample 4 differs from --num-heads 2"):
        convert_adm.infer_architecture(other_up.state_dict(), 32, **by_heads, num_heads_upsample=4)
    # the premise: without the flag, the converter could only have produced a wrong model
    assert _max_difference(other_up, convert_adm.infer_architecture(other_up.state_dict(), 32, **by_heads)) > 1e-2
    same = reference(seed=5)
    for up in (-1, 2):
        arch = convert_adm.infer_architecture(same.state_dict(), 32, **by_heads, num_heads_upsample=up)
        assert _max_difference(same, arch) < 1e-4
    arch = convert_adm.infer_architecture(same.state_dict(), 32, **flags_for({}), num_heads_upsample=4)
    assert arch.num_head_channels == 32 and _max_difference(same, arch) < 1e-4


def test_default_channel_mult_only_for_guided_diffusions_sizes():
    """guided-diffusion's create_model has defaults for 64, 128, 256 and 512 only (it raises for 32)."""
    assert sorted(convert_adm.DEFAULT_CHANNEL_MULT) == [64, 128, 256, 512]
    assert convert_adm.ADMArchitecture(image_size=64, model_channels=128).channel_mult == (1, 2, 3, 4)
    with pytest.raises(ValueError, match=r"no default channel multipliers for image size 32.*--channel-mult"):
        convert_adm.ADMArchitecture(image_size=32, model_channels=32)


CLI_FLAGS = ["--image-size", "32", "--num-res-blocks", "1", "--channel-mult", "1,2", "--attention-resolutions", "16",
             "--num-head-channels", "-1", "--num-heads", "2", "--num-heads-upsample", "2", "--diffusion-steps", "500",
             "--noise-schedule", "cosine"]


def test_converted_directory_records_every_flag(tmp_path):
    import hashlib
    import json
    from dataclasses import fields

    ref = reference(seed=6, updown=False, scale_shift=False, new_order=True)
    checkpoint = tmp_path / "adm.pt"
    torch.save(ref.state_dict(), checkpoint)
    out = tmp_path / "converted"
    convert_adm.main(["--checkpoint", str(checkpoint), "--out", str(out), *CLI_FLAGS, "--use-new-attention-order"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adm.pt", "converted"]      # no temporary left over
    assert {"unet", "scheduler", "adm_conversion.json"} <= {p.name for p in out.iterdir()}
    record = json.loads((out / "adm_conversion.json").read_text())
    assert record["guided_diffusion_flags"] == dict(
        image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="16",
        num_heads=2, num_head_channels=-1, num_heads_upsample=2, use_new_attention_order=True,
        use_scale_shift_norm=False, resblock_updown=False, learn_sigma=True, class_cond=False,
        diffusion_steps=500, noise_schedule="cosine")
    assert record["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert "num_heads_upsample" in record["not_in_checkpoint"] and "resblock_updown" in record["read_from_checkpoint"]
    # the record is complete: it rebuilds the very architecture that was converted
    arch = record["architecture"]
    rebuilt = convert_adm.ADMArchitecture(**{f.name: tuple(arch[f.name]) if isinstance(arch[f.name], list)
                                             else arch[f.name] for f in fields(convert_adm.ADMArchitecture) if f.init})
    assert rebuilt == convert_adm.infer_architecture(
        ref.state_dict(), 32, num_res_blocks=1, channel_mult=(1, 2), attention_resolutions=(16,), num_head_channels=-1,
        num_heads=2, num_heads_upsample=2, use_new_attention_order=True)


def _write_reference(tmp_path):
    checkpoint = tmp_path / "adm.pt"
    torch.save(reference(seed=7).state_dict(), checkpoint)
    return checkpoint


CLI_ERRORS = {
    "missing checkpoint": (["--checkpoint", "{tmp}/missing.pt"], "ADM checkpoint not found: .*missing.pt"),
    "foreign file": (["--checkpoint", "{tmp}/foreign.pt"], "not a guided-diffusion UNet"),
    "wrong architecture flag": (["--num-res-blocks", "2"],
                                "the checkpoint does not fit the architecture .*unconverted"),
    "num_heads_upsample": (["--num-head-channels", "-1", "--num-heads", "2", "--num-heads-upsample", "4"],
                           "--num-heads-upsample 4 differs from --num-heads 2"),
    "no default channel_mult": (["--channel-mult", ""], "no default channel multipliers for image size 32"),
    "unparsable channel_mult": (["--channel-mult", "1,x"], "argument --channel-mult: expected comma-separated numbers"),
    "zero heads": (["--num-heads", "0"], "argument --num-heads: expected a positive integer, got '0'"),
    "negative head width": (["--num-head-channels", "-2"], "--num-head-channels must be -1 or >= 1, got -2"),
    "unknown flag": (["--num_heads_upsample", "2"], "unrecognized arguments: --num_heads_upsample 2"),
}


@pytest.mark.parametrize("case", sorted(CLI_ERRORS))
def test_cli_user_errors_are_one_line_with_exit_code_2(tmp_path, capsys, case):
    extra, message = CLI_ERRORS[case]
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "foreign.pt")
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.txt").write_text("an earlier conversion")      # must survive a failed one
    argv = ["--checkpoint", str(_write_reference(tmp_path)), "--out", str(out), "--image-size", "32",
            "--num-res-blocks", "1", "--channel-mult", "1,2", "--attention-resolutions", "16",
            "--num-head-channels", "32"]
    with pytest.raises(SystemExit) as exit_info:
        convert_adm.main(argv + [arg.format(tmp=tmp_path) for arg in extra])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(f"^python -m ppap.models.convert_adm: error: .*{message}", err), err
    assert sorted(p.name for p in out.iterdir()) == ["earlier.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adm.pt", "foreign.pt", "out"]
