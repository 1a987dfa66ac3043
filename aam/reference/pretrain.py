"""Pretrain the ASV encoder on reference V4 amplicons (Greengenes 13_8 by default).

    python -m aam.reference.pretrain --out encoder-run

The model is exactly the engine's `ASVEncoder` built from an `EncoderConfig` (so its weights load into
``SequenceEncoder.asv_encoder`` of any study model of that shape), plus pretraining-only heads that are not
shipped. Three objectives, summed:

* masked nucleotides: 15% of the A/C/G/T positions become MASK, the encoder's nucleotide head predicts them
  (cross-entropy, the engine's masking);
* taxonomy: one linear head per rank (kingdom ... species) on the ASV embedding, cross-entropy ignoring empty
  ranks, averaged over the ranks that have labels in the batch;
* phylogenetic placement: ``scale * ||e_a - e_b||`` fitted to the patristic distance of the two OTUs' tips in the
  reference tree (mean squared error), for all pairs of a batch. Batches are groups of OTUs that are close in
  the tree (neighbours in tip order) drawn at random anchors, so a batch has close pairs (within a group) as
  well as distant ones; both kinds get equal weight.

Every batch is made of reads trimmed to 100, 120 or 150 nt (drawn per batch), i.e. what deblur / DADA2 tables
of the 515F/806R V4 amplicon hold; full V4 is 150 nt to an encoder with max_bp 150.

Batches, read lengths and masks depend only on (seed, step), so a resumed run sees exactly the batches the
uninterrupted run would have seen. Progress goes to the log every --log-every steps, scalars to TensorBoard, a
resumable checkpoint (tensors + JSON, weights-only loadable) every --checkpoint-every steps.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from aam.checkpoint import atomic_write
from aam.data.tokenizer import PAD
from aam.errors import AAMInputError
from aam.models.config import EncoderConfig
from aam.reference.data import IGNORE, prepare_reference, truncate_rows
from aam.reference.evaluate import validation_metrics
from aam.reference.greengenes import RANKS, reference_paths
from aam.reference.model import ReferencePretrainer, mask_nucleotides
from aam.training.optim import build_optimizer, build_scheduler

CHECKPOINT_FORMAT = "aam-reference-pretraining"
READ_LENGTHS = (100, 120, 150)


def draw_batch(train_order, step, seed, batch_size, group_size, window):
    """Training rows of one step: `batch_size // group_size` groups of OTUs that are neighbours in the tree.

    Parameters
    ----------
    train_order : np.ndarray of int64
        Training rows sorted by their position in the tree (tips next to each other are close relatives).
    step, seed : int
    batch_size, group_size, window : int
        Each group is an anchor and `group_size - 1` other rows within `window` places of it in `train_order`.

    Returns
    -------
    rows : np.ndarray of int64, shape [batch_size]
    group : np.ndarray of int64, shape [batch_size]
        Group number of each row.
    rng : np.random.Generator
        The step's generator, for read lengths and masks.
    """
    rng = np.random.default_rng([int(seed), int(step), 4217])
    n = len(train_order)
    groups = max(1, batch_size // group_size)
    anchors = rng.integers(0, n, size=groups)                                     # [G]
    offsets = rng.integers(-window, window + 1, size=(groups, group_size))        # [G, g]
    offsets[:, 0] = 0
    places = np.clip(anchors[:, None] + offsets, 0, n - 1)                         # [G, g]
    rows = train_order[places.reshape(-1)]                                         # [G*g]
    group = np.repeat(np.arange(groups), group_size)                               # [G*g]
    return rows, group, rng


def make_inputs(tokens, rows, rng, mask_ratio, read_lengths=READ_LENGTHS):
    """Token rows of `rows` trimmed to one read length drawn for the batch, masked; padding columns trimmed.

    One length per batch rather than per row: a table's ASVs all have the same length, and a batch without
    padding costs about a fifth less than one padded to 150 nt.

    Returns
    -------
    tokens : torch.LongTensor, shape [n, L']
    targets : torch.LongTensor, shape [n, L'] (IGNORE where not masked)
    lengths : np.ndarray of int, shape [n]
    """
    lengths = np.full(len(rows), int(rng.choice(np.asarray(read_lengths))))        # [n]
    batch = truncate_rows(tokens[rows], lengths)                                   # [n, L]
    used = int((batch != PAD).sum(1).max())
    batch = torch.from_numpy(batch[:, :used].astype(np.int64))                     # [n, L']
    if mask_ratio > 0:
        masked, targets = mask_nucleotides(batch, mask_ratio, rng)
    else:
        masked, targets = batch, torch.full_like(batch, IGNORE)
    return masked, targets, lengths


def pretraining_losses(model, tokens, targets, labels, tree_distances, group, weights):
    """The three objectives on one batch.

    Parameters
    ----------
    model : ReferencePretrainer
    tokens, targets : torch.LongTensor, shape [n, L]
    labels : torch.LongTensor, shape [n, 7]
    tree_distances : torch.Tensor, shape [n, n]
    group : torch.LongTensor, shape [n]
    weights : dict
        ``nucleotide``, ``taxonomy``, ``tree`` loss weights.

    Returns
    -------
    total : torch.Tensor (scalar)
    parts : dict of str -> float
        The unweighted losses and batch accuracies.
    """
    emb, nuc_logits, tax_logits = model(tokens)                                    # [n, D], [n, L, V], 7 x [n, C]
    nuc = F.cross_entropy(nuc_logits.transpose(1, 2), targets, ignore_index=IGNORE) \
        if (targets != IGNORE).any() else nuc_logits.sum() * 0.0
    tax_terms, parts = [], {}
    for r, (logits, has_head) in enumerate(zip(tax_logits, model.has_head)):
        y = labels[:, r]
        if not has_head or not (y != IGNORE).any():
            continue
        tax_terms.append(F.cross_entropy(logits, y, ignore_index=IGNORE))
        if RANKS[r] == "genus":
            valid = y != IGNORE
            parts["genus_acc"] = float((logits.argmax(-1)[valid] == y[valid]).float().mean())
    tax = torch.stack(tax_terms).mean() if tax_terms else emb.sum() * 0.0
    pred = model.embedding_distances(emb)                                          # [n, n]
    n = emb.shape[0]
    off_diagonal = ~torch.eye(n, dtype=torch.bool)                                  # [n, n]
    same_group = (group[:, None] == group[None, :]) & off_diagonal                  # [n, n]
    sq = (pred - tree_distances) ** 2                                               # [n, n]
    tree = sq[off_diagonal].mean() + (sq[same_group].mean() if same_group.any() else 0.0)
    total = weights["nucleotide"] * nuc + weights["taxonomy"] * tax + weights["tree"] * tree
    masked = targets != IGNORE
    parts.update({"loss": float(total.detach()), "nucleotide": float(nuc.detach()),
                  "taxonomy": float(tax.detach()), "tree": float(tree.detach()),
                  "nuc_acc": float((nuc_logits.argmax(-1)[masked] == targets[masked]).float().mean())
                  if masked.any() else 0.0})
    return total, parts


def _save(obj, path):
    # through a file object: given a path, torch names the zip members after its stem (here a random temporary
    # name), and the file would differ byte for byte between two exports of the same weights
    with open(path, "wb") as fh:
        torch.save(obj, fh)


def _json_text(obj):
    return json.dumps(obj, sort_keys=True)


def save_checkpoint(path, model, optimizer, schedule, step, settings, history):
    """Resumable state: tensors and plain containers only (loadable with weights_only=True), written atomically."""
    state = {"format": CHECKPOINT_FORMAT, "step": int(step), "settings": _json_text(settings),
             "history": _json_text(history), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": schedule.state_dict(), "torch_rng": torch.get_rng_state()}
    atomic_write(path, lambda tmp: _save(state, tmp))


def load_checkpoint(path):
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise AAMInputError(f"{path} is not a reference-encoder pretraining checkpoint.")
    return state


# settings that must match for --resume to continue the same run
_RUN_KEYS = ("seed", "steps", "batch_size", "group_size", "window", "lr", "weight_decay", "warmup_steps",
             "mask_ratio", "read_lengths", "weights", "encoder_config", "genus_fraction", "otu_fraction",
             "n_validation", "sequences", "taxonomy", "tree")


def _build_run(settings, out_dir, log):
    """The reference data, the encoder configuration, and a freshly initialized model, optimizer and schedule."""
    data = prepare_reference(settings["sequences"], settings["taxonomy"], settings["tree"],
                             max_bp=settings["encoder_config"]["max_bp"], seed=settings["seed"],
                             genus_fraction=settings["genus_fraction"], otu_fraction=settings["otu_fraction"],
                             n_validation=settings["n_validation"], out_dir=out_dir, log=log)
    cfg = EncoderConfig.from_dict(settings["encoder_config"])
    torch.manual_seed(int(settings["seed"]))
    model = ReferencePretrainer(cfg, [len(c) for c in data.classes])
    optimizer = build_optimizer("adamw", model, settings["lr"], settings["weight_decay"])
    schedule = build_scheduler("warmup_cosine", optimizer, settings["steps"], settings["warmup_steps"],
                               eta_min=0.1 * settings["lr"])
    return data, cfg, model, optimizer, schedule


def _resume_from(ckpt_path, settings, out_dir, model, optimizer, schedule, log):
    """Load the interrupted run's state into the model, optimizer, schedule and torch RNG.

    Returns
    -------
    start : int
        Steps already done.
    history : list of dict

    Raises
    ------
    AAMInputError
        No checkpoint, or settings in `_RUN_KEYS` that differ from the interrupted run's.
    """
    if not os.path.exists(ckpt_path):
        raise AAMInputError(f"--resume: no checkpoint at {ckpt_path}; start without --resume.")
    state = load_checkpoint(ckpt_path)
    before = json.loads(state["settings"])
    changed = [k for k in _RUN_KEYS if before.get(k) != settings.get(k)]
    if changed:
        raise AAMInputError(f"--resume: settings differ from the interrupted run in {changed}; resume with the "
                            f"same settings (see {os.path.join(out_dir, 'settings.json')}) or use a new --out.")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    start, history = int(state["step"]), json.loads(state["history"])
    log(f"resuming at step {start:,} of {settings['steps']:,}")
    return start, history


def _train_step(model, optimizer, schedule, data, train_order, labels, step, settings):
    """One optimizer step on the batch of `step`; returns its size and its losses and accuracies."""
    rows, group, rng = draw_batch(train_order, step, settings["seed"], settings["batch_size"],
                                  settings["group_size"], settings["window"])
    tokens, targets, _ = make_inputs(data.tokens, rows, rng, settings["mask_ratio"], settings["read_lengths"])
    tree_d = torch.from_numpy(data.tree.pairwise(rows).astype(np.float32))    # [n, n]
    loss, parts = pretraining_losses(model, tokens, targets, labels[rows], tree_d, torch.from_numpy(group),
                                     settings["weights"])
    if not torch.isfinite(loss):
        raise RuntimeError(f"non-finite loss at step {step}: {parts}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    schedule.step()
    return len(rows), parts


def _log_training(writer, schedule, window_parts, rate, done, batch_rows, settings, log):
    """Log the mean losses of the steps since the last report; returns their history row.

    `rate` is the throughput so far (sequences per second); `batch_rows` the size of the last batch (for the ETA).
    """
    mean = {k: float(np.mean([p[k] for p in window_parts if k in p])) for k in window_parts[-1]}
    for k, v in mean.items():
        writer.add_scalar(f"train/{k}", v, done)
    writer.add_scalar("train/sequences_per_s", rate, done)
    writer.add_scalar("train/lr", schedule.get_last_lr()[0], done)
    eta = (settings["steps"] - done) * batch_rows / max(rate, 1e-9)
    log(f"step {done:>6}/{settings['steps']} loss {mean['loss']:.4f} nuc {mean['nucleotide']:.3f} "
        f"(acc {mean['nuc_acc']:.3f}) tax {mean['taxonomy']:.3f} (genus acc {mean.get('genus_acc', 0):.3f}) "
        f"tree {mean['tree']:.4f} | {rate:.0f} seq/s, lr {schedule.get_last_lr()[0]:.2e}, "
        f"eta {eta / 60:.1f} min")
    return {"step": done, "sequences_per_s": rate, **mean}


def _log_validation(model, data, writer, done, seed, log):
    """Score the validation OTUs (`validation_metrics`), log them, and return their history row."""
    metrics = validation_metrics(model, data, data.split["validation"], seed=seed)
    model.train()
    for k, v in metrics.items():
        writer.add_scalar(f"validation/{k}", v, done)
    log(f"validation at step {done}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    return {"step": done, **{f"validation_{k}": v for k, v in metrics.items()}}


def _due(done, every, steps):
    """True at every `every`-th step and at the last one."""
    return done % every == 0 or done == steps


def _save_final(out_dir, model, cfg, settings, data, history, log):
    """Write ``final.pt`` (weights + the run's summary as JSON text) atomically; returns its path."""
    final = os.path.join(out_dir, "final.pt")
    summary = {"format": "aam-reference-encoder-run", "encoder_config": cfg.to_dict(), "settings": settings,
               "classes": data.classes, "history": history, "report": data.report}
    state = {"format": CHECKPOINT_FORMAT + "-final", "config": _json_text(summary), "model": model.state_dict()}
    atomic_write(final, lambda tmp: _save(state, tmp))
    log(f"wrote {final}")
    return final


def pretrain(settings, out_dir, resume=False, log=print):
    """Train the reference encoder; returns the path of ``final.pt``.

    Parameters
    ----------
    settings : dict
        Everything in `_RUN_KEYS` plus ``threads``, ``log_every``, ``eval_every``, ``checkpoint_every``.
    out_dir : str
    resume : bool
        Continue from ``out_dir/checkpoint.pt`` (the settings must match the interrupted run's).
    log : callable
    """
    from torch.utils.tensorboard import SummaryWriter
    torch.set_num_threads(int(settings["threads"]))
    os.makedirs(out_dir, exist_ok=True)
    ckpt_path = os.path.join(out_dir, "checkpoint.pt")
    data, cfg, model, optimizer, schedule = _build_run(settings, out_dir, log)
    start, history = 0, []
    if resume:
        start, history = _resume_from(ckpt_path, settings, out_dir, model, optimizer, schedule, log)
    with open(os.path.join(out_dir, "settings.json"), "w") as fh:
        json.dump(settings, fh, indent=1, sort_keys=True)

    writer = SummaryWriter(os.path.join(out_dir, "tensorboard"), purge_step=start)
    train_rows = data.split["train"]
    train_order = train_rows[np.argsort(data.tree.positions[train_rows], kind="stable")]
    labels = torch.from_numpy(data.labels)
    steps = settings["steps"]
    model.train()
    seen, t0, window_parts = 0, time.time(), []
    for step in range(start, steps):
        batch_rows, parts = _train_step(model, optimizer, schedule, data, train_order, labels, step, settings)
        seen += batch_rows
        window_parts.append(parts)
        done = step + 1
        if _due(done, settings["log_every"], steps):
            rate = seen / max(time.time() - t0, 1e-9)
            history.append(_log_training(writer, schedule, window_parts, rate, done, batch_rows, settings, log))
            window_parts = []
        if _due(done, settings["eval_every"], steps):
            history.append(_log_validation(model, data, writer, done, settings["seed"], log))
        if _due(done, settings["checkpoint_every"], steps):
            save_checkpoint(ckpt_path, model, optimizer, schedule, done, settings, history)
    writer.close()
    return _save_final(out_dir, model, cfg, settings, data, history, log)


def default_settings():
    """Settings of the shipped encoder (see docs/encoder.md)."""
    cfg = EncoderConfig(dropout=0.0).to_dict()
    return {"seed": 42, "steps": 3600, "batch_size": 256, "group_size": 4, "window": 16, "lr": 1e-3,
            "weight_decay": 0.01, "warmup_steps": 200, "mask_ratio": 0.15, "read_lengths": list(READ_LENGTHS),
            "weights": {"nucleotide": 1.0, "taxonomy": 1.0, "tree": 1.0}, "encoder_config": cfg,
            "genus_fraction": 0.05, "otu_fraction": 0.02, "n_validation": 1000, "threads": 1,
            "log_every": 50, "eval_every": 600, "checkpoint_every": 200}


def main(argv=None):
    d = default_settings()
    p = argparse.ArgumentParser(prog="python -m aam.reference.pretrain", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="run directory (checkpoints, tensorboard/, log, final.pt)")
    p.add_argument("--sequences", help="reference FASTA (default: Greengenes 13_8 97%% OTUs of "
                                       "qiime-default-reference)")
    p.add_argument("--taxonomy", help="reference taxonomy TSV (default: as --sequences)")
    p.add_argument("--tree", help="reference Newick tree (default: as --sequences)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    for key in ("seed", "steps", "batch_size", "group_size", "window", "warmup_steps", "n_validation", "threads",
                "log_every", "eval_every", "checkpoint_every"):
        p.add_argument("--" + key.replace("_", "-"), type=int, default=d[key])
    for key in ("lr", "weight_decay", "mask_ratio", "genus_fraction", "otu_fraction"):
        p.add_argument("--" + key.replace("_", "-"), type=float, default=d[key])
    p.add_argument("--read-lengths", type=int, nargs="+", default=d["read_lengths"],
                   help="read lengths drawn per example (nt after the forward primer)")
    for key in ("nucleotide", "taxonomy", "tree"):
        p.add_argument(f"--{key}-weight", type=float, default=d["weights"][key])
    for key in ("embedding_dim", "attention_heads", "attention_layers", "ff_mult", "kmer_size", "max_bp"):
        p.add_argument("--" + key.replace("_", "-"), type=int, default=d["encoder_config"][key],
                       help="encoder architecture (EncoderConfig)")
    args = p.parse_args(argv)
    settings = dict(d)
    for key in d:
        if key not in ("weights", "encoder_config"):
            settings[key] = getattr(args, key)
    settings["read_lengths"] = [int(x) for x in args.read_lengths]
    settings["weights"] = {k: getattr(args, f"{k}_weight") for k in ("nucleotide", "taxonomy", "tree")}
    settings["encoder_config"] = dict(d["encoder_config"], **{
        k: getattr(args, k) for k in ("embedding_dim", "attention_heads", "attention_layers", "ff_mult",
                                      "kmer_size", "max_bp")})
    try:
        if not (args.sequences and args.taxonomy and args.tree):
            paths = reference_paths()
            args.sequences = args.sequences or paths["sequences"]
            args.taxonomy = args.taxonomy or paths["taxonomy"]
            args.tree = args.tree or paths["tree"]
        settings.update(sequences=os.path.abspath(args.sequences), taxonomy=os.path.abspath(args.taxonomy),
                        tree=os.path.abspath(args.tree))
        EncoderConfig.from_dict(settings["encoder_config"])
        log_path = os.path.join(args.out, "pretrain.log")
        os.makedirs(args.out, exist_ok=True)
        with open(log_path, "a") as log_fh:
            def log(line):
                stamp = time.strftime("%H:%M:%S")
                print(f"[{stamp}] {line}", flush=True)
                log_fh.write(f"[{stamp}] {line}\n")
                log_fh.flush()
            pretrain(settings, args.out, resume=args.resume, log=log)
    except (AAMInputError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
