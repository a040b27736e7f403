"""Dataset sources: the registry, and the image_folder source (train on noisy photos,
evaluate on the referenced ones)."""

from pathlib import Path

import ml_collections
import numpy as np
import pytest
from PIL import Image

from sassid_jax.data import folder, sources
from sassid_jax.errors import ConfigError, UserInputError
from sassid_jax.io import photos


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
    # a UserInputError: the command line prints one line and exits with code 2
    with pytest.raises(UserInputError, match=r"a\.png: no clean reference named a\.png"):
        sources.load_eval_examples(cfg)


def test_shape_mismatch_and_empty_folder(tmp_path):
    _write(tmp_path / "noisy", "a.png", 10)
    _write(tmp_path / "clean", "a.png", 10, shape=(4, 4, 3))
    cfg = _cfg(noisy_dir=str(tmp_path / "noisy"), clean_dir=str(tmp_path / "clean"))
    with pytest.raises(UserInputError, match="differs from its noisy image"):
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
    with pytest.raises(photos.PhotoError, match=r"c\.png: not a PNG, JPEG or TIFF"):
        sources.load_train_images(_cfg(noisy_dir=str(tmp_path / "noisy")))


def test_registry_names_and_capabilities():
    assert set(sources.KNOWN_DATASETS) == {
        "sasl_embedded",
        "image_folder",
        "noisy_image_folder",
        "sidd_medium_srgb",
        "sidd_validation_srgb",
        "sidd_benchmark_srgb",
        "dnd_srgb",
    }
    assert all(name == s.name for name, s in sources.SOURCES.items())
    assert sources.SUBMIT_DATASETS == ("sidd_benchmark_srgb", "dnd_srgb")
    assert {n for n, s in sources.SOURCES.items() if not s.can_evaluate} == {
        "sidd_medium_srgb",
        "dnd_srgb",
    }
    assert {n for n, s in sources.SOURCES.items() if not s.can_train} == {"dnd_srgb"}


def test_unknown_and_refused_names_raise_config_errors():
    with pytest.raises(ConfigError, match=r"dataset.eval_name: unknown dataset 'sidd'"):
        sources.load_eval_examples(ml_collections.ConfigDict({"name": "x", "eval_name": "sidd"}))
    with pytest.raises(ConfigError, match=r"dataset.name: unknown dataset 'x'"):
        sources.load_train_images(ml_collections.ConfigDict({"name": "x"}))
    dnd = ml_collections.ConfigDict({"name": "dnd_srgb"})
    with pytest.raises(ConfigError, match="'dnd_srgb' has no training images"):
        sources.load_train_images(dnd)
    medium = ml_collections.ConfigDict({"name": "sasl_embedded", "eval_name": "sidd_medium_srgb"})
    with pytest.raises(ConfigError, match="'sidd_medium_srgb' cannot be evaluated here"):
        sources.load_eval_examples(medium)


@pytest.mark.parametrize(
    ("name", "family", "module"),
    [
        ("sidd_validation_srgb", "SIDD", "sassid_jax/data/sidd.py"),
        ("sidd_benchmark_srgb", "SIDD", "sassid_jax/data/sidd.py"),
        ("dnd_srgb", "DND", "sassid_jax/data/dnd.py"),
    ],
)
def test_unprepared_builder_asks_for_the_downloads(tmp_path, name, family, module):
    cfg = ml_collections.ConfigDict({"name": name, "data_dir": str(tmp_path), "manual_dir": ""})
    with pytest.raises(sources.DatasetUnavailableError, match=f"prepare {family} first.*{module}"):
        sources.prepared_builder(name, cfg)
    assert issubclass(sources.DatasetUnavailableError, UserInputError)


def test_dataset_max_pixels_limits_training_folders(tmp_path):
    _write(tmp_path / "noisy", "a.png", 10)  # 12 x 8 = 96 pixels
    with pytest.raises(UserInputError, match=r"a\.png: 12x8 image has 96 pixels, over the limit"):
        sources.load_train_images(_cfg(noisy_dir=str(tmp_path / "noisy"), max_pixels=50))
    (image,) = sources.load_train_images(_cfg(noisy_dir=str(tmp_path / "noisy"), max_pixels=96))
    assert image.shape == (8, 12, 3)


def test_folder_refuses_two_photos_of_one_name_and_skips_hidden_files(tmp_path):
    """a.png and a.jpg would share the dataset key 'a': refused by name. Hidden files and
    AppleDouble `._x.png` files are no photos."""
    noisy = tmp_path / "noisy"
    noisy.mkdir()
    for name in ("a.png", "b.png", ".c.png"):
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(noisy / name)
    (noisy / "._b.png").write_bytes(bytes(80))
    assert list(folder.folder_images(str(noisy), "dataset.noisy_dir")) == ["a.png", "b.png"]
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(noisy / "a.jpg")
    with pytest.raises(ConfigError, match=r"a\.jpg and a\.png have the same name"):
        folder.folder_images(str(noisy), "dataset.noisy_dir")


def test_a_photo_changed_while_preparing_is_refused_not_stored_stale(tmp_path, monkeypatch):
    """The dataset is named by the folder's content before reading; a photo that changes
    while it is read would be stored under the old name and reused stale later."""
    _write(tmp_path / "noisy", "a.png", 10)
    _write(tmp_path / "noisy", "b.png", 20)
    real = folder.read_rgb8

    def read_and_touch(path, max_pixels=None):
        image = real(path, max_pixels)
        _write(tmp_path / "noisy", "b.png", 21)  # a sync client rewrites it meanwhile
        return image

    monkeypatch.setattr(folder, "read_rgb8", read_and_touch)
    with pytest.raises(ConfigError, match="changed while the dataset was prepared"):
        folder.prepare_folder(str(tmp_path / "noisy"), data_dir=str(tmp_path / "tfds"))
    assert not list((tmp_path / "tfds").rglob("*.tfrecord*"))  # nothing stale kept
    monkeypatch.undo()
    examples = folder.load_folder(str(tmp_path / "noisy"), data_dir=str(tmp_path / "tfds"))
    assert [int(e["noisy"][0, 0, 0]) for e in examples] == [10, 21]
