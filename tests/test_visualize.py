"""Pictures of a run: panels (panels.save_panel) and what the final report puts in them."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from configs import default
from sassid_jax.evaluation import report
from sassid_jax.evaluation.panels import SEPARATOR, save_panel


def _columns(h: int = 40) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [
        ("noisy 28.10 dB", rng.uniform(0, 255, (h, 30, 3)).astype(np.float32)),
        ("BNN 33.20 dB", rng.integers(0, 256, (h, 32, 3)).astype(np.uint8)),
        ("LAN", rng.uniform(-20, 280, (h, 30, 3))),
        ("U-Net", rng.integers(0, 256, (h, 36, 3)).astype(np.uint8)),
        ("alpha", rng.uniform(0, 1, (h, 30))),
        ("clean", rng.integers(0, 256, (h, 30, 3)).astype(np.uint8)),
    ]


def test_panel_layout_and_pixels(tmp_path: Path) -> None:
    cols = _columns()
    out = tmp_path / "sub" / "dir" / "panel.png"
    layout = save_panel(out, cols, caption="epoch 3 -- validation sample 0")
    assert out.exists()
    assert [p.name for p in out.parent.iterdir()] == ["panel.png"]  # no temp file left
    img = np.asarray(Image.open(out).convert("RGB"))
    widths = [c[1].shape[1] for c in cols]
    assert img.shape[1] >= sum(widths)
    assert img.shape[0] > cols[0][1].shape[0]
    assert (layout.width, layout.height) == (img.shape[1], img.shape[0])
    expected_lefts = [SEPARATOR + sum(widths[:i]) + SEPARATOR * i for i in range(len(cols))]
    assert list(layout.column_lefts) == expected_lefts
    top = layout.image_top
    assert top > 0  # room for the title strip
    h = cols[0][1].shape[0]
    for (label, arr), left, w in zip(cols, layout.column_lefts, widths, strict=True):
        region = img[top : top + h, left : left + w].astype(np.int32)
        a = np.asarray(arr, np.float64)
        if a.ndim == 2:
            want = np.clip(np.floor(a * 255 + 0.5), 0, 255)[:, :, None].repeat(3, axis=2)
        else:
            want = np.clip(np.floor(a + 0.5), 0, 255)
        np.testing.assert_array_equal(region, want, err_msg=label)
        # one specific pixel, as a direct check
        assert tuple(img[top + 5, left + 7]) == tuple(want[5, 7].astype(np.uint8)), label
        # separator right of the column is white below the caption
        assert np.all(img[layout.title_top :, left + w : left + w + SEPARATOR] == 255), label
    # the title strip holds some dark (text) pixels
    assert img[layout.title_top : top].min() < 128
    # the caption runs across the separators, not cut by them
    caption = img[SEPARATOR : layout.title_top]
    bars = [left + w for left, w in zip(layout.column_lefts, widths, strict=True)][:-1]
    assert min(caption[:, x : x + SEPARATOR].min() for x in bars) < 128


def test_panel_overwrites_atomically(tmp_path: Path) -> None:
    out = tmp_path / "p.png"
    save_panel(out, _columns()[:2])
    save_panel(out, _columns()[:3])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png"]
    assert Image.open(out).size[0] > 30 + 32 + 30


def test_panel_mode_follows_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        save_panel(tmp_path / "p.png", _columns()[:2])
    finally:
        os.umask(old)
    assert (tmp_path / "p.png").stat().st_mode & 0o777 == 0o640


def test_panel_height_mismatch_names_label(tmp_path: Path) -> None:
    cols = _columns()
    cols[3] = ("U-Net", np.zeros((41, 36, 3), np.uint8))
    with pytest.raises(ValueError, match="U-Net"):
        save_panel(tmp_path / "bad.png", cols)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("shape", [(40, 30, 2), (40, 30, 4), (40,), (2, 40, 30, 3)])
def test_panel_bad_shape_names_label(tmp_path: Path, shape: tuple[int, ...]) -> None:
    cols = _columns()
    cols[2] = ("LAN", np.zeros(shape, np.float32))
    with pytest.raises(ValueError, match="LAN"):
        save_panel(tmp_path / "bad.png", cols)


def _report_config(bnn_block: int, **dataset):
    config = default.get_config()
    config.eval.bnn_block = bnn_block
    config.dataset.update(dataset)
    return config


def test_alpha_map_per_block_ignores_block_seams():
    """A BNN output constant in each 32-px block (different per block: seams only) is flat
    everywhere per block, while the whole-image map takes the seams for texture."""
    levels = np.array([[40.0, 200.0], [120.0, 10.0]], np.float32)
    bnn = np.repeat(np.repeat(levels, 32, axis=0), 32, axis=1)[:, :, None].repeat(3, axis=2)
    flat = float(jax.nn.sigmoid(-1.0))  # alpha at local std 0 with alpha.lower = 1
    per_block = report.alpha_map(bnn, _report_config(32))
    assert per_block.shape == (64, 64, 1)
    np.testing.assert_allclose(per_block, flat, atol=1e-6)
    whole = report.alpha_map(bnn, _report_config(0))
    assert whole[31:33, :].min() > 0.9 and whole[5, 5, 0] == pytest.approx(flat, abs=1e-6)


def test_panel_columns_name_blocks_and_alpha():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (8, 8, 3)).astype(np.float32)
    example = {"noisy": image, "clean": image, "name": "a"}
    outputs = {"bnn": image, "lan": image, "unet": image}
    columns = report.panel_columns(
        example, outputs, np.zeros((8, 8, 1)), {"noisy": 20.0, "bnn": 25.5}, bnn_block=64
    )
    labels = [label for label, _ in columns]
    assert labels == [
        "Noisy 20.00 dB",
        "BNN (64-px blocks) 25.50 dB",
        "LAN",
        "U-Net",
        "alpha per 64-px block (legend above)",
        "clean",
    ]
    legend = report.alpha_legend(_report_config(64))
    assert "grey = 0.5 where 1 <= s <= 5" in legend and "down to 0.27" in legend


@pytest.mark.parametrize(
    ("dataset", "training_photos"),
    [
        ({}, False),  # sasl_embedded: test split vs train split
        ({"train_split": "test"}, True),
        ({"name": "image_folder", "noisy_dir": "p"}, True),
        ({"name": "noisy_image_folder", "noisy_dir": "p"}, True),
        ({"name": "image_folder", "noisy_dir": "p", "eval_noisy_dir": "q"}, False),
        ({"name": "sidd_validation_srgb"}, True),
        ({"name": "sidd_medium_srgb", "eval_name": "sidd_validation_srgb"}, False),
    ],
)
def test_table_title_says_when_training_photos_are_scored(dataset, training_photos):
    title = report.table_title(_report_config(64, **dataset), 3)
    if training_photos:
        assert title.startswith("Evaluation on the training photos (3 images; no separate")
    else:
        assert title == "Held-out evaluation (3 images):"
