"""Checkpoint files: written atomically, loaded strictly with every mismatch listed.

Layout of a file (names inside the MindSpore checkpoint):

- ``<param>``        the model's own parameters (see ``effv2.models.efficientnetv2``)
- ``ema/<param>``    the EMA shadow of each model parameter, when EMA is on
- ``state/<name>``   the rest of the training state: optimizer slots and step, loss scale,
                     accumulated gradients, EMA update count (only in resumable checkpoints)
- ``effv2_meta``     a JSON string: variant, classes, class names, epoch, step, metrics, ...
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import mindspore as ms
from mindspore import Parameter, nn

from effv2.errors import UserError

EMA_KEY = "ema/"
STATE_KEY = "state/"
META_KEY = "effv2_meta"
# the checkpoints of a run folder (<run>/checkpoints/): resumable last and best, and the recovery
# checkpoint written every train.checkpoint.recovery_interval steps and on a stop signal
LAST, BEST, RECOVERY = "last.ckpt", "best.ckpt", "recovery.ckpt"
# model parameters that are training bookkeeping, not weights: a pretrained start ignores them
BOOKKEEPING = ("rng_step", "dropout.rate")
# not restored on resume: the training step's per-step buffers (see effv2.training.step), zero
# between steps, and the per-step learning-rate table, which the config rebuilds (so a resumed
# run may change train.epochs and continue its schedule at the saved global step)
NOT_RESUMED = (
    STATE_KEY + "accumulated.",
    STATE_KEY + "loss_scale.accumulated_overflows",
    STATE_KEY + "learning_rate",
)


def model_entries(net: nn.Cell, shadow_net: nn.Cell | None = None) -> dict[str, Parameter]:
    entries = {p.name: p for p in net.get_parameters()}
    if shadow_net is not None:
        # EMA shadows are named "ema.<name>" (see effv2.training.ema)
        for shadow in shadow_net.get_parameters():
            entries[EMA_KEY + shadow.name.removeprefix("ema.")] = shadow
    return entries


def state_entries(step_cell: nn.Cell, net: nn.Cell, shadow_net: nn.Cell | None) -> dict[str, Parameter]:
    """Every parameter the training step owns, under its checkpoint name."""
    entries = model_entries(net, shadow_net)
    known = {id(p) for p in entries.values()}
    for param in step_cell.get_parameters():
        if id(param) not in known:
            entries[STATE_KEY + param.name] = param
            known.add(id(param))
    return entries


def save_atomic(entries: dict[str, Parameter], path: Path, metadata: dict[str, Any]) -> None:
    """Write to a temporary file beside ``path`` and rename, so a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.ckpt")
    try:
        ms.save_checkpoint(
            [{"name": name, "data": param} for name, param in entries.items()],
            str(tmp),
            append_dict={META_KEY: json.dumps(metadata)},
        )
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        previous = "the previous one is intact" if path.exists() else "no earlier version existed"
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise UserError(f"could not write checkpoint {path} ({reason}); {previous}") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def read_checkpoint(path: str | Path, key: str = "ckpt") -> tuple[dict, dict[str, Any]]:
    """(parameters, metadata) of a checkpoint file, with one-line errors for bad paths naming the
    config ``key`` that gave it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{key}={str(path)!r} does not exist or is not a file")
    try:
        params = ms.load_checkpoint(str(path))
    except (ValueError, RuntimeError, TypeError) as exc:
        raise UserError(f"{key}={str(path)!r} is not a MindSpore checkpoint ({str(exc).splitlines()[0]})") from None
    meta = params.pop(META_KEY, None)
    return params, json.loads(str(meta)) if meta is not None else {}


def mismatch_listing(missing: list[str], unexpected: list[str], mismatched: list[str]) -> str:
    """One line for tensors that do not fit: counts, and the first five names of each kind;
    empty when everything fits."""
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if items:
            shown = ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")
            problems.append(f"{len(items)} {label}: {shown}")
    return "; ".join(problems)


def _check_fit(path: Path, what: str, expected: dict[str, Parameter], found: dict) -> None:
    mismatched = [
        f"{name} {tuple(found[name].shape)} vs {tuple(expected[name].shape)}"
        for name in sorted(set(expected) & set(found))
        if tuple(found[name].shape) != tuple(expected[name].shape)
    ]
    listing = mismatch_listing(sorted(set(expected) - set(found)), sorted(set(found) - set(expected)), mismatched)
    if listing:
        raise UserError(f"ckpt={str(path)!r} does not fit {what}: {listing}")


def _assign(entries: dict[str, Parameter], values: dict) -> None:
    for name, param in entries.items():
        param.set_data(ms.Tensor(values[name].asnumpy(), dtype=param.dtype))


def load_weights(net: nn.Cell, path: str | Path, prefer_ema: bool = True) -> dict[str, Any]:
    """Load the model's parameters (the EMA ones when present and preferred) strictly."""
    params, meta = read_checkpoint(path)
    has_ema = any(name.startswith(EMA_KEY) for name in params)
    use_ema = prefer_ema and has_ema
    model_only = {k: v for k, v in params.items() if not k.startswith((EMA_KEY, STATE_KEY))}
    expected = model_entries(net)
    _check_fit(Path(path), f"model {net.spec.name} with {net.num_classes} classes", expected, model_only)
    if use_ema:
        model_only = {name: params.get(EMA_KEY + name, value) for name, value in model_only.items()}
    _assign(expected, model_only)
    meta["weights"] = "ema" if use_ema else "raw"
    return meta


def load_pretrained(net: nn.Cell, path: str | Path) -> dict[str, Any]:
    """Start from another run's or a converted checkpoint's weights (EMA when present). A
    classifier for another class count keeps the fresh initialisation ``net`` was built with;
    anything else must fit exactly."""
    return fit_pretrained(net, path, *read_checkpoint(path))


def fit_pretrained(net: nn.Cell, path: str | Path, params: dict, meta: dict[str, Any]) -> dict[str, Any]:
    """:func:`load_pretrained` of checkpoint entries already read (``params``, ``meta``) from ``path``."""
    use_ema = any(name.startswith(EMA_KEY) for name in params)
    found = {
        name: params.get(EMA_KEY + name, value) if use_ema else value
        for name, value in params.items()
        if not name.startswith((EMA_KEY, STATE_KEY)) and name not in BOOKKEEPING
    }
    expected = {name: p for name, p in model_entries(net).items() if name not in BOOKKEEPING}
    head = ("classifier.weight", "classifier.bias")
    source_classes = tuple(found["classifier.weight"].shape)[0] if "classifier.weight" in found else None
    reinitialised = source_classes is not None and source_classes != net.num_classes
    if reinitialised:
        found = {k: v for k, v in found.items() if k not in head}
        expected = {k: v for k, v in expected.items() if k not in head}
    _check_fit(Path(path), f"model {net.spec.name}", expected, found)
    _assign(expected, found)
    meta.update(
        weights="ema" if use_ema else "raw", reinitialised_classifier=reinitialised, source_classes=source_classes
    )
    return meta


def restore_state(entries: dict[str, Parameter], path: str | Path) -> dict[str, Any]:
    """Put a resumable checkpoint back into every parameter of a training step, except
    :data:`NOT_RESUMED`. The gradient accumulation buffers are zero wherever a checkpoint is
    written (at step boundaries), so a run with accumulation resumes one without and back."""
    params, meta = read_checkpoint(path)
    entries = {name: p for name, p in entries.items() if not name.startswith(NOT_RESUMED)}
    params = {name: value for name, value in params.items() if not name.startswith(NOT_RESUMED)}
    _check_fit(Path(path), "this training setup (model, optimizer and EMA must match)", entries, params)
    _assign(entries, params)
    return meta
