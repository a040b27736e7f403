"""bench/common.py and the real-noise bench's configs and bookkeeping (no training here)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import ml_collections
import pytest

from bench import common
from bench.real_noise import runs
from sassid_jax.configuration import validate_config

REPO = Path(__file__).resolve().parents[1]
PROTOCOLS = ("sidd_short", "sidd_full", "dnd")


def test_interleaved_alternates_and_fits_the_budget():
    calls = []

    def side(name: str, seconds: float):
        return lambda: calls.append(name) or seconds

    times, loads = common.interleaved({"a": side("a", 1.0), "b": side("b", 2.0)}, 2, 5, 7.0)
    # first round takes 3 s: the 7 s budget allows 2 rounds, within [2, 5]
    assert calls == ["a", "b", "b", "a"]
    assert times == {"a": [1.0, 1.0], "b": [2.0, 2.0]} and len(loads) == 3
    calls.clear()
    common.interleaved({"a": side("a", 1.0), "b": side("b", 1.0)}, 3)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert common.medians({"a": [3.0, 1.0, 2.0]}) == {"a": 2.0}


def test_tables():
    text = common.text_table(("name", "value"), [("x", 1), ("longer", 22)])
    assert text.splitlines() == ["name   value", "------------", "x          1", "longer    22"]
    md = common.markdown_table(("a", "b"), [(1, "")])
    assert md.splitlines() == ["| a | b |", "|---|---|", "| 1 |  |"]


def test_record_is_json_and_machine_info_names_the_load(tmp_path):
    info = common.machine_info(threads=2)
    assert info["threads"] == 2 and info["affinity"] >= 1 and len(info["loadavg"]) == 3
    path = common.write_record(tmp_path / "sub" / "r.json", {"machine": info})
    assert json.loads(path.read_text())["machine"]["threads"] == 2
    assert common.load_state(2.5, 2) == "quiet"
    assert "loaded" in common.load_state(3.5, 2)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_protocol_configs_make_valid_run_configs(protocol, tmp_path):
    cfg = importlib.import_module(f"configs.real_noise.{protocol}").get_config()
    assert cfg.part in ("sidd", "dnd")
    runs.check_methods(cfg)
    if cfg.part == "dnd":
        assert cfg.from_run == ""  # required on the command line
        return
    dirs = {k: str(tmp_path / k) for k in ("noisy_dir", "eval_noisy_dir", "eval_clean_dir")}
    for method, blind in runs.METHODS.items():
        run = runs.run_config(cfg, method, 3, dirs)
        validate_config(run)
        assert run.networks.bnn.blind_size == blind and run.seed == 3
        assert run.dataset.noisy_dir == dirs["noisy_dir"]
    cfg.stage1_only = "bsn"
    assert runs.trained_networks(runs.run_config(cfg, "bsn", 0, dirs)) == ["bnn"]
    assert runs.trained_networks(runs.run_config(cfg, "sasl", 0, dirs)) == ["bnn", "lan", "unet"]


def test_record_timing_keeps_the_call_that_trained_a_stage(tmp_path):
    config = ml_collections.ConfigDict(
        {"stage_order": ("bnn", "lan"), "stages": {"bnn": {"steps": 4}, "lan": {"steps": 4}}}
    )
    first = {
        "timing": {
            "bnn": {"seconds": 9.0, "steps_run": 4, "steps_per_sec": 0.5},
            "lan": {"seconds": 1.0, "steps_run": 2, "steps_per_sec": 2.0},
        },
        "loss_history": {"bnn": [[2, 5.0], [4, 3.0]], "lan": [[2, 1.5]]},
    }
    runs.record_timing(tmp_path, config, first)
    resumed = {  # a later call: bnn skipped (finished), lan trained on to its end
        "timing": {
            "bnn": {"seconds": 0.0, "steps_run": 0, "steps_per_sec": 0.0},
            "lan": {"seconds": 3.0, "steps_run": 2, "steps_per_sec": 0.7},
        },
        "loss_history": {"bnn": [], "lan": [[4, 1.0]]},
    }
    stages = runs.stage_times(runs.record_timing(tmp_path, config, resumed))
    assert stages["bnn"]["seconds"] == 9.0 and stages["bnn"]["final_loss"] == 3.0
    assert stages["lan"]["seconds"] == 3.0 and stages["lan"]["final_loss"] == 1.0
    old = {"stages": {"bnn": {"wall_s": 5.0, "steps": 400, "steps_per_s": 80.0}}}
    assert runs.stage_times(old)["bnn"]["steps_per_sec"] == 80.0


def test_command_line_rejects_an_unknown_method():
    out = subprocess.run(
        [sys.executable, "-m", "bench.real_noise", "--config=configs/real_noise/sidd_short.py",
         "--config.methods=sasl,nope"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode != 0
    assert "config.methods: unknown methods ['nope']" in out.stderr
