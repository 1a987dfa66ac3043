"""The model card and license of a shipped base, generated from its run so the card states the shipped figures."""
import textwrap

WIDTH = 116

LICENSE = """The files in this directory (model.pt, base.json, metrics.json, history.tsv and this license) hold and
describe the sample-level base {name} of q2-aam, a model trained on:

1. The tables of the American Gut Project and of the Personal Genome Project as published in the public repository
   biocore/American-Gut (files data/AG/AG_100nt_even10k.biom.gz, data/PGP/PGP_100nt_even10k.biom), distributed
   under the Modified BSD License ("The American-Gut licensing terms"): Copyright (c) 2013--, American Gut
   development team. Redistribution and use in source and binary forms, with or without modification, are
   permitted provided that the copyright notice, this list of conditions and the disclaimer of that license are
   retained (full text: LICENSE-American-Gut in the shared data folder the base was built from). The repository
   states that its tables are de-identified.
2. Greengenes 13_8 (97% OTUs: the V4 reads of each OTU and the tree), licensed under the Creative Commons
   Attribution-ShareAlike 3.0 Unported License (CC BY-SA 3.0, https://creativecommons.org/licenses/by-sa/3.0/),
   through the reference encoder gg13_8-v4-d64 this base contains.

Because of (2), these files are distributed under CC BY-SA 3.0, separately from the source code of q2-aam
(BSD-3-Clause), with the notice of (1) kept. Share-alike passes on: a model you build on this base and
redistribute (fine-tuned or not) is shared under CC BY-SA 3.0 or a compatible license. Predictions and embeddings
you compute for your own data are not restricted by it. (Whether trained weights are an adaptation in law is
unsettled; we follow the conservative reading. This is not legal advice.)
"""


def license_text(name):
    """LICENSE of the shipped base `name`."""
    return LICENSE.format(name=name)


def _metrics_table(metrics):
    rows = [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
            for k, v in sorted(metrics["validation"].items())]
    return "\n".join(["| validation metric (best epoch) | value |", "|---|---|"] + rows)


def reflow(markdown, width=WIDTH):
    """Markdown with its paragraphs and bullets wrapped at `width` (headings, tables and code left as they are)."""
    out = []
    for block in markdown.strip("\n").split("\n\n"):
        lines = block.split("\n")
        heading = []
        if lines[0].startswith("#"):
            heading, lines = [lines[0]], lines[1:]
        if not lines or lines[0].startswith(("|", "```")):
            out.append("\n".join(heading + lines))
            continue
        items, current = [], []
        for line in lines:
            if line.startswith("- ") and current:
                items.append(current)
                current = []
            current.append(line.strip())
        items.append(current)
        wrapped = []
        for item in items:
            text = " ".join(item)
            bullet = text.startswith("- ")
            wrapped.append(textwrap.fill(text, width, subsequent_indent="  " if bullet else "",
                                         break_long_words=False, break_on_hyphens=False))
        out.append("\n".join(heading + wrapped))
    return "\n\n".join(out) + "\n"


def model_card(name, checkpoint, meta, metrics, info, measured=None):
    """MODEL_CARD.md of a shipped base (markdown text); `measured`: the yardstick's report of it (markdown)."""
    record = checkpoint.record
    enc = record.encoder
    n_params = sum(int(v.numel()) for v in checkpoint.model_state.values())
    corpus = "\n".join(f"- {line}" for line in info["corpus"])
    truncations = "/".join(map(str, meta["truncations"]))
    return reflow(f"""# Model card: `{name}`, a sample-level base pretrained on American Gut + PGP

## Model
- `aam.models.SequenceEncoder` (a pretrained base, kind `encoder`): the frozen reference encoder
  `{(record.asv_encoder or {}).get('name')}` reads each ASV's nucleotides; a sample-level transformer
  ({enc.attention_layers} layers, {enc.attention_heads} heads, width {enc.embedding_dim}) over at most
  {enc.token_limit} ASVs per sample, with their abundances, gives the sample embedding. {n_params:,} parameters
  (float32, `model.pt`, tensors + JSON record, no pickle).
- Reads: cut at {meta['read_length']} nt (the tokenizer the base records), so longer reads of the same region
  (ECAM 150 nt, Moving Pictures 120 nt) are read as their first {meta['read_length']} nt, the stretch the corpus reads
  cover.
  Trained on full {meta['read_length']} nt reads and, for {100 * meta['truncate_fraction']:g}% of samples each epoch,
  on the reads cut to {truncations} nt (one length per sample). Reads of another region, or mostly shorter than the
  shortest length trained on, are warned about.
- Use: `qiime aam fit-regressor --p-base {name}` / `fit-classifier` (start from it without `--i-pretrained`),
  `qiime aam pretrain --p-base {name}` (continue pretraining on a study); `aam train --base {name}` in the CLI.

## Corpus
{corpus}
- Human stool, oral and skin samples, 16S V4 (515F/806R) Illumina reads trimmed to 100 nt, closed-reference OTUs
  against Greengenes 13_8 97% (SortMeRNA), rarefied to 10,000 reads upstream; one 100 nt V4 read per OTU
  (re-derived from Greengenes 13_8), the Greengenes 13_8 tree pruned to the corpus OTUs. No sample of any other
  benchmark study of the project (checked by sample ID against their metadata).
- De-identified human data (as published upstream). Samples of one subject are kept on one side of the
  validation split.

## Objective
Unweighted UniFrac distances between samples: the Euclidean distances between the sample embeddings of a batch
are regressed onto the UniFrac block of its samples (diagonal excluded), UniFrac computed per batch from the tree
and the rarefied corpus (no N x N matrix). Options: {_options(record)}.

## Metrics
{metrics['epochs_run']} epochs, best epoch {metrics['best_epoch']} by {metrics['selection_metric']}
({metrics['samples']['training']} training / {metrics['samples']['validation']} validation samples, validation reads at
full length); {metrics['training_seconds']:.0f} s of training.

{_metrics_table(metrics)}

{_measured(measured)}

## License
Derived from Greengenes 13_8 (CC BY-SA 3.0) and the American Gut repository's BSD-3 tables: distributed under
CC BY-SA 3.0 (`LICENSE`). Share-alike passes on to models built on this base that you redistribute.

Cite: McDonald D et al. American Gut: an open platform for citizen science microbiome research. mSystems
3:e00031-18 (2018); McDonald D et al. An improved Greengenes taxonomy with explicit ranks for ecological and
evolutionary analyses of bacteria and archaea. ISME J 6:610-618 (2012).

## Rebuilding
`make base` ({info.get('command')}, then `python -m aam.base.export`).
""")


def _measured(measured):
    """The held-out section: the yardstick's report of this base (markdown), or a sentence saying there is none."""
    if not measured:
        return "Held-out and cross-study figures (issue 23's yardstick) are not part of this card yet."
    return "## Held-out figures\n" + measured.strip()


def _options(record):
    opts = record.options
    keys = ("epochs", "batch_size", "lr", "token_limit", "patience", "validation_fraction", "seed")
    return ", ".join(f"{k} {opts[k]}" for k in keys if k in opts)
