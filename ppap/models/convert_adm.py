"""Convert a guided-diffusion (ADM, Dhariwal & Nichol 2021) UNet checkpoint to a diffusers directory.

    python -m ppap.models.convert_adm --checkpoint 256x256_diffusion_uncond.pt --out models/adm256

writes ``unet/`` (a ``diffusers.UNet2DModel``) and ``scheduler/`` (a ``DDPMScheduler`` with ADM's
training betas), the layout ``DDPMPipeline.save_pretrained`` writes, so ``diffusion.pretrained:
models/adm256`` uses it. The architecture flags are guided-diffusion's own (``--num-res-blocks``,
``--attention-resolutions``, ``--num-head-channels``...); their defaults are those of the
unconditional 256x256 model. What the checkpoint itself determines is read from it: the base width,
input and output channels (6 for learned variance: ppap's ``EpsilonModel`` keeps the first 3),
scale-shift norm and resblock up/down-sampling. The head count or width and the attention order
shape no tensor, so the checkpoint cannot confirm them: they are the flags given. Every flag is
recorded in ``adm_conversion.json`` beside ``unet/`` and ``scheduler/``. ``--num-heads-upsample``
other than ``--num-heads`` (with ``--num-head-channels -1``) is refused: diffusers' ``UNet2DModel``
has one attention head width for every layer.

The mapping is by module, not by luck: every checkpoint tensor must be consumed and every diffusers
tensor produced with the same shape, otherwise the conversion fails naming the keys. ADM's fused
``qkv`` 1x1 convolution is split into ``to_q``/``to_k``/``to_v`` (the "legacy" per-head layout
[q_h, k_h, v_h] for each head h, or ``--use-new-attention-order``'s [q, k, v]).
Class-conditional checkpoints (``label_emb``) are refused: ppap guides an unconditional model.
From the command line, expected user errors (a missing or foreign checkpoint, flags that do not
fit it) print one line and exit with code 2.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from ppap.models.checkpoints import CheckpointError
from ppap.models.cli import OneLineParser, int_list, number_list, positive_int, user_errors

# guided-diffusion's default channel multipliers per image size (create_model in its script_util);
# it has none for other sizes, and neither has this converter: pass --channel-mult.
DEFAULT_CHANNEL_MULT = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4),
                        64: (1, 2, 3, 4)}
NORM_GROUPS = 32        # ADM's normalization(): GroupNorm32(32, channels), eps 1e-5
# What the converter reads from the checkpoint's tensors (ADMArchitecture's field names); every
# other flag is taken as given, and those that shape no tensor cannot be checked against it at all.
READ_FROM_CHECKPOINT = ("model_channels", "in_channels", "out_channels", "use_scale_shift_norm", "resblock_updown")
NOT_IN_CHECKPOINT = ("num_heads", "num_head_channels", "num_heads_upsample", "use_new_attention_order")


@dataclass(frozen=True)
class ADMArchitecture:
    """The guided-diffusion UNetModel settings that shape its state dict."""

    image_size: int
    model_channels: int                     # --num-channels (read from the checkpoint)
    in_channels: int = 3
    out_channels: int = 6                   # 2 * in_channels with --learn-sigma (read from the checkpoint)
    num_res_blocks: int = 2
    channel_mult: tuple = ()                # () = guided-diffusion's default for image_size
    attention_resolutions: tuple = (32, 16, 8)   # resolutions (image_size // downsampling factor) with attention
    num_head_channels: int = 64             # -1: use num_heads
    num_heads: int = 4
    num_heads_upsample: int = -1            # heads of the output blocks' attention (-1: num_heads)
    use_new_attention_order: bool = False
    resblock_updown: bool = True            # read from the checkpoint
    use_scale_shift_norm: bool = True       # read from the checkpoint
    levels: tuple = field(init=False, default=())

    def __post_init__(self):
        mult = tuple(self.channel_mult) or DEFAULT_CHANNEL_MULT.get(self.image_size)
        if not mult:
            raise ValueError(f"no default channel multipliers for image size {self.image_size} (guided-diffusion "
                             f"has them for {sorted(DEFAULT_CHANNEL_MULT)}); pass --channel-mult")
        if any(m <= 0 for m in mult):
            raise ValueError(f"--channel-mult must be positive, got {mult}")
        for flag, value, least in (("num-res-blocks", self.num_res_blocks, 1), ("num-heads", self.num_heads, 1),
                                   ("image-size", self.image_size, 1)):
            if value < least:
                raise ValueError(f"--{flag} must be >= {least}, got {value}")
        for flag, value in (("num-head-channels", self.num_head_channels),
                            ("num-heads-upsample", self.num_heads_upsample)):
            if value != -1 and value < 1:
                raise ValueError(f"--{flag} must be -1 or >= 1, got {value}")
        # guided-diffusion gives the output blocks' attention num_heads_upsample heads (when the head
        # count, not the head width, is fixed); UNet2DModel has one head width for every attention
        # layer, so a different count in the up blocks cannot be expressed: refuse it.
        heads_up = self.num_heads if self.num_heads_upsample == -1 else self.num_heads_upsample
        if self.num_head_channels == -1 and heads_up != self.num_heads:
            raise ValueError(f"--num-heads-upsample {self.num_heads_upsample} differs from --num-heads "
                             f"{self.num_heads}: diffusers' UNet2DModel has one attention head width for every "
                             "layer, so a model with other heads in its up blocks cannot be converted")
        object.__setattr__(self, "channel_mult", mult)
        object.__setattr__(self, "levels", tuple(int(m * self.model_channels) for m in mult))

    @property
    def attention_levels(self) -> list[bool]:
        """Level i runs at downsampling factor 2**i; it has attention if image_size // 2**i is listed."""
        factors = {self.image_size // int(r) for r in self.attention_resolutions}
        return [2**i in factors for i in range(len(self.levels))]

    @property
    def learn_sigma(self) -> bool:
        return self.out_channels == 2 * self.in_channels

    def head_dim(self) -> int:
        """diffusers' UNet2DModel has one ``attention_head_dim`` for every attention layer."""
        widths = [c for c, a in zip(self.levels, self.attention_levels) if a] + [self.levels[-1]]
        if self.num_head_channels > 0:
            bad = [c for c in widths if c % self.num_head_channels]
            if bad:
                raise ValueError(f"attention widths {bad} are not multiples of "
                                 f"num_head_channels={self.num_head_channels}")
            return self.num_head_channels
        dims = {c // self.num_heads for c in widths}
        if len(dims) != 1 or any(c % self.num_heads for c in widths):
            raise ValueError(f"num_heads={self.num_heads} gives head widths {sorted(dims)} for attention widths "
                             f"{widths}; diffusers' UNet2DModel needs one head width for every attention layer")
        return dims.pop()


def read_adm_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict of a guided-diffusion checkpoint (.pt/.pth with ``weights_only=True``, or .safetensors)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ADM checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read ADM checkpoint {path}: {type(err).__name__}: {err}") from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    if "input_blocks.0.0.weight" not in state or "out.2.weight" not in state:
        raise CheckpointError(f"{path} is not a guided-diffusion UNet (no input_blocks.0.0.weight / out.2.weight)")
    return state


def infer_architecture(state: dict[str, torch.Tensor], image_size: int, **flags) -> ADMArchitecture:
    """What the state dict determines, plus the given flags (guided-diffusion's names, snake_case)."""
    if "label_emb.weight" in state:
        raise CheckpointError("class-conditional ADM checkpoint (label_emb): ppap guides an unconditional model; "
                              "use an unconditional checkpoint such as 256x256_diffusion_uncond.pt")
    stem = state["input_blocks.0.0.weight"]
    model_channels = state["time_embed.0.weight"].shape[1]      # the sinusoid's width; the stem has mult[0] x it
    first_res = "input_blocks.1.0"
    emb_rows = state[f"{first_res}.emb_layers.1.weight"].shape[0]
    res_out = state[f"{first_res}.in_layers.2.weight"].shape[0]
    conv_down = any(re.fullmatch(r"input_blocks\.\d+\.0\.op\.weight", k) for k in state)
    arch = ADMArchitecture(image_size=image_size, model_channels=model_channels, in_channels=stem.shape[1],
                           out_channels=state["out.2.weight"].shape[0], use_scale_shift_norm=emb_rows == 2 * res_out,
                           resblock_updown=not conv_down, **flags)
    if arch.levels[0] != model_channels or stem.shape[0] != model_channels:
        raise CheckpointError(f"channel_mult[0] = {arch.channel_mult[0]} (stem width {stem.shape[0]}, timestep width "
                              f"{model_channels}): diffusers' UNet2DModel ties the timestep embedding to the first "
                              "level's width, so only channel_mult[0] = 1 converts (not the 512x512 model)")
    return arch


def diffusers_config(arch: ADMArchitecture) -> dict:
    """``UNet2DModel`` keyword arguments that reproduce the ADM network."""
    attn = arch.attention_levels
    plain_down, plain_up = ("ResnetDownsampleBlock2D", "ResnetUpsampleBlock2D") if arch.resblock_updown \
        else ("DownBlock2D", "UpBlock2D")
    resample = "resnet" if arch.resblock_updown else "conv"
    return dict(
        sample_size=arch.image_size, in_channels=arch.in_channels, out_channels=arch.out_channels,
        block_out_channels=list(arch.levels), layers_per_block=arch.num_res_blocks,
        down_block_types=["AttnDownBlock2D" if a else plain_down for a in attn],
        up_block_types=["AttnUpBlock2D" if a else plain_up for a in reversed(attn)],
        downsample_type=resample, upsample_type=resample,
        resnet_time_scale_shift="scale_shift" if arch.use_scale_shift_norm else "default",
        attention_head_dim=arch.head_dim(), add_attention=True,      # ADM's middle block always attends
        norm_num_groups=NORM_GROUPS, attn_norm_num_groups=NORM_GROUPS, norm_eps=1e-5,
        act_fn="silu", flip_sin_to_cos=True, freq_shift=0,            # ADM's embedding is [cos, sin], /half
        time_embedding_type="positional", mid_block_scale_factor=1, downsample_padding=1, dropout=0.0,
    )


def module_plan(arch: ADMArchitecture) -> list[tuple[str, str, str]]:
    """(kind, diffusers prefix, ADM prefix) for every module with weights, in ADM's order."""
    plan = [("linear", "time_embedding.linear_1", "time_embed.0"),
            ("linear", "time_embedding.linear_2", "time_embed.2"),
            ("conv", "conv_in", "input_blocks.0.0")]
    attn, n = arch.attention_levels, len(arch.levels)
    k = 1
    for i in range(n):
        for j in range(arch.num_res_blocks):
            plan.append(("resblock", f"down_blocks.{i}.resnets.{j}", f"input_blocks.{k}.0"))
            if attn[i]:
                plan.append(("attention", f"down_blocks.{i}.attentions.{j}", f"input_blocks.{k}.1"))
            k += 1
        if i != n - 1:
            if arch.resblock_updown:
                plan.append(("resblock", f"down_blocks.{i}.downsamplers.0", f"input_blocks.{k}.0"))
            else:
                plan.append(("conv", f"down_blocks.{i}.downsamplers.0.conv", f"input_blocks.{k}.0.op"))
            k += 1
    plan += [("resblock", "mid_block.resnets.0", "middle_block.0"),
             ("attention", "mid_block.attentions.0", "middle_block.1"),
             ("resblock", "mid_block.resnets.1", "middle_block.2")]
    k = 0
    for u in range(n):
        level = n - 1 - u
        for j in range(arch.num_res_blocks + 1):
            plan.append(("resblock", f"up_blocks.{u}.resnets.{j}", f"output_blocks.{k}.0"))
            sub = 1
            if attn[level]:
                plan.append(("attention", f"up_blocks.{u}.attentions.{j}", f"output_blocks.{k}.1"))
                sub = 2
            if level > 0 and j == arch.num_res_blocks:
                if arch.resblock_updown:
                    plan.append(("resblock", f"up_blocks.{u}.upsamplers.0", f"output_blocks.{k}.{sub}"))
                else:
                    plan.append(("conv", f"up_blocks.{u}.upsamplers.0.conv", f"output_blocks.{k}.{sub}.conv"))
            k += 1
    plan += [("norm", "conv_norm_out", "out.0"), ("conv", "conv_out", "out.2")]
    return plan


_RESBLOCK = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
             "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def _split_qkv(tensor: torch.Tensor, heads: int, new_order: bool) -> tuple[torch.Tensor, ...]:
    """ADM's fused qkv (a 1x1 conv1d: weight [3C, C, 1], bias [3C]) -> q, k, v as diffusers' linears.

    The legacy order holds [q_h, k_h, v_h] for each head h in turn; the new order [q, k, v], each
    head-major. diffusers' to_q/to_k/to_v are head-major too.
    """
    is_weight = tensor.ndim > 1
    fused = tensor.reshape(tensor.shape[0], -1)                      # [3C, C] or [3C, 1]
    width = fused.shape[0] // 3
    if new_order:
        parts = fused.reshape(3, width, -1).unbind(0)
    else:
        parts = fused.reshape(heads, 3, width // heads, -1).unbind(1)
    return tuple(p.reshape(width, -1) if is_weight else p.reshape(width) for p in parts)


def convert_state_dict(state: dict[str, torch.Tensor], arch: ADMArchitecture,
                       expected: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """ADM tensors renamed (and qkv split) to the diffusers keys of ``expected`` (key -> shape).

    Raises :class:`CheckpointError` naming unconsumed ADM keys, diffusers keys left without a
    tensor, or shape mismatches, with a hint at the flags that shape the network.
    """
    hint = ("check --image-size, --channel-mult, --num-res-blocks, --attention-resolutions and "
            "--num-head-channels/--num-heads against the flags the checkpoint was trained with")
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(adm_key: str) -> torch.Tensor | None:
        if adm_key in state:
            used.add(adm_key)
            return state[adm_key]
        return None

    def put(key: str, adm_key: str) -> None:
        tensor = take(adm_key)
        if tensor is not None:
            out[key] = tensor

    head_dim = arch.head_dim()
    for kind, dst, src in module_plan(arch):
        for param in ("weight", "bias"):
            if kind in ("linear", "conv", "norm"):
                put(f"{dst}.{param}", f"{src}.{param}")
            elif kind == "resblock":
                for d, s in _RESBLOCK.items():
                    put(f"{dst}.{d}.{param}", f"{src}.{s}.{param}")
            elif kind == "attention":
                put(f"{dst}.group_norm.{param}", f"{src}.norm.{param}")
                proj = take(f"{src}.proj_out.{param}")
                if proj is not None:
                    out[f"{dst}.to_out.0.{param}"] = proj.reshape(proj.shape[0], -1) if param == "weight" else proj
                qkv = take(f"{src}.qkv.{param}")
                if qkv is not None:
                    heads = (qkv.shape[0] // 3) // head_dim
                    parts = _split_qkv(qkv, heads, arch.use_new_attention_order)
                    for name, part in zip(("to_q", "to_k", "to_v"), parts):
                        out[f"{dst}.{name}.{param}"] = part
    unused = sorted(set(state) - used)
    missing = sorted(set(expected) - set(out))
    extra = sorted(set(out) - set(expected))
    if unused or missing or extra:
        raise CheckpointError(f"the checkpoint does not fit the architecture ({hint}): "
                              f"unconverted checkpoint keys {len(unused)}: {unused[:5]}; "
                              f"diffusers keys without a tensor {len(missing)}: {missing[:5]}; "
                              f"converted keys the model lacks {len(extra)}: {extra[:5]}")
    bad = [(k, tuple(out[k].shape), tuple(expected[k])) for k in expected if out[k].shape != expected[k]]
    if bad:
        details = "; ".join(f"{k}: checkpoint {a}, model {b}" for k, a, b in bad[:5])
        raise CheckpointError(f"shape mismatches ({hint}): {details}")
    return out


def build_unet(state: dict[str, torch.Tensor], arch: ADMArchitecture, dtype: torch.dtype = torch.float32):
    """The converted ``UNet2DModel`` (strict: every weight comes from the checkpoint)."""
    from diffusers import UNet2DModel

    with torch.device("meta"):      # no random init of ~550M parameters just to overwrite it
        unet = UNet2DModel(**diffusers_config(arch))
    expected = {k: v.shape for k, v in unet.state_dict().items()}
    converted = {k: v.to(dtype).contiguous() for k, v in convert_state_dict(state, arch, expected).items()}
    unet.load_state_dict(converted, strict=True, assign=True)
    return unet.eval()


def adm_scheduler(num_timesteps: int = 1000, noise_schedule: str = "linear", learn_sigma: bool = True):
    """ADM's training betas as a ``DDPMScheduler``: linear 1e-4..0.02 (scaled by 1000 / T) or cosine."""
    from diffusers import DDPMScheduler

    if noise_schedule == "linear":
        scale = 1000 / num_timesteps
        betas = dict(beta_schedule="linear", beta_start=scale * 1e-4, beta_end=scale * 0.02)
    elif noise_schedule == "cosine":
        betas = dict(beta_schedule="squaredcos_cap_v2")
    else:
        raise ValueError(f"unknown noise schedule {noise_schedule!r} (linear or cosine)")
    return DDPMScheduler(num_train_timesteps=num_timesteps, prediction_type="epsilon", clip_sample=True,
                         variance_type="learned_range" if learn_sigma else "fixed_large", **betas)


def convert_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike, image_size: int = 256,
                       num_timesteps: int = 1000, noise_schedule: str = "linear", **flags) -> ADMArchitecture:
    """Checkpoint file -> diffusers directory ``out``; returns the architecture.

    The directory holds ``unet/``, ``scheduler/`` and ``adm_conversion.json`` (:func:`conversion_record`:
    every architecture flag, and which were read from the checkpoint), and appears whole or not at all.
    """
    from ppap.io import atomic_directory, write_json
    from ppap.models.unet import save_diffusion_model

    state = read_adm_checkpoint(checkpoint)
    arch = infer_architecture(state, image_size, **flags)
    unet = build_unet(state, arch)
    digest = hashlib.sha256()
    with open(checkpoint, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 24), b""):
            digest.update(block)
    with atomic_directory(out) as tmp:
        # save_diffusion_model writes its layout atomically too: here into the temporary directory.
        save_diffusion_model(tmp, unet, adm_scheduler(num_timesteps, noise_schedule, arch.learn_sigma))
        write_json(tmp / "adm_conversion.json", conversion_record(arch, checkpoint, digest.hexdigest(),
                                                                  num_timesteps, noise_schedule))
    return arch


def conversion_record(arch: ADMArchitecture, checkpoint, sha256: str, num_timesteps: int,
                      noise_schedule: str) -> dict:
    """What a converted directory was made from: the source file, every architecture flag under
    guided-diffusion's own name (as its ``create_model_and_diffusion`` takes them), and which of
    them the checkpoint's tensors determined or could not check."""
    def text(values):
        return ",".join(f"{v:g}" for v in values)

    gd_flags = dict(image_size=arch.image_size, num_channels=arch.model_channels, num_res_blocks=arch.num_res_blocks,
                    channel_mult=text(arch.channel_mult),
                    attention_resolutions=text(sorted(arch.attention_resolutions, reverse=True)),
                    num_heads=arch.num_heads, num_head_channels=arch.num_head_channels,
                    num_heads_upsample=arch.num_heads_upsample, use_new_attention_order=arch.use_new_attention_order,
                    use_scale_shift_norm=arch.use_scale_shift_norm, resblock_updown=arch.resblock_updown,
                    learn_sigma=arch.learn_sigma, class_cond=False, diffusion_steps=num_timesteps,
                    noise_schedule=noise_schedule)
    info = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(arch).items()}
    return dict(source=str(checkpoint), sha256=sha256, guided_diffusion_flags=gd_flags, architecture=info,
                read_from_checkpoint=list(READ_FROM_CHECKPOINT), not_in_checkpoint=list(NOT_IN_CHECKPOINT),
                num_timesteps=num_timesteps, noise_schedule=noise_schedule)


def main(argv: Sequence[str] | None = None) -> None:
    parser = OneLineParser(prog="python -m ppap.models.convert_adm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="guided-diffusion .pt state dict")
    parser.add_argument("--out", required=True, help="diffusers directory to write (unet/ + scheduler/)")
    parser.add_argument("--image-size", type=positive_int, default=256)
    parser.add_argument("--num-res-blocks", type=positive_int, default=2)
    parser.add_argument("--channel-mult", type=number_list, default=(), help="e.g. 1,1,2,2,4,4 (default: by image size)")
    parser.add_argument("--attention-resolutions", type=int_list, default=(32, 16, 8), help="e.g. 32,16,8")
    parser.add_argument("--num-head-channels", type=int, default=64, help="-1: use --num-heads")
    parser.add_argument("--num-heads", type=positive_int, default=4)
    parser.add_argument("--num-heads-upsample", type=int, default=-1,
                        help="-1: --num-heads; another count is refused (diffusers cannot express it)")
    parser.add_argument("--use-new-attention-order", action="store_true")
    parser.add_argument("--diffusion-steps", type=positive_int, default=1000)
    parser.add_argument("--noise-schedule", choices=("linear", "cosine"), default="linear")
    args = parser.parse_args(argv)
    with user_errors(parser.prog):
        arch = convert_checkpoint(args.checkpoint, args.out, image_size=args.image_size,
                                  num_timesteps=args.diffusion_steps, noise_schedule=args.noise_schedule,
                                  num_res_blocks=args.num_res_blocks, channel_mult=args.channel_mult,
                                  attention_resolutions=args.attention_resolutions,
                                  num_head_channels=args.num_head_channels, num_heads=args.num_heads,
                                  num_heads_upsample=args.num_heads_upsample,
                                  use_new_attention_order=args.use_new_attention_order)
    print(f"wrote {args.out}: {arch}")
    print(f"{', '.join(NOT_IN_CHECKPOINT)} shape no tensor, so the checkpoint cannot confirm them: they are "
          f"the flags given (every flag is recorded in {Path(args.out) / 'adm_conversion.json'})")


if __name__ == "__main__":
    main()
