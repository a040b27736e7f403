"""Tests of the embedded scikit-image dataset (TFDS builder sasl_embedded)."""

from __future__ import annotations

import numpy as np
import pytest

from sassid_jax.data.embedded import SaslEmbedded, generate_split, load_split


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> dict[str, list[dict]]:
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    return {split: load_split(split, data_dir) for split in ("train", "test")}


def test_builder_name_and_version():
    assert SaslEmbedded.name == "sasl_embedded"
    assert str(SaslEmbedded.VERSION) == "3.0.0"


def test_splits_non_empty_and_held_out(splits):
    train, test = splits["train"], splits["test"]
    assert len(train) >= 3 and len(test) >= 2
    train_photos = {e["photo"] for e in train}
    test_photos = {e["photo"] for e in test}
    assert not train_photos & test_photos
    assert not {e["name"] for e in train} & {e["name"] for e in test}


def test_arrays(splits):
    for split, examples in splits.items():
        for e in examples:
            assert e["noisy"].dtype == np.uint8 and e["clean"].dtype == np.uint8
            assert e["noisy"].shape == e["clean"].shape and e["noisy"].shape[-1] == 3
            assert np.any(e["noisy"] != e["clean"]), (split, e["name"])
            assert e["shot"] > 0 and e["read"] > 0


def test_test_split_is_cheap_and_divisible_by_32(splits):
    pixels = 0
    for e in splits["test"]:
        height, width = e["clean"].shape[:2]
        assert height % 32 == 0 and width % 32 == 0, e["name"]
        pixels += height * width
    assert pixels <= 400_000


def test_test_split_psnr_spread(splits):
    psnr = []
    for e in splits["test"]:
        mse = np.mean((e["noisy"].astype(float) - e["clean"].astype(float)) ** 2)
        psnr.append(10 * np.log10(255.0**2 / mse))
    # SIDD-like heavy noise (the real SIDD block: 16.15 dB), spread over the levels.
    assert 13.0 < min(psnr) < 17.0 and 19.0 < max(psnr) < 24.0, psnr


def test_prepared_data_equals_a_fresh_generation(splits):
    """The generator is seeded per name, so regenerating gives identical noisy arrays."""
    fresh = {e["name"]: e for e in generate_split("test")}
    for e in splits["test"]:
        np.testing.assert_array_equal(fresh[e["name"]]["noisy"], e["noisy"])
        np.testing.assert_array_equal(fresh[e["name"]]["clean"], e["clean"])


def test_rebuild_is_identical(splits, tmp_path):
    again = load_split("test", str(tmp_path))
    assert [e["name"] for e in again] == [e["name"] for e in splits["test"]]
    for a, b in zip(again, splits["test"], strict=True):
        np.testing.assert_array_equal(a["noisy"], b["noisy"])
