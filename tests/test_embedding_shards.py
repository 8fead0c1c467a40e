"""Embeddings written to shards a batch at a time equal those embedded in memory; a killed
encode resumes from its finished shards; streamed search over the shards equals top_k."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio

from samtone_jax import data_files, embedding_shards, partitioning, retrieval
from tests import hf_fixtures

VOCAB = seqio.ByteVocabulary()
WORDS = ["apple", "banana", "cherry", "date", "elder", "fig", "grape", "hazel", "iris", "jam"]
CORPUS = {f"d{i}": f"{WORDS[i % 10]} {WORDS[(3 * i) % 10]} {i}" for i in range(23)}


def _embed(params, ids):
  """Counts of byte values times a [260, 6] matrix: a stand-in for the encoder."""
  return jax.nn.one_hot(ids, 260).sum(axis=1) @ params["w"]


PARAMS = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(260, 6)), jnp.float32)}


def _tokenize(texts, counter=None):
  if counter is not None:
    counter.extend(texts)
  return retrieval.tokenize(texts, VOCAB, 16)


def _in_memory():
  return np.asarray(_embed(PARAMS, _tokenize(list(CORPUS.values()))))


def _encode(directory, counter=None, **options):
  options = dict(dict(batch_size=8, shard_size=5, source={"encoder": "toy"}), **options)
  return embedding_shards.encode(directory, _embed, PARAMS, CORPUS,
                                 lambda texts: _tokenize(texts, counter),
                                 partitioning.create_mesh(), **options)


def test_shards_equal_the_embeddings_in_memory_and_search_equals_top_k(tmp_path):
  shards = _encode(tmp_path)
  assert sorted(p.name for p in tmp_path.glob("*.npy")) == [
      f"shard-0000{j}.npy" for j in range(5)]  # 23 rows: 5 + 5 + 5 + 5 + 3
  assert len(shards) == 23 and shards.ids() == list(CORPUS)
  want = _in_memory()
  np.testing.assert_allclose(shards[0:23], want, rtol=1e-5, atol=1e-6)  # batches of other sizes
  for a, b in [(4, 12), (5, 10), (22, 23), (0, 1), (3, 3)]:  # across, one, last, empty
    np.testing.assert_allclose(shards[a:b], want[a:b], rtol=1e-5, atol=1e-6)
  queries = want[[3, 7, 20]] + 0.01
  mesh = partitioning.create_mesh()
  got = retrieval.sharded_top_k(mesh, queries, shards, k=6, block_size=2, chunk_rows=7)
  expected = retrieval.top_k(queries, shards[0:23], k=6)
  np.testing.assert_array_equal(got[1], expected[1])
  np.testing.assert_allclose(got[0], expected[0], rtol=1e-6)


def test_a_killed_encode_embeds_only_the_missing_shards(tmp_path):
  _encode(tmp_path)
  whole = embedding_shards.EmbeddingShards(tmp_path)[0:23]
  (tmp_path / "shard-00002.npy").unlink()  # as if killed while writing it
  (tmp_path / "shard-00002.npy.partial").write_bytes(b"\x93NUMPY half")
  with pytest.raises(data_files.DataError, match=r"shard-00002.npy: missing"):
    embedding_shards.EmbeddingShards(tmp_path)
  embedded = []
  shards = _encode(tmp_path, counter=embedded)
  assert [text for text in embedded if text] == list(CORPUS.values())[10:15]
  np.testing.assert_array_equal(shards[0:23], whole)


def test_bfloat16_shards_hold_the_rounded_embeddings(tmp_path):
  shards = _encode(tmp_path, dtype="bfloat16")
  assert json.loads((tmp_path / "meta.json").read_text())["dtype"] == "bfloat16"
  want = _in_memory().astype(jnp.bfloat16).astype(np.float32)
  np.testing.assert_allclose(shards[0:23], want, rtol=1e-6)


def test_another_model_a_cut_shard_and_lost_ids_name_the_file(tmp_path):
  _encode(tmp_path)
  with pytest.raises(data_files.DataError, match=r"meta.json: .*another corpus or model:"
                                                 r" encoder 'toy' there, 'other' now"):
    _encode(tmp_path, source={"encoder": "other"})
  with pytest.raises(data_files.DataError, match=r"dtype 'float32' there, 'bfloat16' now"):
    _encode(tmp_path, dtype="bfloat16")
  with pytest.raises(data_files.DataError, match=r"meta.json: .* texts_sha256 "):
    embedding_shards.encode(tmp_path, _embed, PARAMS, {k + "x": v for k, v in CORPUS.items()},
                            _tokenize, partitioning.create_mesh(), batch_size=8, shard_size=5,
                            source={"encoder": "toy"})
  path = tmp_path / "shard-00001.npy"
  path.write_bytes(path.read_bytes()[:-8])
  with pytest.raises(data_files.DataError, match=r"shard-00001.npy: not a whole .npy file"):
    embedding_shards.EmbeddingShards(tmp_path)
  _encode((tmp_path / "fresh"))
  ids = (tmp_path / "fresh") / "shard-00003.ids.json"
  ids.write_text(json.dumps(["d15"]))
  with pytest.raises(data_files.DataError, match=r"shard-00003.ids.json: 1 ids for 5 rows"):
    embedding_shards.EmbeddingShards(ids.parent).ids()


def test_a_corrected_text_or_an_older_meta_is_not_resumed(tmp_path):
  """The same ids with one text corrected: refused, naming the texts; with `replace`, made
  again as in a fresh directory. A meta.json of before the texts were recorded: refused."""
  _encode(tmp_path)
  corrected = dict(CORPUS, d7="jam jam jam")
  encode = lambda directory, **options: embedding_shards.encode(
      directory, _embed, PARAMS, corrected, _tokenize, partitioning.create_mesh(),
      batch_size=8, shard_size=5, source={"encoder": "toy"}, **options)
  with pytest.raises(data_files.DataError, match=r"meta.json: .* texts_sha256 '[0-9a-f]{16}'"
                                                 r" there, '[0-9a-f]{16}' now"):
    encode(tmp_path)
  np.testing.assert_array_equal(encode(tmp_path, replace=True)[0:23],
                                encode(tmp_path / "fresh")[0:23])
  meta = json.loads((tmp_path / "meta.json").read_text())
  old = {k: v for k, v in meta.items() if k != "texts_sha256"}
  (tmp_path / "meta.json").write_text(json.dumps(dict(old, ids_sha256="0123456789abcdef")))
  with pytest.raises(data_files.DataError, match=r"texts_sha256 None there"):
    encode(tmp_path)


def test_the_source_tells_vocabularies_models_and_steps_apart():
  from samtone_jax import dual_encoder, t5  # pylint: disable=g-import-not-at-top
  from samtone_jax.tasks import vocabularies  # pylint: disable=g-import-not-at-top
  model = dual_encoder.DualEncoder(t5.T5Config(num_layers=1), "sde", 8)
  source = lambda **changes: embedding_shards.encoder_source(**{**dict(
      model=model, vocabulary=vocabularies.quickstart_vocabulary(), checkpoint="/run",
      step=4, length=16), **changes})
  assert source() == source(model=dual_encoder.DualEncoder(t5.T5Config(num_layers=1), "sde", 8))
  assert source()["vocabulary_sha256"] == embedding_shards.encoder_source(
      model, seqio.SentencePieceVocabulary(vocabularies.QUICKSTART_PATH), "/run", 4,
      16)["vocabulary_sha256"]
  others = {
      "vocabulary_sha256": [
          dict(vocabulary=seqio.SentencePieceVocabulary(vocabularies.QUICKSTART_PATH,
                                                        extra_ids=10)),
          dict(vocabulary=seqio.ByteVocabulary()),
          dict(vocabulary=seqio.ByteVocabulary(extra_ids=10))],
      "model_sha256": [
          dict(model=dataclasses.replace(model, embedding_dim=16)),
          dict(model=dataclasses.replace(
              model, config=t5.T5Config(num_layers=1, dtype="bfloat16")))],
      "step": [dict(step=8)], "checkpoint": [dict(checkpoint="/other")],
      "length": [dict(length=32)]}
  for field, changes in others.items():
    for change in changes:
      differs = {k for k, v in source(**change).items() if source()[k] != v}
      assert differs == {field}, change
  assert (embedding_shards.encoder_source(model, seqio.ByteVocabulary(), "/run", 4, 16)
          != embedding_shards.encoder_source(model, seqio.ByteVocabulary(extra_ids=10), "/run",
                                             4, 16))


def _encode_command(tiny_run, corpus_file, output_dir, **options):
  from samtone_jax import encode  # pylint: disable=g-import-not-at-top
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
  from samtone_jax import dual_encoder, encode, pretrained  # pylint: disable=g-import-not-at-top
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


def test_two_processes_encode_and_search_as_one(tmp_path):
  """Two JAX processes (2 CPU devices each) embed their own shards of one corpus and search
  them: the shards and the top-k equal one process's."""
  from tests import multiprocess_encode_worker as worker  # pylint: disable=g-import-not-at-top
  from tests import processes  # pylint: disable=g-import-not-at-top
  procs = processes.start_workers("tests.multiprocess_encode_worker", worker.NUM_PROCESSES,
                                  tmp_path, f"--out={tmp_path}")
  codes, _ = processes.wait_all(procs, 240)
  assert codes == [0] * worker.NUM_PROCESSES, processes.logs(tmp_path)

  shards, scores, indices = worker.encode_and_search(tmp_path / "one",
                                                     partitioning.create_mesh())
  two = embedding_shards.EmbeddingShards(tmp_path / "shards")
  assert two.ids() == shards.ids() == list(worker.CORPUS)
  np.testing.assert_allclose(two[0:23], shards[0:23], rtol=1e-5, atol=1e-6)  # other batch shapes
  for i in range(worker.NUM_PROCESSES):
    with np.load(tmp_path / f"process{i}.npz") as got:
      np.testing.assert_array_equal(got["indices"], indices)
      np.testing.assert_allclose(got["scores"], scores, rtol=1e-5, atol=1e-6)
