"""The peers as configs: AT-BSN, AT-BSN(D) and AP-BSN stages, their checks and tiny runs."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import apbsn as apbsn_config
from configs import atbsn as atbsn_config
from configs import atbsn_distill, blind_spot, default
from sassid_jax import train
from sassid_jax.configuration import validate_config
from sassid_jax.errors import ConfigError
from sassid_jax.inference import procedure
from sassid_jax.methods import apbsn, atbsn
from sassid_jax.methods.stages import make_stage
from sassid_jax.nn import BNN, ATBSNStudent, DBSNl
from sassid_jax.training.train_step import build_networks, learning_rate


def _x(shape=(2, 32, 32, 3), seed=0):
    return jax.random.uniform(jax.random.key(seed), shape, maxval=255.0)


@pytest.mark.parametrize("module", [default, blind_spot, atbsn_config, atbsn_distill, apbsn_config])
def test_every_config_validates_and_carries_the_four_inference_fields(module):
    config = module.get_config()
    validate_config(config)
    assert set(config.inference) == {"blind_size", "pd_factor", "r3_repeats", "r3_prob"}
    config.inference.r3_repeats = 0  # --config.inference.r3_repeats=0: accepted everywhere
    validate_config(config)


@pytest.mark.parametrize("module", [default, blind_spot, atbsn_config, atbsn_distill])
def test_r3_off_changes_nothing_where_there_is_no_r3(module):
    config = module.get_config()
    before = procedure.from_config(config)
    config.inference.r3_repeats = 0
    assert procedure.from_config(config) == before


def test_the_methods_procedures():
    assert procedure.from_config(default.get_config()).plain
    assert procedure.from_config(atbsn_config.get_config()) == procedure.Procedure(blind_size=3)
    p = procedure.from_config(apbsn_config.get_config())
    assert (p.pd_factor, p.r3_repeats, p.r3_prob, p.blind_size) == (2, 8, 0.16, -1)
    # the distilled student is the test network: the teacher's blind size only, no PD
    distill = atbsn_distill.get_config()
    assert procedure.from_config(distill, "bnn").blind_size == 3
    assert procedure.from_config(distill).plain


def test_distill_stage_reads_the_teacher_at_seven_blind_sizes():
    stage = make_stage("distill", ("unet",), ("atbsn_distill",))
    assert stage.teachers == ("bnn",) and not stage.plain_teachers
    teacher, student = BNN(width=4), ATBSNStudent(width=4)
    x = _x()
    # jitted: one compiled program each instead of op-by-op dispatch of 7 BNN passes
    tp = jax.jit(teacher.init)(jax.random.key(1), x)["params"]
    sp = jax.jit(student.init)(jax.random.key(2), x)["params"]
    networks = {"bnn": teacher, "unet": student}
    outs = jax.jit(lambda p, x: stage.outputs(networks, p, x))({"bnn": tp, "unet": sp}, x)
    assert outs["bnn"].shape == (7, 2, 32, 32, 3)
    at3 = jax.jit(lambda p, x: teacher.apply({"params": p}, x, 3))(tp, x)
    np.testing.assert_array_equal(outs["bnn"][2], at3)

    @jax.jit
    def expected(tp, sp, x):
        return atbsn.distillation_loss(
            student.apply({"params": sp}, x),
            atbsn.teacher_outputs(lambda z, b: teacher.apply({"params": tp}, z, b), x),
        )

    np.testing.assert_allclose(stage.loss(outs, x), expected(tp, sp, x), rtol=1e-6)


def test_student_starts_from_the_teachers_trunk_but_dec1():
    stage = make_stage("distill", ("unet",), ("atbsn_distill",))
    x = _x()
    tp = jax.jit(BNN(width=4).init)(jax.random.key(1), x)["params"]
    sp = jax.jit(ATBSNStudent(width=4).init)(jax.random.key(2), x)["params"]
    started = stage.start({"unet": sp}, {"bnn": tp})["unet"]["trunk"]
    for name, conv in started.items():
        source = sp if name in atbsn.STUDENT_OWN else tp
        np.testing.assert_array_equal(conv["kernel"], source["trunk"][name]["kernel"])
    wider = jax.jit(ATBSNStudent(width=8).init)(jax.random.key(2), x)["params"]
    shapes = r"is \(3, 3, \d+, 8\) in the teacher and \(3, 3, \d+, 16\) in the student"
    with pytest.raises(ValueError, match=rf"trunk/\w+ {shapes}: give both one width"):
        stage.start({"unet": wider}, {"bnn": tp})


def test_apbsn_stage_runs_its_network_through_pd5():
    stage = make_stage("apbsn", ("bnn",), ("apbsn",))
    net = DBSNl(width=8, num_blocks=1)
    x = _x((2, 30, 30, 3))
    p = jax.jit(net.init)(jax.random.key(0), x)["params"]
    out = jax.jit(lambda p, x: stage.outputs({"bnn": net}, {"bnn": p}, x)["bnn"])(p, x)
    expected = jax.jit(lambda p, x: apbsn.train_forward(lambda z: net.apply({"params": p}, z), x))(
        p, x
    )
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_allclose(stage.loss({"bnn": out}, x), jnp.mean(jnp.abs(out - x)), rtol=1e-6)
    assert stage.crop_multiple == 5


def test_one_network_run_two_ways_in_one_stage_is_refused():
    with pytest.raises(ValueError, match="run 'bnn' in different ways"):
        make_stage("mixed", ("bnn",), ("bnn", "apbsn"))


@pytest.mark.parametrize(
    ("module", "edit", "message"),
    [
        (apbsn_config, lambda c: setattr(c, "crop_size", 64), "multiple of 5 for stage 'apbsn'"),
        (apbsn_config, lambda c: setattr(c.inference, "r3_repeats", -1), "r3_repeats must be"),
        (apbsn_config, lambda c: setattr(c.inference, "blind_size", 2), "blind_size must be"),
        (apbsn_config, lambda c: setattr(c.inference, "r3_prob", 1.5), "r3_prob must be a num"),
        (apbsn_config, lambda c: setattr(c.inference, "pd_factor", 0), "pd_factor must be"),
        (apbsn_config, lambda c: setattr(c.stages.apbsn, "schedule", "linear"), "'cosine' or"),
        (
            apbsn_config,
            lambda c: c.stages.apbsn.update({"schedule": "step", "decay": 0.0}),
            r"stages.apbsn.decay must be in \(0, 1\]",
        ),
        (
            atbsn_distill,
            lambda c: setattr(c.train, "teachers", "precomputed"),
            "stage 'distill' runs its teachers",
        ),
    ],
)
def test_bad_peer_fields_name_the_field(module, edit, message):
    config = module.get_config()
    edit(config)
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_student_width_follows_the_teacher():
    config = atbsn_distill.get_config()
    config.networks.bnn.width = 8
    assert build_networks(config)["unet"].width == 8


def _tiny(config, data_dir: Path):
    config.dataset.data_dir = str(data_dir)
    config.batch_size = 2
    config.eval.max_images = 1
    config.eval.save_panels = False
    config.train.log_every, config.train.checkpoint_every = 1, 2
    config.train.tensorboard = False
    config.selection.enabled = False
    for name in config.stage_order:
        config.stages[name].steps = 2
    return config


def test_tiny_atbsn_distill_run_trains_teacher_then_student(data_dir, tmp_path):
    config = _tiny(atbsn_distill.get_config(), data_dir)
    config.crop_size = 32
    config.networks.bnn.width = 4
    results = train.train_and_evaluate(config, tmp_path / "run")
    assert set(results["table"]) == {"noisy", "bnn", "unet"}
    assert all(np.isfinite(loss) for _, loss in results["loss_history"]["distill"])


def test_tiny_apbsn_run_evaluates_with_pd_and_r3(data_dir, tmp_path):
    config = _tiny(apbsn_config.get_config(), data_dir)
    config.crop_size = 20
    config.networks.bnn.width, config.networks.bnn.num_blocks = 4, 1
    config.inference.r3_repeats = 2
    results = train.train_and_evaluate(config, tmp_path / "run")
    assert set(results["table"]) == {"noisy", "bnn"}
    assert np.isfinite(results["table"]["bnn"]["psnr"])


def test_step_schedule_multiplies_by_decay_every_decay_every_steps():
    config = apbsn_config.get_config()
    assert learning_rate(config, "apbsn", 200) == pytest.approx(1e-3 * 0.5)  # cosine: half-way
    config.stages.apbsn.schedule = "step"
    validate_config(config)
    rates = [learning_rate(config, "apbsn", s) for s in (0, 159, 160, 319, 320)]
    assert rates == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-5])
