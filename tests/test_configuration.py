"""Config validation beyond the training fields of test_train.py: finite floats, eval and
submit configs, and every failure being a ConfigError (a UserInputError)."""

from pathlib import Path

import pytest

from configs import default, dnd, sidd_benchmark, sidd_validation
from sassid_jax import configuration
from sassid_jax.errors import ConfigError
from sassid_jax.nn import network_for_role
from sassid_jax.training.train_step import build_networks


def _set(config, field: str, value) -> None:
    """config.<field> = value for a dotted field."""
    *parents, leaf = field.split(".")
    node = config
    for p in parents:
        node = node[p]
    with node.unlocked():
        node[leaf] = value


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("stages.bnn.lr", float("inf")),
        ("alpha.lower", float("nan")),
        ("alpha.upper", float("inf")),
        ("optimizer.eps", float("-inf")),
        ("optimizer.b2", float("nan")),
    ],
)
def test_non_finite_float_names_the_field(field, value):
    config = default.get_config()
    _set(config, field, value)
    with pytest.raises(ConfigError, match=f"^{field} must be a finite number, got {value}$"):
        configuration.validate_config(config)
    with pytest.raises(ConfigError, match=f"^{field} must be a finite number"):
        configuration.validate_eval_config(config)


def test_shipped_eval_and_submit_configs_validate():
    configuration.validate_eval_config(sidd_validation.get_config(), "eval")
    configuration.validate_eval_config(default.get_config(), "eval")
    configuration.validate_eval_config(sidd_benchmark.get_config(), "submit")
    configuration.validate_eval_config(dnd.get_config(), "submit")


@pytest.mark.parametrize(
    ("module", "mode", "field", "value", "message"),
    [
        (sidd_validation, "submit", None, None, "--mode submit needs one of"),
        (dnd, "eval", None, None, "'dnd_srgb' cannot be evaluated here"),
        (default, "eval", "dataset.eval_name", "sidd_medium_srgb", "cannot be evaluated"),
        (default, "eval", "dataset.eval_name", "sidd", "dataset.eval_name: unknown dataset"),
        (dnd, "submit", "dataset.name", "dnd", "dataset.name: unknown dataset 'dnd'"),
        (default, "eval", "eval.network", "cnn", "eval.network must be one of"),
        (default, "eval", "eval.batch", 0, "eval.batch must be a positive integer, got 0"),
        (default, "eval", "eval.max_images", -1, "eval.max_images must be an integer >= 0"),
    ],
)
def test_bad_eval_config_names_field(module, mode, field, value, message):
    config = module.get_config()
    if field:
        _set(config, field, value)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        configuration.validate_eval_config(config, mode)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("stage_order", ("bnn", "lam"), "stage_order: unknown stage name 'lam'"),
        ("stage_order", ("lan", "bnn"), "stage 'lan' reads ['bnn'] as frozen teachers"),
        ("train.teachers", "cached", "train.teachers must be one of"),
    ],
)
def test_checks_living_elsewhere_raise_config_errors(field, value, message):
    config = default.get_config()
    _set(config, field, value)
    with pytest.raises(ConfigError) as err:
        configuration.validate_config(config)
    assert message in str(err.value)


def test_resume_refusal_is_a_config_error():
    with pytest.raises(ConfigError, match=r"different config \(crop_size: 64 -> 32\)"):
        configuration.check_resume_compatible(
            {"crop_size": 64}, {"crop_size": 32}, Path("run/config.json"), allow_change=False
        )


def test_tensorboard_switch_is_a_bool_and_resumable():
    config = default.get_config()
    assert config.train.tensorboard is True
    _set(config, "train.tensorboard", None)
    with pytest.raises(ConfigError, match="^train.tensorboard must be True or False, got None$"):
        configuration.validate_config(config)
    current = default.get_config().to_dict()
    older = default.get_config().to_dict()
    del older["train"]["tensorboard"]  # a run folder from before the switch
    assert configuration.config_differences(older, current) == []
    current["train"]["tensorboard"] = False
    assert configuration.config_differences(older, current) == []


def test_network_architecture_defaults_to_the_role_and_older_runs_resume():
    config = default.get_config()
    networks = build_networks(config)
    assert [type(networks[r]).__name__ for r in ("bnn", "lan", "unet")] == ["BNN", "LAN", "UNet"]
    for role in ("bnn", "lan", "unet"):
        block = config.networks[role].to_dict()
        del block["arch"]  # a config.json written before the field existed
        assert network_for_role(role, block) == networks[role]
    older = default.get_config().to_dict()
    for role in ("bnn", "lan", "unet"):
        del older["networks"][role]["arch"]
    assert configuration.config_differences(older, default.get_config().to_dict()) == []
    _set(config, "networks.unet.arch", "transformer")
    with pytest.raises(ConfigError, match=r"^networks.unet.arch must be one of \[.*'unet'"):
        configuration.validate_config(config)
