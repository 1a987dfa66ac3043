"""Every user-facing hyperparameter of AAM, defined once.

The ``aam`` CLI builds its argparse options from this table and the QIIME 2 plugin builds its action parameters
and their descriptions from it, so a default or a description can never differ between the two.

Each `Option` says which commands use it (``pretrain``, ``train``, ``predict``). Options with ``plugin=False``
are CLI-only (file paths, output directories, multi-process launch flags), because QIIME 2 actions take
artifacts, not paths. Options with ``cli=False`` exist only in the plugin.

Values travel as one `Options` object (``resolve(command, **given)``): a frozen dataclass with a typed attribute per
option, so the engine reads ``opts.token_limit`` and never restates a default. Invalid values raise
`aam.errors.AAMInputError` naming the option as ``{opt:name}``, which each front end spells its own way.
"""
import math
from dataclasses import dataclass, field, make_dataclass, replace
from typing import Any, Optional, Tuple

from aam.base import SHIPPED_BASES
from aam.errors import AAMInputError
from aam.ranks import RANKS

PRETRAIN, TRAIN, PREDICT = "pretrain", "train", "predict"
FIT = (PRETRAIN, TRAIN)
ALL = (PRETRAIN, TRAIN, PREDICT)
#: cross-validation (`aam.api.cross_validate`, the plugin's classify-samples / regress-samples): its own options
#: below, resolved beside the 'train' options of the models it fits
CROSSVAL = "crossval"
#: permutation importance of feature groups (`aam.api.feature_importance`, the plugin's feature-importance); the
#: cross-validation measures it too, in every fold on that fold's held-out samples
IMPORTANCE = "importance"
COMMANDS = ALL + (CROSSVAL, IMPORTANCE)
_LARGEST_INT = 2 ** 63 - 1  # what numpy and torch take without an OverflowError
_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


@dataclass(frozen=True)
class Option:
    """One hyperparameter: its name, type, default, allowed values and help text.

    Parameters
    ----------
    name : str
        Python name (``embedding_dim``); the CLI flag is ``--embedding-dim``.
    type : type
        ``int``, ``float``, ``str`` or ``bool``.
    default : object
        Default value; ``None`` means "not set" (optional).
    help : str
        One or two sentences shown by ``aam <command> --help`` and by QIIME 2 (and Galaxy); other options are
        named as ``{opt:name}`` and each front end spells them (`aam.errors.render`).
    commands : tuple of str
        The commands (and matching plugin actions) that accept it.
    group : str
        Heading in ``--help``.
    choices : tuple, optional
        Allowed values.
    min, max : float, optional
        Inclusive lower bound; upper bound (inclusive unless ``max_exclusive``).
    plugin, cli : bool
        Whether the option exists in the QIIME 2 plugin / the CLI.
    """

    name: str
    type: type
    default: Any
    help: str
    commands: Tuple[str, ...] = FIT
    group: str = "training"
    choices: Optional[Tuple[Any, ...]] = None
    min: Optional[float] = None
    max: Optional[float] = None
    max_exclusive: bool = False
    plugin: bool = True
    cli: bool = True
    command_defaults: Tuple[Tuple[str, Any], ...] = ()

    def for_command(self, command):
        """This option as `command` sees it: with the command's own default where one is set."""
        for cmd, value in self.command_defaults:
            if cmd == command:
                return replace(self, default=value, command_defaults=())
        return self

    @property
    def flag(self):
        return "--" + self.name.replace("_", "-")

    def check(self, value):
        """Validate one value; an `AAMInputError` names the option and the allowed values."""
        if value is None:
            return value
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, self.type) or (self.type is int and isinstance(value, bool)):
            raise AAMInputError(f"{{opt:{self.name}}} must be {_TYPE_NAMES[self.type]}; got {value!r}")
        if self.type is float and not math.isfinite(value):
            raise AAMInputError(f"{{opt:{self.name}}} must be a finite number; got {value!r}")
        if self.type is int and abs(value) > _LARGEST_INT:
            raise AAMInputError(f"{{opt:{self.name}}} must be a 64-bit integer; got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise AAMInputError(f"{{opt:{self.name}}} must be one of {', '.join(map(str, self.choices))}; "
                                f"got {value!r}")
        if self.min is not None and value < self.min:
            raise AAMInputError(f"{{opt:{self.name}}} must be >= {self.min}; got {value!r}")
        if self.max is not None:
            if (self.max_exclusive and value >= self.max) or (not self.max_exclusive and value > self.max):
                bound = "<" if self.max_exclusive else "<="
                raise AAMInputError(f"{{opt:{self.name}}} must be {bound} {self.max}; got {value!r}")
        return value


OPTIONS = [
    # --- data -----------------------------------------------------------------------------------------------
    Option("max_bp", int, 150, "Nucleotides read from each ASV sequence; longer sequences are truncated at the 3' "
           "end and shorter ones padded.", FIT, "data", min=1, max=4096),
    Option("token_limit", int, 256, "Maximum number of ASVs per sample (the most abundant are kept, or a random "
           "subset with {opt:asv_selection} random). The main memory and speed knob: the sample-level attention "
           "grows with its square. 256 keeps the ASVs that hold most reads of a gut or soil sample and trains a few "
           "hundred samples in minutes on a CPU; up to 1024 (the original AAM setting) for very rich samples on a "
           "GPU.", FIT, "data", min=1, max=16384),
    Option("asv_selection", str, "abundance", "How ASVs are chosen when a sample has more than {opt:token_limit}: "
           "the most abundant (ties broken by feature order) or a seeded random subset.", FIT, "data",
           choices=("abundance", "random")),
    Option("rarefaction_draws", int, 5, "Predictions and embeddings (and a linear head's training embeddings) are "
           "averaged over this many independent rarefactions of each sample deeper than the training depth "
           "(1 = a single draw).", (TRAIN, PREDICT), "data", min=1, max=1000),
    Option("coverage_floor", float, 0.5, "An ensemble member keyed on the training table's features (the forest) "
           "cannot read reads of features that table never had (another study, read length or processing): for a "
           "sample with less than this share of its reads on features it saw, its weight shrinks in proportion "
           "and the network, which reads every sequence, takes the rest. At or above it (held-out samples of the "
           "training study, nearly always) the fitted weights apply unchanged; 0 turns this off. Each member's "
           "share of each sample is reported beside its prediction.", (PREDICT,), "data", min=0.0, max=1.0),
    Option("rarefy_depth", int, None, "Reads per sample after rarefaction. Samples with fewer reads are left "
           "out of training (and listed). Default: the largest depth that keeps at least 90% of the samples.",
           FIT, "data", min=1),
    Option("resample_each_epoch", bool, True, "Draw a new rarefied table every epoch (data augmentation); "
           "otherwise rarefy once.", FIT, "data"),
    Option("validation_fraction", float, 0.2, "Fraction of samples held out for validation, early stopping and "
           "model selection (0 trains on everything and selects on training loss).", FIT, "data",
           min=0.0, max=0.9),
    Option("missing_samples", str, "error", "Table samples absent from the metadata: stop with an error "
           "naming them, or leave them out (ignore).", (TRAIN,), "data", choices=("error", "ignore")),
    Option("group_column", str, None, "Metadata column (e.g. subject) whose groups are kept whole on one side of "
           "the train/validation split, so repeated samples of a subject cannot leak.", FIT, "data"),
    # --- architecture ---------------------------------------------------------------------------------------
    Option("embedding_dim", int, 64, "Width of nucleotide, ASV and sample embeddings. 64 trains a few hundred "
           "samples on a laptop CPU; on a GPU and thousands of samples 128 (the original AAM setting) gives more "
           "capacity.", FIT, "architecture", min=8, max=4096),
    Option("attention_heads", int, 4, "Attention heads per transformer layer (must divide {opt:embedding_dim}).",
           FIT, "architecture", min=1, max=256),
    Option("attention_layers", int, 2, "Transformer layers at the nucleotide level and at the sample level "
           "(the original AAM setting, 4, costs twice the compute).", FIT, "architecture", min=1, max=64),
    Option("dropout", float, 0.1, "Dropout rate inside the transformers.", FIT, "architecture",
           min=0.0, max=1.0, max_exclusive=True),
    Option("asv_encoder", str, "gg13_8-v4-d64", "Nucleotide-level encoder to start from: a reference encoder "
           "shipped with AAM (gg13_8-v4-d64: pretrained on Greengenes 13_8 V4 amplicons, see docs/encoder.md), "
           "whose architecture then replaces {opt:max_bp}, {opt:embedding_dim}, {opt:attention_heads} and "
           "{opt:attention_layers}; or none to train it from random weights on this study alone. Ignored when "
           "fine-tuning a pretrained base.",
           FIT, "architecture", choices=("gg13_8-v4-d64", "none")),
    Option("base", str, "none", "Start from a sample-level base shipped with AAM instead of {input:pretrained}: "
           "ag-pgp-v4 is pretrained on the UniFrac of 2,725 public human samples (American Gut and the Personal "
           "Genome Project; stool, oral, skin; 16S V4 reads cut at 100 nt, and longer reads of this study are cut "
           "alike; its MODEL_CARD.md gives the corpus, metrics and license; built by `make base`). Fine-tuning starts "
           "from it; pretrain continues pretraining it on this study. none starts from {input:pretrained}, or from "
           "the reference encoder alone.",
           FIT, "architecture", choices=("none",) + SHIPPED_BASES),
    Option("freeze_asv_encoder", bool, True, "Keep the reference encoder ({opt:asv_encoder}) fixed: each distinct "
           "ASV is encoded once per run and only the sample-level layers train (much faster; the masked-nucleotide "
           "objective is then off).", FIT, "architecture"),
    Option("attn_implementation", str, "sdpa", "Attention kernel: sdpa lets PyTorch pick the fastest; math, "
           "flash and mem_efficient force one backend (see `aam doctor` for what works on this machine).",
           ALL, "architecture", choices=("sdpa", "math", "flash", "mem_efficient")),
    # --- pretraining objective ------------------------------------------------------------------------------
    Option("encoder_type", str, "unifrac", "Self-supervised objective of the base model: unifrac (pairwise "
           "distances between sample embeddings fit to the distance matrix), faith_pd, taxonomy, or combined.",
           (PRETRAIN,), "objective", choices=("unifrac", "faith_pd", "taxonomy", "combined")),
    Option("taxonomy_level", int, 6, "Taxonomic rank predicted per ASV by the taxonomy objective "
           "(1 = kingdom/domain ... 6 = genus, 7 = species).", (PRETRAIN,), "objective", min=1, max=7),
    Option("penalty", float, 1.0, "Weight of the UniFrac / distance (or Faith PD, taxonomy) loss.",
           FIT, "objective", min=0.0, max=1e6),
    Option("nuc_penalty", float, 1.0, "Weight of the masked-nucleotide loss (ignored with {opt:freeze_base}). "
           "Fine-tuning defaults to 0: masked nucleotides would blur the ASVs the target is read from.",
           FIT, "objective", min=0.0, max=1e6, command_defaults=((TRAIN, 0.0),)),
    Option("nuc_mask_ratio", float, 0.15, "Fraction of nucleotide positions masked for masked-nucleotide "
           "prediction; the start token and padding are never masked.", FIT, "objective",
           min=0.0, max=1.0, max_exclusive=True),
    Option("nuc_mask_strategy", str, "random", "Mask single positions at random, or contiguous spans.",
           FIT, "objective", choices=("random", "span")),
    # --- prediction target ------------------------------------------------------------------------------------
    Option("target_penalty", float, 1.0, "Weight of the target (regression or classification) loss.",
           (TRAIN,), "target", min=0.0, max=1e6),
    Option("count_penalty", float, 1.0, "Weight of the per-ASV relative-abundance reconstruction loss.",
           (TRAIN,), "target", min=0.0, max=1e6),
    Option("head", str, "transformer", "The prediction layers: linear (ridge or logistic regression on the frozen "
           "pretrained base's sample embeddings, its penalty chosen by cross-validation on the training samples: "
           "seconds, and robust with few samples), transformer (a sample-level transformer and MLP trained by "
           "gradient descent, optionally fine-tuning the base), or auto (linear with a pretrained base, "
           "transformer without).", (TRAIN,), "target", choices=("auto", "linear", "transformer")),
    Option("ensemble", str, "forest", "Combine the network with a random forest (q2-sample-classifier's; stored as "
           "arrays, not pickled) that reads the relative abundances and {opt:forest_embedding_axes} axes of the "
           "pretrained sample embedding: forest averages their predictions (class probabilities), the network's "
           "share chosen on half of the validation samples ({opt:ensemble_share_rule}; the other half chooses the "
           "network's epoch); none uses the network alone. The default because it predicted held-out samples "
           "better than the network alone, and than the 500-tree forest on 5 of 7 tasks, in the project's "
           "benchmark (docs/science.md).", (TRAIN,), "target", choices=("forest", "none")),
    Option("ensemble_share_rule", str, "one-se", "How the ensemble's validation samples choose the network's "
           "share of the blend (0, 0.25, 0.5, 0.75 or 1): one-se takes the share nearest the forest alone whose "
           "loss is within one standard error (over the groups of {opt:group_column}) of the lowest, so the network "
           "gets weight only where it clearly earns it (the default: the lowest-loss share followed the noise of a "
           "small validation split and lost to the forest alone on most tasks of the benchmark); lowest-loss takes "
           "the share with the lowest loss.", (TRAIN,), "target", choices=("lowest-loss", "one-se")),
    Option("forest_trees", int, 500, "Trees of the ensemble's random forest.", (TRAIN,), "target", min=1, max=100_000),
    Option("forest_embedding_axes", int, 20, "With {opt:ensemble} forest and a frozen pretrained base: the forest "
           "also reads this many principal axes of the base's sample embedding (its learned ordination of the "
           "study's UniFrac), beside the relative abundances; new samples are placed on them from their reads "
           "alone. 0 reads abundances only. With these axes the forest beat the same forest without them on 5 of 7 "
           "tasks of the project's benchmark (docs/science.md).", (TRAIN,), "target", min=0, max=4096),
    Option("freeze_base", bool, True, "Keep the pretrained base ({input:pretrained}) fixed and train only the "
           "prediction layers (much faster: each ASV is encoded once per run; the default because fine-tuning the "
           "base as well predicted held-out samples no better in the project's benchmark, docs/science.md). "
           "Without a pretrained base there is nothing to freeze and the whole network trains. A linear head "
           "always reads a frozen base.", (TRAIN,), "target",
           # pretraining trains the base: its Options (which hold every option) must never say it is frozen
           command_defaults=((PRETRAIN, False),)),
    Option("normalize_targets", bool, True, "Scale regression targets to [0, 1] for training (predictions are "
           "returned in the original units).", (TRAIN,), "target"),
    Option("log_transform_targets", bool, False, "Train on log(y + 1) (for non-negative targets spanning orders "
           "of magnitude); predictions are transformed back.", (TRAIN,), "target"),
    Option("bounded_targets", bool, False, "Pass regression outputs through a sigmoid, bounding them to [0, 1] "
           "in the training scale. Turned on automatically with {opt:log_transform_targets} and "
           "{opt:normalize_targets} together.", (TRAIN,), "target"),
    Option("output_activation", str, "none", "Constraint on regression outputs: none, relu, softplus or exp "
           "(non-negative outputs).", (TRAIN,), "target", choices=("none", "relu", "softplus", "exp")),
    Option("learnable_output_scale", bool, False, "Add a learnable scale and bias after the regression head.",
           (TRAIN,), "target"),
    Option("class_weights", str, "none", "Weight classes in the classification loss: none, or balanced "
           "(inverse class frequency in the training split).", (TRAIN,), "target",
           choices=("none", "balanced")),
    Option("categorical_embed_dim", int, 16, "Embedding size of each categorical covariate.", (TRAIN,),
           "target", min=1, max=4096),
    Option("categorical_fusion", str, "concat", "How categorical covariates join the sample embedding: concat "
           "(concatenate, then project) or add (project, then add).", (TRAIN,), "target",
           choices=("concat", "add")),
    # --- optimization -----------------------------------------------------------------------------------------
    Option("epochs", int, 30, "Maximum number of passes over the training samples (training stops earlier after "
           "{opt:patience} epochs without improvement).", FIT, "optimization", min=1, max=1_000_000),
    Option("batch_size", int, 8, "Samples per batch. The pairwise UniFrac loss compares all samples of a "
           "batch, so larger batches give it more pairs (prediction: samples per forward pass, which bounds "
           "memory only).", ALL, "optimization", min=1, max=1_000_000,
           command_defaults=((PRETRAIN, 32), (TRAIN, 16), (PREDICT, 32))),
    Option("drop_last", bool, False, "Leave out the last, incomplete training batch of each epoch (which batch "
           "that is changes with the shuffle; validation always scores every sample).", FIT, "optimization"),
    Option("patience", int, 10, "Stop after this many epochs without improvement of the validation score.",
           FIT, "optimization", min=1, max=1_000_000),
    Option("pretrain_selection", str, "loss", "Which validation score picks the kept epoch of a pretraining "
           "run and stops it early: loss (the total validation loss) or unifrac_r (the correlation of the "
           "embedding's distances with the UniFrac distances of the validation samples: scale-free, so it follows "
           "how well the sample geometry is kept when the loss falls only by fitting the distances' scale).",
           (PRETRAIN,), "optimization", choices=("loss", "unifrac_r")),
    Option("lr", float, 1e-3, "Peak learning rate; the scheduler ({opt:scheduler}) warms up to it and decays from "
           "it.", FIT, "optimization", min=0.0, max=10.0),
    Option("ema_epochs", float, 0.0, "Score and keep an exponential moving average of the trained weights instead "
           "of the raw ones, its memory about this many epochs of optimizer steps (0: the raw weights). Smooths the "
           "epoch-to-epoch noise of fine-tuning on few samples, so the best epoch is less a matter of luck.",
           (TRAIN,), "optimization", min=0.0, max=1e6),
    Option("weight_decay", float, 0.01, "Decoupled weight decay (adamw) or L2 penalty (adam, sgd).", FIT,
           "optimization", min=0.0, max=1e3),
    Option("optimizer", str, "adamw", "Optimizer: adamw (Adam with decoupled weight decay), adam, or sgd (momentum "
           "0.9); weight decay is an L2 penalty for adam and sgd.", FIT, "optimization",
           choices=("adamw", "adam", "sgd")),
    Option("scheduler", str, "warmup_cosine", "Learning-rate schedule: warmup_cosine (linear warm-up, cosine "
           "decay), cosine_restarts, plateau (reduce on validation plateau) or onecycle.", FIT, "optimization",
           choices=("warmup_cosine", "cosine_restarts", "plateau", "onecycle")),
    Option("warmup_steps", int, None, "Warm-up length in optimizer steps for warmup_cosine (default: 10% of "
           "all steps).", FIT, "optimization", min=0),
    Option("scheduler_t0", int, None, "cosine_restarts: optimizer steps in the first cycle (default: a "
           "quarter of all steps).", FIT, "optimization", min=1),
    Option("scheduler_t_mult", int, 1, "cosine_restarts: factor by which each cycle grows.", FIT,
           "optimization", min=1, max=1000),
    Option("scheduler_eta_min", float, 0.0, "Lowest learning rate of the cosine schedules.", FIT,
           "optimization", min=0.0),
    Option("scheduler_patience", int, 5, "plateau: epochs without improvement before the learning rate drops.",
           FIT, "optimization", min=0, max=1_000_000),
    Option("scheduler_factor", float, 0.5, "plateau: factor applied to the learning rate at each drop.", FIT,
           "optimization", min=0.0, max=1.0, max_exclusive=True),
    Option("gradient_accumulation_steps", int, 1, "Batches whose gradients are summed before each optimizer "
           "step (a larger effective batch in the same memory).", FIT, "optimization", min=1, max=1_000_000),
    Option("max_grad_norm", float, 1.0, "Clip the gradient norm to this value (0 disables clipping).", FIT,
           "optimization", min=0.0),
    Option("seed", int, 42, "Random seed for splits, rarefaction, masking and initialization: the same seed "
           "and data give the same model.", ALL, "optimization", min=0, max=2 ** 32 - 1),
    # --- hardware and speed ------------------------------------------------------------------------------------
    Option("device", str, "auto", "Where to compute: auto (a CUDA or ROCm GPU when present, else CPU), cpu, or "
           "cuda.", ALL, "hardware", choices=("auto", "cpu", "cuda")),
    Option("mixed_precision", str, "none", "Autocast precision: bf16 (CPU and recent GPUs), fp16 (GPU, with "
           "loss scaling) or none.", ALL, "hardware", choices=("none", "bf16", "fp16")),
    Option("compile_model", bool, False, "Compile the model with torch.compile (falls back to eager mode with a "
           "warning where unsupported).", FIT, "hardware"),
    Option("gradient_checkpointing", bool, False, "Recompute transformer activations in the backward pass: "
           "less memory, about a third more compute.", FIT, "hardware"),
    Option("asv_chunk_size", int, 256, "Encode at most this many distinct ASV sequences at once; bounds the "
           "peak memory of the nucleotide transformer.", ALL, "hardware", min=1, max=1_000_000),
    Option("asv_dedup", bool, True, "Encode each distinct ASV of a batch once and share the result between "
           "samples (identical results; disable only to compare with the per-slot reference).", ALL,
           "hardware"),
    Option("num_workers", int, 0, "Background processes preparing batches (0 prepares them in the main "
           "process).", ALL, "hardware", min=0, max=1024),
    Option("num_threads", int, 0, "CPU threads for PyTorch (0 uses all available cores).", ALL, "hardware",
           min=0, max=4096),
    # --- cross-validation (aam.api.cross_validate; qiime aam classify-samples / regress-samples) -----------------
    Option("cv", int, 5, "Folds of the cross-validation: every sample is predicted once, by the models fit to the "
           "other folds (grouped by {opt:group_column} so that no group is on both sides, and balanced by class for "
           "a classifier). Each class needs at least this many samples (and groups).", (CROSSVAL,),
           "cross-validation", min=2, max=100),
    Option("cv_dir", str, None, "Directory where each finished fold's predictions are kept, so that an interrupted "
           "run given the same directory (and the same inputs and options) resumes after its last finished fold. "
           "Default: a directory under the user's cache (XDG_CACHE_HOME, else ~/.cache) named by the inputs and "
           "options, removed when the run completes (the QIIME 2 pipelines always use it: running the same command "
           "again resumes).", (CROSSVAL,), "cross-validation", plugin=False),
    # --- feature importance (aam.api.feature_importance; per fold in the cross-validation) ---------------------------
    Option("importance", bool, True, "Measure feature importance in every fold, on its held-out samples, with the "
           "model fit to the other folds: out-of-fold permutation importance of every sample, pooled (off: "
           "predictions only, faster). The QIIME 2 pipelines always measure it.", (CROSSVAL,), "feature importance",
           plugin=False),
    Option("rank", str, "genus", "When {input:taxonomy} is given: the rank whose taxa form the feature groups "
           "(features unnamed there join the group of their deepest named rank).", (IMPORTANCE, CROSSVAL),
           "feature importance", choices=RANKS),
    Option("correlation", float, 0.7, "Without a taxonomy: features whose relative abundances correlate (Spearman) "
           "above this form one group (average linkage), so correlated features are not measured apart (each would "
           "look unimportant while its partner carries the signal). No label is read to form the groups.",
           (IMPORTANCE, CROSSVAL), "feature importance", min=0.0, max=1.0),
    # the cross-validation measures importance in every fold, as a by-product of its fits: fewer groups and
    # permutations by default keep it a fraction of a fold's cost (on ecam, 50 x 5 passes took 5 min a fold)
    Option("top", int, 50, "The most abundant feature groups measured (a cheap screen: each group costs "
           "{opt:repeats} prediction passes).", (IMPORTANCE, CROSSVAL), "feature importance", min=1, max=100_000,
           command_defaults=((CROSSVAL, 20),)),
    Option("repeats", int, 5, "Permutations of each feature group, averaged.", (IMPORTANCE, CROSSVAL),
           "feature importance", min=1, max=1000, command_defaults=((CROSSVAL, 3),)),
    # --- CLI only: files and multi-process runs --------------------------------------------------------------------
    Option("output_dir", str, None, "Directory for checkpoints, plots, TensorBoard logs and the training "
           "history.", FIT, "output", plugin=False),
    Option("resume", str, None, "Continue training from this checkpoint (model, optimizer, scheduler, epoch "
           "and random state).", FIT, "output", plugin=False),
    Option("overwrite", bool, False, "Replace the run already in {opt:output_dir} (its model, checkpoints, plots, "
           "logs and history are deleted first); without it a directory holding a run is refused.", FIT,
           "output", plugin=False),
    Option("distributed", bool, False, "Distributed data parallel over the processes started by torchrun.",
           FIT, "distributed", plugin=False),
    Option("fsdp", bool, False, "Fully sharded data parallel (FSDP2) over the processes started by torchrun.",
           FIT, "distributed", plugin=False),
    Option("fsdp_sharded_checkpoint", bool, False, "With {opt:fsdp}, save sharded checkpoints (faster; loading needs "
           "the same number of processes).", FIT, "distributed", plugin=False),
    Option("data_parallel", bool, False, "Single-process multi-GPU (torch.nn.DataParallel) over all visible "
           "GPUs.", FIT, "distributed", plugin=False),
]

BY_NAME = {o.name: o for o in OPTIONS}

#: help of the numeric covariates (a list of metadata columns, so not an `Option`): one text for the ``aam``
#: command line and the plugin, each spelling its own flags (`aam.errors.render`)
NUMERIC_COLUMNS_HELP = (
    "Numeric metadata columns (e.g. age, BMI) given to the model as predictors beside the reads: to the network "
    "(projected and added to the sample representation) and to the ensemble's forest (as columns). Each is centred "
    "on its median over the training samples and divided by their standard deviation. A missing value is read as "
    "that training median, at training and at prediction time alike; when some training samples lacked a value, "
    "the model also gets a missing-value flag for the column, so it learns what a missing value means (a value "
    "missing only at prediction time is the median alone). Prediction needs the same columns in its metadata. "
    "The target column cannot be one of them.")


def options_for(command, interface="cli"):
    """The options a command accepts, in table order.

    Parameters
    ----------
    command : {'pretrain', 'train', 'predict'}
    interface : {'cli', 'plugin'}

    Returns
    -------
    list of Option
    """
    want = "plugin" if interface == "plugin" else "cli"
    return [o.for_command(command) for o in OPTIONS if command in o.commands and getattr(o, want)]


def defaults(command):
    """Default values of every option of `command`, as a dict."""
    return {o.name: o.for_command(command).default for o in OPTIONS if command in o.commands}


class _OptionsMethods:
    """What `Options` adds to its generated fields (one per option of the table)."""

    def to_dict(self):
        """The values of this command's options, by name (what a model records as the options it used)."""
        return {o.name: getattr(self, o.name) for o in OPTIONS if self.command in o.commands}

    def replace(self, **changes):
        """A copy with `changes` (validated like user input)."""
        for name, value in changes.items():
            _check_name(self.command, name)
            changes[name] = BY_NAME[name].check(value)
        new = replace(self, **changes)
        _check_together({o.name: getattr(new, o.name) for o in OPTIONS})
        return new

    def is_default(self, name):
        """Whether option `name` holds its default for this command (QIIME 2 passes defaults explicitly)."""
        return getattr(self, name) == BY_NAME[name].for_command(self.command).default


def _check_name(command, name):
    option = BY_NAME.get(name)
    if option is None or command not in option.commands:
        raise AAMInputError(f"unknown option {name!r} for {command}")


#: Every option of the table as a typed, frozen attribute: ``opts.epochs``, ``opts.token_limit``. Built by
#: `resolve` for one command (``opts.command``); an option the command does not take holds its table default.
Options = make_dataclass(
    "Options",
    [("command", str)] + [(o.name, Optional[o.type], field(default=o.default)) for o in OPTIONS],
    bases=(_OptionsMethods,), frozen=True)
Options.__module__ = __name__
Options.__doc__ = ("The resolved options of one command: one typed attribute per entry of `OPTIONS`, the only "
                   "place their defaults come from. Build with `resolve`.")


def resolve(command, **given):
    """The `Options` of `command`: its defaults updated with `given` (each validated).

    Parameters
    ----------
    command : {'pretrain', 'train', 'predict'}
    **given
        Option values by name; None means "the default".

    Returns
    -------
    Options

    Raises
    ------
    AAMInputError
        An unknown option for this command, or a value outside the option's type, choices or range.
    """
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}; one of {COMMANDS}")
    values = {o.name: o.for_command(command).default for o in OPTIONS}
    for name, value in given.items():
        _check_name(command, name)
        if value is not None:
            values[name] = BY_NAME[name].check(value)
    _check_together(values)
    return Options(command=command, **values)


def _check_together(values):
    """Constraints between options (each option alone was checked by `Option.check`)."""
    if values["scheduler_eta_min"] > values["lr"]:
        raise AAMInputError(f"{{opt:scheduler_eta_min}} ({values['scheduler_eta_min']:g}) must not exceed "
                            f"{{opt:lr}} ({values['lr']:g}): it is the lowest learning rate of the schedule.")
    if values["embedding_dim"] % values["attention_heads"]:
        raise AAMInputError(f"{{opt:attention_heads}} ({values['attention_heads']}) must divide "
                            f"{{opt:embedding_dim}} ({values['embedding_dim']}): each head takes an equal share "
                            "of the embedding; e.g. 4 heads for 64 dimensions.")
