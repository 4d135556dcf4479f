"""Weight conversion (timm state dicts here; official TensorFlow checkpoints in
test_conversion_tf.py) and fine-tuning from a converted checkpoint with a head swap."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from conftest import REPO, one_line_error, run_cli, tiny_data
from effv2 import Predictor
from effv2.checkpoints import load_pretrained
from effv2.conversion.convert import convert
from effv2.deploy.class_names import imagenet1k
from effv2.errors import UserError
from effv2.models import VARIANTS, EfficientNetV2, build_model, init_weights
from effv2.models.registry import count_parameters

torch = pytest.importorskip("torch", reason="the PyTorch reference needs torch (pip install -e '.[test]')")
sys.path.insert(0, str(REPO / "benchmarks"))
import torch_reference  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402


def _randomised(variant: str, classes: int = 1000, seed: int = 0) -> torch.nn.Module:
    """The PyTorch reference with random weights and random BN statistics, in eval mode."""
    torch.manual_seed(seed)
    model = torch_reference.build(variant, classes)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                shape = module.weight.shape
                module.weight.copy_(torch.rand(shape, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(shape, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(shape, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
    return model.eval()


def _state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def b0_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    model = _randomised("effnetv2_b0")
    path = tmp_path_factory.mktemp("timm") / "tf_efficientnetv2_b0.safetensors"
    save_file(_state(model), str(path))
    return model, path


def _logits(net: EfficientNetV2, images: np.ndarray) -> np.ndarray:
    net.set_train(False)
    return net(Tensor(images)).asnumpy()


@pytest.mark.parametrize("variant", ["effnetv2_b0", "effnetv2_b3", "effnetv2_s"])
def test_pytorch_reference_has_the_same_parameter_count(variant: str) -> None:
    ours = count_parameters(EfficientNetV2(VARIANTS[variant]))
    assert torch_reference.parameter_count(torch_reference.build(variant)) == ours


def test_timm_safetensors_converts_and_matches_pytorch_logits(b0_reference, tmp_path: Path) -> None:
    model, path = b0_reference
    output = tmp_path / "b0.ckpt"
    report = convert(str(path), "effnetv2_b0", use_ema=True, output=output)
    assert report["num_classes"] == 1000 and report["format"] == "timm" and report["weights"] == "raw"
    assert report["tensors"] == len([k for k in model.state_dict() if not k.endswith("num_batches_tracked")])
    assert output.with_suffix(".json").is_file()
    ms.set_context(mode=ms.PYNATIVE_MODE)
    net = EfficientNetV2(VARIANTS["effnetv2_b0"], num_classes=1000)
    load_pretrained(net, output)
    images = np.random.default_rng(1).uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(_logits(net, images), expected, atol=1e-4, rtol=1e-4)


def test_a_converted_1000_class_checkpoint_predicts_imagenet_names(
    b0_reference, digits_root: Path, tmp_path: Path
) -> None:
    _, path = b0_reference
    output = tmp_path / "b0.ckpt"
    convert(str(path), "effnetv2_b0", use_ema=True, output=output)
    result = run_cli(
        "task=export", "model=effnetv2_b0", "model.num_classes=1000", f"ckpt={output}", "export.image_size=32",
        "export.parity_batch_sizes=[1]", f"hydra.run.dir={tmp_path / 'export'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    exported = tmp_path / "export" / "effnetv2_b0.onnx"
    assert json.loads(exported.with_suffix(".classes.json").read_text()) == []  # the checkpoint has no names
    image = next((digits_root / "val" / "3").iterdir())
    top = Predictor.from_export(exported).predict(image, top_k=3)[0]
    names = [name for _, name in imagenet1k()]
    assert [guess["class"] for guess in top] == [names[guess["index"]] for guess in top]
    assert len({guess["index"] for guess in top}) == 3


@pytest.mark.parametrize(
    "change,message",
    [
        ("drop", "1 missing: blocks.3.0.conv_dw.weight"),
        ("add", "1 unexpected: extra.weight"),
        ("reshape", "1 shape mismatch: conv_head.weight (1280, 192, 1, 2)"),
    ],
)
def test_bad_tensors_are_listed_and_nothing_is_written(b0_reference, tmp_path: Path, change: str, message: str) -> None:
    model, _ = b0_reference
    state = _state(model)
    if change == "drop":
        del state["blocks.3.0.conv_dw.weight"]
    elif change == "add":
        state["extra.weight"] = np.zeros(3, np.float32)
    else:
        state["conv_head.weight"] = np.zeros((1280, 192, 1, 2), np.float32)
    source = tmp_path / "broken.safetensors"
    save_file(state, str(source))
    output = tmp_path / "out" / "b0.ckpt"
    with pytest.raises(UserError, match="nothing written") as error:
        convert(str(source), "effnetv2_b0", use_ema=True, output=output)
    assert message in str(error.value)
    assert not output.parent.exists() or not any(output.parent.iterdir())


def test_convert_task_errors_are_one_line(tmp_path: Path) -> None:
    missing = one_line_error(run_cli("task=convert", f"hydra.run.dir={tmp_path / 'a'}"))
    assert "task=convert needs convert.source=" in missing
    absent = one_line_error(
        run_cli("task=convert", f"convert.source={tmp_path / 'nothing/model'}", f"hydra.run.dir={tmp_path / 'b'}")
    )
    assert "no TensorFlow checkpoint there (model.index is missing)" in absent


def test_pretrained_with_another_class_count_reinitialises_only_the_head(
    b0_reference, tiny_folder: Path, tmp_path: Path
) -> None:
    _, path = b0_reference
    converted = tmp_path / "b0_1000.ckpt"
    result = run_cli(
        "task=convert", f"convert.source={path}", "model=effnetv2_b0", f"convert.output={converted}",
        f"hydra.run.dir={tmp_path / 'convert'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    source = ms.load_checkpoint(str(converted))

    ms.set_context(mode=ms.PYNATIVE_MODE)
    fresh = EfficientNetV2(VARIANTS["effnetv2_b0"], num_classes=10)
    init_weights(fresh, 0)
    net = EfficientNetV2(VARIANTS["effnetv2_b0"], num_classes=10)
    init_weights(net, 0)
    meta = load_pretrained(net, converted)
    assert meta["reinitialised_classifier"] and meta["source_classes"] == 1000
    params = {p.name: p.asnumpy() for p in net.get_parameters()}
    for name in ("stem.conv.weight", "blocks.10.dw.conv.weight", "head.bn.moving_variance"):
        np.testing.assert_array_equal(params[name], source[name].asnumpy(), err_msg=name)
    for name in ("classifier.weight", "classifier.bias"):
        np.testing.assert_array_equal(params[name], {p.name: p.asnumpy() for p in fresh.get_parameters()}[name])

    # the real training path: one epoch with lr 0, so the body stays exactly the converted one
    run_dir = tmp_path / "finetune"
    result = run_cli(
        *tiny_data(tiny_folder, model="effnetv2_b0"), "train.epochs=1", "optimizer.lr=0", "optimizer.weight_decay=0",
        f"model.pretrained={converted}", f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    log = (run_dir / "run.log").read_text()
    assert "classifier re-initialised: the checkpoint has 1000 classes, this model 10" in log
    last = ms.load_checkpoint(str(run_dir / "checkpoints" / "last.ckpt"))
    assert last["classifier.weight"].shape == (10, 1280)
    for name in ("stem.conv.weight", "blocks.10.dw.conv.weight", "head.conv.weight"):
        np.testing.assert_array_equal(last[name].asnumpy(), source[name].asnumpy(), err_msg=name)


def test_pretrained_loading_is_strict(tmp_path: Path) -> None:
    ms.set_context(mode=ms.PYNATIVE_MODE)
    cfg = type("Model", (), {"name": "effnetv2_b0", "num_classes": 10, "in_channels": 3, "drop_rate": None,
                             "drop_path_rate": 0.2, "bn_eps": 1e-3, "bn_momentum": 0.9})  # fmt: skip
    net = build_model(cfg)
    entries = [{"name": p.name, "data": p} for p in net.get_parameters() if p.name != "blocks.2.expand.conv.weight"]
    entries.append({"name": "surplus.weight", "data": Tensor(np.zeros(2, np.float32))})
    path = tmp_path / "partial.ckpt"
    ms.save_checkpoint(entries, str(path))
    with pytest.raises(UserError, match=r"1 missing: blocks.2.expand.conv.weight; 1 unexpected: surplus.weight"):
        load_pretrained(build_model(cfg), path)
