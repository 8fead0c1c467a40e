"""The three dual-encoder architectures and the model sizes in gin."""

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

import samtone_jax
from samtone_jax import dual_encoder, t5

TINY = t5.T5Config(vocab_size=64, d_model=16, d_ff=40, num_heads=2, head_dim=6, num_layers=2)
QUERIES = np.array([[5, 6, 7, 1, 0, 0], [8, 9, 1, 0, 0, 0]], np.int32)
PASSAGES = np.array([[10, 11, 12, 13, 14, 1], [15, 16, 17, 1, 0, 0]], np.int32)


def _init(architecture, embedding_dim=12):
  model = dual_encoder.DualEncoder(TINY, architecture, embedding_dim)
  params = nn.unbox(model.init(jax.random.key(0), QUERIES, PASSAGES))["params"]
  return model, params


@pytest.mark.parametrize("architecture, trees", [
    ("sde", {"tower", "projection"}),
    ("ade", {"query_tower", "passage_tower", "query_projection", "passage_projection"}),
    ("ade_spl", {"query_tower", "passage_tower", "projection"}),
])
def test_parameter_trees(architecture, trees):
  _, params = _init(architecture)
  assert set(params) == trees


def test_outputs_are_unit_vectors_and_ignore_padding():
  model, params = _init("ade")
  out = model.apply({"params": params}, QUERIES, PASSAGES)
  for side in ("query", "passage"):
    np.testing.assert_allclose(np.linalg.norm(out[side], axis=-1), 1.0, rtol=1e-5)
  padded = model.apply({"params": params}, np.pad(QUERIES, ((0, 0), (0, 5))),
                       method=model.encode_queries)
  np.testing.assert_allclose(padded, out["query"], atol=1e-5)


def test_sde_embeds_both_sides_identically():
  model, params = _init("sde")
  q = model.apply({"params": params}, QUERIES, method=model.encode_queries)
  p = model.apply({"params": params}, QUERIES, method=model.encode_passages)
  np.testing.assert_array_equal(q, p)


def test_ade_towers_are_separate():
  model, params = _init("ade")
  flat = traverse_util.flatten_dict(params)
  for path, value in flat.items():
    if path[0] == "query_tower" and path[-1] != "scale":  # norm scales start at 1
      assert not np.allclose(value, flat[("passage_tower",) + path[1:]]), path
  q = model.apply({"params": params}, QUERIES, method=model.encode_queries)
  p = model.apply({"params": params}, QUERIES, method=model.encode_passages)
  assert not np.allclose(q, p)
  # A passage-side parameter has no effect on queries.
  changed = jax.tree_util.tree_map_with_path(
      lambda path, x: x + 1.0 if "passage_tower" in str(path[0]) else x, params)
  np.testing.assert_array_equal(
      model.apply({"params": changed}, QUERIES, method=model.encode_queries), q)


def test_ade_spl_shares_one_projection():
  model, params = _init("ade_spl")

  def side_sum(params, method):
    return jnp.sum(model.apply({"params": params}, QUERIES, method=method) ** 3)

  for method in (model.encode_queries, model.encode_passages):
    grads = jax.grad(side_sum)(params, method)
    assert np.abs(grads["projection"]["kernel"]).sum() > 0, method
  # The two sides differ only by their towers: same towers -> same embeddings.
  tied = dict(params, passage_tower=params["query_tower"])
  np.testing.assert_array_equal(
      model.apply({"params": tied}, QUERIES, method=model.encode_queries),
      model.apply({"params": tied}, QUERIES, method=model.encode_passages))


def test_hard_negatives_are_encoded_by_the_passage_side():
  model, params = _init("ade")
  negatives = np.stack([PASSAGES[::-1], PASSAGES], axis=1)  # [B=2, k=2, L]
  out = model.apply({"params": params}, QUERIES, PASSAGES, negatives)
  assert out["negative"].shape == (2, 2, 12)
  np.testing.assert_allclose(
      out["negative"],
      model.apply({"params": params}, negatives, method=model.encode_passages), atol=1e-6)
  np.testing.assert_allclose(
      out["passage"],
      model.apply({"params": params}, PASSAGES, method=model.encode_passages), atol=1e-6)


def test_unknown_architecture_is_a_clear_error():
  with pytest.raises(ValueError, match="architecture"):
    dual_encoder.DualEncoder(TINY, "sde2").init(jax.random.key(0), QUERIES, PASSAGES)


SIZES = {  # T5 v1.1: d_model, d_ff, heads, layers (head dim 64, vocabulary 32128).
    "small": (512, 1024, 6, 8), "base": (768, 2048, 12, 12), "large": (1024, 2816, 16, 24),
    "xl": (2048, 5120, 32, 24), "xxl": (4096, 10240, 64, 24),
}


@gin.configurable
def _model(model=gin.REQUIRED):
  return model


def _gin_model(size, architecture="sde"):
  gin.clear_config()
  gin.add_config_file_search_path(str(samtone_jax.GIN_CONFIGS_DIR))
  try:
    gin.parse_config_files_and_bindings(
        [f"models/t5_1_1_{size}.gin", f"architectures/{architecture}.gin"],
        ["_model.model = %MODEL"])
    return _model()
  finally:
    gin.clear_config()


def _count_from_dimensions(vocab, d, d_ff, heads, head_dim, layers, embedding_dim, towers,
                           projections, gated=True):
  attention = 4 * d * heads * head_dim
  mlp = (3 if gated else 2) * d * d_ff
  layer = attention + mlp + 2 * d  # two RMS norm scales
  tower = vocab * d + layers * layer + heads * 32 + d  # relative bias, final norm
  return towers * tower + projections * d * embedding_dim


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("architecture, towers, projections",
                         [("sde", 1, 1), ("ade", 2, 2), ("ade_spl", 2, 1)])
def test_gin_sizes_have_t5_v1_1_parameter_counts(size, architecture, towers, projections):
  model = _gin_model(size, architecture)
  d, d_ff, heads, layers = SIZES[size]
  assert (model.config.d_model, model.config.d_ff, model.config.num_heads,
          model.config.num_layers, model.config.head_dim, model.config.vocab_size) == (
              d, d_ff, heads, layers, 64, 32128)
  assert model.architecture == architecture and model.embedding_dim == 768
  abstract = jax.eval_shape(model.init, jax.random.key(0), QUERIES, PASSAGES)
  count = sum(x.size for x in jax.tree.leaves(nn.unbox(abstract)))
  assert count == _count_from_dimensions(32128, d, d_ff, heads, 64, layers, 768, towers,
                                         projections)
  if size == "base" and architecture == "sde":
    assert 109e6 < count - 768 * 768 < 111e6  # the T5 v1.1 base encoder: about 110M


def test_tiny_gin_model_runs():
  model = _gin_model("tiny", "ade_spl")
  assert (model.config.d_model, model.config.num_layers, model.config.num_heads) == (32, 2, 4)
  out = model.apply(model.init(jax.random.key(0), QUERIES, PASSAGES), QUERIES, PASSAGES)
  assert out["query"].shape == (2, model.embedding_dim)
