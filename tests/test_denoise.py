"""The denoise command: checkpoints, image formats, atomic writes and clear bad-input errors."""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import re
import sys
import types
import zipfile
from pathlib import Path

import imagecodecs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tifffile
from PIL import Image

from sassid_jax.evaluation import metrics
from sassid_jax.inference import colour_anchor, predict
from sassid_jax.io import photos
from sassid_jax.io.torch_params import convert_state_dict, load_torch_params
from sassid_jax.modes import denoise as dn
from sassid_jax.nn import BNN, LAN, UNet

# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def identity(monkeypatch):
    """run_denoise with a denoiser that returns its input (or `scale` x input)."""
    state = {"scale": 1.0}
    monkeypatch.setattr(
        dn,
        "load_denoiser",
        lambda checkpoint, network="unet", arch=None, attributes=None: (None, None),
    )
    monkeypatch.setattr(predict, "jit_apply", lambda module, params: lambda x: x * state["scale"])
    return state


def _run(tmp_path, src, dst, capsys, **kwargs):
    kwargs.setdefault("safeguard", "none")  # the stand-in denoiser has no network to estimate
    code = dn.run_denoise(str(tmp_path / "ckpt"), str(src), str(dst), **kwargs)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def _rgb8(h=20, w=30, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _unet_state_dict(width: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A random state_dict with the authors' U-Net names and shapes (OIHW)."""
    c, rng, shapes = width, np.random.default_rng(seed), {}
    shapes.update({"encode_block_1.0": (c, 3, 3), "encode_block_1.2": (c, c, 3)})
    shapes.update({f"encode_block_{i}.0": (c, c, 3) for i in range(2, 7)})
    shapes.update({"decode_block_5.0": (2 * c, 2 * c, 3), "decode_block_5.2": (2 * c, 2 * c, 3)})
    for lvl in (4, 3, 2):
        shapes.update(
            {f"decode_block_{lvl}.0": (2 * c, 3 * c, 3), f"decode_block_{lvl}.2": (2 * c, 2 * c, 3)}
        )
    shapes.update(
        {
            "decode_block_1.0": (2 * c, 2 * c + 3, 3),
            "decode_block_1.2": (2 * c, 2 * c, 3),
            "output_conv": (3, 2 * c, 1),
        }
    )
    state = {}
    for name, (o, i, k) in shapes.items():
        state[f"{name}.weight"] = (rng.normal(size=(o, i, k, k)) * 0.1).astype(np.float32)
        state[f"{name}.bias"] = (rng.normal(size=(o,)) * 0.1).astype(np.float32)
    return state


class _Storage:
    def __init__(self, key: str, numel: int) -> None:
        self.key, self.numel = key, numel


class _Tensor:
    def __init__(self, storage: _Storage, shape: tuple[int, ...]) -> None:
        self.storage, self.shape = storage, shape

    def __reduce__(self):
        strides = [int(np.prod(self.shape[i + 1 :])) for i in range(len(self.shape))]
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return rebuild, (
            self.storage,
            0,
            self.shape,
            tuple(strides),
            False,
            collections.OrderedDict(),
        )


def write_torch_zip(path: Path, state: dict[str, np.ndarray], monkeypatch) -> None:
    """Write `state` like torch.save does (zip: archive/data.pkl + archive/data/<key>), with
    fake `torch` modules registered only while pickling (torch is not installed)."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    names = {"__module__": "torch", "__qualname__": "FloatStorage"}
    float_storage = type("FloatStorage", (), names)
    torch.FloatStorage, torch._utils = float_storage, utils

    def _rebuild_tensor_v2(*args):  # only its name is pickled
        raise AssertionError("never called")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)

    class TorchPickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                return ("storage", float_storage, obj.key, "cpu", obj.numel)
            return None

    tensors, blobs = collections.OrderedDict(), {}
    for i, (name, array) in enumerate(state.items()):
        blobs[str(i)] = np.ascontiguousarray(array, "<f4").tobytes()
        tensors[name] = _Tensor(_Storage(str(i), array.size), tuple(array.shape))
    buf = io.BytesIO()
    TorchPickler(buf, protocol=2).dump(tensors)
    monkeypatch.delitem(sys.modules, "torch._utils")
    monkeypatch.delitem(sys.modules, "torch")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/byteorder", "little")
        for key, blob in blobs.items():
            z.writestr(f"archive/data/{key}", blob)


# ----------------------------------------------------------------------------- checkpoints


def test_pth_unet_width_is_inferred_and_runs(tmp_path, monkeypatch, capsys):
    state = _unet_state_dict(width=4)
    ckpt = tmp_path / "unet.pth"
    write_torch_zip(ckpt, state, monkeypatch)
    module, params = dn.load_denoiser(ckpt)
    assert module.width == 4 and not module.normalize
    expected = convert_state_dict(state, "unet", UNet(width=4))
    np.testing.assert_array_equal(
        params["trunk"]["dec1_0"]["kernel"], expected["trunk"]["dec1_0"]["kernel"]
    )
    Image.fromarray(_rgb8(40, 50)).save(tmp_path / "in.png")
    code = dn.run_denoise(str(ckpt), str(tmp_path / "in.png"), str(tmp_path / "out.png"))
    assert code == 0
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert out.shape == (40, 50, 3) and out.dtype == np.uint8
    whole = predict.predict_image(
        predict.jit_apply(module, params), np.asarray(Image.open(tmp_path / "in.png"))
    )
    np.testing.assert_array_equal(out, np.clip(np.floor(whole + 0.5), 0, 255))


SMALL_LAN = {"blind_size": 3, "width": 8, "num_blocks": 1, "normalize": True}


def _workdir(tmp_path: Path, stages: dict[str, list[str]], saved: dict[str, dict]) -> Path:
    import orbax.checkpoint as ocp

    workdir = tmp_path / "run"
    (workdir / "checkpoints").mkdir(parents=True)
    config = {
        "networks": {"unet": {"width": 4, "normalize": True}, "lan": SMALL_LAN},
        "stage_order": list(stages),
        "stages": {k: {"learners": v, "steps": 3} for k, v in stages.items()},
    }
    (workdir / "config.json").write_text(json.dumps(config))
    for stage, params in saved.items():
        options = ocp.CheckpointManagerOptions(create=True)
        with ocp.CheckpointManager(workdir / "checkpoints" / stage, options=options) as mgr:
            mgr.save(3, args=ocp.args.StandardSave({"params": params, "step": 3}))
    return workdir


def test_orbax_workdir_stage_and_step_folders(tmp_path):
    module = UNet(width=4, normalize=True)
    params = module.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
    workdir = _workdir(tmp_path, {"bnn": ["bnn"], "unet": ["unet"]}, {"unet": {"unet": params}})
    for path in (workdir, workdir / "checkpoints" / "unet", workdir / "checkpoints/unet/3"):
        got_module, got = dn.load_denoiser(path)
        assert got_module == module
        np.testing.assert_array_equal(got["out"]["kernel"], params["out"]["kernel"])


def test_orbax_params_of_another_width_name_the_layer_and_both_shapes(tmp_path):
    params = UNet(width=8, normalize=True).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    workdir = _workdir(tmp_path, {"unet": ["unet"]}, {"unet": {"unet": params["params"]}})
    with pytest.raises(
        dn.DenoiseInputError, match=r"U-Net parameters do not match .*config\.json \("
    ) as e:
        dn.load_denoiser(workdir)
    assert re.search(
        r"\w+/kernel: \(.*\) in the checkpoint, \(.*\) for its networks\.unet", str(e.value)
    )


def test_orbax_run_without_unet_checkpoint(tmp_path):
    workdir = _workdir(tmp_path, {"bnn": ["bnn"], "unet": ["unet"]}, {})
    with pytest.raises(dn.DenoiseInputError, match="no U-Net checkpoint yet"):
        dn.load_denoiser(workdir)


def _gain_lines(out: str, name: str) -> list[str]:
    return re.findall(rf"^(?:warning: )?{re.escape(name)}: estimated PSNR .*$", out, re.M)


def test_run_without_unet_names_its_lan_and_network_lan_runs_it(tmp_path, capsys):
    module = LAN(**SMALL_LAN)
    params = module.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
    stages = {"bnn": ["bnn"], "lan": ["lan"], "unet": ["unet"]}
    workdir = _workdir(tmp_path, stages, {"lan": {"lan": params}})
    with pytest.raises(dn.DenoiseInputError) as info:
        dn.load_denoiser(workdir)
    assert "no U-Net checkpoint yet" in str(info.value)
    assert str(info.value).endswith("; this checkpoint holds a LAN: add --network lan")
    Image.fromarray(_rgb8(40, 50)).save(tmp_path / "in.png")
    code = dn.run_denoise(str(workdir), str(tmp_path / "in.png"), str(tmp_path / "out.png"))
    assert code == 2 and "add --network lan" in capsys.readouterr().err
    code = dn.run_denoise(
        str(workdir), str(tmp_path / "in.png"), str(tmp_path / "out.png"), network="lan"
    )
    out = capsys.readouterr().out
    assert code == 0 and len(_gain_lines(out, "in.png")) == 1, out  # safeguard "off": a line
    whole = predict.predict_image(
        predict.jit_apply(module, params), np.asarray(Image.open(tmp_path / "in.png"))
    )
    got = np.asarray(Image.open(tmp_path / "out.png"))
    np.testing.assert_array_equal(got, np.clip(np.floor(whole + 0.5), 0, 255))


class _Blur:
    """A stand-in denoiser: a Gaussian blur (it helps on heavy noise, it ruins fine detail)."""

    @staticmethod
    def apply(variables, x):
        return colour_anchor.blur(x, 2.0)


def _striped(std: float, size: int = 64) -> np.ndarray:
    """A smooth photo with fine stripes on its right quarter, plus white noise of `std`."""
    yy, xx = np.mgrid[:size, :size] / size
    clean = np.stack([90 + 80 * xx, 70 + 60 * yy, 160 - 50 * xx * yy], -1)
    q = 3 * size // 4
    clean[:, q:] += 30 * np.sin(2 * np.pi * np.arange(size) / 4)[None, q:, None]
    noisy = clean + np.random.default_rng(0).normal(0, std, clean.shape)
    return np.clip(np.floor(noisy + 0.5), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("safeguard", ["off", "blend", "none"])
def test_estimated_gain_is_printed_for_every_photo(tmp_path, monkeypatch, capsys, safeguard):
    monkeypatch.setattr(
        dn,
        "load_denoiser",
        lambda checkpoint, network="unet", arch=None, attributes=None: (_Blur(), None),
    )
    (tmp_path / "in").mkdir()
    Image.fromarray(_striped(25.0)).save(tmp_path / "in" / "noisy.png")  # the blur helps
    Image.fromarray(_striped(3.0)).save(tmp_path / "in" / "fine.png")  # it blurs the stripes
    code, out, _ = _run(tmp_path, tmp_path / "in", tmp_path / "out", capsys, safeguard=safeguard)
    lines = {name: _gain_lines(out, name) for name in ("noisy.png", "fine.png")}
    assert code == 0
    if safeguard == "none":
        assert lines == {"noisy.png": [], "fine.png": []}, out
        return
    (better,), (worse,) = lines["noisy.png"], lines["fine.png"]
    assert better.startswith("noisy.png: estimated PSNR") and "(gain +" in better, out
    assert worse.startswith("warning: fine.png: estimated PSNR"), out


def _authors_file(shared_data: Path, name: str) -> Path:
    path = shared_data / name
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


def test_authors_lan_runs_with_network_lan_and_otherwise_names_the_flag(
    shared_data, tmp_path, capsys
):
    lan = _authors_file(shared_data, "weights/official_LAN.pth")
    noisy, clean = (_authors_file(shared_data, f"sidd_pair/{n}.png") for n in ("noisy", "gt"))
    code = dn.run_denoise(str(lan), str(noisy), str(tmp_path / "out.png"))
    err = capsys.readouterr().err
    assert (
        code == 2
        and err == f"error: {lan}: this .pth holds a LAN, not a U-Net; add --network lan\n"
    )
    code = dn.run_denoise(str(lan), str(noisy), str(tmp_path / "out.png"), network="lan")
    out = capsys.readouterr().out
    (line,) = _gain_lines(out, "noisy.png")
    assert code == 0 and float(re.search(r"gain ([-+][0-9.]+) dB", line)[1]) > 0, line
    gt = np.asarray(Image.open(clean))
    psnr = lambda x: float(metrics.psnr(gt, x)[0])  # noqa: E731
    assert (
        psnr(np.asarray(Image.open(tmp_path / "out.png"))) > psnr(np.asarray(Image.open(noisy))) + 5
    )


def test_authors_bnn_needs_network_bnn_and_runs_with_blind_size_9(shared_data, tmp_path, capsys):
    bnn = _authors_file(shared_data, "parity/bnn_b9_c48_seed0.pth")
    noisy = np.asarray(Image.open(_authors_file(shared_data, "sidd_pair/noisy.png")))[:64, :64]
    Image.fromarray(noisy).save(tmp_path / "in.png")
    code = dn.run_denoise(str(bnn), str(tmp_path / "in.png"), str(tmp_path / "out.png"))
    err = capsys.readouterr().err
    assert code == 2 and err.endswith("this .pth holds a BNN, not a U-Net; add --network bnn\n")
    code = dn.run_denoise(
        str(bnn),
        str(tmp_path / "in.png"),
        str(tmp_path / "out.png"),
        network="bnn",
        safeguard="none",
    )
    assert code == 0
    module = BNN(blind_size=9, width=48, normalize=False)
    whole = predict.predict_image(predict.jit_apply(module, load_torch_params(bnn, "bnn")), noisy)
    got = np.asarray(Image.open(tmp_path / "out.png"))
    np.testing.assert_array_equal(got, np.clip(np.floor(whole + 0.5), 0, 255))


@pytest.mark.parametrize("kind", ["missing", "text", "folder"])
def test_bad_checkpoint_exit_2(tmp_path, capsys, kind):
    ckpt = tmp_path / {"missing": "nope.pth", "text": "notes.pth", "folder": "somedir"}[kind]
    if kind == "text":
        ckpt.write_text("hello")
    elif kind == "folder":
        ckpt.mkdir()
    Image.fromarray(_rgb8()).save(tmp_path / "in.png")
    code = dn.run_denoise(str(ckpt), str(tmp_path / "in.png"), str(tmp_path / "out.png"))
    err = capsys.readouterr().err
    assert code == 2 and ckpt.name in err and "Traceback" not in err
    assert err.count("\n") == 1
    assert not (tmp_path / "out.png").exists()


# ----------------------------------------------------------------------------- formats


def test_16bit_tiff_round_trip(tmp_path, identity, capsys):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 65536, (24, 40, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "in.tif", image, photometric="rgb")
    code, out, _ = _run(tmp_path, tmp_path / "in.tif", tmp_path / "out.tiff", capsys)
    assert code == 0 and "16-bit" in out
    back = tifffile.imread(tmp_path / "out.tiff")
    assert back.dtype == np.uint16 and back.shape == image.shape
    assert np.abs(back.astype(int) - image).max() <= 1  # float /257 *257 rounding


def test_16bit_png_round_trip(tmp_path, identity, capsys):
    image = np.random.default_rng(2).integers(0, 65536, (17, 23, 3), dtype=np.uint16)
    (tmp_path / "in.png").write_bytes(imagecodecs.png_encode(image))
    code, _, _ = _run(tmp_path, tmp_path / "in.png", tmp_path / "out.png", capsys)
    assert code == 0
    back = photos.read_photo(tmp_path / "out.png").pixels
    assert back.dtype == np.uint16
    assert np.abs(back.astype(int) - image).max() <= 1


def test_16bit_grey_png_from_pillow(tmp_path, identity, capsys):
    grey = np.random.default_rng(3).integers(0, 65536, (19, 13), dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "g.png")  # Pillow's adaptive row filters
    photo = photos.read_photo(tmp_path / "g.png")
    np.testing.assert_array_equal(photo.pixels[:, :, 0], grey)
    code, _, _ = _run(tmp_path, tmp_path / "g.png", tmp_path / "o.png", capsys)
    back = photos.read_photo(tmp_path / "o.png").pixels
    assert code == 0 and back.shape == (19, 13, 1) and back.dtype == np.uint16
    assert np.abs(back[:, :, 0].astype(int) - grey).max() <= 1


def test_exif_orientation_in_output(tmp_path, identity, capsys):
    image = _rgb8(12, 20)
    exif = Image.Exif()
    exif[photos.ORIENTATION_TAG] = 6  # stored sideways: 90 degrees clockwise to show upright
    Image.fromarray(image).save(tmp_path / "in.jpg", exif=exif, quality=100)
    code, _, _ = _run(tmp_path, tmp_path / "in.jpg", tmp_path / "out.png", capsys)
    with Image.open(tmp_path / "out.png") as out:
        assert code == 0 and out.size == (12, 20)
        assert out.getexif()[photos.ORIENTATION_TAG] == 1  # EXIF kept, pixels upright


def test_grayscale_and_rgba(tmp_path, identity, capsys):
    grey = _rgb8(16, 24)[:, :, 0]
    Image.fromarray(grey).save(tmp_path / "g.png")
    rgba = np.concatenate([_rgb8(16, 24, 1), _rgb8(16, 24, 2)[:, :, :1]], axis=2)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    identity["scale"] = 0.5
    code, _, _ = _run(tmp_path, tmp_path / "g.png", tmp_path / "g_out.png", capsys)
    with Image.open(tmp_path / "g_out.png") as g:
        assert code == 0 and g.mode == "L"
        np.testing.assert_array_equal(np.asarray(g), np.floor(grey * 0.5 + 0.5))
    code, _, _ = _run(tmp_path, tmp_path / "a.png", tmp_path / "a_out.tif", capsys)
    out = tifffile.imread(tmp_path / "a_out.tif")
    assert code == 0 and out.shape == (16, 24, 4)
    np.testing.assert_array_equal(out[:, :, 3], rgba[:, :, 3])  # alpha unchanged
    np.testing.assert_array_equal(out[:, :, :3], np.floor(rgba[:, :, :3] * 0.5 + 0.5))


def test_rgba_to_jpeg_is_refused(tmp_path, identity, capsys):
    rgba = np.concatenate([_rgb8(), _rgb8()[:, :, :1]], axis=2)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    code, _, err = _run(tmp_path, tmp_path / "a.png", tmp_path / "a.jpg", capsys)
    assert code == 2 and "a.jpg" in err and "alpha" in err
    assert not (tmp_path / "a.jpg").exists()


# ----------------------------------------------------------------------------- writing


def test_outputs_follow_the_umask(tmp_path, identity, capsys):
    Image.fromarray(_rgb8()).save(tmp_path / "in.png")
    old = os.umask(0o027)
    try:
        code, _, _ = _run(tmp_path, tmp_path / "in.png", tmp_path / "out.png", capsys)
    finally:
        os.umask(old)
    assert code == 0 and (tmp_path / "out.png").stat().st_mode & 0o777 == 0o640


def test_interrupt_during_run_exits_130_without_partial_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        dn,
        "load_denoiser",
        lambda checkpoint, network="unet", arch=None, attributes=None: (None, None),
    )

    def interrupted(module, params):
        def apply(x):
            raise KeyboardInterrupt

        return apply

    monkeypatch.setattr(predict, "jit_apply", interrupted)
    Image.fromarray(_rgb8()).save(tmp_path / "in.png")
    code, _, err = _run(tmp_path, tmp_path / "in.png", tmp_path / "out.png", capsys)
    assert code == 130 and "interrupted" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


def test_folder_mode_and_skip_existing(tmp_path, identity, capsys):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    dst.mkdir()
    for name in ("a.png", "b.tif"):
        Image.fromarray(_rgb8()).save(src / name)
    (src / "notes.txt").write_text("not an image: ignored in folder mode")
    (dst / "a.png").write_bytes(b"done before")
    code, out, _ = _run(tmp_path, src, dst, capsys)
    assert code == 0 and "skip" in out and "a.png" in out
    assert (dst / "a.png").read_bytes() == b"done before"
    np.testing.assert_array_equal(tifffile.imread(dst / "b.tif"), _rgb8())
    code, _, _ = _run(tmp_path, src, dst, capsys, overwrite=True)
    assert code == 0
    np.testing.assert_array_equal(np.asarray(Image.open(dst / "a.png")), _rgb8())
    assert sorted(p.name for p in dst.iterdir()) == ["a.png", "b.tif"]


def test_folder_skips_fifos_hidden_and_appledouble_files(tmp_path, identity, capsys, caplog):
    """A FIFO named like a photo is skipped with a warning (never opened: it would block);
    hidden files and macOS' AppleDouble `._x.png` are no photos and are left out."""
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    Image.fromarray(_rgb8()).save(src / "a.png")
    Image.fromarray(_rgb8()).save(src / ".hidden.png")
    (src / "._a.png").write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    os.mkfifo(src / "pipe.png")
    with caplog.at_level("WARNING"):
        code, _, err = _run(tmp_path, src, dst, capsys)
    assert code == 0 and "error" not in err
    assert sorted(p.name for p in dst.iterdir()) == ["a.png"]
    assert "skipping" in caplog.text and "pipe.png: a FIFO" in caplog.text
    code, _, err = _run(tmp_path, src / "pipe.png", dst / "p.png", capsys)
    assert code == 2 and "pipe.png: a FIFO, not a photo file" in err


def test_file_into_existing_folder(tmp_path, identity, capsys):
    Image.fromarray(_rgb8()).save(tmp_path / "in.png")
    (tmp_path / "outdir").mkdir()
    code, _, _ = _run(tmp_path, tmp_path / "in.png", tmp_path / "outdir", capsys)
    assert code == 0 and (tmp_path / "outdir" / "in.png").is_file()


# ----------------------------------------------------------------------------- bad input


def _png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


BAD_INPUTS = {
    "truncated": lambda p: p.write_bytes(_png_bytes(_rgb8(64, 64))[:300]),
    "truncated16": lambda p: p.write_bytes(
        imagecodecs.png_encode(np.random.default_rng(0).integers(0, 65536, (32, 32, 3), np.uint16))[
            :200
        ]
    ),
    "huge": lambda p: p.write_bytes(_png_bytes(_rgb8(64, 64))),  # run with max_pixels=1000
    "text": lambda p: p.write_text("this is not an image"),
    "tiny": lambda p: Image.fromarray(_rgb8(1, 1)).save(p),
    "missing": lambda p: None,
}


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_bad_input_file_exit_2(tmp_path, identity, capsys, kind):
    path = tmp_path / f"{kind}.png"
    BAD_INPUTS[kind](path)
    limit = 1000 if kind == "huge" else None
    code, out, err = _run(tmp_path, path, tmp_path / "out.png", capsys, max_pixels=limit)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and len(errors) == 1 and f"{kind}.png" in errors[0], err
    assert not (tmp_path / "out.png").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_bad_file_in_folder_others_still_done(tmp_path, identity, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_rgb8()).save(src / "good.png")
    (src / "bad.jpg").write_text("not a jpeg")
    code, _, err = _run(tmp_path, src, tmp_path / "out", capsys)
    assert code == 2 and "bad.jpg" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file_exit_2(tmp_path, identity, capsys):
    path = tmp_path / "locked.png"
    Image.fromarray(_rgb8()).save(path)
    path.chmod(0)
    code, _, err = _run(tmp_path, path, tmp_path / "out.png", capsys)
    assert code == 2 and "locked.png" in err


def test_empty_folder_and_overwriting_the_input(tmp_path, identity, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = _run(tmp_path, tmp_path / "empty", tmp_path / "out", capsys)
    assert code == 2 and "empty" in err
    Image.fromarray(_rgb8()).save(tmp_path / "in.png")
    before = (tmp_path / "in.png").read_bytes()
    for target in (tmp_path / "in.png", tmp_path / "sub" / ".." / "in.png", tmp_path):
        if target.parent.name == "sub":
            (tmp_path / "sub").mkdir(exist_ok=True)
        code, _, err = _run(tmp_path, tmp_path / "in.png", target, capsys, overwrite=True)
        assert code == 2 and "overwrite the input" in err and "in.png" in err
    assert (tmp_path / "in.png").read_bytes() == before
    src = tmp_path / "photos"
    src.mkdir()
    Image.fromarray(_rgb8()).save(src / "x.png")
    code, _, err = _run(tmp_path, src, src, capsys, overwrite=True)
    assert code == 2 and "photos" in err


def test_bad_tile_exit_2(tmp_path, identity, capsys):
    Image.fromarray(_rgb8()).save(tmp_path / "in.png")
    code, _, err = _run(tmp_path, tmp_path / "in.png", tmp_path / "o.png", capsys, tile=100)
    assert code == 2 and "--tile 100" in err
    code, _, err = _run(tmp_path, tmp_path / "in.png", tmp_path / "o.png", capsys, max_pixels=0)
    assert code == 2 and "--max_pixels 0" in err and err.count("\n") == 1
