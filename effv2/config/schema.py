"""Typed schemas for every config group, registered in Hydra's ConfigStore.

Composition merges each YAML file into its schema, so a mistyped key (``optimizer.lr_typo=1``)
or a wrong type (``train.epochs=abc``) fails before MindSpore is imported. Enumerations are
``Enum`` fields, so a bad choice is rejected with the list of accepted values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from math import inf
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


class TaskName(Enum):
    train = "train"
    eval = "eval"
    export = "export"
    infer = "infer"
    convert = "convert"


class DeviceTarget(Enum):
    CPU = "CPU"
    GPU = "GPU"
    Ascend = "Ascend"


class ExecutionMode(Enum):
    graph = "graph"
    pynative = "pynative"


class LaunchMethod(Enum):
    none = "none"
    msrun = "msrun"
    rank_table = "rank_table"


class TrainCrop(Enum):
    random_resized_crop = "random_resized_crop"
    squash = "squash"


class EvalCrop(Enum):
    # timm: shorter side to size / crop_pct, then the centre
    center = "center"
    squash = "squash"
    # google/automl preprocessing.py: a centre square of size / (size + 32) of the shorter side
    # below 320 px, the whole image from 320 px; then resized to size x size
    official = "official"
    # google/automl preprocess_legacy.py (EfficientNetV1-style B0-B3): always that centre square
    official_v1 = "official_v1"


class CropFallback(Enum):
    # when the random crop finds no box (or picks the whole image): keep the whole image
    # (tf.image.sample_distorted_bounding_box), or take the eval centre crop (preprocess_legacy.py)
    full = "full"
    center = "center"


class CutoutFill(Enum):
    black = "black"  # zeros in image space
    uniform = "uniform"  # U[0, 1) values in the normalised space (the official fine-tune, the seed)


class MixMode(Enum):
    # one lambda per batch, mixup or cutmix by switch_prob, applied with mix_prob
    timm = "timm"
    # google/automl datasets.py: a lambda per image (max(w, 1 - w)); with both alphas the first
    # half of the batch gets mixup, the second cutmix
    official = "official"


class LossScaleKind(Enum):
    none = "none"
    fixed = "fixed"
    dynamic = "dynamic"


class BestMetric(Enum):
    val_top1 = "val_top1"
    ema_val_top1 = "ema_val_top1"


class AutoAugmentPolicy(Enum):
    none = "none"
    v0 = "v0"  # the official policy_v0 (google/automl autoaugment.py), used by B0-B3


class ExportFormat(Enum):
    mindir = "mindir"
    onnx = "onnx"
    air = "air"


class Quantize(Enum):
    none = "none"
    int8 = "int8"


class CalibrationMethod(Enum):
    minmax = "minmax"
    entropy = "entropy"
    percentile = "percentile"
    distribution = "distribution"


class InferBackend(Enum):
    onnxruntime = "onnxruntime"
    mindir = "mindir"
    ascend310 = "ascend310"


class ConvertWeights(Enum):
    ema = "ema"
    raw = "raw"


class OrtProvider(Enum):
    cpu = "cpu"
    cuda = "cuda"


class OutputFormat(Enum):
    json = "json"
    csv = "csv"


class BadImagePolicy(Enum):
    skip = "skip"
    error = "error"


class StepCounting(Enum):
    # each epoch N // global batch steps, the remainder dropped; stages and schedules switch at
    # epoch ends (the seed's MindSpore scripts, timm, mindcv)
    whole_epochs = "whole_epochs"
    # google/automl efficientnetv2/main.py: N / global batch steps per epoch as a float, one
    # continuous stream of shuffled epochs, max(min_steps, epochs x N // batch) steps in all,
    # stage k ending at step int((k + 1) / M x steps)
    official = "official"


class ProgressiveFormula(Enum):
    paper = "paper"
    official_code = "official_code"


class ManifestCheck(Enum):
    listing = "listing"  # list the folder again (names and sizes; no image opened), re-write on change
    none = "none"  # trust an existing manifest: a frozen data set where listing is slow


class DataFormat(Enum):
    folder = "folder"  # <root>/<split>/<class>/<image>
    mindrecord = "mindrecord"  # <root>/<split>/ shards written by python -m effv2.data.pack


class DecodeMode(Enum):
    exact = "exact"  # every pixel of the full decode: the official preprocessing's input
    fast = "fast"  # JPEG: decode at 1/2, 1/4 or 1/8 scale (in the DCT) when the crop keeps >= the target size


class WorkerKind(Enum):
    auto = "auto"  # threads (measured fastest here: docs/data.md)
    thread = "thread"
    process = "process"


class Interpolation(Enum):
    bilinear = "bilinear"  # tf.image.resize: half-pixel centres, no antialiasing
    bicubic = "bicubic"  # TF1 resize_bicubic (preprocess_legacy.py): a = -0.75, no half-pixel centres


@dataclass
class TaskConfig:
    name: TaskName = MISSING


@dataclass
class ModelConfig:
    name: str = MISSING
    num_classes: int = MISSING
    in_channels: int = 3
    # null keeps the variant's official head dropout (S 0.2, M 0.3, L/XL 0.4, B0-B1 0.2, B2-B3 0.3)
    drop_rate: Optional[float] = None
    drop_path_rate: float = 0.2
    bn_eps: float = 1e-3
    bn_momentum: float = 0.9
    train_size: int = MISSING
    eval_size: int = MISSING
    # an effv2 checkpoint (e.g. from task=convert) to start training from: loaded strictly,
    # except that a classifier for another class count is re-initialised
    pretrained: Optional[str] = None


@dataclass
class AugmentConfig:
    """Training augmentation, applied in this order: geometry (crop, flip), RandAugment or
    AutoAugment, normalise, cutout, random erasing, then mixup / cutmix on the batch. Every
    random choice is keyed by (seed, epoch, image index), see effv2.data.transforms."""

    # RandAugment: ops per image (0 disables) and magnitude on the official level scale
    # (google/automl autoaugment.py: 10 is each op's full range, higher levels extrapolate)
    randaug_layers: int = 0
    randaug_magnitude: float = 10.0
    auto_augment: AutoAugmentPolicy = AutoAugmentPolicy.none
    # cutout: a square of side ratio * size (the seed and the official fine-tune: 0.5) at a
    # random centre, clipped at the borders; 0 disables
    cutout_ratio: float = 0.0
    cutout_fill: CutoutFill = CutoutFill.black
    random_erasing_prob: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_mode: MixMode = MixMode.timm
    # timm mode: probability that a batch is mixed at all, and that a mixed batch uses cutmix
    mix_prob: float = 1.0
    switch_prob: float = 0.5


@dataclass
class DataConfig:
    name: str = MISSING
    # the ImageFolder root holding <train_split>/ and <val_split>/; null for a packaged dataset
    root: Optional[str] = None
    train_split: str = "train"
    val_split: str = "val"
    num_classes: int = MISSING
    batch_size: int = 32
    eval_batch_size: int = "${data.batch_size}"  # type: ignore[assignment]
    train_size: int = "${model.train_size}"  # type: ignore[assignment]
    eval_size: int = "${model.eval_size}"  # type: ignore[assignment]
    interpolation: Interpolation = Interpolation.bilinear
    # in 0-255 pixel units: 127.5 / 127.5 maps to [-1, 1] (the seed and the official fine-tune;
    # the official from-scratch code uses 128 / 128)
    mean: list[float] = field(default_factory=lambda: [127.5, 127.5, 127.5])
    std: list[float] = field(default_factory=lambda: [127.5, 127.5, 127.5])
    # random_resized_crop: tf.image.sample_distorted_bounding_box's sampler; the defaults are the
    # official preprocessing.py (area 5-100 %, aspect 0.75-1.33, 100 attempts)
    train_crop: TrainCrop = TrainCrop.random_resized_crop
    crop_scale: list[float] = field(default_factory=lambda: [0.05, 1.0])
    crop_ratio: list[float] = field(default_factory=lambda: [0.75, 1.33])
    # the fraction of the image a crop must cover (min_object_covered), attempts, and the fallback
    crop_min_covered: float = 0.0
    crop_attempts: int = 100
    crop_fallback: CropFallback = CropFallback.full
    hflip_prob: float = 0.5
    eval_crop: EvalCrop = EvalCrop.center
    crop_pct: float = 0.875
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # how data.root holds the images: class folders, or MindRecord shards packed from them
    format: DataFormat = DataFormat.folder
    # the folder holding <split>.manifest.npz, each split's listing (local or remote); null:
    # $EFFV2_CACHE/manifests/<hash of the split's location>/
    manifest: Optional[str] = None
    # how the launching process checks an existing manifest against the folder (docs/data.md)
    manifest_check: ManifestCheck = ManifestCheck.listing
    # an image that fails to decode: train on a substitute (the next image of the split that
    # decodes; logged once, counted per epoch) and leave it out of evaluation, or stop naming it
    on_bad_image: BadImagePolicy = BadImagePolicy.skip
    # a remote data.root (s3://...): keep each image in a local cache after its first read
    # (fsspec's simplecache, under $EFFV2_CACHE/remote) instead of downloading it every epoch;
    # packed shards: keep the fetched shards there for later runs instead of a temporary folder
    remote_cache: bool = False
    # training images: decode=fast trades exactness for decode time on large crops (docs/data.md)
    decode: DecodeMode = DecodeMode.exact
    # training: hand RandAugment's uint8 HWC output to the compiled step, which normalises and
    # transposes it (4x fewer bytes per image, no host normalisation; the same bits on CPU). Only where
    # the image is uint8 at the end anyway: RandAugment / AutoAugment on, no cutout, erasing or
    # mixing (those run on normalised floats on the host); otherwise the host normalises
    normalise_on_device: bool = True
    # the transform workers (hardware.num_workers of them): Python threads, or processes that
    # share batches through shared memory; auto picks the measured faster one
    worker_kind: WorkerKind = WorkerKind.auto
    # audit: append the path of every training image, as it is read, to
    # <run folder>/reads/epoch<E>_rank<R>.txt (which images each rank trained, in order)
    record_reads: bool = False


@dataclass
class OptimizerConfig:
    name: str = MISSING
    # learning rate per 256 images: the applied rate is lr * global_batch / 256
    lr: float = MISSING
    weight_decay: float = 0.0


@dataclass
class RMSPropConfig(OptimizerConfig):
    name: str = "rmsprop"
    decay: float = 0.9
    momentum: float = 0.9
    eps: float = 1e-3


@dataclass
class SGDConfig(OptimizerConfig):
    name: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = True


@dataclass
class AdamWConfig(OptimizerConfig):
    name: str = "adamw"
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8


@dataclass
class SchedulerConfig:
    name: str = MISSING
    warmup_epochs: float = 0.0
    warmup_lr: float = 0.0


@dataclass
class ConstantScheduleConfig(SchedulerConfig):
    name: str = "constant"


@dataclass
class CosineScheduleConfig(SchedulerConfig):
    name: str = "cosine"
    min_lr: float = 0.0


@dataclass
class ExponentialScheduleConfig(SchedulerConfig):
    name: str = "exponential"
    decay_rate: float = 0.97
    decay_epochs: float = 2.4


@dataclass
class MultiStepScheduleConfig(SchedulerConfig):
    name: str = "multistep"
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1


@dataclass
class HardwareConfig:
    name: str = MISSING
    device_target: DeviceTarget = DeviceTarget.CPU
    devices_per_node: int = 1
    nodes: int = 1
    mode: ExecutionMode = ExecutionMode.graph
    jit_level: str = "O0"
    amp_level: str = "O0"
    sync_bn: bool = False
    num_workers: int = 2
    # reuse compiled graphs across runs of the very same configuration (MindSpore's compile
    # cache, one folder per configuration under $EFFV2_CACHE/compile; docs/training.md, CPU speed)
    compile_cache: bool = False
    # CPU only: effv2's own kernels (effv2/kernels, compiled once per machine at first use): the
    # fused SiLU and oneDNN depthwise and regular convolutions on threads; MindSpore's operators
    # where they cannot build (the log says which path runs), in mixed precision, or with false
    cpu_kernels: bool = True
    launch: LaunchMethod = LaunchMethod.none
    # False for hardware that only runs exported models (Ascend 310)
    can_train: bool = True
    # multi-process launch: this node's rank among `nodes`, the scheduler address, and for
    # launch=rank_table the HCCL rank table JSON (launchers/rank_table.py writes one)
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 8118
    rank_table: Optional[str] = None


@dataclass(frozen=True)
class Regulariser:
    """A regulariser progressive learning can ramp (progressive.<name>_min / _max)."""

    fixed: str  # the config key of its value where it is not ramped
    label: str  # its name in the schedule and stage log lines
    decimals: int  # how the log prints it
    lowest: float  # the values it accepts, [lowest, highest] (highest excluded where highest_open)
    highest: float
    highest_open: bool = False


# the one table of staged regularisers, in the order the schedule and its errors list them:
# progressive.build_schedule ramps each, its Stage carries it, the logs print it, validate
# checks its range; a dropout rate of 1 drops everything. model.drop_rate null is the variant's
# own rate (effv2.models.variants.resolved_drop_rate)
REGULARISERS: dict[str, Regulariser] = {
    "dropout": Regulariser("model.drop_rate", "dropout", 3, 0.0, 1.0, highest_open=True),
    "randaug": Regulariser("data.augment.randaug_magnitude", "RandAugment magnitude", 2, 0.0, inf),
    "mixup": Regulariser("data.augment.mixup_alpha", "mixup", 3, 0.0, inf),
    "cutmix": Regulariser("data.augment.cutmix_alpha", "cutmix", 3, 0.0, inf),
}


@dataclass
class ProgressiveConfig:
    """Progressive learning (EfficientNetV2 Algorithm 1): training split into ``stages`` of equal
    epochs, image size and regularisation growing from their min to their max.

    paper:          value_i = min + (max - min) * i / (M - 1) for size and every regulariser
    official_code:  size_k = int(min + (max - min) * (k + 1) / M) (the released code); the
                    regularisers still ramp with i / (M - 1), like its np.linspace
    Sizes are truncated to int like the released code; RandAugment magnitudes stay fractional.
    A regulariser whose min and max are null keeps its fixed value (model / data.augment).
    """

    name: str = "none"
    # 1: no progressive learning, every epoch at data.train_size
    stages: int = 1
    formula: ProgressiveFormula = ProgressiveFormula.paper
    min_size: int = 128
    max_size: int = "${data.train_size}"  # type: ignore[assignment]
    # head dropout (model.drop_rate)
    dropout_min: Optional[float] = None
    dropout_max: Optional[float] = None
    # RandAugment magnitude (data.augment.randaug_magnitude; needs randaug_layers > 0)
    randaug_min: Optional[float] = None
    randaug_max: Optional[float] = None
    mixup_min: Optional[float] = None
    mixup_max: Optional[float] = None
    cutmix_min: Optional[float] = None
    cutmix_max: Optional[float] = None


@dataclass
class LossScaleConfig:
    kind: LossScaleKind = LossScaleKind.none
    value: float = 4096.0  # 2^12, the seed's initial scale
    factor: float = 2.0
    window: int = 1000


@dataclass
class EMAConfig:
    enabled: bool = False
    decay: float = 0.9999
    # TensorFlow's num_updates warm-up: decay_t = min(decay, (1 + t) / (10 + t))
    warmup: bool = True


@dataclass
class CheckpointConfig:
    # which metric picks best.ckpt and the top-k files
    best_metric: BestMetric = BestMetric.val_top1
    keep_top_k: int = 3
    # a recovery checkpoint every N optimizer steps (0: only at epoch ends)
    recovery_interval: int = 0


@dataclass
class TrainConfig:
    epochs: int = 10
    eval_interval: int = 1
    label_smoothing: float = 0.1
    # global-norm gradient clipping; null disables it
    clip_grad_norm: Optional[float] = None
    # micro-batches per optimizer step; the global batch is batch * devices * accumulation
    accumulation_steps: int = 1
    # how epochs map to optimizer steps (StepCounting)
    step_counting: StepCounting = StepCounting.whole_epochs
    # train at least this many optimizer steps, epochs or not (main.py train.min_steps; the
    # official fine-tunes use 10000); whole_epochs rounds it up to whole epochs
    min_steps: int = 0
    loss_scale: LossScaleConfig = field(default_factory=LossScaleConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)


@dataclass
class DistributedConfig:
    """How run.py starts and watches the ranks of a multi-process job (effv2/launch/processes.py;
    the ranks' layout is hardware.*, the Hydra launcher starts whole jobs: local, joblib, SLURM)."""

    # print each node's and rank's command and environment instead of starting them
    dry_run: bool = False
    # seconds the ranks wait for each other to join (msrun --cluster_time_out)
    cluster_timeout: int = 120
    # a rank whose training / evaluation makes no progress for this many seconds is taken as
    # hung and the whole job is ended (0: never); watching starts after a rank's first step
    hang_timeout: int = 1800


@dataclass
class ExportConfig:
    format: ExportFormat = ExportFormat.onnx
    # null: the data's eval size
    image_size: Optional[int] = None
    # the batch the graph is traced with; an ONNX file accepts any batch when dynamic_batch holds
    batch_size: int = 1
    # rewrite the ONNX batch dimension to a free one (kept only when parity holds at every size
    # of parity_batch_sizes; else the file stays fixed-batch and the report says why)
    dynamic_batch: bool = True
    parity_batch_sizes: list[int] = field(default_factory=lambda: [1, 3, 32])
    # random input batches compared between the exported file and the MindSpore graph
    parity_batches: int = 2
    # int8: static post-training quantization of the ONNX file (onnxruntime, QDQ), calibrated on
    # calibration_images training images of data.root with the eval preprocessing, gated by the
    # top-1 it loses on the whole val split
    quantize: Quantize = Quantize.none
    calibration_images: int = 256
    # percentile (99.999 %): the best top-1 of the four on the demo (docs/deployment.md)
    calibration_method: CalibrationMethod = CalibrationMethod.percentile
    # per-channel weight scales: the folded depthwise kernels' ranges differ widely over channels
    per_channel: bool = True
    # 7-bit weights: uint8 x int8 products cannot saturate the int16 sums of CPUs without VNNI
    # (AVX2 and older AVX-512), where full-range weights lose accuracy; the file runs anywhere
    reduce_range: bool = True
    # operator types to quantize; empty: onnxruntime's default set
    quantize_op_types: list[str] = field(default_factory=list)
    # the export fails when INT8 top-1 on the val split is more than this many points below FP32
    max_top1_drop: float = 1.0


@dataclass
class InferConfig:
    backend: InferBackend = InferBackend.onnxruntime
    # an exported .onnx / .mindir file; null: export ckpt= into the run folder first
    model: Optional[str] = None
    # an image, a text file listing images, a folder of images, or a labelled ImageFolder split
    input: Optional[str] = None
    top_k: int = 5
    # the console shows each image's top-k for this many images; the predictions file has all
    print_limit: int = 20
    output_format: OutputFormat = OutputFormat.json
    provider: OrtProvider = OrtProvider.cpu
    batch_size: int = 32
    # a text file with one class name per line, for models whose checkpoint carries none
    class_names: Optional[str] = None
    # ascend310: the device the offline .bin runner uses (CPU lets this machine stand in)
    offline_device: DeviceTarget = DeviceTarget.Ascend


@dataclass
class ConvertConfig:
    # an official TensorFlow checkpoint prefix (.../model for model.index + model.data-*), a timm
    # tf_efficientnetv2_* state dict (.safetensors, .pth, .bin) or a seed (ModelZoo) .ckpt
    source: Optional[str] = None
    # the EMA weights (<name>/ExponentialMovingAverage, or timm's state_dict_ema) or the raw ones
    weights: ConvertWeights = ConvertWeights.ema
    # the .ckpt to write (a .json report lands beside it); null: <run folder>/<model>.ckpt
    output: Optional[str] = None


@dataclass
class CSVLoggerConfig:
    # curves.png (loss, learning rate, top-1) redrawn after every epoch
    plot: bool = True


@dataclass
class TensorBoardLoggerConfig:
    # training loss and learning rate every N optimizer steps (0: epoch scalars only)
    log_every_n_steps: int = 10


@dataclass
class MLflowLoggerConfig:
    # null: $MLFLOW_TRACKING_URI when set, else a SQLite store in the run folder (in a multirun,
    # in the sweep folder, shared by its jobs)
    tracking_uri: Optional[str] = None
    # null: "effv2" for a single run, the sweep folder's name in a multirun
    experiment: Optional[str] = None
    # best.ckpt as an artifact of the run, besides curves.png and metrics.json
    log_best_checkpoint: bool = False


@dataclass
class LoggerConfig:
    """The experiment loggers a training run writes to (rank 0 only); a key is set when its
    ``logger=`` option is chosen: ``logger=[csv,tensorboard,mlflow]``."""

    csv: Optional[CSVLoggerConfig] = None
    tensorboard: Optional[TensorBoardLoggerConfig] = None
    mlflow: Optional[MLflowLoggerConfig] = None


@dataclass
class OutputConfig:
    # a URL (s3://bucket/runs/name, any fsspec protocol) the run folder is mirrored to while it
    # is written; in a multirun each job goes to <remote>/<job number>
    remote: Optional[str] = None
    # seconds between two mirror passes (a last pass runs when the task ends)
    sync_interval: float = 30.0
    # further tries of a failed upload before it is reported and skipped
    upload_retries: int = 3


@dataclass
class RunConfig:
    task: TaskConfig = MISSING
    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    # an OptimizerConfig / SchedulerConfig subclass chosen by the group option: typed as Any here
    # because OmegaConf would validate the node against the base class and reject its own keys
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    hardware: HardwareConfig = MISSING
    progressive: ProgressiveConfig = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    convert: ConvertConfig = field(default_factory=ConvertConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    seed: int = 0
    # a checkpoint file for task=eval / export / infer
    ckpt: Optional[str] = None
    # a run folder or a checkpoint to continue training from, exactly where it stopped
    resume: Optional[str] = None


class RequiredValue(Exception):
    """Raised by ``${effv2.required_to_train:${task.name},...}`` when a preset's value for training
    was not given."""


def _required_to_train(task: Any, what: str) -> None:
    """A value only training needs (``model.pretrained`` of a fine-tune preset): eval, export and
    infer of the preset's checkpoints compose without it."""
    if getattr(task, "value", task) == TaskName.train.value:
        raise RequiredValue(f"this configuration needs {what}")


def node_path(node_rank: int, name: str) -> str:
    """Where node ``node_rank``'s launching run.py keeps ``name`` inside a run folder that the
    nodes of a multi-node job share: node 0 the run folder itself (its log, its .hydra/), every
    other node ``ranks/node<k>/``, so that only node 0 writes the run's own files."""
    return name if int(node_rank) == 0 else f"ranks/node{int(node_rank)}/{name}"


SCHEMA_GROUP = "schema"
SCHEMAS: dict[str, dict[str, type]] = {
    "optimizer": {"rmsprop": RMSPropConfig, "sgd": SGDConfig, "adamw": AdamWConfig},
    "scheduler": {
        "constant": ConstantScheduleConfig,
        "cosine": CosineScheduleConfig,
        "exponential": ExponentialScheduleConfig,
        "multistep": MultiStepScheduleConfig,
    },
}


def register_configs() -> None:
    # a preset marks a value the user must give: YAML "???" cannot, because merging "???" onto
    # a group's default keeps the default
    if not OmegaConf.has_resolver("effv2.required_to_train"):
        OmegaConf.register_new_resolver("effv2.required_to_train", _required_to_train)
    if not OmegaConf.has_resolver("effv2.node_path"):
        OmegaConf.register_new_resolver("effv2.node_path", node_path)
    if not OmegaConf.has_resolver("effv2.config_groups"):
        from effv2.config.help import config_groups

        OmegaConf.register_new_resolver("effv2.config_groups", config_groups)
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=RunConfig)
    # each option's schema, which its YAML extends (``- /schema/optimizer/rmsprop@_here_``): in a
    # group of its own, so ``optimizer=`` and ``--help`` offer only the real options
    for group, schemas in SCHEMAS.items():
        for name, node in schemas.items():
            cs.store(group=f"{SCHEMA_GROUP}/{group}", name=name, node=node)


def choice_name(value: object) -> str:
    """An enum field's value as its name; a plain string passes through (configs built by hand or
    read back from YAML without the schema)."""
    return str(getattr(value, "name", value))


def task_of(cfg: RunConfig) -> str:
    """The run's task (``task=``) as its name: train, eval, export, infer or convert."""
    return cfg.task.name.name


def load_run_config(run_dir: Path, node: int = 0) -> RunConfig:
    """The config a run folder was started with (``.hydra/config.yaml``; node k of a multi-node job
    ``ranks/node<k>/.hydra/config.yaml``), typed by the schema: what every rank of a launched job
    reads, so all ranks run the very same configuration (the nodes' differ in node_rank alone)."""
    composed = OmegaConf.load(run_dir / node_path(node, ".hydra") / "config.yaml")
    cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), composed)
    OmegaConf.set_struct(cfg, True)
    return cfg  # type: ignore[return-value]
