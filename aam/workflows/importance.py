"""Feature-importance workflow: which feature groups a fitted model's predictions depend on, on labelled samples.

    model file -> new table + the target's true values -> SampleFeatures -> feature groups (taxa or correlated
    clusters; the most abundant kept) -> permutation importance of every member and the blend
"""
import numpy as np

from aam.errors import AAMInputError, preview
from aam.interpret.groups import correlation_groups, most_abundant, taxonomy_groups
from aam.interpret.importance import ImportanceSettings, permutation_importance
from aam.workflows.infer import covariates, numeric_covariates, prepare_new_table


def _truth(record, metadata, sample_ids, group_column):
    """The target's values of the samples that have one (class indices of a classifier), and their groups."""
    from aam.data.metadata import categorical_target, load_metadata, numeric_target, select_samples
    md = select_samples(load_metadata(metadata), sample_ids, missing="ignore")
    column = record.target.column
    if column not in md.columns:
        raise AAMInputError(f"the metadata has no column {column!r}, the target this model predicts: importance "
                            "is the loss of accuracy against its true values. Pass metadata holding that column "
                            f"(it has {preview(md.columns, 10)}).")
    y, _ = (categorical_target if record.is_classifier else numeric_target)(md, column)
    if len(y) < 4:
        raise AAMInputError(f"only {len(y)} sample(s) of the table have a value for {column!r}; importance needs "
                            "labelled samples (the truth of the model's target).")
    if record.is_classifier:
        labels = record.target.class_labels
        unknown = sorted(set(y) - set(labels))
        if unknown:
            raise AAMInputError(f"{column!r} holds classes the model never learned ({preview(unknown)}); it "
                                f"predicts {preview(labels, 10)}. Leave those samples out.")
        y = y.map({c: i for i, c in enumerate(labels)})
    groups = None
    if group_column is not None:
        if group_column not in md.columns:
            raise AAMInputError(f"{{opt:group_column}} {group_column!r} is not a metadata column.")
        values = md.loc[y.index, group_column]
        if values.isna().any():
            raise AAMInputError(f"{{opt:group_column}} {group_column!r} has no value for {int(values.isna().sum())} "
                                f"labelled sample(s) ({preview(list(values.index[values.isna()]))}); fill them in "
                                "or choose another column.")
        groups = list(values.astype(str))
    return y, groups


def lineages_of(taxonomy, feature_ids):
    """Feature ID -> lineage for every feature of the table; a taxonomy missing some is refused, since a group
    'unassigned' of whatever it lacks would be measured and reported as if it were a taxon."""
    if hasattr(taxonomy, "columns"):
        if "Taxon" not in taxonomy.columns:
            raise AAMInputError("{input:taxonomy} has no 'Taxon' column; pass a FeatureData[Taxonomy] (feature ID -> "
                                "lineage).")
        taxonomy = taxonomy["Taxon"]
    taxonomy = taxonomy.copy()
    taxonomy.index = taxonomy.index.astype(str)
    missing = [f for f in feature_ids if f not in taxonomy.index]
    if missing:
        raise AAMInputError(f"{{input:taxonomy}} has no lineage for {len(missing)} of the table's {len(feature_ids)} "
                            f"features ({preview(missing)}). Classify every feature of the table (e.g. `qiime "
                            "feature-classifier classify-sklearn` on its sequences), or leave the taxonomy out to "
                            "group features by correlation.")
    return taxonomy


def importance_table(ckpt, table, sequences, metadata, taxonomy, opts, groups_opts, ctx, log, group_column=None,
                     cache_dir=None):
    """`aam.api.feature_importance`'s table: `opts` its 'predict' options, `groups_opts` its 'importance' options
    (rank, correlation, top, repeats). Finished groups are kept in `cache_dir` (default: the user's cache, named
    by the inputs, removed when the run completes), so that the same call after an interruption resumes."""
    from aam.interpret.resume import GroupCache, default_dir, run_key
    from aam.ensemble import Ensemble
    from aam.inference import SampleFeatures
    record = ckpt.record
    prepared = prepare_new_table(record, table, sequences, opts)
    y, sample_groups = _truth(record, metadata, prepared.sample_ids, group_column)
    prepared = prepared.subset(list(y.index))
    ids = list(prepared.feature_ids)
    lineages = None if taxonomy is None else lineages_of(taxonomy, ids)    # checked before the encoding's cost
    net = ckpt.build_model()
    features = SampleFeatures.build(prepared, record, opts, ctx, base=net.base,
                                    covariates=covariates(record, metadata, prepared.sample_ids, log),
                                    numeric=numeric_covariates(record, metadata, prepared.sample_ids))
    abundance = features.abundances_by_column()
    groups = (taxonomy_groups(ids, lineages, groups_opts.rank) if lineages is not None else
              correlation_groups(abundance, ids, groups_opts.correlation))
    groups = most_abundant(groups, abundance, groups_opts.top)
    settings = ImportanceSettings(repeats=groups_opts.repeats, seed=opts.seed)
    truth = y.to_numpy(np.int64 if record.is_classifier else np.float64)
    key = run_key(record, features, truth, groups, settings, opts.coverage_floor)
    cache = GroupCache(cache_dir or default_dir(key))
    frame = permutation_importance(Ensemble.from_checkpoint(ckpt, model=net), features, truth, groups, record,
                                   sample_groups, settings, log, cache)
    if cache_dir is None:
        cache.remove()  # done: nothing left to resume
    return frame
