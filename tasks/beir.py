"""BEIR's public sets as evaluation sets, and the SeqIO task of TFDS's own BEIR builder.

The folders are read by samtone_jax/beir_format.py, which says what a BEIR folder holds.
"""

import pathlib

from samtone_jax import beir_format, data_files, eval_sets
from samtone_jax.tasks import pairs, vocabularies

# BEIR's public sets (folder names as in its zips); evaluation sets "beir_<name>", read from
# $SAMTONE_DATA_DIR/beir/<name>/ or $SAMTONE_DATA_DIR/beir/<name>.zip.
NAMES = ("msmarco", "trec-covid", "nfcorpus", "nq", "hotpotqa", "fiqa", "arguana",
         "webis-touche2020", "quora", "dbpedia-entity", "scidocs", "fever", "climate-fever",
         "scifact")


def folder(name: str) -> pathlib.Path:
  """The BEIR folder `name` under $SAMTONE_DATA_DIR/beir: unzipped, or inside its zip."""
  root = data_files.data_root() / "beir"
  return root / name if (root / name).is_dir() else root / f"{name}.zip" / name


for _name in NAMES:
  eval_sets.register(f"beir_{_name.replace('-', '_')}",
                     lambda name=_name: beir_format.eval_set(
                         folder(name), "dev" if name == "msmarco" else "test",
                         name=f"beir/{name}"))

# The older T5X retrieval code trained on TFDS's own BEIR builder ("beir/msmarco", built with
# Apache Beam): its pair splits have the features "query" and "passage", as ours do.
pairs.register_pairs_task("beir_msmarco_tfds", "beir/msmarco:1.0.0",
                          vocabularies.t5_vocabulary())
