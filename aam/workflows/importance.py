"""Feature-importance workflow: which feature groups a fitted model's predictions depend on, on labelled samples.

    model file -> new table + the target's true values -> SampleFeatures -> feature groups (taxa or correlated
    clusters; the most abundant kept) -> permutation importance of every member and the blend
"""
import numpy as np

from aam.errors import AAMInputError, preview
from aam.interpret.groups import correlation_groups, most_abundant, taxonomy_groups
from aam.interpret.importance import ImportanceSettings, permutation_importance
from aam.workflows.infer import covariates, prepare_new_table


def _truth(record, metadata, sample_ids, group_column):
    """The target's values of the samples that have one (class indices of a classifier), and their groups."""
    from aam.data.metadata import categorical_target, load_metadata, numeric_target, select_samples
    md = select_samples(load_metadata(metadata), sample_ids, missing="ignore")
    column = record.target.column
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
        groups = list(md.loc[y.index, group_column].astype(str))
    return y, groups


def importance_table(ckpt, table, sequences, metadata, taxonomy, opts, ctx, log, rank="genus", correlation=0.7,
                     top=50, group_column=None, settings=ImportanceSettings()):
    """`aam.api.feature_importance`'s table."""
    from aam.ensemble import Ensemble
    from aam.inference import SampleFeatures
    record = ckpt.record
    prepared = prepare_new_table(record, table, sequences, opts)
    y, sample_groups = _truth(record, metadata, prepared.sample_ids, group_column)
    prepared = prepared.subset(list(y.index))
    net = ckpt.build_model()
    features = SampleFeatures.build(prepared, record, opts, ctx, base=net.base,
                                    covariates=covariates(record, metadata, prepared.sample_ids, log))
    abundance = features.abundances_by_column()
    ids = list(prepared.feature_ids)
    groups = (taxonomy_groups(ids, taxonomy, rank) if taxonomy is not None else
              correlation_groups(abundance, ids, correlation))
    groups = most_abundant(groups, abundance, top)
    truth = y.to_numpy(np.int64 if record.is_classifier else np.float64)
    return permutation_importance(Ensemble.from_checkpoint(ckpt, model=net), features, truth, groups, record,
                                  sample_groups, settings, log)
