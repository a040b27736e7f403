"""Tests for sassid_jax.evaluation.panels.save_panel."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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
        # separator right of the column is white
        assert np.all(img[:, left + w : left + w + SEPARATOR] == 255), label
    # the title strip holds some dark (text) pixels
    assert img[SEPARATOR:top].min() < 128


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
