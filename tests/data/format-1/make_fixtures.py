"""Run with the q2-aam 0.1 engine (checkpoint format 1) to make the backward-compatibility fixtures."""
import os
import shutil
import tempfile

import aam
import aam.api as api

assert "old-aam" in aam.__file__, f"run with the q2-aam 0.1 engine on PYTHONPATH, not {aam.__file__}"
HERE = os.path.dirname(os.path.abspath(__file__))
MP = os.path.join(HERE, "..", "moving-pictures")
OUT = HERE
TINY = dict(embedding_dim=16, attention_heads=2, attention_layers=1, token_limit=32, max_bp=48, batch_size=4,
            asv_chunk_size=64, num_threads=1)
with tempfile.TemporaryDirectory() as tmp:
    pre = api.pretrain(os.path.join(MP, "table.biom"), sequences=os.path.join(MP, "rep-seqs.fasta"),
                       tree=os.path.join(MP, "tree.nwk"), output_dir=os.path.join(tmp, "pre"), progress=False,
                       epochs=2, seed=1, **TINY)
    reg = api.train(os.path.join(MP, "table.biom"), os.path.join(MP, "sample-metadata.tsv"),
                    "days-since-experiment-start", sequences=os.path.join(MP, "rep-seqs.fasta"),
                    pretrained=pre.checkpoint, output_dir=os.path.join(tmp, "reg"), progress=False, epochs=2,
                    seed=1, freeze_base=True, **{k: v for k, v in TINY.items() if k not in
                                                  ("embedding_dim", "attention_heads", "attention_layers",
                                                   "token_limit", "max_bp")})
    shutil.copyfile(os.path.join(tmp, "pre", "model.pt"), os.path.join(OUT, "pretrained.pt"))
    shutil.copyfile(os.path.join(tmp, "reg", "model.pt"), os.path.join(OUT, "regressor.pt"))
df = api.predict(os.path.join(OUT, "regressor.pt"), os.path.join(MP, "table.biom"),
                 sequences=os.path.join(MP, "rep-seqs.fasta"), seed=0, num_threads=1)
df.to_csv(os.path.join(OUT, "regressor-predictions.tsv"), sep="\t")
emb, dm = api.embed(os.path.join(OUT, "pretrained.pt"), os.path.join(MP, "table.biom"),
                    sequences=os.path.join(MP, "rep-seqs.fasta"), seed=0, num_threads=1)
emb.to_csv(os.path.join(OUT, "pretrained-embeddings.tsv"), sep="\t")
print("ok", len(df), emb.shape)
