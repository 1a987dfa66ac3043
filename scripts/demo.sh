#!/usr/bin/env bash
# The main job on the bundled Moving Pictures data (examples/moving-pictures), run by `make demo`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH"
DATA=examples/moving-pictures
OUT=demo-output
mkdir -p "$OUT/exported"

echo "== exporting the example artifacts to plain files (BIOM, FASTA, Newick) for the aam CLI"
for name in table rep-seqs rooted-tree; do
    qiime tools export --input-path "$DATA/$name.qza" --output-path "$OUT/exported/$name" >/dev/null
done

echo "== aam prepare: load, rarefy, tokenize, UniFrac, batches"
aam prepare --table "$OUT/exported/table/feature-table.biom" \
    --sequences "$OUT/exported/rep-seqs/dna-sequences.fasta" \
    --tree "$OUT/exported/rooted-tree/tree.nwk" --batch-size 8
