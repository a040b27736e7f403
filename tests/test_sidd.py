"""SIDD builders on small fake downloads written in the real formats and names."""

from __future__ import annotations

from pathlib import Path

import ml_collections
import numpy as np
import pytest
import scipy.io
from PIL import Image

from sassid_jax.data import sidd, sources, tiles
from sassid_jax.errors import UserInputError

SCENES = ("0001_001_S6_00100_00060_3200_L", "0052_002_GP_01600_01000_5500_N")


def _png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def write_medium(root: Path, shape=(80, 112, 3)) -> dict[str, np.ndarray]:
    """Two scene folders with two noisy/GT pairs each; returns {image id: noisy}."""
    rng = np.random.default_rng(0)
    noisy_images = {}
    for scene in SCENES:
        instance = scene[:4]
        for k in ("010", "011"):
            noisy = rng.integers(0, 256, shape, dtype=np.uint8)
            data = root / "SIDD_Medium_Srgb" / "Data" / scene
            _png(data / f"{instance}_NOISY_SRGB_{k}.PNG", noisy)
            _png(data / f"{instance}_GT_SRGB_{k}.PNG", (noisy // 2).astype(np.uint8))
            noisy_images[f"{scene}/{k}"] = noisy
    return noisy_images


def _cfg(tmp_path: Path, name: str, manual: Path | str = "") -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "name": name,
            "data_dir": str(tmp_path / "tfds"),
            "manual_dir": str(manual),
            "eval_name": "",
        }
    )


def test_scene_folder_names_are_parsed():
    meta = sidd.parse_scene_folder("0052_002_S6_01600_01000_5500_N")
    assert meta == {
        "scene_instance": 52,
        "scene": 2,
        "phone": "S6",
        "iso": 1600,
        "shutter": 1000,
        "illuminant": 5500,
        "brightness": "N",
    }
    with pytest.raises(sidd.SiddFilesError, match="0052_002_XX_01600_01000_5500_N: not a SIDD"):
        sidd.parse_scene_folder("0052_002_XX_01600_01000_5500_N")


def test_tile_origins_cover_every_window():
    for size, tile, stride in ((112, 64, 32), (80, 64, 32), (3000, 512, 256), (64, 64, 32)):
        starts = sidd.tile_origins(size, tile, stride)
        assert starts[0] == 0 and starts[-1] == size - tile
        crop = tile - stride
        for x in range(size - crop + 1):
            assert any(s <= x and x + crop <= s + tile for s in starts), (size, x)


def test_medium_builder_tiles_and_metadata(tmp_path):
    originals = write_medium(tmp_path / "dl")
    builder = sidd.SiddMediumSrgb(
        config=sidd.medium_config(64, 32),
        data_dir=str(tmp_path / "tfds"),
        file_format="array_record",
    )
    import tensorflow_datasets as tfds

    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "dl"))
    )
    source = builder.as_data_source("train")
    per_image = len(sidd.tile_origins(80, 64, 32)) * len(sidd.tile_origins(112, 64, 32))
    assert len(source) == 4 * per_image
    for i in range(len(source)):
        t = source[i]
        image = originals[t["image"].decode()]
        top, left = int(t["top"]), int(t["left"])
        np.testing.assert_array_equal(t["noisy"], image[top : top + 64, left : left + 64])
        np.testing.assert_array_equal(t["clean"], t["noisy"] // 2)
    assert {source[i]["phone"].decode() for i in range(len(source))} == {"S6", "GP"}

    tile_source = tiles.TileSource(builder.as_data_source("train"), tile=64, max_crop=32)
    kwargs = {"crop_size": 32, "batch_size": 4, "seed": 3, "num_steps": 3}
    first = list(tiles.tile_batches(tile_source, **kwargs))
    again = list(tiles.tile_batches(tile_source, **kwargs))
    assert first[0].shape == (4, 32, 32, 3) and first[0].dtype == np.float32
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    resumed = list(tiles.tile_batches(tile_source, **{**kwargs, "num_steps": 2}, start_step=1))
    np.testing.assert_array_equal(resumed[0], first[1])
    halves = [
        list(tiles.tile_batches(tile_source, **kwargs, process_index=p, process_count=2))
        for p in (0, 1)
    ]
    np.testing.assert_array_equal(np.concatenate([halves[0][2], halves[1][2]]), first[2])
    with pytest.raises(ValueError, match="crop_size 64 must be in"):
        next(tiles.tile_batches(tile_source, **{**kwargs, "crop_size": 64}))


def test_medium_missing_ground_truth_names_the_file(tmp_path):
    write_medium(tmp_path / "dl")
    gt = tmp_path / "dl/SIDD_Medium_Srgb/Data" / SCENES[1] / "0052_GT_SRGB_011.PNG"
    gt.unlink()
    with pytest.raises(sidd.SiddFilesError, match="0052_NOISY_SRGB_011.PNG: its ground truth"):
        sidd.medium_pairs(sidd.medium_data_dir(tmp_path / "dl"))
    with pytest.raises(sidd.SiddFilesError, match="no SIDD_Medium_Srgb/Data"):
        sidd.medium_data_dir(tmp_path)


def write_blocks(
    folder: Path, noisy: np.ndarray, gt: np.ndarray | None = None, prefix: str = "Validation"
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    key = f"{prefix}NoisyBlocksSrgb"
    scipy.io.savemat(folder / f"{key}.mat", {key: noisy})
    if gt is not None:
        scipy.io.savemat(folder / "ValidationGtBlocksSrgb.mat", {"ValidationGtBlocksSrgb": gt})


def fake_blocks(images=2, blocks=3, size=32, seed=0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gt = rng.integers(30, 220, (images, blocks, size, size, 3), dtype=np.uint8)
    noise = rng.integers(-20, 21, gt.shape)
    return np.clip(gt + noise, 0, 255).astype(np.uint8), gt


def test_validation_blocks_with_metadata(tmp_path):
    noisy, gt = fake_blocks()
    write_blocks(tmp_path / "dl", noisy, gt)
    for scene in SCENES:
        (tmp_path / "dl" / "SIDD_Benchmark_Data" / scene).mkdir(parents=True)
    examples = sources.sidd_blocks(
        "sidd_validation_srgb", _cfg(tmp_path, "sidd_validation_srgb", tmp_path / "dl")
    )
    assert [(e["image_index"], e["block_index"]) for e in examples] == [
        (i, j) for i in range(2) for j in range(3)
    ]
    for e in examples:
        np.testing.assert_array_equal(e["noisy"], noisy[e["image_index"], e["block_index"]])
        np.testing.assert_array_equal(e["clean"], gt[e["image_index"], e["block_index"]])
    assert [e["phone"] for e in examples[::3]] == ["S6", "GP"]
    assert [e["iso"] for e in examples[::3]] == [100, 1600]
    # prepared once: a second read needs no manual_dir
    again = sources.sidd_blocks("sidd_validation_srgb", _cfg(tmp_path, "sidd_validation_srgb"))
    assert len(again) == 6


def test_benchmark_blocks_without_metadata(tmp_path):
    noisy, _ = fake_blocks(images=1, blocks=2)
    write_blocks(tmp_path / "dl", noisy, prefix="Benchmark")
    cfg = _cfg(tmp_path, "sidd_benchmark_srgb", tmp_path / "dl")
    examples = sources.sidd_blocks("sidd_benchmark_srgb", cfg)
    assert len(examples) == 2 and examples[0]["clean"] is None and examples[0]["phone"] is None
    assert len(sources.load_train_images(cfg)) == 2  # "trained on the test set itself"


@pytest.mark.parametrize(
    "problem", ["missing", "key", "shape", "mismatch", "truncated", "cut", "empty", "unprepared"]
)
def test_bad_block_files_name_the_file(tmp_path, problem):
    noisy, gt = fake_blocks()
    dl = tmp_path / "dl"
    if problem == "missing":
        write_blocks(dl, noisy)  # no GT file
        match = "ValidationGtBlocksSrgb.mat: file not found"
    elif problem == "key":
        write_blocks(dl, noisy, gt)
        scipy.io.savemat(dl / "ValidationGtBlocksSrgb.mat", {"blocks": gt})
        match = r"ValidationGtBlocksSrgb.mat: no variable 'ValidationGtBlocksSrgb' \(has"
    elif problem == "shape":
        write_blocks(dl, noisy[..., 0], gt)
        match = r"ValidationNoisyBlocksSrgb.mat: 'ValidationNoisyBlocksSrgb' has shape"
    elif problem == "truncated":
        write_blocks(dl, noisy, gt)
        (dl / "ValidationNoisyBlocksSrgb.mat").write_bytes(b"garbage")
        match = "ValidationNoisyBlocksSrgb.mat: not a readable .mat file"
    elif problem == "cut":  # the first 100 bytes of a real block file
        write_blocks(dl, noisy, gt)
        data = (dl / "ValidationGtBlocksSrgb.mat").read_bytes()
        (dl / "ValidationGtBlocksSrgb.mat").write_bytes(data[:100])
        match = "ValidationGtBlocksSrgb.mat: not a readable .mat file"
    elif problem == "empty":
        write_blocks(dl, noisy[:0], gt[:0])
        match = "ValidationNoisyBlocksSrgb.mat: 'ValidationNoisyBlocksSrgb' holds no blocks"
    elif problem == "mismatch":
        write_blocks(dl, noisy, gt[:1])
        match = "ValidationGtBlocksSrgb.mat: shape .* differs from the noisy blocks"
    else:
        dl = ""
        match = "prepare SIDD first"
    error = sources.DatasetUnavailableError if problem == "unprepared" else sidd.SiddFilesError
    with pytest.raises(error, match=match) as raised:
        sources.sidd_blocks("sidd_validation_srgb", _cfg(tmp_path, "sidd_validation_srgb", dl))
    assert "\n" not in str(raised.value)
    assert problem == "unprepared" or isinstance(raised.value, UserInputError)


@pytest.mark.slow
def test_training_on_sidd_medium_validating_on_blocks(tmp_path):
    """A tiny run of the paper's data path: SIDD-Medium tiles -> validation blocks."""
    from sassid_jax import train
    from tests.test_train import tiny_config

    write_medium(tmp_path / "dl")
    noisy, gt = fake_blocks(images=1, blocks=2, size=32)
    write_blocks(tmp_path / "dl", noisy, gt)
    c = tiny_config(tmp_path / "tfds", {"bnn": 2, "lan": 1, "unet": 1})
    c.dataset.update(
        {
            "name": "sidd_medium_srgb",
            "eval_name": "sidd_validation_srgb",
            "manual_dir": str(tmp_path / "dl"),
            "tile": 64,
            "tile_stride": 32,
        }
    )
    c.eval.update({"max_images": 0, "save_panels": False, "bnn_block": 0})
    results = train.train_and_evaluate(c, tmp_path / "run")
    assert results["num_images"] == 2
    assert set(results["table"]) == {"noisy", "bnn", "lan", "unet"}
