"""bench/compare.py at a tiny budget: every listed method trained, scored, timed and shown."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bench import compare
from sassid_jax.training import train_step

TINY = (
    "--config.batch_size=2",
    "--config.networks.bnn.width=4",
    "--config.networks.unet.width=4",
    "--config.eval.max_images=1",
    "--config.eval.save_panels=False",
    "--config.selection.enabled=False",
    "--config.train.tensorboard=False",
    "--config.train.log_every=1",
    "--config.train.checkpoint_every=2",
)


@pytest.mark.slow
def test_compare_writes_one_table_json_and_panel(data_dir, tmp_path, capsys):
    out = tmp_path / "cmp"
    extra = [f"--extra={e}" for e in (*TINY, f"--config.dataset.data_dir={data_dir}")]
    args = ["--methods=atbsn_d,apbsn", "--steps=2", f"--out={out}", "--repeats=1", *extra]
    payload = compare.main(args)
    table = (out / "compare.md").read_text()
    assert "| AT-BSN(D) |" in table and "| AP-BSN |" in table and "| noisy input |" in table
    record = json.loads((out / "compare.json").read_text())
    assert list(record["methods"]) == ["atbsn_d", "apbsn"]
    apbsn = record["methods"]["apbsn"]
    assert apbsn["network"] == "bnn" and apbsn["architecture"] == "DBSNl"
    assert apbsn["procedure"]["pd_factor"] == 2 and apbsn["procedure"]["r3_repeats"] == 8
    assert len(record["methods"]["atbsn_d"]["train_step_ms"]) == 2  # teacher, student
    # every run trained its stages at the budget, with the one protocol (raw outputs)
    for method in ("atbsn_d", "apbsn"):
        config = json.loads((out / "runs" / method / "config.json").read_text())
        assert {config["stages"][s]["steps"] for s in config["stage_order"]} == {2}
        assert config["postprocess"] == {"colour_sigma": 0.0, "safeguard": "off"}
        assert np.isfinite(
            record["methods"][method]["results"]["table"][record["methods"][method]["network"]][
                "psnr"
            ]
        )
    panel = np.asarray(Image.open(out / "compare_panels.png"))
    assert panel.ndim == 3 and panel.shape[1] > 4 * compare.PANEL_CROP  # noisy, 2 methods, clean
    assert payload["table"] == record["table"]
    # a second call reads the finished runs instead of training again
    capsys.readouterr()
    compare.main(args)
    assert "+ launch.py" not in capsys.readouterr().out


def test_unknown_method_is_refused(capsys):
    with pytest.raises(SystemExit):
        compare.main(["--methods=sasl,bm3d"])
    assert "unknown ['bm3d']" in capsys.readouterr().err


def test_tbsn_methods_are_listed_but_opt_in(capsys):
    assert compare.METHODS["tbsn"] == ("configs/tbsn.py", "TBSN")
    assert compare.METHODS["tbsn_d"] == ("configs/tbsn_distill.py", "TBSN(D)")
    assert set(compare.DEFAULT_METHODS) < set(compare.METHODS)
    assert "tbsn" not in compare.DEFAULT_METHODS and "tbsn_d" not in compare.DEFAULT_METHODS
    with pytest.raises(SystemExit):
        compare.main(["--help"])
    assert "opt-in" in capsys.readouterr().out


def _lr_at(config: Any, stage: str, steps: int, at: tuple[int, ...]) -> list[float]:
    for field, value in compare.stage_overrides(config.stages[stage], steps).items():
        config.stages[stage][field] = value
    schedule = train_step.lr_schedule(config, stage)
    return [float(schedule(i)) for i in at]


@pytest.mark.parametrize("method", ["tbsn", "tbsn_d"])
def test_stage_args_scale_the_step_schedule_with_the_budget(method):
    args = compare.stage_args(method, 100)
    assert "--config.stages.tbsn.steps=100" in args
    assert "--config.stages.tbsn.decay_every=40" in args  # x0.1 at 40 and 80 of 100
    config = compare._config(method)
    lr = _lr_at(config, "tbsn", 100, (0, 39, 40, 79, 80, 99))
    assert np.allclose(lr, [3e-4, 3e-4, 3e-5, 3e-5, 3e-6, 3e-6])
    if method == "tbsn_d":
        assert "--config.stages.distill.decay_every=40" in args


def test_stage_args_one_rule_for_every_method():
    # cosine stages need only their steps; a decay_every (AP-BSN's, unused by its cosine
    # default) keeps its fraction of the steps, never below 1
    assert compare.stage_args("sasl", 100) == [
        f"--config.stages.{s}.steps=100" for s in ("bnn", "lan", "unet")
    ]
    assert compare.stage_args("apbsn", 100) == [
        "--config.stages.apbsn.steps=100",
        "--config.stages.apbsn.decay_every=40",
    ]
    assert compare.stage_args("tbsn", 2)[1] == "--config.stages.tbsn.decay_every=1"
    assert compare.stage_args("tbsn", 400) == [
        "--config.stages.tbsn.steps=400",
        "--config.stages.tbsn.decay_every=160",  # the config's own schedule
    ]


def test_tbsn_d_step_batch_carries_the_precomputed_target():
    config = compare._config("tbsn_d")
    tbsn_stage, distill = train_step.build_stages(config)
    assert compare.teachers_mode(config, tbsn_stage) == "online"  # no teacher
    assert compare.teachers_mode(config, distill) == "precomputed"
    side = config.crop_size
    assert compare.step_batch(config, tbsn_stage).shape == (config.batch_size, side, side, 3)
    batch = compare.step_batch(config, distill)
    assert batch.shape == (config.batch_size, side, side, 6) and batch.dtype == np.float32
    # AT-BSN(D) trains its teacher online: the batch is the noisy crops alone
    atbsn = compare._config("atbsn_d")
    assert compare.step_batch(atbsn, train_step.build_stages(atbsn)[1]).shape[-1] == 3
