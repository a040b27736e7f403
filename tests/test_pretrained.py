"""config.pretrained: teachers and starting weights from run folders and authors' `.pth` files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import jax
import numpy as np
import pytest

from configs import own_photos_teachers
from sassid_jax import train
from sassid_jax.configuration import config_differences, validate_config
from sassid_jax.errors import ConfigError
from sassid_jax.io.checkpoints import CheckpointInputError, final_params, load_network
from sassid_jax.training import pretrained
from tests.test_train import assert_same_params, tiny_config

UNET_STEPS = 2


@pytest.fixture(scope="module")
def source_run(single_process_run) -> Path:
    """A tiny three-stage run folder whose networks the other runs take: the session's
    single-process run (tests/conftest.py), read-only."""
    return single_process_run


def unet_only(data_dir: Path, **paths: str):
    """tiny_config training only the U-Net (UNET_STEPS steps), config.pretrained = paths."""
    c = tiny_config(data_dir, {"unet": UNET_STEPS})
    c.stage_order = ("unet",)
    c.pretrained.update(paths)
    return c


def _spy(monkeypatch) -> dict[str, dict]:
    """Records the teachers each stage's step gets and each fresh stage's initial state."""
    seen: dict[str, dict] = {"teachers": {}, "initial": {}}
    teachers, initial = train._teachers, train._initial_state

    def spy_teachers(ctx, i):
        params, aux = teachers(ctx, i)
        seen["teachers"].update(jax.device_get(params))
        return params, aux

    def spy_initial(ctx, i, state, start):
        fresh = state is None
        state = initial(ctx, i, state, start)
        if fresh:
            seen["initial"][ctx.stages[i].name] = jax.device_get(state)
        return state

    monkeypatch.setattr(train, "_teachers", spy_teachers)
    monkeypatch.setattr(train, "_initial_state", spy_initial)
    return seen


def _run_logged(config, workdir: Path, **kwargs):
    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    root, level = logging.getLogger(), logging.getLogger().level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        return train.train_and_evaluate(config, workdir, **kwargs), lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture(scope="module")
def teachers_run(data_dir, source_run, tmp_path_factory):
    """U-Net-only run, BNN from the source run folder, LAN from its lan stage folder."""
    workdir = tmp_path_factory.mktemp("teachers")
    config = unet_only(data_dir, bnn=str(source_run), lan=str(source_run / "checkpoints" / "lan"))
    monkeypatch = pytest.MonkeyPatch()
    seen = _spy(monkeypatch)
    try:
        results, lines = _run_logged(config, workdir)
    finally:
        monkeypatch.undo()
    return workdir, config, results, lines, seen


def test_unet_only_run_uses_the_loaded_teachers_exactly(teachers_run, source_run):
    workdir, config, results, lines, seen = teachers_run
    assert set(seen["teachers"]) == {"bnn", "lan"}
    for name in ("bnn", "lan"):
        assert_same_params(seen["teachers"][name], final_params(source_run, name))
    assert [s for s, _ in results["loss_history"]["unet"]] == list(range(1, UNET_STEPS + 1))
    assert not (workdir / "checkpoints" / "bnn").exists()
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["pretrained"]["bnn"] == str(source_run)
    written = json.loads((workdir / "results.json").read_text())["pretrained"]
    assert set(written) == {"bnn", "lan"}
    assert written["lan"]["source"] == f"stage 'lan' step 2 of run folder {source_run}"
    assert written["bnn"]["use"] == "frozen teacher of stages ['unet']"
    logged = [line for line in lines if line.startswith("pretrained ")]
    assert len(logged) == 2 and all("frozen teacher" in line for line in logged)
    with pytest.raises(CheckpointInputError, match=rf"\(it used the BNN of {source_run}\)$"):
        load_network(workdir, "bnn")  # this run trained no BNN: the message says whose it used


def test_resume_with_pretrained_teachers_ends_identically(teachers_run, tmp_path):
    workdir, config, _, _, _ = teachers_run
    with pytest.raises(train.Preempted):
        train.train_and_evaluate(config, tmp_path, stop_after=("unet", 1))
    train.train_and_evaluate(config, tmp_path)
    assert_same_params(final_params(tmp_path, "unet"), final_params(workdir, "unet"))


def test_changing_a_pretrained_path_on_resume_is_refused(teachers_run, source_run, tmp_path):
    _, config, _, _, _ = teachers_run
    with pytest.raises(train.Preempted):
        train.train_and_evaluate(config, tmp_path, stop_after=("unet", 1))
    changed = config.copy_and_resolve_references()
    changed.pretrained.lan = str(source_run / "checkpoints" / "lan" / "2")
    with pytest.raises(ConfigError, match=r"pretrained\.lan.*--allow_config_change"):
        train.train_and_evaluate(changed, tmp_path)


def test_learner_starts_from_run_folder_weights(data_dir, source_run, tmp_path, monkeypatch):
    config = unet_only(data_dir, bnn=str(source_run), lan=str(source_run), unet=str(source_run))
    config.stages.unet.steps = 1
    seen = _spy(monkeypatch)
    results = train.train_and_evaluate(config, tmp_path)
    start = seen["initial"]["unet"]
    assert_same_params(start["params"]["unet"], final_params(source_run, "unet"))
    assert int(start["step"]) == 0
    moments = jax.tree.leaves(start["opt_state"])
    assert all(not np.any(np.asarray(m)) for m in moments)  # fresh Adam state: zeros
    assert "initial weights of stage 'unet'" in results["pretrained"]["unet"]["use"]


def test_start_from_leaves_a_stage_without_pretrained_learners_alone(data_dir):
    config = tiny_config(data_dir)
    state = {"step": 0, "params": {"bnn": {"w": np.zeros(2)}}, "opt_state": ()}
    assert pretrained.start_from({}, config, 0, state, None) is state


def _one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("field", "value"), [("width", 16), ("blind_size", 5), ("num_blocks", 2), ("normalize", False)]
)
def test_architecture_mismatch_is_one_line_before_config_json(
    data_dir,
    source_run,
    tmp_path,
    field,
    value,
):
    config = unet_only(data_dir, bnn=str(source_run), lan=str(source_run))
    saved = config.networks.lan[field]
    config.networks.lan[field] = value
    with pytest.raises(ConfigError) as e:
        train.train_and_evaluate(config, tmp_path)
    message = _one_line(e)
    assert message.startswith(f"pretrained.lan: {source_run} is a LAN with ")
    assert f"networks.lan.{field} is {value!r}; set --config.networks.lan.{field}={saved!r}" in (
        message
    )
    assert not (tmp_path / "config.json").exists()


def test_missing_file_is_one_line_before_config_json(data_dir, source_run, tmp_path):
    config = unet_only(data_dir, bnn=str(tmp_path / "nope.pth"), lan=str(source_run))
    with pytest.raises(ConfigError) as e:
        train.train_and_evaluate(config, tmp_path / "run")
    assert _one_line(e) == f"pretrained.bnn: {tmp_path / 'nope.pth'}: checkpoint not found"
    assert not (tmp_path / "run" / "config.json").exists()


def test_a_teacher_nobody_provides_is_refused_naming_both_fixes(data_dir):
    with pytest.raises(ConfigError) as e:
        validate_config(unet_only(data_dir, lan="x"))
    message = _one_line(e)
    assert "['bnn']" in message and "stage_order" in message
    assert "--config.pretrained.bnn=PATH" in message


def test_config_only_checks(data_dir):
    config = tiny_config(data_dir)
    config.stage_order = ("bnn",)
    config.pretrained.unet = "somewhere"
    with pytest.raises(ConfigError, match=r"^pretrained\.unet: no stage .* reads the U-Net"):
        validate_config(config)
    config = unet_only(data_dir, bnn="b", lan="l")
    with config.ignore_type():
        config.networks.bnn.blind_size = "auto"
    with pytest.raises(ConfigError, match=r"^networks\.bnn\.blind_size: 'auto'.*pretrained\.bnn"):
        validate_config(config)


def test_old_config_json_without_pretrained_resumes(data_dir):
    current = json.loads(tiny_config(data_dir).to_json_best_effort())
    old = {k: v for k, v in current.items() if k != "pretrained"}
    assert config_differences(old, current) == []
    current["pretrained"]["lan"] = "x"
    assert config_differences(old, current) == ["pretrained.lan: '' -> 'x'"]


def test_changed_weights_under_the_same_path_are_refused(data_dir, tmp_path):
    config = tiny_config(data_dir)
    weights = {"out": {"kernel": np.ones((1, 1, 3, 3), np.float32)}}
    first = pretrained.Pretrained("lan", "p", "authors' .pth", weights, "a" * 64)
    pretrained.check_unchanged(tmp_path, {"lan": first}, config, allow_change=False)
    other = pretrained.Pretrained("lan", "p", "authors' .pth", weights, "b" * 64)
    with pytest.raises(ConfigError, match=r"^pretrained\.lan: the weights at p changed"):
        pretrained.check_unchanged(tmp_path, {"lan": other}, config, allow_change=False)
    pretrained.check_unchanged(tmp_path, {"lan": other}, config, allow_change=True)
    saved = json.loads((tmp_path / pretrained.RECORD).read_text())
    assert saved["lan"]["sha256"] == "b" * 64


# ----------------------------------------------------------------- the authors' .pth files


def authors_config(data_dir: Path, shared: Path):
    """own_photos_teachers' networks on the tiny data: U-Net only, 1 step, authors' teachers."""
    c = unet_only(
        data_dir,
        bnn=str(shared / "parity" / "bnn_b9_c48_seed0.pth"),
        lan=str(shared / "weights" / "official_LAN.pth"),
    )
    for name in ("bnn", "lan"):
        c.networks[name] = own_photos_teachers.get_config().networks[name]
    c.stages.unet.steps = 1
    return c


def test_authors_teachers_are_used_exactly(data_dir, shared_data, tmp_path, monkeypatch):
    config = authors_config(data_dir, shared_data)
    seen = _spy(monkeypatch)
    results = train.train_and_evaluate(config, tmp_path)
    for name in ("bnn", "lan"):
        _, params = load_network(config.pretrained[name], name)
        assert_same_params(seen["teachers"][name], params)
        assert results["pretrained"][name]["source"].startswith("authors' .pth")
    assert "networks.bnn.blind_size=9 used" in results["pretrained"]["bnn"]["source"]
    assert np.isfinite(results["loss_history"]["unet"][0][1])


def test_authors_lan_mismatch_names_the_raw_inputs(data_dir, shared_data, tmp_path):
    config = authors_config(data_dir, shared_data)
    config.networks.lan.normalize = True
    with pytest.raises(ConfigError) as e:
        pretrained.load_all(config)
    assert _one_line(e) == (
        f"pretrained.lan: {config.pretrained.lan} is an authors' LAN (.pth: raw [0, 255] "
        "inputs) with blind_size=3, width=64, num_blocks=6, normalize=False, but "
        "networks.lan.normalize is True; set --config.networks.lan.normalize=False"
    )


def test_own_photos_teachers_fits_the_authors_files(shared_data):
    config = own_photos_teachers.get_config()
    config.dataset.noisy_dir = "photos"
    config.pretrained.bnn = str(shared_data / "parity" / "bnn_b9_c48_seed0.pth")
    config.pretrained.lan = str(shared_data / "weights" / "official_LAN.pth")
    validate_config(config)
    assert set(pretrained.load_all(config)) == {"bnn", "lan"}


def test_non_finite_authors_weights_are_refused(data_dir, shared_data, tmp_path):
    torch = pytest.importorskip("torch")
    source = shared_data / "weights" / "official_LAN.pth"
    state = torch.load(source, map_location="cpu")
    state["conv.0.weight"][0, 0, 0, 0] = float("nan")
    broken = tmp_path / "nan_LAN.pth"
    torch.save(state, broken)
    config = authors_config(data_dir, shared_data)
    config.pretrained.lan = str(broken)
    with pytest.raises(ConfigError) as e:
        pretrained.load_all(config)
    assert _one_line(e).startswith(f"pretrained.lan: {broken}: weight ")
    assert "NaN" in str(e.value)
