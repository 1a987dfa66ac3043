"""The standalone ``aam`` command: prepare, pretrain, train, crossval, predict, embed, doctor.

Options come from `aam.options` (shared with the QIIME 2 plugin); this module only adds the file arguments.
Run it as ``aam ...`` or ``python -m aam.cli ...`` (the form torchrun needs). Bad input ends with one clear
``error:`` line and exit status 2, never a traceback (``AAM_DEBUG=1`` shows the traceback).
"""
import argparse
import os
import sys
import warnings

from aam import __version__, options as O
from aam.errors import AAMInputError, AAMTrainingError, render
from aam.safety import check_writable, os_error_line, plain_warning


def _add_options(parser, command):
    _add_option_list(parser, O.options_for(command, "cli"))


def _crossval_options():
    """`aam crossval`'s options: its own, then those of the fits of every fold (not the run-directory, resume
    and multi-process ones of `aam train`)."""
    return O.options_for(O.CROSSVAL, "cli") + [o for o in O.options_for(O.TRAIN, "cli") if o.plugin]


def _add_option_list(parser, options):
    groups = {}
    for opt in options:
        group = groups.get(opt.group)
        if group is None:
            group = groups[opt.group] = parser.add_argument_group(opt.group)
        default_text = "" if opt.default is None else f" (default: {opt.default})"
        # argparse %-formats help strings
        help_text = (render(opt.help) + default_text).replace("%", "%%")
        if opt.type is bool:
            group.add_argument(opt.flag, dest=opt.name, action=argparse.BooleanOptionalAction,
                               default=opt.default, help=help_text)
        else:
            kwargs = {"type": opt.type, "default": opt.default, "dest": opt.name,
                      "help": help_text}
            if opt.choices:
                kwargs["choices"] = opt.choices
            group.add_argument(opt.flag, **kwargs)


def _table_args(parser, required=True):
    g = parser.add_argument_group("input")
    g.add_argument("--table", required=required, help="Feature table: BIOM file (v2 HDF5 or v1 JSON) or a "
                   "FeatureTable[Frequency] .qza.")
    g.add_argument("--sequences", help="FASTA (or FeatureData[Sequence] .qza) of the ASV sequences, needed when "
                   "feature IDs are not DNA (e.g. MD5 hashes or OTU numbers).")
    return g


def _distance_args(g, required_text=""):
    g.add_argument("--tree", help="Rooted Newick phylogeny (or Phylogeny[Rooted] .qza) of the features; UniFrac is "
                   "computed from it" +
                   required_text + ".")
    g.add_argument("--unifrac-matrix", dest="unifrac_matrix", help="Precomputed distance matrix between samples "
                   "(.npy with --unifrac-ids, .h5 from ssu, .csv/.tsv, or QIIME 2 lsmat); any metric works.")
    g.add_argument("--unifrac-ids", dest="unifrac_ids", help="Text file with one sample ID per line, the "
                   "row order of a .npy matrix (default: <matrix>.ids.txt).")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="aam", description="Attention All Microbes: transformer models of 16S amplicon data.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--version", action="version", version=f"aam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="Check and summarize inputs: load, rarefy, tokenize, distances, batches.")
    g = _table_args(p)
    _distance_args(g)
    p.add_argument("--max-bp", type=int, default=O.BY_NAME["max_bp"].default, dest="max_bp")
    p.add_argument("--token-limit", type=int, default=O.BY_NAME["token_limit"].default, dest="token_limit")
    p.add_argument("--rarefy-depth", type=int, default=None, dest="rarefy_depth")
    p.add_argument("--batch-size", type=int, default=O.BY_NAME["batch_size"].default, dest="batch_size")
    p.add_argument("--seed", type=int, default=O.BY_NAME["seed"].default)

    p = sub.add_parser("pretrain", help="Self-supervised pretraining on UniFrac (or any distance) + masked "
                       "nucleotides.")
    g = _table_args(p)
    _distance_args(g, " (or give --unifrac-matrix)")
    g.add_argument("--taxonomy", help="Taxonomy TSV (Feature ID, Taxon) for --encoder-type taxonomy/combined.")
    g.add_argument("--metadata", help="Sample metadata TSV, only needed for --group-column.")
    _add_options(p, O.PRETRAIN)

    p = sub.add_parser("train", help="Fine-tune a regressor or classifier on a metadata column.")
    g = _table_args(p)
    _distance_args(g, " (optional: adds the UniFrac loss while the base trains)")
    g.add_argument("--metadata", required=True, help="Sample metadata TSV/CSV (first column: sample IDs).")
    g.add_argument("--metadata-column", required=True, dest="metadata_column", help="The column to predict.")
    g.add_argument("--pretrained-encoder", dest="pretrained_encoder",
                   help="Checkpoint of `aam pretrain` (best_model.pt or model.pt) to start from.")
    g.add_argument("--classifier", action="store_true", help="Classification of a categorical column "
                   "(default: regression of a numeric column).")
    g.add_argument("--out-dim", type=int, dest="out_dim", help="Number of classes (checked against the data; "
                   "inferred when omitted).")
    g.add_argument("--categorical-columns", dest="categorical_columns", help="Comma-separated metadata columns "
                   "used as categorical covariates.")
    g.add_argument("--numeric-columns", dest="numeric_columns",
                   help="Comma-separated metadata columns. " + render(O.NUMERIC_COLUMNS_HELP))
    _add_options(p, O.TRAIN)

    p = sub.add_parser("crossval", help="Grouped, stratified k-fold cross-validation of AAM beside "
                       "q2-sample-classifier's random forest; writes every sample's out-of-fold predictions.")
    g = _table_args(p)
    _distance_args(g, " (optional: as in train, each fold's fit reads its training samples' distances only)")
    g.add_argument("--metadata", required=True, help="Sample metadata TSV/CSV (first column: sample IDs).")
    g.add_argument("--metadata-column", required=True, dest="metadata_column", help="The column to predict.")
    g.add_argument("--classifier", action="store_true", help="Classification of a categorical column "
                   "(default: regression of a numeric column).")
    g.add_argument("--categorical-columns", dest="categorical_columns", help="Comma-separated metadata columns "
                   "used as categorical covariates.")
    g.add_argument("--numeric-columns", dest="numeric_columns",
                   help="Comma-separated metadata columns. " + render(O.NUMERIC_COLUMNS_HELP))
    g.add_argument("--taxonomy", help="Taxonomy TSV (Feature ID, Taxon): the feature importance groups features by "
                   "their taxon at --rank (without it, by correlation).")
    g.add_argument("--output", required=True, help="Output TSV: fold, truth and group of every sample, and both "
                   "models' out-of-fold predictions (aam_*, forest_*; class probabilities for a classifier). The "
                   "out-of-fold feature importance goes beside it (<output>.importance.tsv: one row per group and "
                   "member, most important first). The final model is `aam train` on every sample with the same "
                   "options.")
    _add_option_list(p, _crossval_options())

    p = sub.add_parser("predict", help="Predict with a trained model; writes a TSV, one row per sample.")
    g = _table_args(p)
    g.add_argument("--model", required=True, help="Checkpoint of `aam train` (model.pt or best_model.pt).")
    g.add_argument("--metadata", help="Sample metadata, needed when the model uses covariates.")
    g.add_argument("--output", required=True, help="Output TSV (prediction, and class probabilities).")
    _add_options(p, O.PREDICT)

    p = sub.add_parser("embed", help="Sample embeddings and model-implied distances of any AAM model.")
    g = _table_args(p)
    g.add_argument("--model", required=True, help="Any AAM checkpoint.")
    g.add_argument("--output", required=True, help="Output TSV of embeddings; distances go to "
                   "<output stem>.distances.tsv.")
    _add_options(p, O.PREDICT)

    sub.add_parser("doctor", help="Report versions, devices and which attention backends work here.")
    return parser


def _distance_ids(args):
    path = getattr(args, "unifrac_ids", None)
    if path is None:
        return None
    if not os.path.isfile(path):
        raise AAMInputError(f"--unifrac-ids file {path!r} does not exist")
    try:
        with open(path, encoding="utf-8") as fh:
            return [line.strip() for line in fh if line.strip()]
    except UnicodeDecodeError:
        raise AAMInputError(f"--unifrac-ids file {path!r} is not text; it must list one sample ID per line.") from None


def _taxonomy(path):
    if path is None:
        return None
    import pandas as pd
    if not os.path.isfile(path):
        raise AAMInputError(f"--taxonomy file {path!r} does not exist")
    df = pd.read_csv(path, sep="\t", dtype=str, comment=None)
    if df.shape[1] < 2:
        raise AAMInputError(f"--taxonomy {path!r} needs two tab-separated columns: Feature ID and Taxon")
    return df.set_index(df.columns[0])


def _option_values(args, command):
    return {o.name: getattr(args, o.name) for o in O.options_for(command, "cli") if hasattr(args, o.name)}


def cmd_prepare(args, ctx):
    import torch
    from aam.data.dataset import ASVDataset, Collator
    from aam.data.pipeline import prepare_table
    objective = "unifrac" if (args.tree or args.unifrac_matrix) else None
    prepared = prepare_table(args.table, sequences=args.sequences, tree=args.tree,
                             distance_matrix=args.unifrac_matrix, distance_ids=_distance_ids(args),
                             objective=objective, max_bp=args.max_bp, rarefy_depth=args.rarefy_depth,
                             seed=args.seed)
    for line in prepared.report:
        print(line)
    ds = ASVDataset(prepared.counts, prepared.sample_ids, token_limit=args.token_limit,
                    rarefy_depth=prepared.depth, seed=args.seed)
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True,
                                         collate_fn=Collator(ds, prepared.tokens, distances=prepared.distances,
                                                             mask_ratio=O.BY_NAME["nuc_mask_ratio"].default),
                                         generator=torch.Generator().manual_seed(args.seed))
    shapes, distinct, slots = [], 0, 0
    for batch in loader:
        occupied = batch["asv_ids"] >= 0
        slots += int(occupied.sum())
        distinct += int(torch.unique(batch["asv_ids"][occupied]).numel())
        shapes.append(tuple(batch["tokens"].shape))
    print(f"batches: {len(shapes)} of up to {args.batch_size} samples; first tokens {list(shapes[0])} "
          f"[B, S, L]; ASV slots per batch {slots / len(shapes):.0f}, distinct ASVs per batch "
          f"{distinct / len(shapes):.0f} (each distinct ASV is encoded once: {slots / max(distinct, 1):.1f}x "
          "fewer sequences)")
    if "distances" in batch:
        print(f"distance block of the last batch: {list(batch['distances'].shape)} [B, B]")
    return 0


def cmd_pretrain(args, ctx):
    from aam import api
    res = api.pretrain(args.table, sequences=args.sequences, tree=args.tree, distance_matrix=args.unifrac_matrix,
                       distance_ids=_distance_ids(args), taxonomy=_taxonomy(args.taxonomy),
                       metadata=args.metadata, output_dir=args.output_dir or "aam-pretrain", context=ctx,
                       **{k: v for k, v in _option_values(args, O.PRETRAIN).items() if k != "output_dir"})
    _finish(res, ctx)
    return 0


def _column_list(text):
    """A comma-separated list of metadata columns (None when empty)."""
    names = [c.strip() for c in (text or "").split(",") if c.strip()]
    return names or None


def cmd_train(args, ctx):
    from aam import api
    cats, numeric = (_column_list(args.categorical_columns), _column_list(args.numeric_columns))
    res = api.train(args.table, args.metadata, args.metadata_column, classifier=args.classifier,
                    out_dim=args.out_dim, sequences=args.sequences, tree=args.tree,
                    distance_matrix=args.unifrac_matrix, distance_ids=_distance_ids(args),
                    pretrained=args.pretrained_encoder, categorical_columns=cats, numeric_columns=numeric,
                    output_dir=args.output_dir or "aam-train", context=ctx,
                    **{k: v for k, v in _option_values(args, O.TRAIN).items() if k != "output_dir"})
    _finish(res, ctx)
    return 0


def _finish(res, ctx):
    if ctx is not None and not ctx.is_main:
        return  # under torchrun only rank 0 reports (and wrote) the outputs
    run, training = res.run_dir, res.checkpoint.record.training
    if training.best_score is not None:
        print(f"\nbest epoch {training.best_epoch} ({training.selection_metric} = {training.best_score:.4f})")
    print(f"model:        {run.model_file} (and its record, {run.config_file})")
    print(f"checkpoints:  {run.checkpoints_dir}/ (best_model.pt, last_checkpoint.pt to resume, final_model.pt)")
    print(f"plots:        {run.plots_dir}/")
    print(f"history:      {run.history_file}")
    print(f"TensorBoard:  tensorboard --logdir {run.tensorboard_dir}")


def cmd_crossval(args, ctx):
    from aam import api
    check_writable(args.output, "--output")  # before the work, not after it
    if args.importance:
        check_writable(importance_path(args.output), "--output (its importance file)")
    cats, numeric = (_column_list(args.categorical_columns), _column_list(args.numeric_columns))
    values = {o.name: getattr(args, o.name) for o in _crossval_options()}
    result = api.cross_validate(args.table, args.metadata, args.metadata_column, classifier=args.classifier,
                                sequences=args.sequences, tree=args.tree, distance_matrix=args.unifrac_matrix,
                                distance_ids=_distance_ids(args), categorical_columns=cats, numeric_columns=numeric,
                                taxonomy=_taxonomy(args.taxonomy), **values)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    result.predictions.to_csv(args.output, sep="\t")
    print(result.folds.to_string(index=False))
    print(f"out-of-fold predictions of {len(result.predictions)} samples written to {args.output}")
    if result.importance is not None:
        path = importance_path(args.output)
        frame = result.importance.copy()
        for column in ("feature_ids", "unseen_ids"):
            frame[column] = [",".join(ids) for ids in frame[column]]
        frame.to_csv(path, sep="\t", index=False)
        print(f"out-of-fold feature importance of {frame['group'].nunique()} groups written to {path}")
    return 0


def importance_path(output):
    """Where `aam crossval` writes its importance: beside the predictions."""
    stem = output[:-4] if output.lower().endswith(".tsv") else output
    return stem + ".importance.tsv"


def cmd_predict(args, ctx):
    from aam import api
    check_writable(args.output, "--output")  # before the work, not after it
    df = api.predict(args.model, args.table, sequences=args.sequences, metadata=args.metadata,
                     **_option_values(args, O.PREDICT))
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    df.to_csv(args.output, sep="\t")
    print(f"predictions for {len(df)} samples written to {args.output}")
    return 0


def cmd_embed(args, ctx):
    from aam import api
    stem = os.path.splitext(args.output)[0]
    check_writable(args.output, "--output")
    check_writable(stem + ".distances.tsv", "--output's distance file")
    frame, dm = api.embed(args.model, args.table, sequences=args.sequences, **_option_values(args, O.PREDICT))
    frame.to_csv(args.output, sep="\t")
    dm.write(stem + ".distances.tsv")
    print(f"embeddings of {len(frame)} samples written to {args.output}; distances to {stem}.distances.tsv")
    return 0


def cmd_doctor(args, ctx):
    import platform
    import torch
    from aam.training.device import gpu_runtime
    from aam.models.layers import available_attention_backends
    print(f"aam {__version__}, Python {platform.python_version()}, torch {torch.__version__} "
          f"({gpu_runtime() or 'CPU build'})")
    print(f"CPU threads: {torch.get_num_threads()}")
    devices = ["cpu"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            print(f"GPU {i}: {torch.cuda.get_device_name(i)}")
        devices.append("cuda")
    else:
        print("GPU: none visible to PyTorch (training runs on the CPU)")
    for dev in devices:
        print(f"attention backends on {dev} (--attn-implementation):")
        for name, (ok, message) in available_attention_backends(dev).items():
            print(f"  {name:14s} {'works' if ok else 'unavailable'}: {message}")
    for mod in ("qiime2", "biom", "skbio", "unifrac", "tensorboard"):
        try:
            m = __import__(mod)
            print(f"{mod}: {getattr(m, '__version__', 'installed')}")
        except ImportError:
            print(f"{mod}: not installed")
    return 0


COMMANDS = {"prepare": cmd_prepare, "pretrain": cmd_pretrain, "train": cmd_train, "crossval": cmd_crossval,
            "predict": cmd_predict, "embed": cmd_embed, "doctor": cmd_doctor}


#: the file arguments each command reads, checked for readability before any work
_INPUT_FILES = ("table", "sequences", "tree", "unifrac_matrix", "unifrac_ids", "taxonomy", "metadata",
                "pretrained_encoder", "model", "resume")


#: model files read only after the data are prepared: their absence is named before any work
_MODEL_FILES = ("pretrained_encoder", "model", "resume")


def _check_readable(args):
    """Name an input file that exists but cannot be read (permissions), or a model file that does not exist,
    before any work starts."""
    for name in _INPUT_FILES:
        path = getattr(args, name, None)
        if path and name in _MODEL_FILES and not os.path.exists(path):
            raise AAMInputError(f"--{name.replace('_', '-')} {path!r} does not exist; check the path.")
        if path and os.path.exists(path) and not os.access(path, os.R_OK):
            raise AAMInputError(f"--{name.replace('_', '-')} {path!r} cannot be read (permission denied); make it "
                                "readable for you or pass a copy you can read.")


def main(argv=None):
    args = build_parser().parse_args(argv)
    warnings.simplefilter("default", UserWarning)
    warnings.formatwarning = plain_warning
    ctx = None
    try:
        _check_readable(args)
        ctx = _run_context(args)
        return COMMANDS[args.command](args, ctx)
    except (AAMInputError, AAMTrainingError) as err:
        if os.environ.get("AAM_DEBUG"):
            raise
        print(f"error: {_rank_prefix(ctx)}{err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        if os.environ.get("AAM_DEBUG"):
            raise
        print(f"error: {_rank_prefix(ctx)}out of memory; lower --batch-size, --token-limit or --asv-chunk-size, "
              "or use a machine with more memory", file=sys.stderr)
        return 2
    except Exception as err:
        if isinstance(err, OSError) and not (ctx is not None and ctx.active and _is_dist_error(err)) \
                and not os.environ.get("AAM_DEBUG"):
            # permission denied, disk full, read-only file system: what, where and what to do, in one line
            print(f"error: {_rank_prefix(ctx)}{os_error_line(err)}", file=sys.stderr)
            return 2
        # a collective that failed inside DDP/FSDP (a peer died or timed out) is reported in one line too
        if ctx is None or not ctx.active or os.environ.get("AAM_DEBUG") or not _is_dist_error(err):
            raise
        print(f"error: {_rank_prefix(ctx)}distributed training stopped: another rank failed or stopped "
              f"responding ({str(err).splitlines()[0][:300]}); see the other ranks' output for the cause",
              file=sys.stderr)
        return 3
    finally:
        if ctx is not None:
            from aam.training.distributed import shutdown
            shutdown(ctx)


def _run_context(args):
    """The run context of pretrain / train (joining torchrun's process group for --distributed / --fsdp), built
    once here so the engine and the error report share it; None for the other commands (the engine builds its own).
    """
    if args.command not in ("pretrain", "train"):
        return None
    from aam.training.context import build_context
    return build_context(O.resolve(args.command, **_option_values(args, args.command)))


def _rank_prefix(ctx):
    return f"[rank {ctx.rank}] " if ctx is not None and ctx.active else ""


def _is_dist_error(err):
    import torch.distributed as dist
    if isinstance(err, getattr(dist, "DistError", ())):
        return True
    text = str(err).lower()
    return any(k in text for k in ("gloo", "nccl", "connection closed", "timed out", "timeout"))


if __name__ == "__main__":
    sys.exit(main())
