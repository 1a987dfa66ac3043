"""Turn a pretraining run into a shipped encoder directory (weights, region signature, metrics, manifest).

    python -m aam.reference.export --run encoder-run/gg13_8-v4 --name gg13_8-v4-d64

Writes ``aam/assets/encoders/<name>/`` (or --dest): ``weights.pt`` (the ASVEncoder's state_dict only: the
pretraining heads stay behind), ``region.json`` (primers, read lengths and the first-8-nt prefixes of the
reference V4 amplicons, for `region_report`), ``metrics.json`` and ``holdout.tsv`` copied from the run, and
``manifest.json`` with the SHA-256 of each (the run's ``pretrain.log`` is copied too, as the record of
training). MODEL_CARD.md and LICENSE are written by hand and left alone.
"""
import argparse
import json
import os
import shutil
import sys

import torch

from aam.checkpoint import atomic_write
from aam.reference.amplicons import PRIMERS, REGIONS, cut_region
from aam.reference.greengenes import read_sequences
from aam.reference.region import prefix_signature
from aam.reference.encoder_files import seal, write_json
from aam.reference.shipped import ENCODERS_DIR, FORMAT_VERSION, WEIGHTS_FORMAT

PREFIX_LENGTH = 8


def _reference_version():
    try:
        from importlib.metadata import version
        return f"qiime-default-reference {version('qiime-default-reference')} (Greengenes 13_8, 97% OTUs)"
    except Exception:
        return "Greengenes 13_8, 97% OTUs"


def export(run_dir, name, dest=None, log=print):
    """Write the shipped files of the run in `run_dir` under `dest` (default aam/assets/encoders/<name>)."""
    dest = dest or os.path.join(ENCODERS_DIR, name)
    os.makedirs(dest, exist_ok=True)
    final = torch.load(os.path.join(run_dir, "final.pt"), map_location="cpu", weights_only=True)
    summary = json.loads(final["config"])
    settings = summary["settings"]
    state = {k[len("asv_encoder."):]: v.clone() for k, v in final["model"].items() if k.startswith("asv_encoder.")}
    meta = {"name": name, "encoder_config": summary["encoder_config"],
            "tokenizer": {"max_bp": summary["encoder_config"]["max_bp"]},
            "reference": _reference_version(),
            "region": "V4 (515F/806R)", "read_lengths": settings["read_lengths"],
            "training": {k: settings[k] for k in settings if k not in ("sequences", "taxonomy", "tree")},
            "classes_per_rank": {rank: len(c) for rank, c in zip(
                ("kingdom", "phylum", "class", "order", "family", "genus", "species"), summary["classes"])}}
    blob = {"format": WEIGHTS_FORMAT, "format_version": FORMAT_VERSION, "config": json.dumps(meta, sort_keys=True),
            "state_dict": state}
    atomic_write(os.path.join(dest, "weights.pt"), lambda tmp: _save(blob, tmp))

    v4 = cut_region(read_sequences(settings["sequences"]), REGIONS["V4"])
    region = {"name": name, "region": "V4 (515F/806R)", "forward_primer": PRIMERS["515F"],
              "reverse_primer": PRIMERS["806R"], "read_lengths": settings["read_lengths"],
              "max_bp": summary["encoder_config"]["max_bp"], "prefix_length": PREFIX_LENGTH,
              "prefixes": prefix_signature(v4.values(), PREFIX_LENGTH),
              "amplicons": len(v4), "reference": _reference_version()}
    write_json(os.path.join(dest, "region.json"), region)
    files = ["weights.pt", "region.json"]
    for extra in ("metrics.json", "holdout.tsv", "amplicons.json", "pretrain.log"):
        src = os.path.join(run_dir, extra)
        if os.path.exists(src):
            shutil.copyfile(src, os.path.join(dest, extra))
            files.append(extra)
    manifest, total = seal(dest, name, FORMAT_VERSION, files)
    log(f"wrote {dest}: {', '.join(files)} ({total / 1e6:.2f} MB); weights.pt sha256 "
        f"{manifest['files']['weights.pt']}")
    return dest


def _save(obj, path):
    # through a file object: given a path, torch names the zip members after its stem (here a random temporary
    # name), and the file would differ byte for byte between two exports of the same weights
    with open(path, "wb") as fh:
        torch.save(obj, fh)




def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m aam.reference.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="run directory of aam.reference.pretrain")
    p.add_argument("--name", required=True, help="encoder name (directory under aam/assets/encoders)")
    p.add_argument("--dest", help="output directory (default aam/assets/encoders/NAME)")
    args = p.parse_args(argv)
    export(args.run, args.name, args.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
