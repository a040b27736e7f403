"""bench/compare.py at a tiny budget: every listed method trained, scored, timed and shown."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from bench import compare

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
