"""The T5 encoder against Hugging Face transformers' T5EncoderModel (PyTorch, CPU)."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers.models.t5.modeling_t5 import T5Attention

from samtone_jax import pretrained, t5
from tests import hf_fixtures

# Mixed lengths with padding (id 0), EOS (1) closing each text.
IDS = np.array([[5, 6, 7, 8, 9, 10, 11, 1],
                [3, 4, 1, 0, 0, 0, 0, 0],
                [12, 13, 14, 15, 1, 0, 0, 0]], np.int32)


def _reference_hidden(model, ids):
  with torch.no_grad():
    return model(input_ids=torch.tensor(ids, dtype=torch.long),
                 attention_mask=torch.tensor(ids > 0, dtype=torch.long)
                 ).last_hidden_state.numpy()


@pytest.mark.parametrize("feed_forward_proj", ["gated-gelu", "relu"],
                         ids=["v1.1-gated-gelu", "v1.0-relu"])
def test_hidden_states_equal_transformers(tmp_path, feed_forward_proj):
  reference = hf_fixtures.save_t5_encoder(tmp_path, feed_forward_proj=feed_forward_proj)
  config, params = pretrained.load_hf_t5_encoder(tmp_path)
  ours = jax.jit(t5.T5Encoder(config).apply)({"params": params}, IDS)
  np.testing.assert_allclose(ours, _reference_hidden(reference, IDS), atol=1e-4, rtol=0)


@pytest.mark.parametrize("length", [1, 9, 130, 600])
@pytest.mark.parametrize("buckets, max_distance", [(32, 128), (8, 20)])
def test_relative_position_buckets_equal_transformers(length, buckets, max_distance):
  relative = torch.arange(length)[None, :] - torch.arange(length)[:, None]
  want = T5Attention._relative_position_bucket(  # pylint: disable=protected-access
      relative, bidirectional=True, num_buckets=buckets, max_distance=max_distance).numpy()
  np.testing.assert_array_equal(t5.relative_position_buckets(length, buckets, max_distance),
                                want)


def _tiny(**overrides):
  return t5.T5Config(**{**dict(vocab_size=64, d_model=16, d_ff=40, num_heads=2, head_dim=6,
                               num_layers=2), **overrides})


def test_padding_does_not_change_real_positions():
  config = _tiny()
  model = t5.T5Encoder(config)
  params = model.init(jax.random.key(0), IDS)
  short = model.apply(params, IDS)
  padded = model.apply(params, np.pad(IDS, ((0, 0), (0, 7))))[:, :IDS.shape[1]]
  np.testing.assert_allclose(padded[IDS > 0], short[IDS > 0], atol=1e-5)


@pytest.mark.slow  # REMAT is an option of the largest models
def test_remat_changes_nothing_but_memory():
  config = _tiny(dropout_rate=0.1)
  ids = jnp.asarray(IDS)

  def loss(params, cfg):
    out = t5.T5Encoder(cfg).apply(params, ids, deterministic=False,
                                  rngs={"dropout": jax.random.key(1)})
    return jnp.sum(out ** 2)

  params = t5.T5Encoder(config).init(jax.random.key(0), ids)
  plain = jax.value_and_grad(loss)(params, config)
  remat = jax.value_and_grad(loss)(params, dataclasses.replace(config, remat=True))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
               plain, remat)


def test_dropout_only_when_not_deterministic():
  model = t5.T5Encoder(_tiny(dropout_rate=0.3))
  params = model.init(jax.random.key(0), IDS)
  a, b = (model.apply(params, IDS, deterministic=False, rngs={"dropout": jax.random.key(s)})
          for s in (1, 2))
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(model.apply(params, IDS), model.apply(params, IDS))


def test_bfloat16_activations_float32_params():
  config = _tiny(dtype="bfloat16")
  model = t5.T5Encoder(config)
  params = model.init(jax.random.key(0), IDS)
  assert {x.dtype for x in jax.tree.leaves(nn.unbox(params))} == {jnp.dtype(jnp.float32)}
  out = model.apply(params, IDS)
  assert out.dtype == jnp.bfloat16
  full = t5.T5Encoder(_tiny()).apply(params, IDS)
  np.testing.assert_allclose(np.asarray(out, np.float32), full, atol=0.1)


def test_every_parameter_has_logical_axes():
  variables = jax.eval_shape(lambda: t5.T5Encoder(_tiny()).init(jax.random.key(0), IDS))
  boxes = jax.tree.leaves(variables["params"],
                          is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert boxes and all(isinstance(b, nn.LogicallyPartitioned) for b in boxes)
  names = {n for b in boxes for n in b.names}
  assert names == {"vocab", "embed", "joined_kv", "mlp", "heads", "relpos_buckets"}


@pytest.mark.parametrize("field, value", [("num_layers", 0), ("d_model", -1),
                                          ("mlp_activations", ("swish",)),
                                          ("dropout_rate", 1.0), ("dtype", "float33")])
def test_bad_config_names_the_field(field, value):
  with pytest.raises(ValueError, match=f"T5Config.{field}"):
    _tiny(**{field: value})
