"""Small but valid files of the kinds a config may name (``guide.pretrained``, ``diffusion.pretrained``,
``evaluation.reference``, ``evaluation.inception_weights``): the pre-run file checks open them,
so a test that plans a preset with pretrained paths needs real files, only tiny ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

SLIM = {"channels": [8, 16, 32, 64], "stem_width": 8}  # resnet10t at 1/8 width: a few 10k parameters


def write_guide(path: Path, num_classes: int = 10, in_chans: int = 1, input_size: int | None = 16,
                seed: int = 0) -> Path:
    """A ppap guide checkpoint (resnet10t, slim) with the given classes and input channels."""
    from ppap.models import classifiers

    spec = classifiers.guide_spec("resnet10t", num_classes, in_chans, input_size, [0.5] * in_chans,
                                  [0.5] * in_chans, SLIM)
    path.parent.mkdir(parents=True, exist_ok=True)
    classifiers.save_guide(path, classifiers.build_timm_guide(**spec, seed=seed), spec)
    return path


def write_diffusion_dir(directory: Path, sample_size: int = 8, channels: int = 1, out_channels: int | None = None,
                        num_train_timesteps: int = 1000) -> Path:
    """A diffusers directory (unet/ + scheduler/) with a tiny UNet2DModel."""
    from diffusers import UNet2DModel

    from ppap.models.unet import save_diffusion_model
    from ppap.schedules import make_ddpm_scheduler

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DModel(sample_size=sample_size, in_channels=channels, out_channels=out_channels or channels,
                           block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                           down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    save_diffusion_model(directory, unet, make_ddpm_scheduler(num_train_timesteps))
    return directory


def write_reference_npz(path: Path, count: int = 2, size: int = 8, channels: int = 1) -> Path:
    images = np.random.default_rng(0).integers(0, 256, (count, size, size, channels), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, arr_0=images)
    return path


def write_inception_weights(path: Path) -> Path:
    """Tensors named and shaped as torch-fidelity's InceptionV3 checks them (not a whole network:
    ppap.metrics.check_inception_weights looks at fc and the first convolution)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3), "fc.weight": torch.zeros(1008, 2048),
                "fc.bias": torch.zeros(1008)}, path)
    return path


def write_class_folders(root: Path, count: int) -> Path:
    """An ImageFolder tree of ``count`` synset-named classes, one tiny PNG in each."""
    from PIL import Image

    for i in range(count):
        (root / f"n{i:08d}").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (i % 256, 0, 0)).save(root / f"n{i:08d}" / "0.png")
    return root


def write_glide_dir(directory: Path, image_size: int = 64) -> Path:
    """A GLIDE directory (ppap.models.convert_glide) of a tiny random Text2ImUNet: 2 levels of 32/64
    channels, a 2-layer text transformer of width 32 over 8 tokens and a 50-token vocabulary."""
    from ppap.models import convert_glide, glide

    flags = dict(image_size=image_size, model_channels=32, num_res_blocks=1, channel_mult=(1, 2),
                 attention_resolutions=(image_size // 2,), num_head_channels=16, text_ctx=8, xf_width=32,
                 xf_layers=2, xf_heads=2, n_vocab=50)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = glide.GlideText2ImUNet(glide.GlideArchitecture(**flags))
    directory.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = directory.parent / f"{directory.name}.base.pt"
    torch.save(model.state_dict(), checkpoint)
    convert_glide.convert_checkpoint(checkpoint, directory, image_size=image_size, num_res_blocks=1,
                                     channel_mult=(1, 2), attention_resolutions=(image_size // 2,),
                                     num_head_channels=16, xf_heads=2)
    checkpoint.unlink()
    return directory


def write_dense_guide(path: Path, kind: str, outputs: int, channels: int = 3, input_size: int | None = None,
                      seed: int = 0) -> Path:
    """A ppap dense-guide checkpoint (a plain U-Net of width 4) of a given output kind."""
    from ppap.models import dense

    spec = dense.dense_spec("plain_unet", kind, outputs, channels, input_size, [0.5] * channels, [0.5] * channels,
                            width=4)
    path.parent.mkdir(parents=True, exist_ok=True)
    dense.save_dense_guide(path, dense.build_dense_guide(spec, seed=seed), spec)
    return path
