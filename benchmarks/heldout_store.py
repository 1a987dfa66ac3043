"""Storage of the held-out benchmark: results.json (under a lock), the folds and predictions files.

Everything that reads or writes `benchmarks/results/heldout/` goes through here, so that the orchestration
(`benchmarks.heldout`), the scoring (`benchmarks.heldout_scoring`) and the report (`benchmarks.heldout_report`)
import it without importing each other.
"""
import contextlib
import json
import os
import tempfile

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "heldout")
SCHEMA = "aam-heldout/1"
FRACTION_FMT = "{:g}"


def atomic_write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make committed results unreadable to others
    os.replace(tmp, path)


def load_results(out_dir):
    path = os.path.join(out_dir, "results.json")
    if not os.path.exists(path):
        return {"schema": SCHEMA, "runs": {}, "tasks": {}}
    with open(path) as fh:
        res = json.load(fh)
    if res.get("schema") != SCHEMA:
        raise SystemExit(f"{path} was written by another version of the harness ({res.get('schema')!r}); "
                         "move it away or rerun with --fresh.")
    return res


def predictions_path(out_dir, task):
    return os.path.join(out_dir, "predictions", f"{task}.tsv")


def folds_path(out_dir, task):
    return os.path.join(out_dir, "folds", f"{task}.tsv")


def read_predictions(out_dir, task, classes):
    path = predictions_path(out_dir, task)
    if not os.path.exists(path):
        return pd.DataFrame()
    dtype = {"sample_id": str, "model": str, "truth": str if classes else float,
             "prediction": str if classes else float}
    return pd.read_csv(path, sep="\t", dtype=dtype)


def write_folds_file(out_dir, data, fold_of, splits):
    """The folds of a task: one row per sample with its group, fold, the fold's depth and whether it is scored."""
    rows = []
    depth = {sp.index: sp.depth for sp in splits}
    below = {s for sp in splits for s in sp.below_depth}
    for s in data.sample_ids:
        f = int(fold_of[s])
        rows.append({"sample_id": s, "group": data.groups[s], "fold": f, "target": data.y[s],
                     "reads": int(data.reads[s]), "fold_depth": depth[f],
                     "scored": "no: below depth" if s in below else "yes"})
    frame = pd.DataFrame(rows)
    atomic_write(folds_path(out_dir, data.task.name), frame.to_csv(sep="\t", index=False))
    return frame


def fingerprint(frame):
    """A short hash of a task's fold assignment and depths: results can only be merged when it is equal."""
    import hashlib
    text = frame[["sample_id", "group", "fold", "fold_depth", "scored"]].to_csv(sep="\t", index=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextlib.contextmanager
def locked_results(out_dir):
    """The stored results, read and written back under an exclusive lock: runs on other tasks or models may
    write to the same folder at the same time."""
    import fcntl
    import hashlib
    os.makedirs(out_dir, exist_ok=True)
    # the lock file lives outside the results folder, which is committed
    tag = hashlib.sha256(os.path.abspath(out_dir).encode()).hexdigest()[:12]
    with open(os.path.join(tempfile.gettempdir(), f"aam-heldout-{tag}.lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            results = load_results(out_dir)
            yield results
            atomic_write(os.path.join(out_dir, "results.json"), json.dumps(results, indent=1) + "\n")
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def json_safe(obj):
    """A JSON-able copy of a recipe's info (numpy scalars to Python, anything else to str)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def json_default(obj):
    """numpy scalars as JSON numbers (``json.dumps(..., default=json_default)``)."""
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    raise TypeError(f"not JSON-able: {type(obj).__name__}")
