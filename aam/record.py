"""What a trained model is: the `ModelRecord` stored beside its weights.

A record says what the weights compute and what they were made from: the task (a pretrained base, a regressor
or a classifier), the architecture, the tokenizer, the target (its column, classes, scaling and covariates), the
data (depth, samples, the training / validation split), the options the run used, and how training went. It is
plain JSON on disk (``config.json`` of a model directory, and inside every checkpoint file), and it imports no
torch, so the QIIME 2 plugin can validate and describe a model without loading the weights.

Every reader goes through the typed fields here instead of string keys. Records written by q2-aam 0.1
(checkpoint format 1, with a ``model_type`` key that repeated the task) are read as well.
"""
from dataclasses import asdict, dataclass, field, fields
from typing import List, Optional

from aam.ensemble.record import EnsembleRecord
from aam.errors import AAMInputError
from aam.models.config import EncoderConfig, PredictorConfig

TASKS = ("pretrain", "regression", "classification")
OBJECTIVES = ("unifrac", "faith_pd", "taxonomy", "combined")
#: model kind of each task: a pretrained base is a `SequenceEncoder`, everything else a `SequencePredictor`
KINDS = {"pretrain": "encoder", "regression": "predictor", "classification": "predictor"}
#: the option command a task's options belong to (aam.options)
COMMANDS = {"pretrain": "pretrain", "regression": "train", "classification": "train"}
#: what each task is called in messages
TITLES = {"pretrain": "pretrained base model", "regression": "regressor", "classification": "classifier"}


@dataclass
class DataSummary:
    """The data a model was trained on.

    Attributes
    ----------
    n_samples, n_features : int
        Samples (with reads and, for a predictor, a target value) and features of the training table.
    rarefaction_depth : int or None
        Reads per sample after rarefaction; prediction rarefies new samples to it.
    dropped_low_depth : list of str
        Samples left out for having fewer reads than the depth.
    train_samples, validation_samples : list of str
        The split actually used.
    distance_source : str or None
        Where the distance targets came from ('unweighted UniFrac from the tree', 'matrix ...').
    report : list of str
        What the data pipeline did, line by line.
    fingerprint : str or None
        A digest of the training table (sample and feature IDs and counts), to tell whether a resumed run
        continues on the same data.
    signature : dict or None
        What new samples are compared with before prediction (`aam.data.novelty.training_signature`).
    """

    n_samples: int = 0
    n_features: int = 0
    rarefaction_depth: Optional[int] = None
    dropped_low_depth: List[str] = field(default_factory=list)
    train_samples: List[str] = field(default_factory=list)
    validation_samples: List[str] = field(default_factory=list)
    distance_source: Optional[str] = None
    report: List[str] = field(default_factory=list)
    fingerprint: Optional[str] = None
    signature: Optional[dict] = None


@dataclass
class Target:
    """What a predictor predicts and how its outputs map back to the user's values.

    Attributes
    ----------
    column : str
        The metadata column.
    class_labels : list of str or None
        Classifier: the class of each output, in order.
    transform : dict or None
        Regressor: the state of `aam.training.targets.TargetTransform` (training scale -> the column's units).
    categorical_columns : list of str
        Metadata columns used as categorical covariates.
    categorical_encoder : dict or None
        State of `aam.data.categorical.CategoricalEncoder` for those columns.
    numeric_columns : list of str
        Metadata columns used as numeric covariates.
    numeric_encoder : dict or None
        State of `aam.data.numeric.NumericEncoder` (training median, scale, missing-value input per column).
    """

    column: str
    class_labels: Optional[List[str]] = None
    transform: Optional[dict] = None
    categorical_columns: List[str] = field(default_factory=list)
    categorical_encoder: Optional[dict] = None
    numeric_columns: List[str] = field(default_factory=list)
    numeric_encoder: Optional[dict] = None


@dataclass
class TrainingSummary:
    """How training went: one history row per epoch and the epoch whose weights were kept.

    ``best_interval`` is the best epoch's validation score with its 95% bootstrap interval over the validation
    samples (or their groups), `aam.evaluation.stats.score_interval`'s dict; None for a pretrained base and for
    models of earlier versions.
    """

    history: List[dict] = field(default_factory=list)
    best_epoch: Optional[int] = None
    best_score: Optional[float] = None
    selection_metric: Optional[str] = None
    best_interval: Optional[dict] = None


@dataclass
class ModelRecord:
    """Everything about a model but its weights.

    Attributes
    ----------
    task : {'pretrain', 'regression', 'classification'}
    architecture : EncoderConfig or PredictorConfig
        An `EncoderConfig` for a pretrained base, a `PredictorConfig` otherwise.
    tokenizer : dict
        `aam.data.tokenizer.SequenceTokenizer.to_config`.
    options : dict
        The options of the run (`aam.options.Options.to_dict`), by name.
    data : DataSummary
    target : Target or None
        None for a pretrained base.
    objective : str or None
        Pretraining objective of a base ('unifrac', 'faith_pd', 'taxonomy', 'combined').
    taxonomy_classes : list of str or None
        Taxa of the taxonomy objective's head.
    taxonomy_level : int or None
    pretrained_encoder : dict or None
        Where a predictor's base came from (objective, version, data size).
    training : TrainingSummary
    seed : int or None
    device : str or None
        Device the run used.
    aam_version, torch_version : str or None
    asv_encoder : dict or None
        The reference encoder the nucleotide level started from (``name``, ``sha256`` of its weights file,
        ``frozen``); None when it was trained from random weights.
    ensemble : aam.ensemble.record.EnsembleRecord or None
        A predictor whose network is blended with other members (`aam.ensemble`): the members by name and the
        weights of the blend. None for the network alone.
    weights_sha256 : str or None
        The model file's digest, set when it is written (`aam.checkpoint`): in format 3 over this record (with
        this field empty), the format and every tensor of the network and the members; in format 2 over the
        tensors only; None in format 1.
    """

    task: str
    architecture: object
    tokenizer: dict
    options: dict = field(default_factory=dict)
    data: DataSummary = field(default_factory=DataSummary)
    target: Optional[Target] = None
    objective: Optional[str] = None
    taxonomy_classes: Optional[List[str]] = None
    taxonomy_level: Optional[int] = None
    pretrained_encoder: Optional[dict] = None
    training: TrainingSummary = field(default_factory=TrainingSummary)
    seed: Optional[int] = None
    device: Optional[str] = None
    aam_version: Optional[str] = None
    torch_version: Optional[str] = None
    asv_encoder: Optional[dict] = None
    ensemble: Optional[EnsembleRecord] = None
    weights_sha256: Optional[str] = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise AAMInputError(f"unknown model task {self.task!r}; one of {', '.join(TASKS)}")
        expected = EncoderConfig if self.kind == "encoder" else PredictorConfig
        if not isinstance(self.architecture, expected):
            raise AAMInputError(f"a {self.task} model needs a {expected.__name__} architecture, got "
                                f"{type(self.architecture).__name__}")
        if self.kind == "predictor" and self.target is None:
            raise AAMInputError(f"a {TITLES[self.task]} must record its target column")
        if self.task == "classification" and len(self.target.class_labels or []) < 2:
            raise AAMInputError("a classifier must record at least 2 class labels")

    # ---- derived --------------------------------------------------------------------------------------------
    @property
    def kind(self):
        """'encoder' (a pretrained base, `SequenceEncoder`) or 'predictor' (`SequencePredictor`)."""
        return KINDS[self.task]

    @property
    def title(self):
        return TITLES[self.task]

    @property
    def command(self):
        """The option command of the run that made this model ('pretrain' or 'train')."""
        return COMMANDS[self.task]

    @property
    def encoder(self):
        """The architecture of the base (`EncoderConfig`), for either kind."""
        return self.architecture if self.kind == "encoder" else self.architecture.encoder

    @property
    def max_bp(self):
        return int(self.tokenizer["max_bp"])

    @property
    def token_limit(self):
        return int(self.encoder.token_limit)

    @property
    def is_classifier(self):
        return self.task == "classification"

    def run_options(self):
        """The run's options as `aam.options.Options` (options this version no longer knows are skipped)."""
        from aam import options as O
        known = {o.name for o in O.options_for(self.command, "cli") + O.options_for(self.command, "plugin")}
        return O.resolve(self.command, **{k: v for k, v in self.options.items() if k in known})

    # ---- JSON -------------------------------------------------------------------------------------------------
    def to_json(self):
        """Plain JSON types (the layout of ``config.json``)."""
        out = {"task": self.task, "architecture": self.architecture.to_dict(), "tokenizer": dict(self.tokenizer),
               "options": dict(self.options), "data": asdict(self.data),
               "target": None if self.target is None else asdict(self.target),
               "objective": self.objective, "taxonomy_classes": self.taxonomy_classes,
               "taxonomy_level": self.taxonomy_level, "pretrained_encoder": self.pretrained_encoder,
               "training": asdict(self.training), "seed": self.seed, "device": self.device,
               "aam_version": self.aam_version, "torch_version": self.torch_version,
               "asv_encoder": self.asv_encoder,
               "ensemble": None if self.ensemble is None else self.ensemble.to_json(),
               "weights_sha256": self.weights_sha256}
        return _plain(out)

    @classmethod
    def from_json(cls, d, where="the model record"):
        """Rebuild from `to_json` output (or a format-1 config); raises AAMInputError naming `where`."""
        if not isinstance(d, dict):
            raise AAMInputError(f"{where} must be a JSON object, not {type(d).__name__}")
        if "architecture" not in d and "model_config" in d:
            d = _from_format_1(d, where)
        task = d.get("task")
        if task not in TASKS:
            raise AAMInputError(f"{where}: 'task' must be one of {', '.join(TASKS)}; got {task!r}")
        try:
            arch = d["architecture"]
            architecture = (EncoderConfig if KINDS[task] == "encoder" else PredictorConfig).from_dict(arch)
            return cls(task=task, architecture=architecture, tokenizer=dict(d["tokenizer"]),
                       options=dict(d.get("options") or {}),
                       data=_build(DataSummary, d.get("data") or {}),
                       target=None if d.get("target") is None else _build(Target, d["target"]),
                       objective=d.get("objective"), taxonomy_classes=d.get("taxonomy_classes"),
                       taxonomy_level=d.get("taxonomy_level"), pretrained_encoder=d.get("pretrained_encoder"),
                       training=_build(TrainingSummary, d.get("training") or {}), seed=d.get("seed"),
                       device=d.get("device"), aam_version=d.get("aam_version"),
                       torch_version=d.get("torch_version"), asv_encoder=d.get("asv_encoder"),
                       ensemble=EnsembleRecord.from_json(d.get("ensemble")),
                       weights_sha256=d.get("weights_sha256"))
        except AAMInputError:
            raise
        except (KeyError, TypeError, ValueError) as err:
            raise AAMInputError(f"{where} is incomplete or inconsistent ({type(err).__name__}: {err}); it was "
                                "not written by this version of q2-aam, or it was edited.") from None


def _build(cls, d):
    """A dataclass from a dict, ignoring keys it does not have (written by a newer version)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in dict(d).items() if k in names})


def _from_format_1(d, where):
    """A format-1 config (q2-aam 0.1: flat keys, ``model_type`` beside ``task``) in the current layout."""
    task = d.get("task")
    kind = d.get("model_type")
    if task in KINDS and kind is not None and kind != KINDS[task]:
        raise AAMInputError(f"{where} says it is a {kind} but also a {task} model; the files come from different "
                            "models or were edited.")
    architecture = {k: v for k, v in (d.get("model_config") or {}).items() if k != "model_type"}
    target = None
    if task in ("regression", "classification"):
        target = {"column": d.get("target_column"), "class_labels": d.get("class_labels"),
                  "transform": d.get("target_transform"), "categorical_columns": d.get("categorical_columns") or [],
                  "categorical_encoder": d.get("categorical_encoder")}
    training = {"history": d.get("history") or [], "best_epoch": d.get("best_epoch"),
                "best_score": d.get("best_score"), "selection_metric": d.get("selection_metric")}
    return {**d, "architecture": architecture, "target": target, "training": training}


def _plain(value):
    """JSON-safe copy: numpy values to Python, tuples to lists, non-finite floats to None (strict JSON)."""
    import math
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return _plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
