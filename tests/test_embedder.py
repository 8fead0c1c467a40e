"""`Embedder`: a checkpoint's query and passage embeddings, as the model gives them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio
from flax import linen as nn

from samtone_jax import embedder as embedder_lib
from samtone_jax import partitioning
from tests import hf_fixtures
from tests.byte_ids import byte_ids

TEXTS = ["apple banana", "cherry", "a text longer than the sixteen bytes of a passage",
         "", "date elder fig", "grape"]



def _saved_params(model, step):
  """The parameters `tiny_run` saved at `step` (initialised with the key of the step)."""
  ids = jnp.zeros((1, 8), jnp.int32)
  return nn.unbox(model.init(jax.random.key(step), ids, ids))["params"]


def _reference(model, params, texts, length, method):
  return np.asarray(model.apply({"params": params}, byte_ids(texts, length),
                                method=getattr(model, method)))


@pytest.mark.parametrize("checkpoint, step, num_partitions", [
    ("", 8, 1), ("checkpoints/4", 4, 1), ("", 8, 2)])
def test_from_checkpoint_embeds_as_model_apply(tiny_run, checkpoint, step, num_partitions):
  """A MODEL_DIR (its newest step) or one of its checkpoints, on a mesh with or without a
  "model" axis, in batches of 4 (the last one short): the embeddings of `model.apply` on
  the saved parameters, and the outputs labelled with that checkpoint and step."""
  model, run, lengths = tiny_run
  embedder = embedder_lib.Embedder.from_checkpoint(
      model, run / checkpoint if checkpoint else run, lengths,
      vocabulary=seqio.ByteVocabulary(), num_partitions=num_partitions, batch_size=4)
  params = _saved_params(model, step)
  np.testing.assert_allclose(embedder.queries(TEXTS), _reference(
      model, params, TEXTS, lengths["queries"], "encode_queries"), atol=1e-6)
  np.testing.assert_allclose(embedder.passages(TEXTS), _reference(
      model, params, TEXTS, lengths["passages"], "encode_passages"), atol=1e-6)
  assert embedder.step == step
  assert embedder.source["checkpoint"] == str(run / "checkpoints" / str(step))
  assert embedder.source["step"] == step and embedder.source["length"] == lengths["passages"]
  assert dict(embedder.mesh.shape)["model"] == num_partitions


def test_in_memory_parameters_embed_as_model_apply(tiny_run, tmp_path):
  """Training's parameters, not read from disk: `Embedder.of_model`; its corpus shards hold
  the same embeddings as `passages`, labelled with the run and step given."""
  model, run, lengths = tiny_run
  params = _saved_params(model, 3)
  embedder = embedder_lib.Embedder.of_model(
      model, params, seqio.ByteVocabulary(), lengths, partitioning.create_mesh(),
      checkpoint=run, step=3, batch_size=8)
  np.testing.assert_allclose(embedder.queries(TEXTS), _reference(
      model, params, TEXTS, lengths["queries"], "encode_queries"), atol=1e-6)
  shards = embedder.encode_corpus(tmp_path / "shards", dict(zip("abcdef", TEXTS)),
                                  shard_size=4)
  np.testing.assert_allclose(shards[0:len(TEXTS)], _reference(
      model, params, TEXTS, lengths["passages"], "encode_passages"), atol=1e-6)
  assert shards.ids() == list("abcdef")
  assert shards.meta["checkpoint"] == str(run) and shards.meta["step"] == 3


def test_a_vocabulary_or_a_task_is_needed():
  vocabulary = seqio.ByteVocabulary()
  assert embedder_lib.resolve_vocabulary(vocabulary, None) is vocabulary
  with pytest.raises(ValueError, match="set VOCABULARY or MIXTURE_OR_TASK_NAME"):
    embedder_lib.resolve_vocabulary(None, None)


class _Words:
  """The word-level vocabulary of `hf_fixtures.save_word_tokenizer`, as `retrieval.tokenize`
  reads a vocabulary: `encode(text)` and `eos_id`."""
  eos_id = 1

  def encode(self, text):
    return [hf_fixtures.WORDS.index(w) if w in hf_fixtures.WORDS else 2 for w in text.split()]


def test_a_sentence_transformers_folder_embeds_as_sentence_transformers(tmp_path):
  """A pretrained GTR-style folder (no step): the embeddings sentence-transformers gives."""
  import sentence_transformers  # pylint: disable=g-import-not-at-top
  from samtone_jax import dual_encoder, pretrained  # pylint: disable=g-import-not-at-top
  hf_fixtures.save_gtr(tmp_path / "gtr")
  texts = ["w1 w2 w3 w4", "w5 never-seen w6", "w7"]
  want = sentence_transformers.SentenceTransformer(str(tmp_path / "gtr"),
                                                   device="cpu").encode(texts)
  config = pretrained.load_initial_checkpoint(tmp_path / "gtr")[0]
  model = dual_encoder.DualEncoder(config, "sde", want.shape[1])
  embedder = embedder_lib.Embedder.from_checkpoint(
      model, tmp_path / "gtr", {"queries": 8, "passages": 8}, vocabulary=_Words())
  np.testing.assert_allclose(embedder.queries(texts), want, atol=1e-4)
  np.testing.assert_allclose(embedder.passages(texts), want, atol=1e-4)
  assert embedder.step is None and embedder.source["checkpoint"] == str(tmp_path / "gtr")
