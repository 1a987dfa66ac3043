"""Run with the engine of commit c7203a5 (checkpoint format 2) to make the backward-compatibility fixtures.

`git worktree add /tmp/aam-c7203a5 c7203a5 && PYTHONPATH=/tmp/aam-c7203a5 .venv/bin/python
tests/data/format-2/make_fixtures.py`
"""
import os
import shutil
import tempfile

import aam.api as api
from aam.checkpoint import FORMAT_VERSION

assert FORMAT_VERSION == 2, "run with the engine of commit c7203a5 (checkpoint format 2) on PYTHONPATH"
HERE = os.path.dirname(os.path.abspath(__file__))
MP = os.path.join(HERE, "..", "moving-pictures")
TABLE, SEQS, TREE = (os.path.join(MP, f) for f in ("table.biom", "rep-seqs.fasta", "tree.nwk"))
METADATA = os.path.join(MP, "sample-metadata.tsv")
TINY = dict(batch_size=4, asv_chunk_size=64, num_threads=1, seed=1)
FIT = dict(TINY, epochs=3, forest_trees=20, forest_embedding_axes=3)
with tempfile.TemporaryDirectory() as tmp:
    pre = api.pretrain(TABLE, sequences=SEQS, tree=TREE, output_dir=os.path.join(tmp, "pre"), progress=False,
                       epochs=2, asv_encoder="none", embedding_dim=16, attention_heads=2, attention_layers=1,
                       token_limit=32, max_bp=48, **TINY)
    runs = {
        # the default ensemble: transformer head on the frozen base, forest reading 3 embedding axes, one-se share
        "ensemble-regressor": dict(column="days-since-experiment-start", classifier=False),
        "ensemble-classifier": dict(column="body-site", classifier=True),
        # the network alone (no forest)
        "regressor": dict(column="days-since-experiment-start", classifier=False, ensemble="none"),
    }
    for name, run in runs.items():
        column, classifier = run.pop("column"), run.pop("classifier")
        res = api.train(TABLE, METADATA, column, classifier=classifier, sequences=SEQS, pretrained=pre.checkpoint,
                        output_dir=os.path.join(tmp, name), progress=False, **FIT, **run)
        shutil.copyfile(os.path.join(tmp, name, "model.pt"), os.path.join(HERE, f"{name}.pt"))
        df = api.predict(os.path.join(HERE, f"{name}.pt"), TABLE, sequences=SEQS, seed=0, num_threads=1)
        df.to_csv(os.path.join(HERE, f"{name}-predictions.tsv"), sep="\t")
        print(name, res.checkpoint.record.ensemble and res.checkpoint.record.ensemble["aam_weight"], df.shape)
