"""The image_folder source: training on noisy photos, evaluating on the referenced ones."""

from pathlib import Path

import ml_collections
import numpy as np
import pytest
from PIL import Image

from sassid_jax import photo_io
from sassid_jax.data import folder, sources


def _write(folder: Path, name: str, value: int, shape=(8, 12, 3)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, value, np.uint8)).save(folder / name)


def _cfg(**dirs: str) -> ml_collections.ConfigDict:
    base = {
        "name": "image_folder",
        "noisy_dir": "",
        "clean_dir": "",
        "eval_noisy_dir": "",
        "eval_clean_dir": "",
    }
    return ml_collections.ConfigDict({**base, **dirs})


def test_train_and_eval_folders_differ(tmp_path):
    _write(tmp_path / "train", "a.png", 10)
    _write(tmp_path / "train", "b.png", 20)
    _write(tmp_path / "eval_noisy", "a.png", 30)
    _write(tmp_path / "eval_clean", "a.png", 40)
    cfg = _cfg(
        noisy_dir=str(tmp_path / "train"),
        eval_noisy_dir=str(tmp_path / "eval_noisy"),
        eval_clean_dir=str(tmp_path / "eval_clean"),
    )
    train = sources.load_train_images(cfg)
    assert [int(im[0, 0, 0]) for im in train] == [10, 20]
    (example,) = sources.load_eval_examples(cfg)
    assert example["name"] == "a"
    assert int(example["noisy"][0, 0, 0]) == 30 and int(example["clean"][0, 0, 0]) == 40


def test_eval_defaults_to_training_folder_without_references(tmp_path):
    _write(tmp_path / "train", "a.png", 10)
    (example,) = sources.load_eval_examples(_cfg(noisy_dir=str(tmp_path / "train")))
    assert example["clean"] is None


def test_missing_reference_names_the_file(tmp_path):
    _write(tmp_path / "noisy", "a.png", 10)
    _write(tmp_path / "clean", "b.png", 10)
    cfg = _cfg(noisy_dir=str(tmp_path / "noisy"), clean_dir=str(tmp_path / "clean"))
    with pytest.raises(ValueError, match=r"a\.png: no clean reference named a\.png"):
        sources.load_eval_examples(cfg)


def test_shape_mismatch_and_empty_folder(tmp_path):
    _write(tmp_path / "noisy", "a.png", 10)
    _write(tmp_path / "clean", "a.png", 10, shape=(4, 4, 3))
    cfg = _cfg(noisy_dir=str(tmp_path / "noisy"), clean_dir=str(tmp_path / "clean"))
    with pytest.raises(ValueError, match="differs from its noisy image"):
        sources.load_eval_examples(cfg)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="dataset.noisy_dir: no images"):
        sources.load_train_images(_cfg(noisy_dir=str(tmp_path / "empty")))


def test_noisy_image_folder_builder_follows_the_folder_content(tmp_path):
    _write(tmp_path / "noisy", "a.png", 10)
    _write(tmp_path / "noisy", "b.png", 20)
    _write(tmp_path / "clean", "a.png", 30)
    _write(tmp_path / "clean", "b.png", 40)
    cfg = _cfg(noisy_dir=str(tmp_path / "noisy"), clean_dir=str(tmp_path / "clean"))
    cfg.name, cfg.data_dir = "noisy_image_folder", str(tmp_path / "tfds")
    examples = sources.load_eval_examples(cfg)
    assert [(e["name"], int(e["noisy"][0, 0, 0]), int(e["clean"][0, 0, 0])) for e in examples] == [
        ("a", 10, 30),
        ("b", 20, 40),
    ]
    _write(tmp_path / "noisy", "c.png", 50)  # new content: prepared again, not a stale copy
    _write(tmp_path / "clean", "c.png", 60)
    assert [int(im[0, 0, 0]) for im in sources.load_train_images(cfg)] == [10, 20, 50]
    cfg.clean_dir = ""
    assert sources.load_eval_examples(cfg)[0]["clean"] is None


def test_folder_photos_go_through_photo_io(tmp_path):
    grey16 = np.full((8, 12), 257 * 40 + 100, np.uint16)
    (tmp_path / "noisy").mkdir()
    Image.fromarray(grey16).save(tmp_path / "noisy" / "a.png")  # 16-bit grey: RGB, / 257
    _write(tmp_path / "noisy", "b.bmp", 10)  # not a photo format here: ignored
    (image,) = sources.load_train_images(_cfg(noisy_dir=str(tmp_path / "noisy")))
    assert image.dtype == np.uint8 and image.shape == (8, 12, 3) and int(image.max()) == 40
    with pytest.raises(ValueError, match=r"a\.png: 12x8 image has 96 pixels, over the limit"):
        list(folder.folder_examples(str(tmp_path / "noisy"), max_pixels=50))
    (tmp_path / "noisy" / "c.png").write_text("not a png")
    with pytest.raises(photo_io.PhotoError, match=r"c\.png: not a PNG, JPEG or TIFF"):
        sources.load_train_images(_cfg(noisy_dir=str(tmp_path / "noisy")))
