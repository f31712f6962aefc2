"""Convert GLIDE's public base checkpoint (openai/glide-text2im ``base.pt``, 64x64) to a ppap directory.

    python -m ppap.models.convert_glide --checkpoint base.pt --out models/glide64
    python -m ppap.models.convert_glide --checkpoint base.pt --out models/glide64-corgi \\
        --caption "an oil painting of a corgi" --tokenizer tokenizers/gpt2

writes ``glide/config.json`` (every architecture flag, the caption, its tokens and mask, the
checkpoint's sha256), ``glide/model.safetensors`` (the checkpoint's tensors under their own names, as
float32) and ``scheduler/`` (a ``DDPMScheduler`` with GLIDE's cosine betas, ``squaredcos_cap_v2``
over 1000 steps), so ``diffusion.pretrained: models/glide64`` uses it
(:func:`ppap.models.glide.load_glide_eps`). The directory appears whole or not at all.

The caption is fixed at conversion. The empty caption (the default) is GLIDE's unconditional
branch, ``padded_tokens_and_mask([], text_ctx)``: ``text_ctx`` end tokens, all masked; it needs no
tokenizer. Another caption needs ``--tokenizer DIR`` holding GPT-2's ``vocab.json`` and
``merges.txt``: GLIDE's ``bpe.py`` is GPT-2's byte-level BPE (its ``encoder.json``/``vocab.bpe``, with
50257 entries) applied to the *lower-cased* caption, which ``transformers.GPT2Tokenizer`` reproduces
(GLIDE's own ``encoder.json.gz``/``vocab.bpe.gz``, unzipped and renamed, work as well).

What the checkpoint determines is read from it: the widths (``model_channels``, ``xf_width``),
channels, vocabulary, ``text_ctx``, ``xf_layers``, ``xf_final_ln``, ``xf_padding``, scale-shift norm
and resblock up/down-sampling. The other flags are GLIDE's own (``--num-res-blocks``,
``--channel-mult``, ``--attention-resolutions``...) with the base model's defaults; head counts
(``--num-head-channels``, ``--num-heads``, ``--xf-heads``) shape no tensor, so the checkpoint cannot
confirm them. The mapping is strict: every checkpoint tensor must be used and every model tensor
given with its shape, otherwise the conversion fails naming the keys. The upsampler and the
inpainting models (more input channels) are refused. From the command line, expected user errors
print one line and exit with code 2.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import fields
from pathlib import Path
from typing import Sequence

import torch

from ppap.models.checkpoints import CheckpointError
from ppap.models.cli import OneLineParser, int_list, positive_int, user_errors
from ppap.models.glide import (
    CONFIG_FILE,
    GLIDE_DIR,
    WEIGHTS_FILE,
    GlideArchitecture,
    build_glide,
    padded_tokens_and_mask,
)

NUM_TIMESTEPS = 1000                # GLIDE's base model: 1000 steps, squaredcos_cap_v2 (cosine) betas
READ_FROM_CHECKPOINT = ("model_channels", "in_channels", "out_channels", "use_scale_shift_norm", "resblock_updown",
                        "text_ctx", "xf_width", "xf_layers", "xf_final_ln", "xf_padding", "n_vocab")
NOT_IN_CHECKPOINT = ("num_head_channels", "num_heads", "num_heads_upsample", "xf_heads")
_HINT = ("check --image-size, --channel-mult, --num-res-blocks, --attention-resolutions and the head flags against "
         "the flags the checkpoint was trained with")


def read_glide_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict of a GLIDE checkpoint (.pt/.pth with ``weights_only=True``, or .safetensors)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"GLIDE checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read GLIDE checkpoint {path}: {type(err).__name__}: {err}") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    needed = ("input_blocks.0.0.weight", "out.2.weight", "time_embed.0.weight", "token_embedding.weight",
              "positional_embedding", "transformer_proj.weight")
    absent = [k for k in needed if k not in state]
    if absent:
        adm = "" if "token_embedding.weight" in state or "input_blocks.0.0.weight" not in state else \
            " (a UNet without a text encoder: for guided-diffusion checkpoints use python -m ppap.models.convert_adm)"
        raise CheckpointError(f"{path} is not a GLIDE text2im model (no {', '.join(absent[:3])}){adm}")
    return state


def infer_architecture(state: dict[str, torch.Tensor], **flags) -> GlideArchitecture:
    """What the state dict determines, plus the given flags (GLIDE's names, snake_case)."""
    stem = state["input_blocks.0.0.weight"]
    if stem.shape[1] != 3:
        raise CheckpointError(f"the checkpoint's UNet takes {stem.shape[1]} input channels, GLIDE's base model 3 "
                              "(the upsampler takes 6, the inpainting model 7): only the base text2im model converts")
    emb_rows, res_out = (state.get(f"input_blocks.1.0.{k}.weight") for k in ("emb_layers.1", "in_layers.2"))
    scale_shift = emb_rows is None or res_out is None or emb_rows.shape[0] == 2 * res_out.shape[0]
    conv_down = any(re.fullmatch(r"input_blocks\.\d+\.0\.op\.weight", k) for k in state)
    layers = {int(m.group(1)) for k in state for m in [re.match(r"transformer\.resblocks\.(\d+)\.", k)] if m}
    positional = state["positional_embedding"]
    read = dict(model_channels=state["time_embed.0.weight"].shape[1], in_channels=stem.shape[1],
                out_channels=state["out.2.weight"].shape[0], use_scale_shift_norm=scale_shift,
                resblock_updown=not conv_down, text_ctx=positional.shape[0], xf_width=positional.shape[1],
                xf_layers=max(layers) + 1 if layers else 0, xf_final_ln="final_ln.weight" in state,
                xf_padding="padding_embedding" in state, n_vocab=state["token_embedding.weight"].shape[0])
    if read["xf_layers"] < 1:
        raise CheckpointError("the checkpoint has no text transformer blocks (transformer.resblocks.*)")
    overlap = sorted(set(read) & set(flags))
    if overlap:
        raise ValueError(f"{overlap} are read from the checkpoint, not given")
    return GlideArchitecture(**read, **flags)


def caption_tokens(caption: str, text_ctx: int, n_vocab: int,
                   tokenizer: str | os.PathLike | None = None) -> tuple[list[int], list[bool]]:
    """GLIDE's tokens and mask for `caption`: GPT-2's byte-level BPE of the lower-cased text, padded.

    The empty caption needs no tokenizer (it is ``text_ctx`` end tokens, all masked).
    """
    if not caption:
        return padded_tokens_and_mask([], text_ctx, n_vocab)
    if tokenizer is None:
        raise ValueError("a non-empty --caption needs --tokenizer DIR (GPT-2's vocab.json and merges.txt)")
    directory = Path(tokenizer)
    absent = [name for name in ("vocab.json", "merges.txt") if not (directory / name).is_file()]
    if absent:
        raise ValueError(f"tokenizer directory {directory} has no {' and no '.join(absent)} (GPT-2's byte-level BPE)")
    if "<|endoftext|>" in caption.lower():
        # transformers would read it as the special token; GLIDE's bpe.py spells it out byte by byte
        raise ValueError("the caption contains <|endoftext|>, which GLIDE's tokenizer would not treat as special")
    from transformers import GPT2Tokenizer

    try:
        bpe = GPT2Tokenizer.from_pretrained(str(directory), local_files_only=True)
    except Exception as err:    # a damaged vocab.json or merges.txt
        raise ValueError(f"cannot read the tokenizer in {directory}: {type(err).__name__}: {err}") from err
    if len(bpe) != n_vocab:
        raise ValueError(f"tokenizer {directory} has {len(bpe)} entries, the checkpoint's vocabulary {n_vocab}")
    ids = bpe.encode(caption.lower(), add_special_tokens=False)     # GLIDE's bpe.py lower-cases first
    if len(ids) > text_ctx:
        raise ValueError(f"the caption has {len(ids)} tokens, more than the model's {text_ctx} (GLIDE would cut it)")
    return padded_tokens_and_mask(ids, text_ctx, n_vocab)


def glide_scheduler(num_timesteps: int = NUM_TIMESTEPS, learn_sigma: bool = True):
    """GLIDE's training betas (``get_named_beta_schedule("squaredcos_cap_v2", T)``) as a ``DDPMScheduler``."""
    from ppap.models.convert_adm import adm_scheduler

    return adm_scheduler(num_timesteps, "cosine", learn_sigma)


def _sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike, caption: str = "",
                       tokenizer: str | os.PathLike | None = None, **flags) -> GlideArchitecture:
    """Checkpoint file -> ppap GLIDE directory `out` (``glide/`` + ``scheduler/``); returns the architecture."""
    from safetensors.torch import save_file

    from ppap.io import atomic_directory, write_json

    state = read_glide_checkpoint(checkpoint)
    arch = infer_architecture(state, **flags)
    model = build_glide(state, arch, hint=_HINT)
    tokens, mask = caption_tokens(caption, arch.text_ctx, arch.n_vocab, tokenizer)
    record = dict(source=str(checkpoint), sha256=_sha256(checkpoint), architecture=arch.to_json(), caption=caption,
                  tokenizer=None if tokenizer is None else str(tokenizer), tokens=tokens, mask=mask,
                  read_from_checkpoint=list(READ_FROM_CHECKPOINT), not_in_checkpoint=list(NOT_IN_CHECKPOINT),
                  num_timesteps=NUM_TIMESTEPS, noise_schedule="squaredcos_cap_v2")
    with atomic_directory(out) as tmp:
        (tmp / GLIDE_DIR).mkdir()
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / GLIDE_DIR / WEIGHTS_FILE))
        write_json(tmp / GLIDE_DIR / CONFIG_FILE, record)
        glide_scheduler(NUM_TIMESTEPS, arch.out_channels == 2 * arch.in_channels).save_pretrained(tmp / "scheduler")
    return arch


def main(argv: Sequence[str] | None = None) -> None:
    defaults = {f.name: f.default for f in fields(GlideArchitecture) if f.init}
    parser = OneLineParser(prog="python -m ppap.models.convert_glide", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="GLIDE base.pt (a state dict)")
    parser.add_argument("--out", required=True, help="directory to write (glide/ + scheduler/)")
    parser.add_argument("--caption", default="",
                        help="the fixed caption (default: empty, GLIDE's unconditional branch)")
    parser.add_argument("--tokenizer",
                        help="directory with GPT-2's vocab.json and merges.txt (for a non-empty caption)")
    parser.add_argument("--image-size", type=positive_int, default=defaults["image_size"])
    parser.add_argument("--num-res-blocks", type=positive_int, default=defaults["num_res_blocks"])
    parser.add_argument("--channel-mult", type=int_list, default=(), help="e.g. 1,2,3,4 (default: by image size)")
    parser.add_argument("--attention-resolutions", type=int_list, default=defaults["attention_resolutions"],
                        help="e.g. 32,16,8")
    parser.add_argument("--num-head-channels", type=int, default=defaults["num_head_channels"],
                        help="-1: use --num-heads")
    parser.add_argument("--num-heads", type=positive_int, default=defaults["num_heads"])
    parser.add_argument("--num-heads-upsample", type=int, default=defaults["num_heads_upsample"])
    parser.add_argument("--xf-heads", type=positive_int, default=defaults["xf_heads"])
    args = parser.parse_args(argv)
    with user_errors(parser.prog):
        arch = convert_checkpoint(args.checkpoint, args.out, caption=args.caption, tokenizer=args.tokenizer,
                                  image_size=args.image_size, num_res_blocks=args.num_res_blocks,
                                  channel_mult=args.channel_mult, attention_resolutions=args.attention_resolutions,
                                  num_head_channels=args.num_head_channels, num_heads=args.num_heads,
                                  num_heads_upsample=args.num_heads_upsample, xf_heads=args.xf_heads)
    print(f"wrote {args.out}: {arch}")
    print(f"{', '.join(NOT_IN_CHECKPOINT)} shape no tensor, so the checkpoint cannot confirm them: they are the "
          f"flags given (every flag is recorded in {Path(args.out) / GLIDE_DIR / CONFIG_FILE})")


if __name__ == "__main__":
    main()
