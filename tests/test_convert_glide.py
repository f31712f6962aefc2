"""GLIDE's base model (ppap.models.glide, convert_glide) against an independent reference forward.

The reference below is written here from GLIDE's description (Nichol et al. 2022; glide-text2im's
module and parameter names: an ADM UNet whose timestep embedding gets the projection of a text
transformer's last token, and whose attention blocks attend to the transformer's per-token
outputs), in GLIDE's own arithmetic (GroupNorm with a fused swish, q and k each scaled by
width^-1/4, einsum attention), not from ppap's modules. Its state dict *is* a GLIDE-format
checkpoint; the converted model must reproduce its output. The tokenizer test compares
``transformers.GPT2Tokenizer`` with a re-expression of GLIDE's ``bpe.py`` on a tiny byte-level vocabulary.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ppap.models import convert_glide, glide
from ppap.models.checkpoints import CheckpointError

# ----------------------------------------------------------------------- reference GLIDE (base)


class SwishNorm(nn.GroupNorm):
    """GLIDE's normalization(): GroupNorm(32) in float32, then x * sigmoid(swish * x) if swish."""

    def __init__(self, channels, swish):
        super().__init__(32, channels)
        self.swish = swish

    def forward(self, x):
        y = super().forward(x.float()).to(x.dtype)
        return y * torch.sigmoid(self.swish * y) if self.swish else y


class RefResBlock(nn.Module):
    def __init__(self, ch, emb_ch, out_ch, scale_shift, up=False, down=False):
        super().__init__()
        self.scale_shift, self.up, self.down = scale_shift, up, down
        self.in_layers = nn.Sequential(SwishNorm(ch, 1.0), nn.Identity(), nn.Conv2d(ch, out_ch, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_ch, 2 * out_ch if scale_shift else out_ch))
        self.out_layers = nn.Sequential(SwishNorm(out_ch, 0.0 if scale_shift else 1.0),
                                        nn.SiLU() if scale_shift else nn.Identity(), nn.Dropout(0.0),
                                        nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip_connection = nn.Identity() if ch == out_ch else nn.Conv2d(ch, out_ch, 1)

    def forward(self, x, emb):
        if self.up or self.down:
            resample = (lambda z: F.interpolate(z, scale_factor=2, mode="nearest")) if self.up else \
                (lambda z: F.avg_pool2d(z, kernel_size=2, stride=2))
            h = self.in_layers[2](resample(self.in_layers[1](self.in_layers[0](x))))
            x = resample(x)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb)[..., None, None]
        if self.scale_shift:
            scale, shift = torch.chunk(e, 2, dim=1)
            h = self.out_layers[1:](self.out_layers[0](h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class RefAttention(nn.Module):
    def __init__(self, ch, heads, enc_ch):
        super().__init__()
        self.heads = heads
        self.norm = SwishNorm(ch, 0.0)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.encoder_kv = nn.Conv1d(enc_ch, 2 * ch, 1)
        self.proj_out = nn.Conv1d(ch, ch, 1)

    def forward(self, x, encoder_out):
        b, c, *spatial = x.shape
        qkv = self.qkv(self.norm(x).view(b, c, -1))
        length, d = qkv.shape[-1], c // self.heads
        q, k, v = qkv.reshape(b * self.heads, 3 * d, length).split(d, dim=1)
        ek, ev = self.encoder_kv(encoder_out).reshape(b * self.heads, 2 * d, -1).split(d, dim=1)
        k, v = torch.cat([ek, k], dim=-1), torch.cat([ev, v], dim=-1)
        scale = 1 / math.sqrt(math.sqrt(d))
        weight = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale).float(), dim=-1)
        a = torch.einsum("bts,bcs->bct", weight, v).reshape(b, -1, length)
        return x + self.proj_out(a).reshape(b, c, *spatial)


class RefDown(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.op = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class RefUp(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Seq(nn.Sequential):
    def forward(self, x, emb, enc):
        for layer in self:
            if isinstance(layer, RefResBlock):
                x = layer(x, emb)
            elif isinstance(layer, RefAttention):
                x = layer(x, enc)
            else:
                x = layer(x)
        return x


class RefXfBlock(nn.Module):
    """CLIP's ResidualAttentionBlock as GLIDE's xf.py has it: c_qkv rows per head are [q, k, v]."""

    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.attn = nn.Module()
        self.attn.c_qkv, self.attn.c_proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.mlp = nn.Module()
        self.mlp.c_fc, self.mlp.c_proj = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def attention(self, x):
        bs, n, width = x.shape
        qkv = self.attn.c_qkv(x).view(bs, n, self.heads, -1)
        d = width // self.heads
        q, k, v = torch.split(qkv, d, dim=-1)
        scale = 1 / math.sqrt(math.sqrt(d))
        weight = torch.softmax(torch.einsum("bthc,bshc->bhts", q * scale, k * scale).float(), dim=-1)
        return self.attn.c_proj(torch.einsum("bhts,bshc->bthc", weight, v).reshape(bs, n, -1))

    def forward(self, x):
        x = x + self.attention(self.ln_1(x))
        return x + self.mlp.c_proj(F.gelu(self.mlp.c_fc(self.ln_2(x))))


class RefGlide(nn.Module):
    """GLIDE's Text2ImUNet at toy sizes."""

    def __init__(self, image_size=16, mc=32, mult=(1, 2), nrb=1, attn_res=(16, 8), head_ch=16, heads=1,
                 up_heads=None, updown=True, scale_shift=True, ctx=8, width=32, xf_layers=2, xf_heads=2,
                 final_ln=True, padding=True, n_vocab=50, out_ch=6):
        super().__init__()
        self.mc, self.padding = mc, padding
        emb = 4 * mc
        attn_ds = {image_size // r for r in attn_res}

        def n_heads(ch, up=False):
            return ch // head_ch if head_ch > 0 else (up_heads or heads) if up else heads

        self.time_embed = nn.Sequential(nn.Linear(mc, emb), nn.SiLU(), nn.Linear(emb, emb))
        ch = mc * mult[0]
        self.input_blocks = nn.ModuleList([Seq(nn.Conv2d(3, ch, 3, padding=1))])
        chans, ds = [ch], 1
        for level, m in enumerate(mult):
            for _ in range(nrb):
                layers = [RefResBlock(ch, emb, m * mc, scale_shift)]
                ch = m * mc
                if ds in attn_ds:
                    layers.append(RefAttention(ch, n_heads(ch), width))
                self.input_blocks.append(Seq(*layers))
                chans.append(ch)
            if level != len(mult) - 1:
                down = RefResBlock(ch, emb, ch, scale_shift, down=True) if updown else RefDown(ch)
                self.input_blocks.append(Seq(down))
                chans.append(ch)
                ds *= 2
        self.middle_block = Seq(RefResBlock(ch, emb, ch, scale_shift), RefAttention(ch, n_heads(ch), width),
                                RefResBlock(ch, emb, ch, scale_shift))
        self.output_blocks = nn.ModuleList()
        for level, m in reversed(list(enumerate(mult))):
            for i in range(nrb + 1):
                layers = [RefResBlock(ch + chans.pop(), emb, m * mc, scale_shift)]
                ch = m * mc
                if ds in attn_ds:
                    layers.append(RefAttention(ch, n_heads(ch, up=True), width))
                if level and i == nrb:
                    layers.append(RefResBlock(ch, emb, ch, scale_shift, up=True) if updown else RefUp(ch))
                    ds //= 2
                self.output_blocks.append(Seq(*layers))
        self.out = nn.Sequential(SwishNorm(ch, 1.0), nn.Identity(), nn.Conv2d(mc * mult[0], out_ch, 3, padding=1))
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.ModuleList(RefXfBlock(width, xf_heads) for _ in range(xf_layers))
        self.final_ln = nn.LayerNorm(width) if final_ln else None
        self.token_embedding = nn.Embedding(n_vocab, width)
        self.positional_embedding = nn.Parameter(torch.empty(ctx, width))
        self.transformer_proj = nn.Linear(width, emb)
        if padding:
            self.padding_embedding = nn.Parameter(torch.empty(ctx, width))

    def forward(self, x, t, tokens, mask):
        xf_in = self.token_embedding(tokens.long()) + self.positional_embedding[None]
        if self.padding:
            xf_in = torch.where(mask[..., None], xf_in, self.padding_embedding[None])
        xf_out = xf_in
        for block in self.transformer.resblocks:
            xf_out = block(xf_out)
        if self.final_ln is not None:
            xf_out = self.final_ln(xf_out)
        xf_proj = self.transformer_proj(xf_out[:, -1])
        xf_out = xf_out.permute(0, 2, 1)
        half = self.mc // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
        args = t[:, None].float() * freqs[None]
        emb = self.time_embed(torch.cat([torch.cos(args), torch.sin(args)], dim=-1)) + xf_proj
        hs, h = [], x
        for module in self.input_blocks:
            h = module(h, emb, xf_out)
            hs.append(h)
        h = self.middle_block(h, emb, xf_out)
        for module in self.output_blocks:
            h = module(torch.cat([h, hs.pop()], dim=1), emb, xf_out)
        return self.out(h)


def reference(seed=0, **kwargs) -> RefGlide:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = RefGlide(**kwargs)
        with torch.no_grad():  # GLIDE zero-initialises output convs; random everything, norms included
            for name, p in model.named_parameters():
                if re.search(r"norm|ln|in_layers\.0|out_layers\.0|^out\.0", name):
                    p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn_like(p))
                elif name.endswith("_embedding") or name.endswith("embedding.weight"):
                    p.copy_(torch.randn_like(p))
                else:
                    p.copy_(torch.randn_like(p) / math.sqrt(max(1, p[0].numel())))
    return model.eval()


def flags_for(kwargs) -> dict:
    """The converter flags (the ones the checkpoint cannot show) of a reference's settings."""
    return dict(image_size=kwargs.get("image_size", 16), num_res_blocks=kwargs.get("nrb", 1),
                channel_mult=kwargs.get("mult", (1, 2)), attention_resolutions=kwargs.get("attn_res", (16, 8)),
                num_head_channels=kwargs.get("head_ch", 16), num_heads=kwargs.get("heads", 1),
                num_heads_upsample=kwargs.get("up_heads") or -1, xf_heads=kwargs.get("xf_heads", 2))


CASES = {
    "base-like": dict(),
    "conv-resample-plain-emb-no-ln-no-padding": dict(updown=False, scale_shift=False, final_ln=False, padding=False),
    "heads-by-count-other-upsample-heads": dict(head_ch=-1, heads=2, up_heads=4, xf_heads=4, out_ch=3),
    "attention-at-the-lowest-level-only": dict(attn_res=(8,), nrb=2, mult=(1, 1, 2), image_size=32),
}
CAPTION = [5, 17, 3, 44]


def token_batch(n_vocab=50, ctx=8):
    caption = glide.padded_tokens_and_mask(CAPTION, ctx, n_vocab)
    empty = glide.padded_tokens_and_mask([], ctx, n_vocab)
    tokens = torch.tensor([caption[0], empty[0], caption[0]])
    mask = torch.tensor([caption[1], empty[1], caption[1]])
    return tokens, mask


@pytest.mark.parametrize("case", sorted(CASES))
def test_converted_model_matches_reference_forward(case, one_thread):
    kwargs = CASES[case]
    ref = reference(**kwargs)
    state = ref.state_dict()
    arch = convert_glide.infer_architecture(state, **flags_for(kwargs))
    assert arch.use_scale_shift_norm == kwargs.get("scale_shift", True)
    assert arch.resblock_updown == kwargs.get("updown", True)
    assert (arch.xf_final_ln, arch.xf_padding) == (kwargs.get("final_ln", True), kwargs.get("padding", True))
    assert (arch.text_ctx, arch.xf_width, arch.xf_layers, arch.n_vocab) == (8, 32, 2, 50)
    model = glide.build_glide(state, arch)
    size = kwargs.get("image_size", 16)
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 417, 999])
    tokens, mask = token_batch()
    with torch.no_grad():
        expected = ref(x, t, tokens, mask)
        got = model(x, t, tokens, mask)
        assert expected.abs().mean() > 0.1  # a non-trivial output
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        # a caption and the empty caption give different outputs: the text reaches the image
        assert (expected[0] - expected[1]).abs().max() > 1e-2
        # one caption for the whole batch (what GlideEpsilon passes) equals the caption repeated
        eps = glide.GlideEpsilon(model, tokens[1], mask[1])
        expected_empty = ref(x, t, tokens[[1, 1, 1]], mask[[1, 1, 1]])[:, :3]
        torch.testing.assert_close(eps(x, t), expected_empty, rtol=1e-5, atol=1e-5)


def test_empty_caption_is_glides_unconditional_branch():
    """padded_tokens_and_mask([], ctx): ctx end tokens (the last id), all masked."""
    tokens, mask = glide.padded_tokens_and_mask([], 4, 50257)
    assert tokens == [50256] * 4 and mask == [False] * 4
    tokens, mask = glide.padded_tokens_and_mask([1, 2, 3, 4, 5], 4, 50)
    assert tokens == [1, 2, 3, 4] and mask == [True] * 4
    assert convert_glide.caption_tokens("", 3, 50) == ([49, 49, 49], [False] * 3)   # no tokenizer needed


# --------------------------------------------------------------------- the directory and loading


def _write_checkpoint(tmp_path, seed=3, **kwargs):
    checkpoint = tmp_path / "base.pt"
    torch.save(reference(seed=seed, **kwargs).state_dict(), checkpoint)
    return checkpoint


CLI_FLAGS = ["--image-size", "16", "--num-res-blocks", "1", "--channel-mult", "1,2", "--attention-resolutions", "16,8",
             "--num-head-channels", "16", "--xf-heads", "2"]


def test_cli_writes_a_directory_ppap_loads(tmp_path, one_thread):
    import hashlib

    from ppap.models.denoisers import load_eps_model

    checkpoint = _write_checkpoint(tmp_path)
    out = tmp_path / "glide64"
    convert_glide.main(["--checkpoint", str(checkpoint), "--out", str(out), *CLI_FLAGS])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.pt", "glide64"]      # no temporary left over
    assert sorted(p.name for p in (out / "glide").iterdir()) == ["config.json", "model.safetensors"]
    record = json.loads((out / "glide" / "config.json").read_text())
    assert record["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert record["caption"] == "" and record["tokens"] == [49] * 8 and record["mask"] == [False] * 8
    assert record["architecture"]["channel_mult"] == [1, 2] and "xf_heads" in record["not_in_checkpoint"]
    eps, alphas_cumprod, shape = load_eps_model(out, torch.device("cpu"))
    assert shape == (3, 16, 16) and not eps.training
    assert alphas_cumprod.dtype == torch.float64 and len(alphas_cumprod) == 1000
    assert not any(p.requires_grad for p in eps.parameters())
    ref = reference(seed=3)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 900])
    tokens, mask = (torch.tensor([v] * 2) for v in glide.padded_tokens_and_mask([], 8, 50))
    with torch.no_grad():
        torch.testing.assert_close(eps(x, t), ref(x, t, tokens, mask)[:, :3], rtol=1e-5, atol=1e-5)


def cosine_betas(steps: int) -> list[float]:
    """GLIDE's get_named_beta_schedule("squaredcos_cap_v2", steps), in float64."""
    def alpha_bar(s):
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    return [min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), 0.999) for i in range(steps)]


def test_scheduler_has_glides_cosine_betas(tmp_path):
    from ppap.schedules import load_alphas_cumprod, load_scheduler

    scheduler = convert_glide.glide_scheduler()
    expected = torch.tensor(cosine_betas(1000), dtype=torch.float64)
    assert scheduler.config.beta_schedule == "squaredcos_cap_v2" and scheduler.config.num_train_timesteps == 1000
    assert scheduler.config.variance_type == "learned_range" and scheduler.config.prediction_type == "epsilon"
    torch.testing.assert_close(scheduler.betas.double(), expected, rtol=1e-7, atol=0)    # float32 rounding
    assert scheduler.betas.max().item() == pytest.approx(0.999)                          # the cap at the end
    convert_glide.glide_scheduler().save_pretrained(tmp_path / "scheduler")
    abar = load_alphas_cumprod(tmp_path)          # ppap's own reading of a standard beta schedule
    torch.testing.assert_close(abar, torch.cumprod(1 - expected, 0), rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(load_scheduler(tmp_path).betas, scheduler.betas, rtol=0, atol=0)


def test_directory_passes_the_pre_run_checks_and_a_damaged_one_is_named(tmp_path):
    from pretrained_files import write_class_folders

    from conftest import merged_config
    from ppap.study import checks
    from ppap.study.config import ConfigError

    out = tmp_path / "glide"
    convert_glide.convert_checkpoint(_write_checkpoint(tmp_path), out, **flags_for({}))
    train = write_class_folders(tmp_path / "train", 3)
    config = merged_config({"data": {"source": "folder", "train_dir": str(train), "image_size": 16},
                            "diffusion": {"pretrained": str(out)}})
    info = checks.check_files(config)["diffusion.pretrained"]
    assert info["unet_class"] == "GLIDE Text2ImUNet" and info["out_channels"] == 6 and info["sample_size"] == 16
    assert info["beta_schedule"] == "squaredcos_cap_v2" and info["block_out_channels"] == [32, 64]
    from harness import describe_diffusion_model

    assert "GLIDE Text2ImUNet 3->6 channels at 16 px" in describe_diffusion_model(out)
    with pytest.raises(ConfigError, match="makes 16 px images, data.image_size is 8"):
        checks.check_files(merged_config(config, {"data": {"image_size": 8}}))
    from safetensors.torch import load_file, save_file

    weights = out / "glide" / "model.safetensors"
    state = load_file(weights)
    del state["final_ln.bias"]
    save_file(state, weights)
    with pytest.raises(ConfigError, match=r"diffusion.pretrained: .*model.safetensors does not match .*"
                                          r"model keys without a tensor 1: \['final_ln.bias'\]"):
        checks.check_files(config)
    with pytest.raises(CheckpointError, match=r"final_ln.bias"):
        glide.load_glide_eps(out, "cpu")


def test_guided_sampling_runs_on_the_converted_model(tmp_path, make_guide, one_thread):
    """The converted directory drives ppap's guided DDIM (epsilon = first 3 of 6 channels), bf16 autocast included."""
    from ppap.generate import Guidance, generate_samples
    from ppap.guidance import ClassifierGuidance
    from ppap.models.denoisers import load_eps_model
    from ppap.sampling import Denoiser
    from ppap.specs import SamplingSpec

    out = tmp_path / "glide"
    convert_glide.convert_checkpoint(_write_checkpoint(tmp_path, seed=4), out, **flags_for({}))
    eps, alphas_cumprod, shape = load_eps_model(out, torch.device("cpu"))
    guide = make_guide(seed=0, in_chans=3).requires_grad_(False)
    for precision in ("fp32", "bf16"):
        guidance = Guidance(Denoiser(eps, alphas_cumprod.float(), shape), ClassifierGuidance(guide))
        images, labels = generate_samples(guidance, SamplingSpec(steps=2, scale=2.0, precision=precision, batch_size=2),
                                          2, 0, show_progress=False)
        assert images.shape == (2, 16, 16, 3) and images.dtype.name == "uint8" and len(labels) == 2


# ------------------------------------------------------------------------------ the tokenizer


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (printable Latin-1 bytes map to themselves)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


MERGES = [("Ġ", "a"), ("o", "r"), ("i", "n"), ("t", "h"), ("th", "e"), ("Ġ", "the"), ("Ġ", "c"), ("Ġc", "or"),
          ("g", "i"), ("Ġcor", "gi"), ("Ġ", "o"), ("i", "l"), ("Ġo", "il"), ("'", "s"), ("a", "n"), ("Ġ", "p"),
          ("Ġp", "a")]


def write_tiny_bpe(directory):
    """vocab.json + merges.txt of a byte-level BPE: 256 byte symbols, the merges, <|endoftext|> last."""
    directory.mkdir(parents=True, exist_ok=True)
    symbols = list(bytes_to_unicode().values()) + ["".join(pair) for pair in MERGES] + ["<|endoftext|>"]
    vocab = {s: i for i, s in enumerate(dict.fromkeys(symbols))}
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in MERGES))
    return vocab


def glide_bpe_encode(text: str, vocab: dict[str, int]) -> list[int]:
    """GLIDE's tokenizer/bpe.py Encoder.encode re-expressed: lower-case, GPT-2's split pattern, byte
    symbols, then repeatedly merge the lowest-ranked adjacent pair."""
    import regex

    ranks = {pair: i for i, pair in enumerate(MERGES)}
    pattern = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
    byte_symbol = bytes_to_unicode()
    ids = []
    for piece in pattern.findall(text.lower()):
        word = [byte_symbol[b] for b in piece.encode("utf-8")]
        while len(word) > 1:
            pairs = [(ranks.get((a, b), math.inf), i) for i, (a, b) in enumerate(zip(word, word[1:]))]
            rank, _ = min(pairs)
            if rank == math.inf:
                break
            first, second = MERGES[rank]
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        ids.extend(vocab[s] for s in word)
    return ids


@pytest.mark.parametrize("caption", ["an oil painting of a corgi", "The Corgi's  PAINTING, 1999!", "thé corgi\tçà",
                                     "  an  oil   "])
def test_gpt2_tokenizer_gives_glides_ids(tmp_path, caption):
    vocab = write_tiny_bpe(tmp_path / "bpe")
    n_vocab = len(vocab)
    expected = glide_bpe_encode(caption, vocab)
    assert len(expected) <= 40
    tokens, mask = convert_glide.caption_tokens(caption, 40, n_vocab, tmp_path / "bpe")
    assert tokens == expected + [n_vocab - 1] * (40 - len(expected))
    assert mask == [True] * len(expected) + [False] * (40 - len(expected))


def test_a_tokenizer_of_another_vocabulary_or_a_special_token_is_refused(tmp_path):
    vocab = write_tiny_bpe(tmp_path / "bpe")
    with pytest.raises(ValueError, match=f"has {len(vocab)} entries, the checkpoint's vocabulary 50"):
        convert_glide.caption_tokens("a corgi", 8, 50, tmp_path / "bpe")
    with pytest.raises(ValueError, match=re.escape("contains <|endoftext|>")):
        convert_glide.caption_tokens("a <|endoftext|> corgi", 8, len(vocab), tmp_path / "bpe")
    with pytest.raises(ValueError, match="the caption has 9 tokens, more than the model's 8"):
        convert_glide.caption_tokens("a a a a a a a a a", 8, len(vocab), tmp_path / "bpe")


def test_a_caption_reaches_the_converted_directory(tmp_path):
    vocab = write_tiny_bpe(tmp_path / "bpe")
    checkpoint = _write_checkpoint(tmp_path, n_vocab=len(vocab))
    out = tmp_path / "corgi"
    convert_glide.main(["--checkpoint", str(checkpoint), "--out", str(out), *CLI_FLAGS,
                        "--caption", "A Corgi", "--tokenizer", str(tmp_path / "bpe")])
    eps, record = glide.load_glide(out)
    ids = glide_bpe_encode("a corgi", vocab)
    assert record["caption"] == "A Corgi" and len(ids) == 2        # "a", " corgi"
    assert eps.tokens.tolist() == [ids + [len(vocab) - 1] * 6] and eps.mask.tolist() == [[True] * 2 + [False] * 6]


# ------------------------------------------------------------------------- what fails, and how


def test_wrong_flags_and_foreign_checkpoints_fail_naming_keys(tmp_path):
    state = reference().state_dict()
    arch = convert_glide.infer_architecture(state, **{**flags_for({}), "num_res_blocks": 2})
    with pytest.raises(CheckpointError, match=r"model keys without a tensor .*input_blocks"):
        glide.build_glide(state, arch)
    arch = convert_glide.infer_architecture(state, **{**flags_for({}), "attention_resolutions": (16,)})
    with pytest.raises(CheckpointError, match=r"checkpoint keys the model lacks 34: \['input_blocks.3.1.encoder_kv"):
        glide.build_glide(state, arch)
    with pytest.raises(ValueError, match="attention width 32 is not a multiple of --num-head-channels 64"):
        convert_glide.infer_architecture(state, **{**flags_for({}), "num_head_channels": 64})
    foreign = tmp_path / "adm.pt"
    torch.save({"input_blocks.0.0.weight": torch.zeros(32, 3, 3, 3), "out.2.weight": torch.zeros(6, 32, 3, 3)}, foreign)
    with pytest.raises(CheckpointError, match="not a GLIDE text2im model .*convert_adm"):
        convert_glide.read_glide_checkpoint(foreign)
    upsampler = dict(state, **{"input_blocks.0.0.weight": torch.zeros(32, 6, 3, 3)})
    with pytest.raises(CheckpointError, match="takes 6 input channels"):
        convert_glide.infer_architecture(upsampler, **flags_for({}))
    extra = dict(state, **{"unemb.weight": torch.zeros(50, 32)})
    with pytest.raises(CheckpointError, match=r"checkpoint keys the model lacks 1: \['unemb.weight'\]"):
        glide.build_glide(extra, convert_glide.infer_architecture(extra, **flags_for({})))


def test_full_size_base_layout_is_the_default_architecture():
    """The released base model's layout (GLIDE's defaults), on the meta device: the flag defaults
    read it key for key, and it has exactly the parameter count glide-text2im's base model reports
    (``total base parameters``: 385,030,726, as its users print it)."""
    with torch.device("meta"):
        ref = RefGlide(image_size=64, mc=192, mult=(1, 2, 3, 4), nrb=3, attn_res=(32, 16, 8), head_ch=64, ctx=128,
                       width=512, xf_layers=16, xf_heads=8, n_vocab=50257)
    state = ref.state_dict()
    arch = convert_glide.infer_architecture(state)          # every flag at its default
    assert arch == glide.GlideArchitecture()
    expected = glide.expected_shapes(arch)
    assert glide.state_dict_problems({k: tuple(v.shape) for k, v in state.items()}, expected) is None
    assert sum(math.prod(s) for s in expected.values()) == 385_030_726


CLI_ERRORS = {
    "missing checkpoint": (["--checkpoint", "{tmp}/missing.pt"], "GLIDE checkpoint not found: .*missing.pt"),
    "foreign file": (["--checkpoint", "{tmp}/foreign.pt"], "not a GLIDE text2im model"),
    "wrong architecture flag": (["--num-res-blocks", "2"], "the checkpoint does not fit the architecture"),
    "caption without tokenizer": (["--caption", "a corgi"], "a non-empty --caption needs --tokenizer DIR"),
    "empty tokenizer dir": (["--caption", "a corgi", "--tokenizer", "{tmp}"], "has no vocab.json and no merges.txt"),
    "no default channel_mult": (["--image-size", "32", "--channel-mult", ""],
                                "no default channel multipliers for image size 32"),
    "unparsable resolutions": (["--attention-resolutions", "16,x"], "argument --attention-resolutions"),
    "zero heads": (["--xf-heads", "0"], "argument --xf-heads: expected a positive integer, got '0'"),
    "xf heads not dividing": (["--xf-heads", "3"], "--xf-heads 3 does not divide the transformer width 32"),
}


@pytest.mark.parametrize("case", sorted(CLI_ERRORS))
def test_cli_user_errors_are_one_line_with_exit_code_2(tmp_path, capsys, case):
    extra, message = CLI_ERRORS[case]
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "foreign.pt")
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.txt").write_text("an earlier conversion")      # must survive a failed one
    argv = ["--checkpoint", str(_write_checkpoint(tmp_path, seed=7)), "--out", str(out), *CLI_FLAGS]
    with pytest.raises(SystemExit) as exit_info:
        convert_glide.main(argv + [arg.format(tmp=tmp_path) for arg in extra])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(f"^python -m ppap.models.convert_glide: error: .*{message}", err), err
    assert sorted(p.name for p in out.iterdir()) == ["earlier.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.pt", "foreign.pt", "out"]
