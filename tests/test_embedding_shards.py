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
