"""Held-out benchmark: every model scored on the same held-out samples of real studies, by grouped k-fold CV.

``make heldout`` runs it in full; ``python -m benchmarks.heldout --help`` lists the options. For each task
(`benchmarks.heldout_tasks`): folds fixed by a seed and written out (grouped by subject / house / sampling
event where samples repeat), a rarefaction depth chosen on each fold's training samples only and one shared
rarefied draw, then every model recipe (`benchmarks.heldout_models`) trained on the training side and asked for
every held-out sample. Scores are computed on the held-out samples that every model of the task scored; a sample
a model does not predict is counted against that model, never dropped silently.

Outputs (``--out``, default benchmarks/results/heldout/): ``results.json`` (every figure per task, model, label
fraction and fold, the runs that made them), ``folds/<task>.tsv`` (sample, group, fold, depth, whether it was
scored), ``predictions/<task>.tsv`` (per sample and model); then ``docs/science.md`` and its figures
(`benchmarks.heldout_report`). A run with a subset of tasks or models merges into the existing results: entries
it re-ran are replaced, the others kept if their folds are the same.
"""
import argparse
import datetime
import importlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
import warnings

import numpy as np
import pandas as pd

from benchmarks import heldout_baselines
from benchmarks import heldout_models as M
from benchmarks import heldout_base, heldout_semi
from benchmarks import heldout_tasks as T
from benchmarks.heldout_scoring import REFERENCE, rescore, score_task
from benchmarks.heldout_store import (FRACTION_FMT, RESULTS, SCHEMA, atomic_write, fingerprint,
                                      folds_path, json_safe, load_results, locked_results, predictions_path,
                                      read_predictions, write_folds_file)

#: modules whose import registers recipes beside heldout_models' own
RECIPE_MODULES = (heldout_baselines, heldout_semi, heldout_base)
#: what this module offers callers from the store and the scoring modules it was split into
__all__ = ["main", "log", "REFERENCE", "rescore", "score_task", "FRACTION_FMT", "RESULTS", "SCHEMA", "atomic_write",
           "fingerprint", "folds_path", "json_safe", "load_results", "locked_results", "predictions_path",
           "read_predictions", "write_folds_file", "RECIPE_MODULES"]

DOCS = os.path.join(T.REPO, "docs", "science.md")


def log(msg):
    print(f"[heldout {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ running

def run_model(rec, fold, seed, budget, strict):
    """Call one recipe on one fold; returns (Prediction or None, seconds, error text or None)."""
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=FutureWarning)
            pred = rec.fn(fold, seed, budget)
    except Exception as err:  # a failing model is recorded and the run goes on (--strict re-raises)
        if strict:
            raise
        log(f"{rec.name} failed on fold {fold.index}: {err}\n{traceback.format_exc()}")
        return None, time.perf_counter() - t0, f"{type(err).__name__}: {err}"
    seconds = time.perf_counter() - t0
    if not isinstance(pred, M.Prediction):
        raise TypeError(f"recipe {rec.name!r} returned {type(pred).__name__}, not a Prediction")
    # work done once and shared (e.g. one pretraining for every label fraction) counts in every row that uses it
    seconds += float(pred.info.get("reused_seconds", 0.0))
    return pred, seconds, None


def prediction_rows(rec_name, fraction, fold, pred, classes, truth):
    """Rows of the predictions file for one model and fold; checks what the recipe returned."""
    values = pred.values.copy()
    values.index = values.index.astype(str)
    unknown = sorted(set(values.index) - set(fold.test.ids))
    if unknown:
        raise ValueError(f"recipe {rec_name!r} predicted samples that are not held out in fold {fold.index}: "
                         f"{unknown[:5]}")
    values = values[~values.index.duplicated()]
    if not classes:
        values = pd.to_numeric(values, errors="coerce")
    values = values[values.notna()]
    rows = pd.DataFrame({"model": rec_name, "label_fraction": fraction, "fold": fold.index,
                         "sample_id": list(values.index), "truth": truth.loc[values.index].to_numpy(),
                         "prediction": values.to_numpy()})
    if classes:
        rows["prediction"] = rows["prediction"].astype(str)
        prob = pred.probabilities
        for c in classes:
            col = f"p:{c}"
            if prob is None:
                rows[col] = np.nan
            else:
                prob = prob.copy()
                prob.index = prob.index.astype(str)
                # a class absent from the training fold gets probability 0 from that model
                rows[col] = prob[c].reindex(values.index).fillna(0.0).to_numpy() if c in prob.columns else 0.0
    return rows


def fold_key(task):
    """Tasks with equal keys have the same samples' folds (same study, grouping and stratification): they run
    together, fold by fold, so they share rarefied draws, distances and pretrained encoders."""
    stratify = task.fold_stratify or (task.column if task.classifier else None)
    return (task.folder, task.table, task.metadata, task.group, task.keep, stratify, task.max_groups,
            task.depth_matched, task.fixed_depth)


def prepare_task(task, args, out_dir):
    """Load a task, fix its folds, write its folds file; returns (data, folds frame, task info)."""
    data = T.load_task(task, seed=args.seed)
    for note in data.notes:
        log(f"{task.name}: {note}")
    fold_of = T.assign_folds(data, args.folds, args.seed)
    splits = [T.FoldSplit(data, fold_of, i, args.keep_fraction, args.seed) for i in range(args.folds)]
    log(f"{task.name}: {len(data.sample_ids)} samples, {data.groups.nunique()} groups, "
        f"{data.table.shape[0]} features; {args.folds} folds, depths {[sp.depth for sp in splits]}")
    frame = write_folds_file(out_dir, data, fold_of, splits)
    return data, frame, task_info(data, splits, fingerprint(frame))




def run_unit(task_names, fold_index, settings):
    """Every model and label fraction of one fold of tasks that share folds (a unit of work; may run in a worker
    process). Returns one dict per task: prediction rows, timings, distance seconds."""
    import importlib
    import torch
    torch.set_num_threads(max(1, settings["threads"]))
    for module in settings.get("recipe_modules") or []:
        importlib.import_module(module)
    tasks = T.task_table(settings["quick"], settings.get("full", False))
    budget = M.Budget(**settings["budget"])
    out = []
    for name in task_names:
        task = tasks[name]
        data = T.load_task(task, seed=settings["seed"])
        fold_of = T.assign_folds(data, settings["folds"], settings["seed"])
        sp = T.FoldSplit(data, fold_of, fold_index, settings["keep_fraction"], settings["seed"])
        prev = out[-1]["_split"] if out else None
        if prev is not None and (prev.pool_ids, prev.test_ids, prev.depth) == (sp.pool_ids, sp.test_ids, sp.depth):
            sp._cache = prev._cache  # same samples and depth as the previous task: same draw, same distances
        runnable = [m for m in settings["models"] if task.kind in M.RECIPES[m].kinds]
        dist_seconds = None
        if any(M.RECIPES[m].needs_distances for m in runnable) and "distances" not in sp._cache:
            t0 = time.perf_counter()
            sp.fold(1.0).distances()
            dist_seconds = round(time.perf_counter() - t0, 2)
        rows, timing = [], {}
        for fraction in settings["label_fractions"]:
            fold = sp.fold(fraction)
            for recipe_name in runnable:
                rec = M.RECIPES[recipe_name]
                # stored under the tag as well, so one recipe under two budgets gives two rows
                model = recipe_name + (f":{settings['tag']}" if settings.get("tag") else "")
                pred, seconds, error = run_model(rec, fold, settings["seed"], budget, settings["strict"])
                item = {"fold": fold_index, "seconds": round(seconds, 2), "n_train": len(fold.train.ids),
                        "n_train_groups": int(fold.train.groups.nunique()), "error": error,
                        "info": json_safe(pred.info) if pred is not None else {}}
                timing[f"{model}@{FRACTION_FMT.format(fraction)}"] = item
                where = f"{name} fold {fold_index + 1}/{settings['folds']} f={fraction:g} {model}"
                if pred is None:
                    log(f"{where}: failed ({error})")
                    continue
                r = prediction_rows(model, fraction, fold, pred, data.classes, data.y)
                rows.append(r)
                missing = len(fold.test.ids) - len(r)
                log(f"{where}: {seconds:.1f} s, {len(r)}/{len(fold.test.ids)} scored"
                    + (f" ({missing} unscored)" if missing else ""))
        out.append({"task": name, "fold": fold_index, "rows": pd.concat(rows) if rows else pd.DataFrame(),
                    "timing": timing, "distance_seconds": dist_seconds, "_split": sp})
    for item in out:
        item.pop("_split")
    return out


def merge_task(results, name, data, frame, info, unit_results, run_id, out_dir):
    """Merge a task's new rows and timings into its predictions file and stored entry, and score it again.

    Call under `locked_results`. Stored models of the task are kept if their folds are the ones used now
    (same fingerprint), dropped otherwise.
    """
    entry = results["tasks"].get(name)
    if entry is not None and entry.get("fingerprint") != info["fingerprint"]:
        if entry.get("runs_by_model"):
            log(f"{name}: folds differ from the stored results ({entry.get('fingerprint')} -> "
                f"{info['fingerprint']}); the stored models of this task are dropped")
        entry = None
        if os.path.exists(predictions_path(out_dir, name)):
            os.remove(predictions_path(out_dir, name))
    entry = entry or {"runs_by_model": {}, "timing": {}}
    entry.update(info)
    new_rows = [u["rows"] for u in unit_results if len(u["rows"])]
    timing = {}
    for u in sorted(unit_results, key=lambda u: u["fold"]):
        for key, item in u["timing"].items():
            timing.setdefault(key, []).append(item)
        if u["distance_seconds"] is not None:
            entry["folds"][u["fold"]]["distance_seconds"] = u["distance_seconds"]
    # the (model, fraction) pairs run now replace what was stored for them
    old = read_predictions(out_dir, name, data.classes)
    if len(old):
        keys = old["model"] + "@" + old["label_fraction"].map(FRACTION_FMT.format)
        old = old[~keys.isin(set(timing))]
    preds = pd.concat([old] + new_rows, ignore_index=True) if new_rows or len(old) else pd.DataFrame()
    if len(preds):
        preds = preds.sort_values(["model", "label_fraction", "fold", "sample_id"], kind="stable")
        atomic_write(predictions_path(out_dir, name), preds.to_csv(sep="\t", index=False, float_format="%.6g"))
        # scores come from the file as written, so that scoring it again (--report-only) gives the same figures
        preds = read_predictions(out_dir, name, data.classes)
    for key, items in timing.items():
        entry["timing"][key] = items
        entry["runs_by_model"][key] = run_id
    entry["results"] = score_task(entry, preds, data, frame)
    results["tasks"][name] = entry
    _prune_runs(results, keep=run_id)


def run_all(names, tasks, settings, run_record, out_dir, run_id, jobs):
    """Run every (tasks sharing folds, fold) unit, in `jobs` processes; merge each task when its folds are done."""
    import concurrent.futures as cf
    import multiprocessing
    prepared = {name: prepare_task(tasks[name], argparse.Namespace(**settings), out_dir) for name in names}
    groups = {}
    for name in names:
        groups.setdefault(fold_key(tasks[name]), []).append(name)
    # largest tables first, so that the longest units do not start last
    order = sorted(groups.values(), key=lambda g: -prepared[g[0]][0].table.nnz)
    units = [(g, i) for g in order for i in range(settings["folds"])]
    done = {name: [] for name in names}

    def collect(unit_out):
        for item in unit_out:
            name = item["task"]
            done[name].append(item)
            if len(done[name]) == settings["folds"]:
                data, frame, info = prepared[name]
                with locked_results(out_dir) as results:
                    results["runs"][run_id] = run_record
                    merge_task(results, name, data, frame, info, done[name], run_id, out_dir)
                log(f"{name}: all folds done; results written")

    if settings.get("resume"):
        units = _from_cache(units, out_dir, settings, collect)

    def finished(g, i, unit_out):
        if settings.get("resume"):
            unit_cache_save(out_dir, g, i, settings, unit_out)
        collect(unit_out)

    if jobs <= 1:
        for g, i in units:
            finished(g, i, run_unit(g, i, settings))
        return
    ctx = multiprocessing.get_context("spawn")  # no forked copies of torch's or BLAS's thread pools
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = {pool.submit(run_unit, g, i, settings): (g, i) for g, i in units}
        for fut in cf.as_completed(futures):
            finished(*futures[fut], fut.result())


def _from_cache(units, out_dir, settings, collect):
    """Collect the units cached by an earlier sitting; returns the others, still to run."""
    todo = []
    for g, i in units:
        unit_out = unit_cache_load(out_dir, g, i, settings)
        if unit_out is None:
            todo.append((g, i))
            continue
        log(f"{', '.join(g)} fold {i + 1}: from the cache of an earlier sitting")
        collect(unit_out)
    return todo


def _unit_cache_base(out_dir, task_names, fold_index, settings):
    """Path stem of one unit's cached output; the key holds every setting that changes what the unit computes."""
    import hashlib
    keep = {k: v for k, v in settings.items() if k not in ("strict", "resume")}
    key = hashlib.sha256(json.dumps([list(task_names), fold_index, keep], sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(out_dir, "cache", f"{'+'.join(task_names)}.fold{fold_index}.{key}")


def unit_cache_save(out_dir, task_names, fold_index, settings, unit_out):
    """Keep one unit's output (per task: timings, distance seconds, prediction rows) for a later sitting: the rows
    of each task in a TSV of their own, then the JSON that marks the unit done."""
    base = _unit_cache_base(out_dir, task_names, fold_index, settings)
    for u in unit_out:
        atomic_write(f"{base}.{u['task']}.tsv", u["rows"].to_csv(sep="\t", index=False) if len(u["rows"]) else "")
    meta = [{k: u[k] for k in ("task", "fold", "timing", "distance_seconds")} for u in unit_out]
    atomic_write(base + ".json", json.dumps(meta) + "\n")


def unit_cache_load(out_dir, task_names, fold_index, settings):
    """A unit's output saved by `unit_cache_save` with the same settings, or None."""
    base = _unit_cache_base(out_dir, task_names, fold_index, settings)
    if not os.path.exists(base + ".json"):
        return None
    with open(base + ".json") as fh:
        meta = json.load(fh)
    for u in meta:
        path = f"{base}.{u['task']}.tsv"
        rows = pd.read_csv(path, sep="\t", dtype={"sample_id": str, "truth": str, "prediction": str}) \
            if os.path.getsize(path) else pd.DataFrame()
        if len(rows) and not any(c.startswith("p:") for c in rows.columns):  # a regression: numbers
            rows = rows.assign(truth=rows["truth"].astype(float), prediction=rows["prediction"].astype(float))
        u["rows"] = rows
    return meta


def task_info(data, splits, fp):
    t = data.task
    return {"study": t.study, "column": t.column, "kind": t.kind, "description": t.description,
            "group_columns": list(t.group) if t.group else None, "grouping": t.grouping, "beta": t.beta,
            "tree": os.path.basename(t.tree) if t.tree else None, "classes": data.classes, "positive": t.positive,
            "n_samples": len(data.sample_ids), "n_groups": int(data.groups.nunique()),
            "n_features": int(data.table.shape[0]), "notes": data.notes, "fingerprint": fp,
            "folds_file": os.path.relpath(folds_path("", t.name)),
            "predictions_file": os.path.relpath(predictions_path("", t.name)),
            "folds": [{"fold": sp.index, "depth": int(sp.depth), "n_train": len(sp.pool_ids),
                       "n_train_below_depth": len(sp.train_below_depth), "n_test": len(sp.test_ids),
                       "n_test_below_depth": len(sp.below_depth)} for sp in splits]}












# ------------------------------------------------------------------------------------------------ main

def machine():
    from benchmarks.common import cpu_model
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    return {"cpu": cpu_model(), "cores": cores, "python": sys.version.split()[0]}


def git_commit():
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=T.REPO, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=T.REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (rev + ("+uncommitted" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.heldout", description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", help="tasks to run (default: all whose data are present); see --list")
    ap.add_argument("--models", nargs="+", help="model recipes to run (default: every default recipe); see --list")
    ap.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    ap.add_argument("--seed", type=int, default=42, help="seed of folds, rarefaction, label subsets and models")
    ap.add_argument("--keep-fraction", type=float, default=0.9,
                    help="rarefaction depth keeps this share of each fold's training samples (default 0.9)")
    ap.add_argument("--label-fractions", type=float, nargs="+", default=[1.0],
                    help="shares of training subjects whose labels models get (seeded, nested; the held-out fold "
                         "stays fixed), e.g. 0.1 0.25 0.5 1.0 for a learning curve")
    ap.add_argument("--pretrain-epochs", type=int, default=None,
                    help="AAM pretraining epochs (a budget; default: the engine's default)")
    ap.add_argument("--train-epochs", type=int, default=None,
                    help="AAM fine-tuning epochs (a budget; default: the engine's default)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per model (default 1)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="worker processes, each running one fold of a task at a time (default 1: in this process)")
    ap.add_argument("--tag", help="store this run's models as <model>:<tag> (e.g. a budget: --tag p20), beside "
                                  "the untagged rows instead of replacing them")
    ap.add_argument("--recipes", nargs="+", metavar="MODULE",
                    help="modules to import that register more recipes (e.g. benchmarks.my_variants)")
    ap.add_argument("--quick", action="store_true",
                    help="small slices (tests/data; ecam slice when ../shared is present), 3 folds, tiny AAM: a "
                         "smoke test of the harness; writes to a temporary folder unless --out is given")
    ap.add_argument("--out", help=f"results folder (default {os.path.relpath(RESULTS, T.REPO)})")
    ap.add_argument("--docs", help="markdown page to generate (default docs/science.md; figures beside it in "
                                   "figures/heldout/)")
    ap.add_argument("--no-docs", action="store_true", help="do not regenerate the docs page")
    ap.add_argument("--report-only", action="store_true",
                    help="only score the stored predictions again and regenerate the docs")
    ap.add_argument("--fresh", action="store_true", help="discard stored results in --out first")
    ap.add_argument("--strict", action="store_true", help="a failing model stops the run (default: recorded)")
    ap.add_argument("--select", nargs="+", metavar="RECIPE",
                    help="nested selection instead of a run: score these 2-3 recipes by a 3-fold grouped inner CV on "
                         "every training fold of the tasks (held-out folds never read; cached per task-fold in "
                         "<out>/select/, so a second call resumes) and pool the choices over tasks by mean rank")
    ap.add_argument("--full", action="store_true",
                    help="also the larger tasks of make heldout-full (American Gut; see --list --full)")
    ap.add_argument("--resume", action="store_true",
                    help="keep each finished (task, fold) unit in <out>/cache/ and take units found there instead "
                         "of running them again (same settings): a run interrupted by the end of a session resumes")
    ap.add_argument("--list", action="store_true", help="list tasks and models, then exit")
    return ap.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    tasks = T.task_table(args.quick, args.full)
    for module in args.recipes or []:
        importlib.import_module(module)
    if args.list:
        _list(tasks)
        return 0
    out_dir, docs = _output_paths(args)
    if args.report_only:
        _write_report(out_dir, docs, rescore_first=True)
        return 0
    names = _task_names(args, tasks)
    if not names:
        log("no task has its data here (../shared/data is absent?); nothing to run.")
        return 0
    budget = _budget(args)
    if args.select:
        from benchmarks import heldout_select
        settings = {"seed": args.seed, "folds": args.folds, "keep_fraction": args.keep_fraction,
                    "budget": budget.to_dict()}
        heldout_select.run_selection(names, tasks, args.select, settings, out_dir, log)
        return 0
    models = _model_names(args)
    if args.fresh and os.path.isdir(out_dir):
        import shutil
        shutil.rmtree(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    load_results(out_dir)  # fails early on results of another harness version
    run_id = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_record = {
        "command": "python -m benchmarks.heldout " + " ".join(shlex.quote(a) for a in argv),
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "machine": machine(), "git": git_commit(),
        "budget": budget.to_dict(), "seed": args.seed, "folds": args.folds, "keep_fraction": args.keep_fraction,
        "label_fractions": args.label_fractions, "tasks": names, "models": models, "tag": args.tag, "jobs": args.jobs,
        "threads": args.threads, "quick": args.quick}
    log(f"run {run_id}: tasks {names}; models {models}; budget {budget.to_dict()}; {args.jobs} process(es); "
        f"results in {out_dir}")
    settings = {"quick": args.quick, "seed": args.seed, "folds": args.folds, "keep_fraction": args.keep_fraction,
                "label_fractions": list(args.label_fractions), "models": models, "budget": budget.to_dict(),
                "threads": args.threads, "strict": args.strict, "recipe_modules": list(args.recipes or []),
                "tag": args.tag, "full": args.full, "resume": args.resume}
    t0 = time.perf_counter()
    run_all(names, tasks, settings, run_record, out_dir, run_id, args.jobs)
    run_record["seconds"] = round(time.perf_counter() - t0, 1)
    with locked_results(out_dir) as results:
        results["runs"][run_id] = run_record
    log(f"done in {time.perf_counter() - t0:.0f} s")
    if not args.no_docs:
        _write_report(out_dir, docs)
    return 0


def _list(tasks):
    for t in tasks.values():
        print(f"task  {t.name:18s} {t.kind:14s} {t.description}" + ("" if T.available(t) else "  [data absent]"))
    for r in M.RECIPES.values():
        print(f"model {r.name:18s} {'(default) ' if r.default else ''}{r.description}")


def _output_paths(args):
    """(results folder, docs page): a quick run writes to a temporary folder; results elsewhere than the project's
    get their page beside them, never over the project's docs."""
    if args.quick:
        args.folds = min(args.folds, 3)
        out_dir = args.out or os.path.join(tempfile.gettempdir(), "aam-heldout-quick")
        docs = args.docs or os.path.join(out_dir, "science.md")
    else:
        out_dir = args.out or RESULTS
        docs = args.docs or (DOCS if os.path.abspath(out_dir) == os.path.abspath(RESULTS)
                             else os.path.join(out_dir, "science.md"))
    return os.path.abspath(out_dir), docs


def _write_report(out_dir, docs, rescore_first=False):
    from benchmarks import heldout_report
    if rescore_first:
        with locked_results(out_dir) as results:
            rescore(results, out_dir)
    results = load_results(out_dir)
    heldout_report.write(results, out_dir, docs, log=log)
    log(f"wrote {docs}")
    _readme(results, out_dir, docs)


def _task_names(args, tasks):
    """The tasks to run: those asked for (or all), less those whose data are absent (said in the log)."""
    names = args.tasks or [n for n, t in tasks.items() if T.available(t)]
    unknown = [n for n in names if n not in tasks]
    if unknown:
        raise SystemExit(f"unknown task(s) {unknown}; choose from {sorted(tasks)}")
    missing = [n for n in names if not T.available(tasks[n])]
    if missing:
        log(f"skipping {missing}: data not found (expected under {T.SHARED_DATA})")
    return [n for n in names if n not in missing]


def _model_names(args):
    models = args.models or [n for n, r in M.RECIPES.items() if r.default]
    bad = [m for m in models if m not in M.RECIPES]
    if bad:
        raise SystemExit(f"unknown model(s) {bad}; choose from {sorted(M.RECIPES)}")
    if args.tag and not all(c.isalnum() or c in "-_." for c in args.tag):
        raise SystemExit(f"--tag {args.tag!r}: use letters, digits, '-', '_' or '.'")
    return models


def _budget(args):
    budget = M.Budget(threads=args.threads, quick=args.quick)
    if args.quick:
        budget.pretrain_epochs, budget.train_epochs = 1, 2
    if args.pretrain_epochs:
        budget.pretrain_epochs = args.pretrain_epochs
    if args.train_epochs:
        budget.train_epochs = args.train_epochs
    return budget


def _readme(results, out_dir, docs):
    """The README's summary table follows the project's own results (not quick runs or other folders)."""
    from benchmarks import heldout_report
    if os.path.abspath(out_dir) == os.path.abspath(RESULTS) and os.path.abspath(docs) == os.path.abspath(DOCS):
        if heldout_report.update_readme(results, os.path.join(T.REPO, "README.md"), out_dir=out_dir):
            log("updated the summary table in README.md")


def _prune_runs(results, keep=None):
    """Keep only the run records some stored result still comes from (and `keep`)."""
    used = {r for t in results["tasks"].values() for r in t.get("runs_by_model", {}).values()}
    results["runs"] = {k: v for k, v in results["runs"].items() if k in used or k == keep}


if __name__ == "__main__":
    raise SystemExit(main())
