"""Hydra composition of every config option, and schema errors before MindSpore starts."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from conftest import CONF_DIR, run_cli
from effv2.config import register_configs

register_configs()

GROUPS = ("task", "model", "data", "optimizer", "scheduler", "hardware", "progressive", "experiment", "search")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_option_composes_and_resolves(group: str, option: str) -> None:
    cfg = _compose(f"{group}={option}")
    # the data sets that live outside the package need their root (and class count) from the user
    needed = (("root", "/data/x"), ("num_classes", 5))
    extra = [f"data.{key}={value}" for key, value in needed if OmegaConf.is_missing(cfg.data, key)]
    if group == "experiment" and "effv2.required_to_train" in str(OmegaConf.to_yaml(cfg.model)):
        extra.append("model.pretrained=/ckpt/pretrained.ckpt")
    cfg = _compose(f"{group}={option}", *extra)
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    if group not in ("experiment", "search"):
        name = cfg[group].name
        assert getattr(name, "name", name) == option
    assert container["model"]["num_classes"] == container["data"]["num_classes"]


def test_every_group_has_options() -> None:
    for group in GROUPS:
        assert _options(group), f"conf/{group}/ is empty"


def test_defaults_are_the_cpu_demo() -> None:
    cfg = _compose()
    assert cfg.task.name.name == "train"
    assert cfg.model.name == "effnetv2_b0"
    assert cfg.data.name == "digits" and cfg.data.root is None
    assert cfg.hardware.device_target.name == "CPU"
    assert cfg.model.num_classes == 10


def test_mistyped_key_fails_composition() -> None:
    with pytest.raises(ConfigCompositionException, match="lr_typo"):
        _compose("optimizer.lr_typo=1")


def test_wrong_type_fails_composition() -> None:
    with pytest.raises(ConfigCompositionException, match="epochs"):
        _compose("train.epochs=abc")
    with pytest.raises(ConfigCompositionException, match="weight_decay"):
        _compose("optimizer.weight_decay=lots")


def test_bad_enum_value_lists_accepted_values() -> None:
    with pytest.raises(ConfigCompositionException) as info:
        _compose("hardware.mode=grap")
    text = str(info.value) + str(info.value.__cause__)
    assert "grap" in text and "graph" in text and "pynative" in text


def test_optimizer_schema_follows_the_chosen_option() -> None:
    assert _compose("optimizer=sgd").optimizer.nesterov is True
    with pytest.raises(ConfigCompositionException, match="nesterov"):
        _compose("optimizer=adamw", "optimizer.nesterov=true")


def test_mistyped_override_on_the_command_line_exits_nonzero_naming_the_key(tmp_path: Path) -> None:
    result = run_cli("optimizer.lr_typo=1", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode != 0
    assert "lr_typo" in result.stderr
    assert "Traceback" not in result.stderr
    # composition failed before the task started: no run folder, and mindspore never imported
    assert not (tmp_path / "run").exists()


def test_unknown_group_option_exits_nonzero_listing_choices(tmp_path: Path) -> None:
    result = run_cli("model=effnetv2_q", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode != 0
    assert "effnetv2_q" in result.stderr and "effnetv2_s" in result.stderr


def test_schema_import_does_not_import_mindspore() -> None:
    import subprocess

    code = "import effv2.config, sys; print('mindspore' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_logger_group_selects_several_and_rejects_typos() -> None:
    assert OmegaConf.to_container(_compose().logger) == {"csv": {"plot": True}, "tensorboard": None, "mlflow": None}
    cfg = _compose("logger=[csv,tensorboard,mlflow]", "logger.tensorboard.log_every_n_steps=5")
    assert cfg.logger.tensorboard.log_every_n_steps == 5 and cfg.logger.mlflow.tracking_uri is None
    assert all(value is None for value in _compose("logger=[]").logger.values())
    with pytest.raises(ConfigCompositionException, match="tensorbord"):
        _compose("logger=[csv,tensorbord]")
    with pytest.raises(ConfigCompositionException, match="log_evry"):
        _compose("logger=[tensorboard]", "logger.tensorboard.log_evry=5")


def test_a_logger_without_its_package_names_the_extra() -> None:
    from effv2.errors import UserError
    from effv2.tracking.base import require

    with pytest.raises(UserError, match=r"^logger=mlflow needs no_such_tracker: pip install 'effv2\[tracking\]'$"):
        require("no_such_tracker.client", "mlflow")


@pytest.mark.parametrize("hardware", _options("hardware"))
def test_cpu_kernels_are_wired_on_cpu_only(hardware: str) -> None:
    from effv2.kernels import cpu_kernels_wanted

    cfg = OmegaConf.to_object(_compose(f"hardware={hardware}"))
    assert cpu_kernels_wanted(cfg.hardware) == hardware.startswith("cpu")  # Ascend and GPU keep MindSpore's ops
    stock = OmegaConf.to_object(_compose(f"hardware={hardware}", "hardware.cpu_kernels=false"))
    assert not cpu_kernels_wanted(stock.hardware)


def test_mixed_precision_on_cpu_keeps_mindspores_operators_and_says_why() -> None:
    from effv2.config.validate import validate
    from effv2.kernels import cpu_kernels_wanted, kernels_off_reason

    composed = _compose("hardware=cpu", "hardware.amp_level=O2")
    validate(composed)  # runs, in float16 on MindSpore's operators: effv2's kernels are float32
    cfg = OmegaConf.to_object(composed)
    assert not cpu_kernels_wanted(cfg.hardware)
    assert kernels_off_reason(cfg.hardware).startswith("hardware.amp_level=O2 runs MindSpore's own operators")


@pytest.mark.parametrize(
    "override,expected",
    [
        ("infer.print_limit=-1", "infer.print_limit=-1 must be >= 0 (0: the summary line alone)"),
        ("infer.top_k=0", "infer.top_k=0 must be a positive integer"),
    ],
)
def test_bad_infer_values_are_one_line(override: str, expected: str) -> None:
    from effv2.config.validate import validate
    from effv2.errors import UserError

    with pytest.raises(UserError, match=f"^{re.escape(expected)}$"):
        validate(_compose("task=infer", override))
