"""The encode command (`encode.encode`): a corpus embedded into shards with a run's
checkpoint, looked up once; shards of other texts, vocabulary or model refused; a GTR
folder's shards equal sentence-transformers' embeddings; the corpus named as a BEIR file or
an evaluation set."""

import dataclasses
import gzip
import json

import numpy as np
import pytest
import seqio

from samtone_jax import data_files, encode
from tests import hf_fixtures

VOCAB = seqio.ByteVocabulary()
WORDS = ["apple", "banana", "cherry", "date", "elder", "fig", "grape", "hazel", "iris", "jam"]
CORPUS = {f"d{i}": f"{WORDS[i % 10]} {WORDS[(3 * i) % 10]} {i}" for i in range(23)}


def _encode_command(tiny_run, corpus_file, output_dir, **options):
  model, run, lengths = tiny_run
  return encode.encode(**{**dict(
      model=model, checkpoint_path=str(run), corpus=str(corpus_file),
      output_dir=str(output_dir), task_feature_lengths=lengths, vocabulary=VOCAB,
      shard_size=10, batch_size=8), **options})


@pytest.mark.parametrize("change, field", [("texts", "texts_sha256"),
                                           ("vocabulary", "vocabulary_sha256"),
                                           ("model", "model_sha256")])
def test_the_encode_command_refuses_other_texts_vocabulary_or_model(
    change, field, tiny_run, beir_folder, tmp_path):
  from samtone_jax.tasks import vocabularies  # pylint: disable=g-import-not-at-top
  model = tiny_run[0]
  corpus = {f"d{i}": f"{WORDS[i % 10]} {WORDS[(7 * i) % 10]}" for i in range(25)}
  folder = beir_folder(tmp_path / "eval", corpus)
  _encode_command(tiny_run, folder / "corpus.jsonl", tmp_path / "shards")
  options = {}
  if change == "texts":
    (folder / "corpus.jsonl").write_text((folder / "corpus.jsonl").read_text().replace(
        '"d3", "title": "", "text": "date', '"d3", "title": "", "text": "iris'))
  elif change == "vocabulary":
    options["vocabulary"] = vocabularies.quickstart_vocabulary()
  else:
    options["model"] = dataclasses.replace(model, config=dataclasses.replace(
        model.config, mlp_activations=("relu", "linear")))
  with pytest.raises(data_files.DataError, match=rf"meta.json: .*another corpus or model:"
                                                 rf" {field} '[0-9a-f]{{16}}' there,"
                                                 rf" '[0-9a-f]{{16}}' now; use another"):
    _encode_command(tiny_run, folder / "corpus.jsonl", tmp_path / "shards", **options)


def test_the_encode_command_looks_the_checkpoint_up_once(tiny_run, beir_folder, tmp_path,
                                                         monkeypatch):
  """A checkpoint saved while `encode` runs (every lookup after the first finds step 8):
  the shards are of step 4's parameters, and meta.json says step 4."""
  from samtone_jax import run_dir  # pylint: disable=g-import-not-at-top
  run = tiny_run[1]
  corpus = beir_folder(tmp_path / "eval", CORPUS) / "corpus.jsonl"
  steps = iter([4])
  monkeypatch.setattr(run_dir.RunDir, "latest_step", lambda self: next(steps, 8))
  shards = _encode_command(tiny_run, corpus, tmp_path / "shards")
  assert shards.meta["step"] == 4
  assert shards.meta["checkpoint"] == str(run / "checkpoints" / "4")
  monkeypatch.undo()
  at = {step: _encode_command(tiny_run, corpus, tmp_path / str(step),
                              checkpoint_path=str(run / "checkpoints" / str(step)))[0:23]
        for step in (4, 8)}
  np.testing.assert_array_equal(shards[0:23], at[4])
  assert not np.allclose(at[4], at[8])


class _WordVocabulary:
  """The word-level vocabulary of hf_fixtures' GTR folder, as retrieval.tokenize uses one."""
  eos_id = 1

  def encode(self, text):
    return [hf_fixtures.WORDS.index(w) if w in hf_fixtures.WORDS else 2 for w in text.split()]


def test_the_encode_command_equals_sentence_transformers(tmp_path):
  """`encode` of a GTR folder's model over a BEIR corpus.jsonl: the shards hold what
  sentence-transformers' own `encode` gives; run again, it embeds nothing."""
  import sentence_transformers  # pylint: disable=g-import-not-at-top
  from samtone_jax import dual_encoder, pretrained  # pylint: disable=g-import-not-at-top
  hf_fixtures.save_gtr(tmp_path / "gtr")
  texts = {f"doc{i}": " ".join(f"w{(i * j) % 61}" for j in range(1, 2 + i % 5))
           for i in range(9)}
  (tmp_path / "corpus.jsonl").write_text("".join(
      json.dumps({"_id": i, "title": "", "text": t}) + "\n" for i, t in texts.items()))
  config, _, kernel = pretrained.load_initial_checkpoint(tmp_path / "gtr")
  run = lambda: encode.encode(
      model=dual_encoder.DualEncoder(config, "sde", kernel.shape[1]),
      checkpoint_path=str(tmp_path / "gtr"), corpus=str(tmp_path / "corpus.jsonl"),
      output_dir=str(tmp_path / "shards"), task_feature_lengths={"queries": 8, "passages": 8},
      vocabulary=_WordVocabulary(), shard_size=4, batch_size=3)
  shards = run()
  want = sentence_transformers.SentenceTransformer(str(tmp_path / "gtr"), device="cpu").encode(
      list(texts.values()))
  assert shards.ids() == list(texts) and len(list((tmp_path / "shards").glob("*.npy"))) == 3
  np.testing.assert_allclose(shards[0:9], want, atol=1e-4)
  written = {p: p.stat().st_mtime_ns for p in (tmp_path / "shards").glob("shard-*")}
  np.testing.assert_array_equal(run()[0:9], shards[0:9])
  assert {p: p.stat().st_mtime_ns for p in (tmp_path / "shards").glob("shard-*")} == written


def test_the_corpus_is_a_corpus_file_or_an_evaluation_set(beir_folder, tmp_path):
  """ENCODE_CORPUS: a name ending in .jsonl (or .jsonl.gz) is a BEIR corpus file, any other
  an evaluation set's name (here `beir:<folder>`), whose whole corpus is embedded."""
  corpus = {"d1": "apple fig", "d2": "cherry date", "d3": "grape"}
  folder = beir_folder(tmp_path / "eval", corpus)
  (tmp_path / "corpus.jsonl.gz").write_bytes(gzip.compress(
      (folder / "corpus.jsonl").read_bytes()))
  assert encode.read_corpus(str(folder / "corpus.jsonl")) == corpus
  assert encode.read_corpus(str(tmp_path / "corpus.jsonl.gz")) == corpus
  assert encode.read_corpus(f"beir:{folder}") == corpus
