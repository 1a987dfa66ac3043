"""Cross-study tasks of ``make heldout-full``: train on every labelled sample of one study, predict another.

No sample, subject or feature ID is shared between the two studies, and their features differ (Greengenes OTU IDs
in American Gut and PGP, hashed or sequence IDs elsewhere), so the classical models need a common feature space:

- ``rf500-genus``: a 500-tree forest on genus-level relative abundances (the first six ranks of each feature's
  Greengenes 13_8 taxonomy, as each study ships it: the reference's own lineage of an OTU in American Gut and PGP,
  a naive Bayes classification against Greengenes in Moving Pictures and ibd-2538);
- ``rf500-seq100``: the same forest on exact sequences cut to their first 100 nt (every study here reads V4 from
  the 515F primer, so the cut sequences of one organism coincide);
- ``constant``: the source study's majority class, with its class shares as probabilities.

Every sample of both studies is rarefied to the same depth first (`DEPTH` reads, seeded), so that no model can
read sequencing depth; samples below it are left out and counted per class. Scores on the target study come with
95% intervals by bootstrap over the target's subjects (`aam.evaluation.stats`); Moving Pictures has two subjects,
so there samples are resampled (the table says so). AAM rows can be added as recipes of `MODELS` later.

Run: ``python -m benchmarks.heldout_cross`` (``make heldout-full``); results in
``benchmarks/results/heldout-full/cross.json`` and ``cross/<task>.tsv`` (per target sample and model). Each task is
cached by its inputs, so a second call only scores what changed.
"""
import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Optional, Tuple

import numpy as np
import pandas as pd

from aam.evaluation import stats as S
from benchmarks.heldout_store import atomic_write, json_default
from benchmarks.heldout_tasks import REPO, SHARED_DATA

OUT = os.path.join(REPO, "benchmarks", "results", "heldout-full")
DEPTH = 1000
SEED = 42
N_RESAMPLES = 1000
HABITATS = (("UBERON:feces", "stool"), ("UBERON:oral cavity", "oral"), ("UBERON:skin", "skin"))


@dataclass(frozen=True)
class Study:
    """One side of a cross-study task: where its files are and how its labels read.

    Attributes
    ----------
    folder : str
        Under ``../shared/data``.
    table, metadata, taxonomy : str
        File names (BIOM or .qza table; TSV or .qza taxonomy).
    sequences : str or None
        FASTA or .qza of the feature sequences (None: the feature IDs are the sequences).
    column : str
        Label column.
    relabel : tuple of (str, str)
        Raw value -> class; samples with other values are left out.
    group : str or None
        Subject column (None: samples are resampled one by one).
    keep : (str, str), optional
        Only samples whose column has this value.
    """

    folder: str
    table: str
    metadata: str
    taxonomy: str
    sequences: Optional[str]
    column: str
    relabel: Tuple[Tuple[str, str], ...]
    group: Optional[str]
    keep: Optional[Tuple[str, str]] = None

    def path(self, name):
        return os.path.join(SHARED_DATA, self.folder, name)


_AG = dict(folder="american-gut", table="table.biom", metadata="metadata.tsv", taxonomy="taxonomy.tsv",
           sequences="otu-v4-100nt.fasta", group="HOST_SUBJECT_ID")

CROSS_TASKS = {
    "ag-to-pgp-habitat": (
        Study(column="BODY_HABITAT", relabel=HABITATS, **_AG),
        Study("pgp", "table.biom", "metadata.tsv", "taxonomy.tsv", "otu-v4-100nt.fasta", "body_habitat", HABITATS,
              "host_subject_id"),
        "American Gut body habitat (stool / oral / skin) -> PGP body habitat"),
    "ag-to-mp-bodysite": (
        Study(column="BODY_HABITAT", relabel=HABITATS, **_AG),
        Study("moving-pictures", "table.qza", "sample-metadata.tsv", "taxonomy.qza", "rep-seqs.qza", "body-site",
              (("gut", "stool"), ("tongue", "oral"), ("left palm", "skin"), ("right palm", "skin")), None),
        "American Gut body habitat -> Moving Pictures body site (gut -> stool, tongue -> oral, palms -> skin); "
        "2 subjects, so intervals resample samples and are too narrow for a population claim"),
    "ag-to-ibd2538-crohns": (
        Study(column="IBD", relabel=(("Crohn's disease", "Crohns"), ("I do not have IBD", "Control")),
              keep=("BODY_HABITAT", "UBERON:feces"), **_AG),
        Study("ibd-2538", "table.qza", "metadata.tsv", "taxonomy.qza", None, "ibd",
              (("Crohns", "Crohns"), ("Control", "Control")), "host_subject_id"),
        "American Gut Crohn's disease vs no IBD (stool) -> ibd-2538 Crohn's vs control, depth-matched"),
}
MODELS = ("rf500-genus", "rf500-seq100", "constant")
#: AAM rows (``--models``; each fits on the whole source study): the shipped base with the engine's defaults, its
#: network member (the default head over the frozen base) read from the same fit, and today's per-study recipe
#: (pretraining on the source study's tables, then the same fit)
AAM_MODELS = ("base+rf", "base", "aam+rf-axes-1se", "aam")


def log(msg):
    print(f"[heldout-cross {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ loading

def _taxonomy(study):
    """Feature ID -> Taxon string."""
    from aam.data.table import read_from_qza
    path = study.path(study.taxonomy)
    if path.endswith(".qza"):
        import io
        frame = pd.read_csv(io.BytesIO(read_from_qza(path, "taxonomy.tsv")), sep="\t", dtype=str)
    else:
        frame = pd.read_csv(path, sep="\t", dtype=str)
    return dict(zip(frame.iloc[:, 0], frame["Taxon"]))


def genus_key(lineage):
    """The first six ranks of a Greengenes lineage, normalized ('k__Bacteria;...;g__Bacteroides'), or None."""
    if not isinstance(lineage, str):
        return None
    ranks = [r.strip() for r in lineage.split(";")][:6]
    return ";".join(ranks) if ranks and ranks[0] else None


def load_study(study, depth=DEPTH, seed=SEED):
    """A study's labelled samples rarefied to `depth`, with the two feature keys of every feature.

    Returns
    -------
    dict
        ``counts`` (DataFrame samples x features of the rarefied draw), ``y`` (class per sample), ``groups``,
        ``genus`` and ``seq100`` (feature -> key, or None), ``below`` (class -> samples left below `depth`),
        ``notes``.
    """
    from aam.data.metadata import load_metadata
    from aam.data.sequences import as_mapping
    from aam.data.table import load_table, rarefy
    table = load_table(study.path(study.table))
    md = load_metadata(study.path(study.metadata))
    md = md.loc[[s for s in table.ids() if s in md.index]]
    if study.keep:
        md = md[md[study.keep[0]].astype(str) == study.keep[1]]
    labels = md[study.column].astype(str).map(dict(study.relabel))
    md = md[labels.notna()]
    y = labels[labels.notna()]
    table = table.filter(list(md.index), axis="sample", inplace=False)
    reads = pd.Series(np.asarray(table.sum(axis="sample")).ravel(), index=[str(s) for s in table.ids()])
    below = y[reads.reindex(y.index) < depth]
    rarefied, _ = rarefy(table.filter(list(reads.index[reads >= depth]), axis="sample", inplace=False), depth, seed)
    ids = [str(s) for s in rarefied.ids()]
    features = [str(f) for f in rarefied.ids("observation")]
    seqs = as_mapping(study.path(study.sequences)) if study.sequences else {f: f for f in features}
    tax = _taxonomy(study)
    y = y.loc[ids]
    groups = md.loc[ids, study.group].astype(str) if study.group else pd.Series(ids, index=ids)
    return {"counts": rarefied.matrix_data.T.tocsr(), "ids": ids, "features": features, "y": y, "groups": groups,
            "genus": {f: genus_key(tax.get(f)) for f in features},
            "seq100": {f: (seqs.get(f, "").upper()[:100] if len(seqs.get(f, "")) >= 100 else None) for f in features},
            "below": below.value_counts().to_dict(), "n_classes": y.value_counts().to_dict()}


def collapse(study, key):
    """Relative abundances of the features' keys (`key`: 'genus' or 'seq100'; features without one dropped):
    a DataFrame samples x keys."""
    import scipy.sparse as sp
    keys = [study[key].get(f) for f in study["features"]]
    names = sorted({k for k in keys if k is not None})
    column = {k: j for j, k in enumerate(names)}
    rows = [i for i, k in enumerate(keys) if k is not None]
    mapping = sp.csr_matrix((np.ones(len(rows)), (rows, [column[keys[i]] for i in rows])),
                            shape=(len(keys), len(names)))                          # [F, K]
    counts = study["counts"]                                                          # [N, F]
    summed = (counts @ mapping).toarray()                                             # [N, K]
    totals = np.asarray(counts.sum(axis=1)).ravel()[:, None]
    return pd.DataFrame(summed / np.maximum(totals, 1), index=study["ids"], columns=names)


# ------------------------------------------------------------------------------------------------ models

def forest_across(source, target, key, seed=SEED):
    """500-tree forest on the source's key-level relative abundances, applied to the target's (target keys the
    source lacks are ignored). Returns (predictions, probabilities, share of target reads whose key the source
    has)."""
    from sklearn.ensemble import RandomForestClassifier
    x_source, x_target = collapse(source, key), collapse(target, key)
    shared = x_target.columns.intersection(x_source.columns)
    overlap = float(x_target[shared].sum(axis=1).mean())
    x_target = x_target.reindex(columns=x_source.columns, fill_value=0.0)
    model = RandomForestClassifier(n_estimators=500, n_jobs=1, random_state=seed)
    model.fit(x_source.to_numpy(), source["y"].to_numpy())
    prob = pd.DataFrame(model.predict_proba(x_target.to_numpy()), index=x_target.index, columns=model.classes_)
    return pd.Series(model.predict(x_target.to_numpy()), index=x_target.index), prob, overlap


def constant_across(source, target):
    shares = source["y"].value_counts(normalize=True)
    majority = sorted(shares.index[shares == shares.max()])[0]
    index = target["ids"]
    return pd.Series(majority, index=index), pd.DataFrame([shares.to_dict()] * len(index), index=index), None


def resumable_fit(fit, run_dir, **kwargs):
    """`fit` (`aam.api.pretrain` or `aam.api.train`) writing its run to `run_dir`: a finished run's model is read
    back, an interrupted one continues from its last checkpoint (the engine's resume: weights, optimizer, schedule,
    epoch, random state), so a fit longer than a sitting (pretraining on American Gut: about 45 min) finishes over
    several. Returns the checkpoint and the seconds spent on it over every sitting. Without a `run_dir`, a plain
    fit kept nowhere."""
    from aam.workflows.common import load_model
    if run_dir is None:
        t0 = time.perf_counter()
        return fit(**kwargs).checkpoint, time.perf_counter() - t0
    seconds_file = os.path.join(run_dir, "seconds.json")
    spent = 0.0
    if os.path.isfile(seconds_file):
        with open(seconds_file) as fh:
            spent = float(json.load(fh)["seconds"])
    model_file = os.path.join(run_dir, "model.pt")   # written only when the run has finished
    if os.path.isfile(model_file):
        log(f"fit read back from {run_dir} ({spent:.0f} s when it ran)")
        return load_model(model_file), spent
    last = os.path.join(run_dir, "checkpoints", "last_checkpoint.pt")
    resume = last if os.path.isfile(last) else None
    if resume:
        log(f"continuing the interrupted fit in {run_dir} from its last checkpoint")
    t0 = time.perf_counter()
    try:
        checkpoint = fit(output_dir=run_dir, resume=resume, **kwargs).checkpoint
    finally:  # an interrupted sitting's seconds count too
        os.makedirs(run_dir, exist_ok=True)
        atomic_write(seconds_file, json.dumps({"seconds": spent + time.perf_counter() - t0}))
    return checkpoint, spent + time.perf_counter() - t0


def aam_across(source_spec, target_spec, source, target, pretrain, fit_dir=None):
    """AAM fitted on every labelled source sample (rarefied to `DEPTH` by the engine, seeded) and applied to the
    target: the blend and its network member, as {model: (predictions, probabilities, mean share of target reads
    on features the fit's table had, seconds)}. With `pretrain`, the source's tables are pretrained on first
    (UniFrac from the source's tree), as a user of today's defaults would; else the fit starts from the shipped
    base. With `fit_dir`, the fits are kept there by source (`resumable_fit`): a run stopped during one continues
    from its last epoch when started again."""
    from aam import api
    from aam.data.table import load_table
    from aam.ensemble import member_outputs
    from benchmarks.heldout_base import BASE, predict_probabilities

    def part(spec, study):
        table = load_table(spec.path(spec.table)).filter(study["ids"], axis="sample", inplace=False)
        return table, (spec.path(spec.sequences) if spec.sequences else None)

    (s_table, s_seqs), (t_table, t_seqs) = part(source_spec, source), part(target_spec, target)
    metadata = pd.DataFrame({"label": source["y"], "subject": source["groups"]}).loc[source["ids"]]
    options = dict(rarefy_depth=DEPTH, seed=SEED, group_column="subject")
    if fitted_key(source_spec, pretrain) not in _FITTED:  # the two habitat tasks share their source, so their fit
        where = None if fit_dir is None else os.path.join(fit_dir, fit_name(source_spec, pretrain))
        seconds = 0.0
        if pretrain:
            base, seconds = resumable_fit(api.pretrain, where and os.path.join(where, "pretrain"), table=s_table,
                                          sequences=s_seqs, tree=source_spec.path("gg13_8-97-pruned.nwk"),
                                          metadata=metadata, progress=False, log=log, **options)
        start = {"pretrained": base} if pretrain else {"base": BASE}
        model, spent = resumable_fit(api.train, where and os.path.join(where, "train"), table=s_table,
                                     metadata=metadata, column="label", classifier=True, sequences=s_seqs,
                                     progress=False, log=log, **start, **options)
        _FITTED[fitted_key(source_spec, pretrain)] = (model, seconds + spent)
    model, fit_seconds = _FITTED[fitted_key(source_spec, pretrain)]
    t0 = time.perf_counter()
    out = api.predict(model, t_table, sequences=t_seqs, log=log, seed=SEED)
    seconds = round(fit_seconds + time.perf_counter() - t0, 1)  # what the row costs alone: fit and prediction
    seen = float(pd.to_numeric(out["seen_feature_share"]).mean()) if "seen_feature_share" in out else None
    names = ("aam+rf-axes-1se", "aam") if pretrain else ("base+rf", "base")
    found = {names[0]: (*predict_probabilities(out, True), seen, seconds)}
    members = member_outputs(out, model.record)
    if "network" in members:
        found[names[1]] = (*members["network"], seen, seconds)
    return found


_FITTED = {}  # fitted_key -> (the fitted checkpoint, seconds its pretraining and fit took), within one process


def fitted_key(source_spec, pretrain):
    return source_spec, bool(pretrain)


def fit_name(source_spec, pretrain):
    """The folder of a source's fit: the study, and a digest of what the fit reads (the source's definition, the
    depth, the seed, the recipe and the engine's version), so a changed source never reads another's fit back."""
    import hashlib

    from aam import __version__
    text = json.dumps([asdict(source_spec), DEPTH, SEED, bool(pretrain), __version__], sort_keys=True, default=str)
    return f"{source_spec.folder}-{'aam' if pretrain else 'base'}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def predict_all(source, target, models=MODELS, specs=None, fit_dir=None):
    """Every model of `models` on the target: {model: (predictions, probabilities, feature overlap, seconds)};
    the AAM rows' fits kept in `fit_dir` (see `aam_across`)."""
    out = {}
    for model in models:
        if model in out:
            continue  # an AAM network member, found with its blend
        t0 = time.perf_counter()
        if model in AAM_MODELS:
            found = aam_across(*specs, source, target, pretrain=model.startswith("aam"), fit_dir=fit_dir)
            out.update({m: v for m, v in found.items() if m in models})
            continue
        if model == "constant":
            pred = constant_across(source, target)
        else:
            pred = forest_across(source, target, model.split("-", 1)[1])
        out[model] = (*pred, round(time.perf_counter() - t0, 1))
    return out


# ------------------------------------------------------------------------------------------------ scoring

def score(target, preds, classes, positive=None):
    """Intervals of each model's metrics over the target's subjects and verdicts against the constant and between
    the two forests (paired, same resamples)."""
    ids = target["ids"]
    truth = target["y"].loc[ids].to_numpy()
    metrics = ["accuracy", "balanced_accuracy", "auc"] + (["auprc"] if len(classes) == 2 else [])
    scored = {m: S.Scored(truth, p[0].loc[ids].astype(str).to_numpy(),
                          p[1].reindex(columns=classes, fill_value=0.0).loc[ids].to_numpy(float), tuple(classes),
                          positive) for m, p in preds.items()}
    groups = target["groups"].loc[ids].to_numpy()
    resamples = S.group_bootstrap_indices(groups, N_RESAMPLES, SEED)
    n_groups = len(set(groups))
    res = {m: {k: S.Resampled(k, sc, resamples, n_groups) for k in metrics} for m, sc in scored.items()}
    out = {"intervals": {m: {k: asdict(r.interval()) for k, r in per.items()} for m, per in res.items()},
           "comparisons": {}}
    for ref in [r for r in ("constant", "rf500-genus", "rf500-seq100") if r in res]:
        out["comparisons"][ref] = {m: {k: _verdict(r.against(res[ref][k])) for k, r in per.items()}
                                   for m, per in res.items() if m != ref}
    return out


def _verdict(comparison):
    return {"difference": asdict(comparison.difference), "verdict": comparison.verdict}


def stored_predictions(out_dir, name, record, classes):
    """The per-sample predictions a previous run wrote for task `name`, as `predict_all` returns them."""
    path = os.path.join(out_dir, "cross", f"{name}.tsv")
    if not os.path.exists(path) or not record:
        return {}
    frame = pd.read_csv(path, sep="\t", dtype={"sample_id": str, "group": str, "truth": str, "prediction": str})
    found = {}
    for model, rows in frame.groupby("model", sort=False):
        rows = rows.set_index("sample_id")
        prob = rows[[f"p:{c}" for c in classes]].rename(columns=lambda c: c[2:])
        found[model] = (rows["prediction"], prob, record.get("feature_overlap", {}).get(model),
                        record.get("seconds", {}).get(model))
    return found


def run_task(name, out_dir, models, kept):
    """Load both studies, predict with `models`, score them with the `kept` predictions of earlier runs, write the
    per-sample predictions of all; returns the task's record."""
    source_spec, target_spec, description = CROSS_TASKS[name]
    t0 = time.perf_counter()
    source, target = load_study(source_spec), load_study(target_spec)
    classes = sorted(set(source["y"]) | set(target["y"]))
    positive = "Crohns" if "Crohns" in classes else None
    fit_dir = os.path.join(out_dir, "cache", "fits")  # gitignored; a fit interrupted with the sitting resumes
    preds = {**kept, **predict_all(source, target, models, (source_spec, target_spec), fit_dir)}
    rows = pd.DataFrame({"sample_id": target["ids"], "group": target["groups"].to_numpy(),
                         "truth": target["y"].to_numpy()})
    frames = []
    for model, (values, prob, _, _) in preds.items():
        frame = rows.assign(model=model, prediction=values.loc[rows["sample_id"]].to_numpy())
        for c in classes:
            frame[f"p:{c}"] = prob.reindex(columns=classes, fill_value=0.0).loc[rows["sample_id"], c].to_numpy()
        frames.append(frame)
    atomic_write(os.path.join(out_dir, "cross", f"{name}.tsv"),
                 pd.concat(frames).to_csv(sep="\t", index=False, float_format="%.6g"))
    record = {"description": description, "depth": DEPTH, "classes": classes,
              "source": {"study": source_spec.folder, "n_samples": len(source["y"]), "classes": source["n_classes"],
                         "below_depth": source["below"]},
              "target": {"study": target_spec.folder, "n_samples": len(target["y"]), "classes": target["n_classes"],
                         "below_depth": target["below"], "n_groups": int(target["groups"].nunique()),
                         "resampled": "subjects" if target_spec.group else "samples (2 subjects only)"},
              "feature_overlap": {m: p[2] for m, p in preds.items() if p[2] is not None},
              # the shipped base pretrained on PGP's tables (never its labels): its rows on PGP are transductive
              "transductive": sorted(m for m in preds if m.startswith("base") and target_spec.folder == "pgp"),
              "seconds": {m: p[3] for m, p in preds.items()}, **score(target, preds, classes, positive)}
    record["seconds_total"] = round(time.perf_counter() - t0, 1)
    return record


def model_key(name, model):
    """A hash of what one model's predictions on task `name` depend on: the two studies' files, the depth, the seed
    and, for the base rows, the shipped base's weights (a change of the harness's code needs ``--fresh``)."""
    digest = hashlib.sha256(f"{model} {DEPTH} {SEED}".encode())
    source, target, _ = CROSS_TASKS[name]
    for study in (source, target):
        for f in (study.table, study.metadata, study.taxonomy, study.sequences):
            if f:
                digest.update(f"{study.folder}/{f}:{os.path.getsize(study.path(f))}".encode())
    if model.startswith("base"):
        from aam.base.shipped import base_dir
        from benchmarks.heldout_base import BASE
        with open(os.path.join(base_dir(BASE), "manifest.json")) as fh:
            digest.update(json.load(fh)["files"]["model.pt"].encode())  # the weights, not the card's wording
    return digest.hexdigest()[:16]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.heldout_cross", description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", choices=sorted(CROSS_TASKS), help="default: all")
    ap.add_argument("--out", default=OUT, help=f"results folder (default {os.path.relpath(OUT, REPO)})")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS + AAM_MODELS,
                    help=f"default: {' '.join(MODELS)}; the AAM rows fit on the whole source study (minutes each). "
                         "Predictions of other models stored by earlier runs are kept and scored with these.")
    ap.add_argument("--fresh", action="store_true", help="predict again even what is stored")
    args = ap.parse_args(argv)
    path = os.path.join(args.out, "cross.json")
    stored = {"tasks": {}}
    if os.path.exists(path):
        with open(path) as fh:
            stored = json.load(fh)
    command = "python -m benchmarks.heldout_cross " + " ".join(argv or sys.argv[1:])
    for name in args.tasks or list(CROSS_TASKS):
        old = stored["tasks"].get(name, {})
        keys = {m: model_key(name, m) for m in args.models}
        todo = [m for m in args.models if args.fresh or old.get("model_keys", {}).get(m) != keys[m]]
        if not todo:
            log(f"{name}: {' '.join(args.models)} unchanged, kept")
            continue
        kept = {m: p for m, p in stored_predictions(args.out, name, old, old.get("classes", [])).items()
                if m not in todo}
        log(f"{name}: {CROSS_TASKS[name][2]}; predicting {' '.join(todo)}, keeping {' '.join(kept) or 'nothing'}")
        record = run_task(name, args.out, tuple(todo), kept)
        record["model_keys"] = {m: k for m, k in old.get("model_keys", {}).items() if m in kept}
        record["model_keys"].update({m: keys[m] for m in todo})
        record["commands"] = {**{m: c for m, c in old.get("commands", {}).items() if m in kept},
                              **{m: command for m in todo}}
        stored["tasks"][name] = record
        atomic_write(path, json.dumps(stored, indent=1, default=json_default) + "\n")
        log(f"{name}: done in {record['seconds_total']} s")
    return 0



if __name__ == "__main__":
    raise SystemExit(main())
