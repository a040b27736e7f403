"""Precomputed teachers: same noisy crops, targets cropped with them, same step, full runs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import default
from sassid_jax import train
from sassid_jax.configuration import validate_config
from sassid_jax.data.pipeline import numpy_batches, train_dataset
from sassid_jax.methods.stages import make_stage
from sassid_jax.nn import make_network
from sassid_jax.training import sharding, teacher_cache
from tests.test_train import TINY_STEPS, run_params, tiny_config

CROP = 32


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size=s, dtype=np.uint8) for s in [(40, 64, 3), (64, 32, 3)]]


def _batches(images, **kwargs):
    kw = {"crop_size": CROP, "batch_size": 4, "seed": 3, "num_steps": 3} | kwargs
    return list(numpy_batches(train_dataset(images, **kw)))


@pytest.mark.parametrize("augment", [False, True])
def test_aux_rides_along_with_the_same_crops(images, augment):
    """Noisy channels equal the plain pipeline's; aux is the same window, flipped alike."""
    aux = [
        np.concatenate([im.astype(np.float32) * 2.0 + 1.0, im[..., :1] * 0.5], -1) for im in images
    ]
    plain = _batches(images, augment=augment)
    with_aux = _batches(images, augment=augment, aux=aux)
    for p, a in zip(plain, with_aux, strict=True):
        assert a.shape == p.shape[:-1] + (7,)
        np.testing.assert_array_equal(a[..., :3], p)
        np.testing.assert_array_equal(a[..., 3:6], p * 2.0 + 1.0)
        np.testing.assert_array_equal(a[..., 6], p[..., 0] * 0.5)


def test_aux_of_the_wrong_size_is_refused(images):
    with pytest.raises(ValueError, match="one \\(H, W, K\\) map per image"):
        train_dataset(
            images, crop_size=CROP, batch_size=2, seed=0, aux=[np.zeros((40, 64, 3), np.float32)]
        )


def test_precompute_bnn_on_blocks_lan_on_the_whole_image(images):
    networks = {
        "bnn": make_network("bnn", width=4),
        "lan": make_network("lan", width=8, num_blocks=1),
    }
    x = jnp.zeros((1, 32, 32, 3))
    params = {n: networks[n].init(jax.random.key(i), x)["params"] for i, n in enumerate(networks)}
    done = []
    maps = teacher_cache.precompute(
        networks, params, ("bnn", "lan"), images, bnn_block=32, progress=lambda: done.append(1)
    )
    assert len(done) == len(images)  # one progress call per image (the run logs an ETA)
    for image, m in zip(images, maps, strict=True):
        assert m.shape == image.shape[:2] + (6,) and m.dtype == np.float32
        block = jnp.asarray(image[None, :32, :32], jnp.float32)  # the first isolated block
        bnn = networks["bnn"].apply({"params": params["bnn"]}, block)
        np.testing.assert_allclose(m[:32, :32, :3], np.asarray(bnn[0]), rtol=1e-5, atol=1e-4)
        lan = networks["lan"].apply(
            {"params": params["lan"]}, jnp.asarray(image[None], jnp.float32)
        )
        np.testing.assert_allclose(m[..., 3:], np.asarray(lan[0]), rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_precomputed_step_equals_online_step_given_the_same_targets():
    """With the teachers' outputs of the batch itself as extra channels, the two modes agree."""
    networks = {
        "bnn": make_network("bnn", width=4),
        "lan": make_network("lan", width=8, num_blocks=1),
        "unet": make_network("unet", width=4),
    }
    stage = make_stage("unet", ("unet",), ("unet",))
    config = default.get_config()
    tx = train.make_optimizer(config, "unet")
    mesh = sharding.make_mesh()
    x = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)), jnp.float32)
    teachers = {
        n: networks[n].init(jax.random.key(i + 5), x)["params"]
        for i, n in enumerate(stage.teachers)
    }
    outs = [networks[n].apply({"params": teachers[n]}, x) for n in stage.teachers]
    results = {}
    for mode, t, batch in (
        ("online", teachers, x),
        ("precomputed", {}, jnp.concatenate([x, *outs], -1)),
    ):
        state = train.init_state(networks, stage, tx, jax.random.key(0), 32)
        step = train.make_train_step(networks, stage, tx, mesh, mode)
        results[mode] = step(state, t, batch, True)
    (s_on, m_on), (s_pre, m_pre) = results["online"], results["precomputed"]
    np.testing.assert_allclose(float(m_on["loss"]), float(m_pre["loss"]), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(s_on["params"]), jax.tree.leaves(s_pre["params"]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_bad_teacher_mode_names_field_and_value():
    config = default.get_config()
    config.train.teachers = "cached"
    with pytest.raises(ValueError, match="train.teachers must be one of .* got 'cached'"):
        validate_config(config)


def test_precomputed_refused_for_sidd_medium():
    config = default.get_config()
    config.train.teachers, config.dataset.name = "precomputed", "sidd_medium_srgb"
    with pytest.raises(ValueError, match="not for sidd_medium_srgb"):
        validate_config(config)


@pytest.mark.slow
def test_precomputed_run_trains_and_resumes_exactly(tmp_path):
    """A whole tiny run in precomputed mode; stopping in stage 3 and resuming changes nothing.

    On a folder of three small photos: the teachers run over every training image at each
    stage start (five times here), which on the embedded photos took most of two minutes."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, shape in enumerate([(96, 128, 3), (128, 96, 3), (96, 96, 3)]):
        base = np.linspace(50, 200, shape[1])[None, :, None] * np.ones(shape)
        noisy = np.clip(base + rng.normal(0, 12, shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"p{i}.png")
    config = tiny_config(tmp_path / "tfds")
    config.dataset.name, config.dataset.noisy_dir = "image_folder", str(folder)
    config.train.teachers = "precomputed"
    config.eval.save_panels = False
    ref = train.train_and_evaluate(config, tmp_path / "ref")
    for stage, n in TINY_STEPS.items():
        assert [s for s, _ in ref["loss_history"][stage]] == list(range(1, n + 1))
        assert all(np.isfinite(loss) for _, loss in ref["loss_history"][stage])
    with pytest.raises(train.Preempted):
        train.train_and_evaluate(config, tmp_path / "run", stop_after=("unet", 2))
    train.train_and_evaluate(config, tmp_path / "run")
    a, b = run_params(tmp_path / "run", config), run_params(tmp_path / "ref", config)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
