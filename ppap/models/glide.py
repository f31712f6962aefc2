"""GLIDE's base text-to-image model (Nichol et al. 2022, openai/glide-text2im) as a ppap epsilon model.

The paper guides the public GLIDE base model (64x64). glide-text2im is not on the package registry,
so its network is re-expressed here from its description, with the checkpoint's own parameter
names (``input_blocks.*``, ``transformer.resblocks.*``, ``token_embedding``, ``positional_embedding``,
``padding_embedding``, ``final_ln``, ``transformer_proj``...), so the released ``base.pt`` loads
strictly into :class:`GlideText2ImUNet`. It is an ADM UNet with two additions:

* a text transformer (CLIP-style pre-LayerNorm blocks, no attention mask) over ``text_ctx`` tokens;
  with ``xf_padding`` the embeddings of padded positions are replaced by a learned
  ``padding_embedding``; the projection of the *last* position's output is added to the timestep
  embedding;
* every attention block also attends to the transformer's per-token outputs: a 1x1 ``encoder_kv``
  convolution gives extra keys and values, placed before the image's own.

:class:`GlideEpsilon` fixes one caption (the empty one by default: GLIDE's unconditional branch,
``padded_tokens_and_mask([], text_ctx)``), so the rest of ppap sees an ordinary ``eps_model(x, t)``.
The output has 6 channels (learned variance); epsilon is the first 3. A converted directory
(:mod:`ppap.models.convert_glide`) holds ``glide/config.json``, ``glide/model.safetensors`` and
``scheduler/``; :func:`load_glide_eps` loads it with the contract of ``ppap.models.denoisers.load_eps_model``.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ppap.io import read_json
from ppap.models.checkpoints import CheckpointError
from ppap.schedules import alphas_cumprod_from_scheduler, load_scheduler

GLIDE_DIR = "glide"                  # beside scheduler/ in a converted directory
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# glide-text2im's create_model: default channel multipliers per image size (others need --channel-mult)
DEFAULT_CHANNEL_MULT = {256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}
NORM_GROUPS = 32                     # GLIDE's normalization(): GroupNorm(32, channels), eps 1e-5


@dataclass(frozen=True)
class GlideArchitecture:
    """The Text2ImUNet settings; defaults are the released base model's (``model_and_diffusion_defaults``).

    GLIDE trained with dropout 0.1; dropout is inactive at inference and ppap never trains this
    model, so the re-expression has none.
    """

    image_size: int = 64
    model_channels: int = 192            # num_channels
    in_channels: int = 3
    out_channels: int = 6                # learned variance: epsilon is the first 3
    num_res_blocks: int = 3
    channel_mult: tuple = ()             # () = GLIDE's default for image_size
    attention_resolutions: tuple = (32, 16, 8)   # image_size // downsampling factor, as GLIDE's flag
    num_head_channels: int = 64          # -1: use num_heads
    num_heads: int = 1
    num_heads_upsample: int = -1         # heads of the output blocks' attention (-1: num_heads)
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    text_ctx: int = 128                  # tokens per caption
    xf_width: int = 512                  # text transformer width
    xf_layers: int = 16
    xf_heads: int = 8
    xf_final_ln: bool = True             # LayerNorm after the last transformer block
    xf_padding: bool = True              # learned embeddings for padded positions
    n_vocab: int = 50257                 # GPT-2's byte-level BPE; the last id (50256) pads
    levels: tuple = field(init=False, default=())

    def __post_init__(self):
        mult = tuple(self.channel_mult) or DEFAULT_CHANNEL_MULT.get(self.image_size)
        if not mult:
            raise ValueError(f"no default channel multipliers for image size {self.image_size} (GLIDE has them "
                             f"for {sorted(DEFAULT_CHANNEL_MULT)}); pass --channel-mult")
        for flag, value in (("image-size", self.image_size), ("num-res-blocks", self.num_res_blocks),
                            ("num-heads", self.num_heads), ("xf-heads", self.xf_heads),
                            ("model_channels", self.model_channels), ("text_ctx", self.text_ctx),
                            ("xf_width", self.xf_width), ("xf_layers", self.xf_layers), ("n_vocab", self.n_vocab)):
            if value < 1:
                raise ValueError(f"--{flag} must be >= 1, got {value}")
        for flag, value in (("num-head-channels", self.num_head_channels),
                            ("num-heads-upsample", self.num_heads_upsample)):
            if value != -1 and value < 1:
                raise ValueError(f"--{flag} must be -1 or >= 1, got {value}")
        if any(m <= 0 for m in mult):
            raise ValueError(f"--channel-mult must be positive, got {mult}")
        if self.xf_width % self.xf_heads:
            raise ValueError(f"--xf-heads {self.xf_heads} does not divide the transformer width {self.xf_width}")
        object.__setattr__(self, "channel_mult", tuple(mult))
        object.__setattr__(self, "attention_resolutions", tuple(int(r) for r in self.attention_resolutions))
        object.__setattr__(self, "levels", tuple(int(m * self.model_channels) for m in mult))
        factors = self.attention_factors
        for i, width in enumerate(self.levels):       # fail here, not deep inside the network's construction
            if 2**i in factors or i == len(self.levels) - 1:     # the middle block always attends
                self.heads(width), self.heads(width, upsample=True)

    @property
    def attention_factors(self) -> set[int]:
        """Downsampling factors with attention (GLIDE's ``attention_ds``)."""
        return {self.image_size // r for r in self.attention_resolutions}

    def heads(self, channels: int, upsample: bool = False) -> int:
        """Attention heads at width `channels` (GLIDE's AttentionBlock: a fixed head width wins)."""
        if self.num_head_channels != -1:
            if channels % self.num_head_channels:
                raise ValueError(f"attention width {channels} is not a multiple of --num-head-channels "
                                 f"{self.num_head_channels}")
            return channels // self.num_head_channels
        heads = self.num_heads_upsample if upsample and self.num_heads_upsample != -1 else self.num_heads
        if channels % heads:
            raise ValueError(f"attention width {channels} is not a multiple of {heads} heads")
        return heads

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if k != "levels"}

    @classmethod
    def from_json(cls, record: dict) -> "GlideArchitecture":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in record.items()})


# ------------------------------------------------------------------------------ the network ----

def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """ADM's sinusoidal embedding: [cos, sin] of t * exp(-log(max_period) * i / half), zero-padded if odd."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(embedding, (0, dim % 2))


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(NORM_GROUPS, channels, eps=1e-5)


class ResBlock(nn.Module):
    """ADM's residual block; the timestep (+ text) embedding enters as a bias or a scale and shift.

    Submodule indices follow GLIDE's state dict (``in_layers.0``/``.2``, ``out_layers.0``/``.3``):
    GLIDE fuses the SiLU into its GroupNorm and keeps an Identity in that slot.
    """

    def __init__(self, channels: int, emb_channels: int, out_channels: int, scale_shift: bool,
                 up: bool = False, down: bool = False):
        super().__init__()
        self.scale_shift, self.up, self.down = scale_shift, up, down
        self.in_layers = nn.Sequential(_norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, (2 if scale_shift else 1) * out_channels))
        self.out_layers = nn.Sequential(_norm(out_channels), nn.SiLU(), nn.Identity(),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.down:
            return F.avg_pool2d(x, 2)
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # Up/down-sampling happens after the first norm + activation, before the conv; the skip path too.
        h = self.in_layers[2](self._resample(self.in_layers[1](self.in_layers[0](x))))
        x = self._resample(x)
        e = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[3](self.out_layers[1](h))
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over the image's positions, with the text's keys and values put first.

    The fused ``qkv`` (and ``encoder_kv``) rows are head-major, [q_h, k_h, v_h] for each head h
    (ADM's "legacy" order, the only one GLIDE has).
    """

    def __init__(self, channels: int, heads: int, encoder_channels: int):
        super().__init__()
        self.heads = heads
        self.norm = _norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.encoder_kv = nn.Conv1d(encoder_channels, 2 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor, encoder_out: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        flat = x.reshape(b, c, -1)
        q, k, v = self.qkv(self.norm(flat)).reshape(b, self.heads, 3 * c // self.heads, -1).chunk(3, dim=2)
        ek, ev = self.encoder_kv(encoder_out).reshape(b, self.heads, 2 * c // self.heads, -1).chunk(2, dim=2)
        k, v = torch.cat([ek, k.to(ek.dtype)], dim=-1), torch.cat([ev, v.to(ev.dtype)], dim=-1)
        q = q.to(k.dtype)
        # [b, heads, width, length] -> [b, heads, length, width] for attention, and back
        h = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        h = self.proj_out(h.transpose(-1, -2).reshape(b, c, -1))
        return x + h.reshape(b, c, *spatial)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class TimestepSequential(nn.Sequential):
    """Passes the embedding to residual blocks and the text to attention blocks."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, encoder_out: torch.Tensor) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, AttentionBlock):
                x = layer(x, encoder_out)
            else:
                x = layer(x)
        return x


class TextAttention(nn.Module):
    """Multi-head self-attention of the text transformer; ``c_qkv`` rows per head are [q, k, v]."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.c_qkv = nn.Linear(width, 3 * width)
        self.c_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, width = x.shape
        q, k, v = self.c_qkv(x).reshape(b, n, self.heads, -1).transpose(1, 2).chunk(3, dim=-1)
        h = F.scaled_dot_product_attention(q, k, v)          # no mask: padding is an embedding, not a mask
        return self.c_proj(h.transpose(1, 2).reshape(b, n, width))


class TextMLP(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class TextBlock(nn.Module):
    """A pre-LayerNorm transformer block (CLIP's ResidualAttentionBlock)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = TextAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = TextMLP(width)
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TextTransformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.ModuleList(TextBlock(width, heads) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


class GlideText2ImUNet(nn.Module):
    """GLIDE's Text2ImUNet: ``forward(x, t, tokens, mask) -> [B, out_channels, H, W]``.

    ``tokens`` [B or 1, text_ctx] (int) and ``mask`` [B or 1, text_ctx] (bool, True for a caption
    token); one caption is encoded once and shared by the whole batch.
    """

    def __init__(self, arch: GlideArchitecture):
        super().__init__()
        self.arch = arch
        mc, emb = arch.model_channels, 4 * arch.model_channels
        enc, ss = arch.xf_width, arch.use_scale_shift_norm
        factors = arch.attention_factors
        self.time_embed = nn.Sequential(nn.Linear(mc, emb), nn.SiLU(), nn.Linear(emb, emb))
        ch = arch.levels[0]
        self.input_blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(arch.in_channels, ch, 3, padding=1))])
        skips, ds = [ch], 1
        for level, width in enumerate(arch.levels):
            for _ in range(arch.num_res_blocks):
                layers = [ResBlock(ch, emb, width, ss)]
                ch = width
                if ds in factors:
                    layers.append(AttentionBlock(ch, arch.heads(ch), enc))
                self.input_blocks.append(TimestepSequential(*layers))
                skips.append(ch)
            if level != len(arch.levels) - 1:
                down = ResBlock(ch, emb, ch, ss, down=True) if arch.resblock_updown else Downsample(ch)
                self.input_blocks.append(TimestepSequential(down))
                skips.append(ch)
                ds *= 2
        self.middle_block = TimestepSequential(ResBlock(ch, emb, ch, ss), AttentionBlock(ch, arch.heads(ch), enc),
                                               ResBlock(ch, emb, ch, ss))
        self.output_blocks = nn.ModuleList()
        for level, width in reversed(list(enumerate(arch.levels))):
            for i in range(arch.num_res_blocks + 1):
                layers = [ResBlock(ch + skips.pop(), emb, width, ss)]
                ch = width
                if ds in factors:
                    layers.append(AttentionBlock(ch, arch.heads(ch, upsample=True), enc))
                if level and i == arch.num_res_blocks:
                    layers.append(ResBlock(ch, emb, ch, ss, up=True) if arch.resblock_updown else Upsample(ch))
                    ds //= 2
                self.output_blocks.append(TimestepSequential(*layers))
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(ch, arch.out_channels, 3, padding=1))
        # the text encoder
        self.transformer = TextTransformer(enc, arch.xf_layers, arch.xf_heads)
        self.final_ln = nn.LayerNorm(enc) if arch.xf_final_ln else None
        self.token_embedding = nn.Embedding(arch.n_vocab, enc)
        self.positional_embedding = nn.Parameter(torch.empty(arch.text_ctx, enc))
        self.transformer_proj = nn.Linear(enc, emb)
        if arch.xf_padding:
            self.padding_embedding = nn.Parameter(torch.empty(arch.text_ctx, enc))
        with torch.no_grad():       # GLIDE leaves them to the checkpoint; keep a fresh model finite
            nn.init.normal_(self.positional_embedding, std=0.01)
            if arch.xf_padding:
                nn.init.normal_(self.padding_embedding, std=0.01)

    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(projection of the last position's output [B, 4 mc], per-token outputs [B, xf_width, text_ctx])."""
        xf_in = self.token_embedding(tokens.long()) + self.positional_embedding[None]
        if self.arch.xf_padding:
            xf_in = torch.where(mask.bool()[..., None], xf_in, self.padding_embedding[None])
        xf_out = self.transformer(xf_in)
        if self.final_ln is not None:
            xf_out = self.final_ln(xf_out)
        return self.transformer_proj(xf_out[:, -1]), xf_out.permute(0, 2, 1)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, tokens: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        timesteps = torch.as_tensor(timesteps, device=x.device).reshape(-1).expand(batch)
        xf_proj, xf_out = self.encode_text(tokens, mask)
        if xf_proj.shape[0] != batch:            # one caption for the whole batch
            xf_proj, xf_out = xf_proj.expand(batch, -1), xf_out.expand(batch, -1, -1)
        emb = self.time_embed(timestep_embedding(timesteps, self.arch.model_channels)) + xf_proj
        skips, h = [], x
        for block in self.input_blocks:
            h = block(h, emb, xf_out)
            skips.append(h)
        h = self.middle_block(h, emb, xf_out)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, xf_out)
        return self.out(h)


# ------------------------------------------------------------------------- captions and eps ----

def padded_tokens_and_mask(tokens: list[int], text_ctx: int, n_vocab: int) -> tuple[list[int], list[bool]]:
    """GLIDE's padding: at most `text_ctx` tokens, then the end token (the last id) with mask False.

    The empty caption (GLIDE's unconditional branch) is ``text_ctx`` end tokens, all masked.
    """
    tokens = list(tokens)[:text_ctx]
    padding = text_ctx - len(tokens)
    return tokens + [n_vocab - 1] * padding, [True] * len(tokens) + [False] * padding


class GlideEpsilon(nn.Module):
    """``eps_fn(x, t)`` of GLIDE for one fixed caption: the first C of its 2C output channels.

    The caption's tokens and mask are (non-persistent) buffers: they follow ``.to(device)`` and stay
    out of the weights file.
    """

    def __init__(self, model: GlideText2ImUNet, tokens: list[int] | torch.Tensor, mask: list[bool] | torch.Tensor):
        super().__init__()
        ctx = model.arch.text_ctx
        tokens, mask = torch.as_tensor(tokens, dtype=torch.long), torch.as_tensor(mask, dtype=torch.bool)
        if tokens.shape != (ctx,) or mask.shape != (ctx,):
            raise ValueError(f"expected {ctx} tokens and mask entries, got {tuple(tokens.shape)} and "
                             f"{tuple(mask.shape)}")
        if int(tokens.min()) < 0 or int(tokens.max()) >= model.arch.n_vocab:
            raise ValueError(f"token ids outside the vocabulary of {model.arch.n_vocab}")
        self.model = model
        self.register_buffer("tokens", tokens[None], persistent=False)
        self.register_buffer("mask", mask[None], persistent=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.model(x, t, self.tokens, self.mask)
        return out[:, :x.shape[1]].to(x.dtype)


# ------------------------------------------------------------------------ strict state dicts ----

def state_dict_problems(shapes: dict[str, tuple], expected: dict[str, tuple]) -> str | None:
    """What keeps `shapes` (key -> shape) from loading strictly into `expected`; None if nothing."""
    unused = sorted(set(shapes) - set(expected))
    missing = sorted(set(expected) - set(shapes))
    bad = [(k, tuple(shapes[k]), tuple(expected[k])) for k in sorted(set(shapes) & set(expected))
           if tuple(shapes[k]) != tuple(expected[k])]
    if not (unused or missing or bad):
        return None
    parts = []
    if unused:
        parts.append(f"checkpoint keys the model lacks {len(unused)}: {unused[:5]}")
    if missing:
        parts.append(f"model keys without a tensor {len(missing)}: {missing[:5]}")
    if bad:
        parts.append(f"shape mismatches {len(bad)}: " + "; ".join(f"{k}: checkpoint {a}, model {b}"
                                                                  for k, a, b in bad[:5]))
    return "; ".join(parts)


def expected_shapes(arch: GlideArchitecture) -> dict[str, tuple]:
    """Every tensor of the network `arch` describes, with its shape (built on the meta device)."""
    with torch.device("meta"):
        model = GlideText2ImUNet(arch)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def build_glide(state: dict[str, torch.Tensor], arch: GlideArchitecture, hint: str = "") -> GlideText2ImUNet:
    """The network with every tensor from `state` (float32), strictly: a :class:`CheckpointError`
    names unused, missing and mis-shaped keys."""
    with torch.device("meta"):      # no random init of ~385M parameters just to overwrite them
        model = GlideText2ImUNet(arch)
    problems = state_dict_problems({k: tuple(v.shape) for k, v in state.items()},
                                   {k: tuple(v.shape) for k, v in model.state_dict().items()})
    if problems:
        raise CheckpointError(f"the checkpoint does not fit the architecture{f' ({hint})' if hint else ''}: {problems}")
    model.load_state_dict({k: v.to(torch.float32).contiguous() for k, v in state.items()}, strict=True, assign=True)
    return model.eval()


# --------------------------------------------------------------------------------- loading ----

def is_glide_dir(directory: str | os.PathLike) -> bool:
    return (Path(directory) / GLIDE_DIR).is_dir()


def read_glide_config(directory: str | os.PathLike) -> dict:
    """``glide/config.json`` of a converted directory (architecture, caption, tokens, source)."""
    path = Path(directory) / GLIDE_DIR / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"GLIDE directory {directory} has no {GLIDE_DIR}/{CONFIG_FILE} "
                                "(write it with python -m ppap.models.convert_glide)")
    return read_json(path)


def load_glide(directory: str | os.PathLike) -> tuple[GlideEpsilon, dict]:
    """(GLIDE epsilon model for the recorded caption, on the CPU in eval mode; its config record)."""
    from safetensors.torch import load_file

    record = read_glide_config(directory)
    weights = Path(directory) / GLIDE_DIR / WEIGHTS_FILE
    try:
        arch = GlideArchitecture.from_json(record["architecture"])
        state = load_file(weights)
    except Exception as err:
        raise CheckpointError(f"cannot load the GLIDE model of {Path(directory) / GLIDE_DIR}: "
                              f"{type(err).__name__}: {err}") from err
    model = build_glide(state, arch, hint=f"{weights} against {Path(directory) / GLIDE_DIR / CONFIG_FILE}")
    return GlideEpsilon(model, record["tokens"], record["mask"]).eval(), record


def load_glide_eps(directory: str | os.PathLike, device: torch.device | str):
    """(eps_model, alphas_cumprod, image_shape) as ``ppap.models.denoisers.load_eps_model`` returns them:
    the frozen epsilon model on `device`, alpha-bar (float64) of the scheduler, (3, size, size)."""
    eps, record = load_glide(directory)
    eps = eps.to(device).eval()
    eps.requires_grad_(False)
    alphas_cumprod = alphas_cumprod_from_scheduler(load_scheduler(directory))
    arch = eps.model.arch
    return eps, alphas_cumprod, (arch.in_channels, arch.image_size, arch.image_size)
