"""DND (Ploetz & Roth, CVPR 2017) sRGB benchmark: a TFDS builder and the submission bundles.

`manual_dir` holds the unpacked download (info.mat, images_srgb/0001.mat .. 0050.mat). The
builder stores one example per 512x512 box: the box with its denoising context (float32 in
[0, 1]) and where the box lies in it. Layout and context rule: docs/data.md#dnd.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from sassid_jax.errors import UserInputError
from sassid_jax.io.matfiles import MatFileError, read_array, write_atomic_mat

NUM_IMAGES, BOXES_PER_IMAGE = 50, 20
CONTEXT, CONTEXT_MULTIPLE = 80, 32


class DndFilesError(UserInputError, ValueError):
    """Missing or malformed DND files; str() names the file."""


def read_boxes(manual_dir: str | os.PathLike[str]) -> np.ndarray:
    """The boxes of `manual_dir/info.mat`: (50, 20, 4) int64 [row0, col0, row1, col1],
    0-based, half-open (converted from MATLAB's 1-based inclusive). DndFilesError naming the
    file."""
    path = epath.Path(manual_dir) / "info.mat"
    if not path.is_file():
        raise DndFilesError(f"{path}: file not found (unpack the DND benchmark there)")
    try:
        with path.open("rb") as source, h5py.File(source, "r") as f:  # local or gs://
            per_image = [
                np.asarray(f[r]).T for r in np.asarray(f["info"]["boundingboxes"]).reshape(-1)
            ]
    except (OSError, KeyError, TypeError, ValueError) as e:
        raise DndFilesError(f"{path}: no readable info.boundingboxes ({e})") from e
    if len(per_image) != NUM_IMAGES:
        raise DndFilesError(
            f"{path}: info.boundingboxes has {len(per_image)} entries, expected {NUM_IMAGES}"
        )
    shapes = {b.shape for b in per_image}
    if shapes != {(BOXES_PER_IMAGE, 4)}:
        raise DndFilesError(
            f"{path}: boxes of shapes {sorted(shapes)}, expected ({BOXES_PER_IMAGE}, 4) per image"
        )
    boxes = np.stack(per_image)
    boxes = boxes.astype(np.int64)
    boxes[..., :2] -= 1  # 1-based inclusive -> 0-based half-open
    return boxes


def read_image(manual_dir: str | os.PathLike[str], index: int) -> np.ndarray:
    """A DND noisy image.

    Args:
      manual_dir: the unpacked benchmark.
      index: 0-based image index (0..49; file images_srgb/<index + 1>.mat).
    Returns:
      (H, W, 3) float32 in [0, 1]. DndFilesError naming the file.
    """
    path = epath.Path(manual_dir) / "images_srgb" / f"{index + 1:04d}.mat"
    try:
        image = read_array(path, "InoisySRGB", shape=(None, None, 3))
    except MatFileError as e:
        raise DndFilesError(str(e)) from e
    return np.asarray(image, np.float32)


def context_window(
    box: np.ndarray,
    height: int,
    width: int,
    context: int = CONTEXT,
    multiple: int = CONTEXT_MULTIPLE,
) -> tuple[int, int, int, int]:
    """The denoising window around a box: per side min(context, room to the border) rounded
    down to a multiple of `multiple`.

    Args:
      box: [row0, col0, row1, col1], 0-based, half-open.
      height, width: the image size; ValueError when the box does not fit.
      context: the most context per side, in pixels.
      multiple: each margin is a multiple of it.
    Returns:
      (row0, col0, row1, col1) of the window, 0-based, half-open.
    """
    r0, c0, r1, c1 = (int(v) for v in box)
    if not (0 <= r0 < r1 <= height and 0 <= c0 < c1 <= width):
        raise ValueError(f"box {box.tolist()} does not fit in a {height}x{width} image")

    def margin(room: int) -> int:
        return min(context, room) // multiple * multiple

    return r0 - margin(r0), c0 - margin(c0), r1 + margin(height - r1), c1 + margin(width - c1)


def box_examples(manual_dir: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yields per box (image by image): noisy window ((h, w, 3) float32 in [0, 1]), inner
    [top, left, height, width] of the box in the window and window [row0, col0, row1, col1]
    in the image (int32), image_index and box_index (0-based)."""
    boxes = read_boxes(manual_dir)
    for i in range(NUM_IMAGES):
        image = read_image(manual_dir, i)
        h, w = image.shape[:2]
        for k in range(BOXES_PER_IMAGE):
            try:
                window = context_window(boxes[i, k], h, w)
            except ValueError as e:
                info = epath.Path(manual_dir) / "info.mat"
                raise DndFilesError(f"{info}: image {i + 1}: {e}") from e
            r0, c0, r1, c1 = window
            b = boxes[i, k]
            yield {
                "noisy": np.ascontiguousarray(image[r0:r1, c0:c1]),
                "inner": np.array([b[0] - r0, b[1] - c0, b[2] - b[0], b[3] - b[1]], np.int32),
                "window": np.array(window, np.int32),
                "image_index": i,
                "box_index": k,
            }


class DndSrgb(tfds.core.GeneratorBasedBuilder):
    """DND sRGB benchmark boxes with their denoising context (no ground truth)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: one example per box, with context."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Unpack the DND benchmark (info.mat, images_srgb/) there."
    code_path = None

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "noisy": tfds.features.Tensor(
                        shape=(None, None, 3), dtype=np.float32, encoding="zlib"
                    ),
                    "inner": tfds.features.Tensor(shape=(4,), dtype=np.int32),
                    "window": tfds.features.Tensor(shape=(4,), dtype=np.int32),
                    "image_index": np.int32,
                    "box_index": np.int32,
                }
            ),
            homepage="https://noise.visinf.tu-darmstadt.de/",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        return {"benchmark": self._generate_examples(epath.Path(dl_manager.manual_dir))}

    def _generate_examples(self, manual_dir: epath.Path) -> Iterator[tuple[str, dict[str, Any]]]:
        for example in box_examples(manual_dir):
            yield f"{example['image_index']:02d}_{example['box_index']:02d}", example


def box_path(out_dir: str | os.PathLike[str], image_index: int, box_index: int) -> epath.Path:
    """Where the denoised box goes: out_dir/boxes/<image>_<box>.mat (1-based names).

    Args:
      out_dir: the submission folder.
      image_index, box_index: 0-based.
    """
    return epath.Path(out_dir) / "boxes" / f"{image_index + 1:04d}_{box_index + 1:02d}.mat"


def write_box(
    out_dir: str | os.PathLike[str], image_index: int, box_index: int, denoised: np.ndarray
) -> None:
    """Save one denoised box atomically as 'Idenoised_crop' (float32, clipped to [0, 1]).

    Args:
      out_dir: the submission folder (the file goes to `box_path`).
      image_index, box_index: 0-based.
      denoised: (512, 512, 3) float in [0, 1].
    """
    crop = np.clip(np.asarray(denoised, np.float32), 0.0, 1.0)
    write_atomic_mat(box_path(out_dir, image_index, box_index), {"Idenoised_crop": crop})


def bundle(out_dir: str | os.PathLike[str]) -> list[epath.Path]:
    """Gather out_dir/boxes/*.mat into the 50 submission files out_dir/bundled/0001.mat ..
    ('Idenoised': 1x20 cell, 'israw': False, 'eval_version': '1.0'); returns their paths.
    Raises DndFilesError naming the first missing box."""
    written = []
    for i in range(NUM_IMAGES):
        cells = np.empty((BOXES_PER_IMAGE,), dtype=object)
        for k in range(BOXES_PER_IMAGE):
            path = box_path(out_dir, i, k)
            try:
                cells[k] = read_array(path, "Idenoised_crop", shape=(None, None, 3))
            except MatFileError as e:
                raise DndFilesError(f"cannot bundle: {e}") from e
        target = epath.Path(out_dir) / "bundled" / f"{i + 1:04d}.mat"
        write_atomic_mat(target, {"Idenoised": cells, "israw": False, "eval_version": "1.0"})
        written.append(target)
    return written
