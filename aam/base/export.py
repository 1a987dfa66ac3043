"""Turn a corpus pretraining run into a shipped base directory (weights, metrics, model card, manifest).

    python -m aam.base.export --run base-run --name ag-pgp-v4

Writes ``aam/assets/bases/<name>/`` (or --dest): ``model.pt`` (the run's best base without optimizer state),
``base.json`` (read length, truncations, corpus, reference encoder), ``metrics.json`` and ``history.tsv`` (the run's
validation metrics and epochs), ``MODEL_CARD.md`` and ``LICENSE`` (generated, so the card always states the
shipped run's figures), and ``manifest.json`` with the SHA-256 of each. Refuses to ship more than 10 MB.
"""
import argparse
import json
import os
import shutil
import sys

from aam.base.shipped import BASES_DIR, FORMAT_VERSION, META_FILE, MODEL_FILE
from aam.reference.encoder_files import seal, write_json
from aam.checkpoint import atomic_write
from aam.errors import AAMInputError

RUN_INFO = "corpus.json"  # written by aam.base.pretrain into its run directory




def _write_text(path, text):
    def write(tmp):
        with open(tmp, "w") as fh:
            fh.write(text)
    atomic_write(path, write)


def run_metrics(checkpoint, info):
    """metrics.json of a run: the best epoch's validation figures, the epochs run, the command."""
    training = checkpoint.record.training
    history = list(training.history) if training else []
    best = next((row for row in history if row.get("epoch") == training.best_epoch), {}) if training else {}
    return {"best_epoch": training.best_epoch if training else None, "epochs_run": len(history),
            "selection_metric": training.selection_metric if training else None,
            "validation": {k[4:]: v for k, v in best.items() if k.startswith("val/")},
            "training_seconds": round(sum(float(r.get("seconds", 0.0)) for r in history), 1),
            "command": info.get("command"), "samples": {"training": len(checkpoint.record.data.train_samples),
                                                        "validation": len(checkpoint.record.data.validation_samples)}}


def export_base(run, name, dest=None, log=print, measured=None):
    """Write the shipped files of the corpus run in `run` under `dest` (default aam/assets/bases/<name>); `measured`:
    a markdown file of the base's held-out figures, put in the model card."""
    from aam.base.model_card import license_text, model_card
    from aam.rundir import RunDirectory
    info_path = os.path.join(run, RUN_INFO)
    if not os.path.isfile(info_path) or not os.path.isfile(os.path.join(run, "model.pt")):
        raise AAMInputError(f"{run} is not a finished corpus pretraining run (no {RUN_INFO} or model.pt): run "
                            "python -m aam.base.pretrain --out RUN (or make base) first, or --resume it to the end.")
    run_dir = RunDirectory(run)
    checkpoint = run_dir.read_model(expect="encoder")
    with open(info_path) as fh:
        info = json.load(fh)
    dest = dest or os.path.join(BASES_DIR, name)
    os.makedirs(dest, exist_ok=True)
    checkpoint.save(os.path.join(dest, MODEL_FILE), include_training_state=False)
    meta = {"name": name, "format_version": FORMAT_VERSION, "read_length": checkpoint.record.max_bp,
            "truncations": info["truncations"], "truncate_fraction": info["truncate_fraction"],
            "corpus": info["corpus"], "asv_encoder": checkpoint.record.asv_encoder}
    write_json(os.path.join(dest, META_FILE), meta)
    metrics = run_metrics(checkpoint, info)
    write_json(os.path.join(dest, "metrics.json"), metrics)
    shutil.copyfile(run_dir.history_file, os.path.join(dest, "history.tsv"))
    report = None
    if measured:
        with open(measured) as fh:
            report = fh.read()
    _write_text(os.path.join(dest, "MODEL_CARD.md"), model_card(name, checkpoint, meta, metrics, info, report))
    _write_text(os.path.join(dest, "LICENSE"), license_text(name))
    files = [MODEL_FILE, META_FILE, "metrics.json", "history.tsv", "MODEL_CARD.md", "LICENSE"]
    manifest, total = seal(dest, name, FORMAT_VERSION, files)
    log(f"wrote {dest}: {', '.join(files)} ({total / 1e6:.2f} MB); {MODEL_FILE} sha256 "
        f"{manifest['files'][MODEL_FILE]}")
    return dest


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m aam.base.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="run directory of aam.base.pretrain")
    p.add_argument("--name", required=True, help="base name (directory under aam/assets/bases)")
    p.add_argument("--dest", help="output directory (default aam/assets/bases/NAME)")
    p.add_argument("--measured", help="markdown of the base's held-out figures for the model card (e.g. "
                                      "benchmarks/results/base_yardstick.md, written by python -m benchmarks.heldout "
                                      "--report-only)")
    args = p.parse_args(argv)
    try:
        export_base(args.run, args.name, args.dest, measured=args.measured)
    except AAMInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
