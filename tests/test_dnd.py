"""DND builder and submission on a small fake download in the real v7.3 (HDF5) layout."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import ml_collections
import numpy as np
import pytest
import scipy.io

from sassid_jax.data import dnd, sources
from sassid_jax.errors import UserInputError
from sassid_jax.modes import submit

HEIGHT, WIDTH, BOX = 96, 128, 32
# (row0, col0) of boxes: at the corner (no margin), 40 px in (32), far in, at the far corner.
CORNERS = [(0, 0), (40, 50), (32, 64), (HEIGHT - BOX, WIDTH - BOX), (10, 90)]


def _boxes(i: int) -> np.ndarray:
    """20 boxes [row0, col0, row1, col1] (0-based, half-open) of image i."""
    rows = [CORNERS[(i + k) % len(CORNERS)] for k in range(dnd.BOXES_PER_IMAGE)]
    return np.array([[r, c, r + BOX, c + BOX] for r, c in rows])


def write_dnd(root: Path) -> list[np.ndarray]:
    """info.mat and images_srgb/0001..0050.mat as MATLAB v7.3 writes them (HDF5, axes
    reversed, a 512-byte user block); returns the images (H, W, 3) float32."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = []
    with h5py.File(root / "info.mat", "w", userblock_size=512) as f:
        refs = []
        for i in range(dnd.NUM_IMAGES):
            one_based = _boxes(i) + np.array([1, 1, 0, 0])  # 1-based, inclusive ends
            refs.append(f.create_dataset(f"#refs#/b{i}", data=one_based.T.astype(np.float64)).ref)
        info = f.create_group("info")
        info.create_dataset("boundingboxes", data=np.array([refs], dtype=h5py.ref_dtype))
    (root / "images_srgb").mkdir()
    for i in range(dnd.NUM_IMAGES):
        image = rng.random((HEIGHT, WIDTH, 3), dtype=np.float32)
        images.append(image)
        with h5py.File(root / "images_srgb" / f"{i + 1:04d}.mat", "w", userblock_size=512) as f:
            f.create_dataset("InoisySRGB", data=image.transpose())
    return images


def test_context_window_margins():
    box = np.array([100, 100, 612, 612])
    assert dnd.context_window(box, 2000, 3000) == (36, 36, 676, 676)  # 80 -> 64 each side
    assert dnd.context_window(np.array([0, 50, 512, 562]), 700, 600) == (0, 18, 576, 594)
    with pytest.raises(ValueError, match="does not fit"):
        dnd.context_window(np.array([0, 0, 600, 10]), 512, 512)


@pytest.fixture(scope="module")
def fake_dnd(tmp_path_factory):
    root = tmp_path_factory.mktemp("dnd")
    images = write_dnd(root / "dl")
    cfg = ml_collections.ConfigDict(
        {
            "name": "dnd_srgb",
            "data_dir": str(root / "tfds"),
            "manual_dir": str(root / "dl"),
            "eval_name": "",
        }
    )
    return root, images, cfg


def test_boxes_are_read_zero_based(fake_dnd):
    root, _, _ = fake_dnd
    boxes = dnd.read_boxes(root / "dl")
    assert boxes.shape == (50, 20, 4)
    np.testing.assert_array_equal(boxes[3], _boxes(3))


def test_builder_windows_and_identity_submission(fake_dnd, tmp_path):
    root, images, cfg = fake_dnd
    import tensorflow_datasets as tfds

    builder = sources.prepared_builder("dnd_srgb", cfg)
    examples = list(tfds.as_numpy(builder.as_dataset(split="benchmark", shuffle_files=False)))
    assert len(examples) == 1000
    margins = set()
    for e in examples:
        i, k = int(e["image_index"]), int(e["box_index"])
        r0, c0, r1, c1 = e["window"]
        np.testing.assert_array_equal(e["noisy"], images[i][r0:r1, c0:c1])
        top, left, h, w = e["inner"]
        b = _boxes(i)[k]
        assert (r0 + top, c0 + left, h, w) == (b[0], b[1], BOX, BOX)
        margins.add((int(top), int(left)))
        assert (r1 - r0) % 32 == 0 and (c1 - c0) % 32 == 0
    assert {(0, 0), (32, 32), (32, 64), (64, 64)} <= margins  # border-limited and full 64

    out = tmp_path / "submission"
    submit.submit_dnd(cfg, lambda x: x, out)
    bundled = scipy.io.loadmat(out / "bundled" / "0007.mat")
    assert bundled["Idenoised"].shape == (1, 20)
    assert not bundled["israw"].item() and bundled["eval_version"].item() == "1.0"
    for k in range(20):
        crop = bundled["Idenoised"][0, k]
        assert crop.dtype == np.float32 and crop.shape == (BOX, BOX, 3)
        r0, c0, r1, c1 = _boxes(6)[k]
        np.testing.assert_allclose(crop, images[6][r0:r1, c0:c1], atol=1e-6)

    # resumable: boxes already written are kept, the bundles are rebuilt from them
    marker = np.full((BOX, BOX, 3), 0.5, np.float32)
    dnd.write_box(out, 0, 0, marker)
    submit.submit_dnd(cfg, lambda x: x, out)
    again = scipy.io.loadmat(out / "bundled" / "0001.mat")["Idenoised"][0, 0]
    np.testing.assert_array_equal(again, marker)


def test_missing_box_and_bad_files_name_the_file(fake_dnd, tmp_path):
    root, _, _ = fake_dnd
    with pytest.raises(dnd.DndFilesError, match="0001_01.mat: file not found"):
        dnd.bundle(tmp_path)
    with pytest.raises(dnd.DndFilesError, match="info.mat: file not found"):
        dnd.read_boxes(tmp_path)
    with pytest.raises(dnd.DndFilesError, match=r"0051.mat: file not found"):
        dnd.read_image(root / "dl", 50)
    bad = tmp_path / "images_srgb"
    bad.mkdir()
    with h5py.File(bad / "0001.mat", "w") as f:
        f.create_dataset("Inoisy", data=np.zeros((3, 4, 4), np.float32))
    with pytest.raises(dnd.DndFilesError, match=r"0001.mat: no variable 'InoisySRGB'"):
        dnd.read_image(tmp_path, 0)


def test_truncated_mat_and_written_boxes(tmp_path):
    images = tmp_path / "images_srgb"
    images.mkdir()
    with h5py.File(images / "0001.mat", "w", userblock_size=512) as f:
        f.create_dataset("InoisySRGB", data=np.zeros((3, 64, 64), np.float32))
    data = (images / "0001.mat").read_bytes()
    (images / "0001.mat").write_bytes(data[:100])  # a cut download
    with pytest.raises(dnd.DndFilesError, match="0001.mat: not a readable .mat file") as error:
        dnd.read_image(tmp_path, 0)
    assert isinstance(error.value, UserInputError) and "\n" not in str(error.value)
    old = os.umask(0o027)
    try:
        dnd.write_box(tmp_path / "out", 0, 0, np.zeros((4, 4, 3), np.float32))
    finally:
        os.umask(old)
    written = dnd.box_path(tmp_path / "out", 0, 0)
    assert os.stat(written).st_mode & 0o777 == 0o640
    assert [p.name for p in written.parent.iterdir()] == [written.name]  # no temp file left
