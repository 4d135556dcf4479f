"""Official TensorFlow checkpoints -> effv2: checkpoints written by TensorFlow in the released
layout (tests/tf_official_checkpoint.py, Keras' own EfficientNetV2), converted with effv2's
tensor-bundle reader; logits must match TensorFlow's within 1e-4 for EMA and raw weights."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from conftest import REPO, one_line_error, run_cli
from effv2.checkpoints import load_weights
from effv2.conversion.convert import convert
from effv2.conversion.tensor_bundle import TensorBundle
from effv2.errors import UserError
from effv2.models import VARIANTS, EfficientNetV2

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None,
    reason="TensorFlow writes the reference checkpoints; pip install -e '.[test]' installs it",
)


@pytest.fixture(scope="module", params=["b0", "b3"])
def official(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp(f"tf_{request.param}")
    subprocess.run(
        [sys.executable, str(REPO / "tests" / "tf_official_checkpoint.py"), request.param, str(out)],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    return request.param, out


def _logits(variant: str, ckpt: Path, images: np.ndarray) -> np.ndarray:
    ms.set_context(mode=ms.PYNATIVE_MODE)
    meta = ms.load_checkpoint(str(ckpt))
    classes = json.loads(str(meta["effv2_meta"]))["num_classes"]
    net = EfficientNetV2(VARIANTS[variant], num_classes=classes)
    load_weights(net, ckpt)
    net.set_train(False)
    return net(Tensor(images)).asnumpy()


@pytest.mark.parametrize("weights", ["ema", "raw"])
def test_official_checkpoint_converts_to_tensorflows_logits(official, weights: str, tmp_path: Path) -> None:
    name, out = official
    variant = f"effnetv2_{name}"
    output = tmp_path / f"{variant}.ckpt"
    report = convert(str(out / "official" / "model"), variant, use_ema=weights == "ema", output=output)
    assert report["weights"] == weights and report["num_classes"] == 1000 and report["format"] == "tensorflow"
    assert json.loads(output.with_suffix(".json").read_text())["tensors"] == report["tensors"]
    expected = np.load(out / f"logits_{weights}.npy")
    actual = _logits(variant, output, np.load(out / "images.npy"))
    np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=0)
    other = np.load(out / f"logits_{'raw' if weights == 'ema' else 'ema'}.npy")
    assert np.abs(actual - other).max() > 1e-3  # the two weight sets really differ


def test_the_reader_sees_what_tensorflow_wrote(official) -> None:
    name, out = official
    bundle = TensorBundle(out / "official" / "model")
    assert bundle.read("global_step") == 1234
    depthwise = [n for n in bundle.entries if n.endswith("depthwise_conv2d/depthwise_kernel")]
    assert depthwise and all(n.startswith(f"efficientnetv2-{name}/blocks_") for n in depthwise)
    kernel = bundle.read(depthwise[0])
    assert kernel.dtype == np.float32 and kernel.shape[:2] == (3, 3) and kernel.shape[3] == 1


@pytest.mark.parametrize(
    "broken,message",
    [
        ("missing", "1 missing: efficientnetv2-{v}/blocks_5/se/conv2d/kernel/ExponentialMovingAverage"),
        ("extra", "1 unexpected: efficientnetv2-{v}/head/extra/kernel"),
        ("mismatch", "1 shape mismatch: efficientnetv2-{v}/head/dense/bias/ExponentialMovingAverage (7,)"),
        ("no_ema", "has no ExponentialMovingAverage weights; use convert.weights=raw"),
    ],
)
def test_bad_checkpoints_are_refused_and_nothing_is_written(
    official, tmp_path: Path, broken: str, message: str
) -> None:
    name, out = official
    if name != "b0":
        pytest.skip("one variant is enough for the error paths")
    output = tmp_path / "out.ckpt"
    with pytest.raises(UserError, match="does not fit|has no") as error:
        convert(str(out / broken / "model"), "effnetv2_b0", use_ema=True, output=output)
    assert message.format(v=name) in str(error.value)
    assert not output.exists() and not output.with_suffix(".json").exists()


def test_convert_task_through_run_py(official, tmp_path: Path) -> None:
    name, out = official
    if name != "b0":
        pytest.skip("one variant is enough for the command line")
    output = tmp_path / "b0.ckpt"
    # a multi-device hardware option converts in this one process too
    ok = run_cli("task=convert", "model=effnetv2_b0", f"convert.source={out / 'official' / 'model'}",
                 "convert.weights=raw", f"convert.output={output}", "hardware=cpu_2p",
                 f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert not (tmp_path / "run" / "ranks").exists()
    assert json.loads(output.with_suffix(".json").read_text())["weights"] == "raw"
    wrong = run_cli("task=convert", "model=effnetv2_s", f"convert.source={out / 'official' / 'model'}",
                    f"hydra.run.dir={tmp_path / 'run2'}")  # fmt: skip
    assert "holds efficientnetv2-b0; model=effnetv2_s expects efficientnetv2-s" in one_line_error(wrong)
