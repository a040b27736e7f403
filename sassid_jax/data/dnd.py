"""DND (Ploetz & Roth, CVPR 2017) sRGB benchmark: a TFDS builder and the submission bundles.

Point `manual_dir` at the unpacked benchmark download:

    <manual_dir>/info.mat                     MATLAB v7.3 (HDF5): info.boundingboxes, one
                                              20x4 array per image: [row0 col0 row1 col1],
                                              1-based, inclusive
    <manual_dir>/images_srgb/0001.mat .. 0050.mat   v7.3, 'InoisySRGB': H x W x 3 in [0, 1]

Each 512x512 box is denoised with context (docs/method.md, "Evaluation protocol"): on each side
min(80, distance to the image border) pixels, rounded down to a multiple of 32, so every
window is a multiple of 32 (the U-Net's) and the box sits inside it. The builder stores one
example per box: that window (float32, [0, 1], as in the file) and where the box lies in it.
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
    """(50, 20, 4) int64 boxes [row0, col0, row1, col1], 0-based, half-open."""
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
    """Image `index` (0-based) as (H, W, 3) float32 in [0, 1]."""
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
    """(row0, col0, row1, col1) of the window around `box` ([row0, col0, row1, col1]):
    per side min(context, room to the border) rounded down to a multiple of `multiple`."""
    r0, c0, r1, c1 = (int(v) for v in box)
    if not (0 <= r0 < r1 <= height and 0 <= c0 < c1 <= width):
        raise ValueError(f"box {box.tolist()} does not fit in a {height}x{width} image")

    def margin(room: int) -> int:
        return min(context, room) // multiple * multiple

    return r0 - margin(r0), c0 - margin(c0), r1 + margin(height - r1), c1 + margin(width - c1)


def box_examples(manual_dir: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Per box: noisy window (float32 [0, 1]), inner [top, left, height, width] of the box
    in the window, window [row0, col0, row1, col1] in the image, image and box index."""
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
    """Where the denoised box goes: out_dir/boxes/<image>_<box>.mat (1-based names)."""
    return epath.Path(out_dir) / "boxes" / f"{image_index + 1:04d}_{box_index + 1:02d}.mat"


def write_box(
    out_dir: str | os.PathLike[str], image_index: int, box_index: int, denoised: np.ndarray
) -> None:
    """Save one denoised box ((512, 512, 3) float, [0, 1]) as 'Idenoised_crop' (float32)."""
    crop = np.clip(np.asarray(denoised, np.float32), 0.0, 1.0)
    write_atomic_mat(box_path(out_dir, image_index, box_index), {"Idenoised_crop": crop})


def bundle(out_dir: str | os.PathLike[str]) -> list[epath.Path]:
    """Gather out_dir/boxes/*.mat into the 50 submission files out_dir/bundled/0001.mat ..
    ('Idenoised': 1x20 cell, 'israw': False, 'eval_version': '1.0'). Raises DndFilesError
    naming the first missing box."""
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
