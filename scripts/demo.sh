#!/usr/bin/env bash
# The main job on the bundled Moving Pictures data (examples/moving-pictures), run by `make demo`:
#   pretrain (self-supervised: sample embeddings fitted to UniFrac, over the shipped reference encoder)
#   -> fine-tune a body-site classifier on a training split -> predict the held-out samples
#   -> compare with q2-sample-classifier's random forest on the same split
#   -> model card, evaluation and embedding (with its Emperor plot), all as QIIME 2 artifacts with provenance.
# Every setting is the default (the seed is fixed and progress printed): a few minutes on 2 CPU cores.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH"
export MPLBACKEND=Agg
DATA=examples/moving-pictures
OUT=demo-output
mkdir -p "$OUT"
COMMON=(--p-seed 42 --verbose)

step() { echo; echo "== $*"; }

step "1/7 pretrain a base model on all samples (no labels): sample embeddings fitted to unweighted UniFrac"
qiime aam pretrain --i-table $DATA/table.qza --i-sequences $DATA/rep-seqs.qza --i-phylogeny $DATA/rooted-tree.qza \
    "${COMMON[@]}" --o-model $OUT/pretrained.qza

step "2/7 split samples into training and held-out test sets (stratified by body site)"
qiime sample-classifier split-table --i-table $DATA/table.qza --m-metadata-file $DATA/sample-metadata.tsv \
    --m-metadata-column body-site --p-test-size 0.3 --p-random-state 42 \
    --o-training-table $OUT/train-table.qza --o-test-table $OUT/test-table.qza \
    --o-training-targets $OUT/train-targets.qza --o-test-targets $OUT/test-targets.qza --quiet

step "3/7 fine-tune a body-site classifier on the training samples (pretrained base, frozen)"
qiime aam fit-classifier --i-table $OUT/train-table.qza --i-sequences $DATA/rep-seqs.qza \
    --m-metadata-file $DATA/sample-metadata.tsv --m-metadata-column body-site \
    --i-pretrained $OUT/pretrained.qza "${COMMON[@]}" --o-model $OUT/classifier.qza

step "4/7 predict the held-out samples"
qiime aam predict-classification --i-model $OUT/classifier.qza --i-table $OUT/test-table.qza \
    --i-sequences $DATA/rep-seqs.qza --o-predictions $OUT/aam-predictions.qza \
    --o-probabilities $OUT/aam-probabilities.qza

step "5/7 the baseline: q2-sample-classifier's random forest on the same training samples"
qiime sample-classifier fit-classifier --i-table $OUT/train-table.qza --m-metadata-file $DATA/sample-metadata.tsv \
    --m-metadata-column body-site --p-random-state 42 --p-n-jobs 1 \
    --o-sample-estimator $OUT/rf-classifier.qza --o-feature-importance $OUT/rf-importance.qza --quiet
qiime sample-classifier predict-classification --i-table $OUT/test-table.qza --i-sample-estimator $OUT/rf-classifier.qza \
    --o-predictions $OUT/rf-predictions.qza --o-probabilities $OUT/rf-probabilities.qza --quiet

step "6/7 evaluate both on the held-out samples, side by side; model cards"
qiime aam evaluate --i-predictions $OUT/aam-predictions.qza --i-probabilities $OUT/aam-probabilities.qza \
    --i-other-predictions $OUT/rf-predictions.qza --i-other-probabilities $OUT/rf-probabilities.qza \
    --m-truth-file $DATA/sample-metadata.tsv --m-truth-column body-site --p-name AAM --p-other-name 'random forest' \
    --o-visualization $OUT/evaluation.qzv
qiime aam summarize --i-model $OUT/classifier.qza --o-visualization $OUT/classifier-summary.qzv
qiime aam summarize --i-model $OUT/pretrained.qza --o-visualization $OUT/pretrained-summary.qzv

step "7/7 sample embeddings of the pretrained model (a PCoA, plotted with Emperor) and the distances it implies"
qiime aam embed --i-model $OUT/pretrained.qza --i-table $DATA/table.qza --i-sequences $DATA/rep-seqs.qza \
    --o-embedding $OUT/embedding.qza --o-distance-matrix $OUT/aam-distances.qza
if python -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("q2_emperor") is None)'; then
    qiime emperor plot --i-pcoa $OUT/embedding.qza --m-metadata-file $DATA/sample-metadata.tsv \
        --o-visualization $OUT/embedding-emperor.qzv
else
    echo "(no Emperor plot: q2-emperor is not installed; as root, apt-get install q2-emperor, then make setup)"
fi

echo
python - <<'PY'
import qiime2, pandas as pd
truth = pd.read_csv("examples/moving-pictures/sample-metadata.tsv", sep="\t", index_col=0, dtype=str)["body-site"]
parts = []
for name, path in (("AAM", "demo-output/aam-predictions.qza"), ("random forest", "demo-output/rf-predictions.qza")):
    pred = qiime2.Artifact.load(path).view(pd.Series)
    parts.append(f"{name} {(pred == truth.loc[pred.index]).mean():.2f}")
print(f"Held-out body-site accuracy on {len(pred)} samples: " + ", ".join(parts))
PY
echo
echo "Results in $OUT/:"
echo "  pretrained.qza, classifier.qza           AAM models (AAMModel[...]); the .qzv model cards show their training"
echo "  aam-predictions.qza, rf-predictions.qza  held-out predictions (SampleData[ClassifierPredictions])"
echo "  evaluation.qzv                           AAM vs random forest: metrics and confusion matrices"
echo "  embedding.qza, embedding-emperor.qzv     PCoA of the sample embeddings and its Emperor plot (colour it by"
echo "                                           any metadata column, e.g. body-site)"
echo "View .qzv files with 'qiime tools view' or at https://view.qiime2.org"
