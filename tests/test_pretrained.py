"""Weights in from Hugging Face T5 folders and sentence-transformers GTR folders."""

import json

import flax.linen as nn
import jax
import numpy as np
import pytest
import safetensors.numpy
import sentence_transformers
import torch

from samtone_jax import dual_encoder, pretrained, t5
from tests import hf_fixtures

IDS = np.array([[5, 6, 7, 8, 9, 1], [3, 4, 1, 0, 0, 0]], np.int32)
TEXTS = ["w1 w2 w3 w4", "w5 never-seen w6", "w7"]


def _ours(path):
  config, params = pretrained.load_hf_t5_encoder(path)
  return np.asarray(t5.T5Encoder(config).apply({"params": params}, IDS))


def _reference(model):
  with torch.no_grad():
    return model(input_ids=torch.tensor(IDS, dtype=torch.long),
                 attention_mask=torch.tensor(IDS > 0, dtype=torch.long)
                 ).last_hidden_state.numpy()


def test_loaded_tree_matches_the_module(tmp_path):
  hf_fixtures.save_t5_encoder(tmp_path)
  config, params = pretrained.load_hf_t5_encoder(tmp_path)
  init = nn.unbox(t5.T5Encoder(config).init(jax.random.key(0), IDS))["params"]
  assert jax.tree.structure(params) == jax.tree.structure(init)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(init)):
    assert (a.shape, a.dtype) == (b.shape, b.dtype)


def test_pytorch_bin(tmp_path):
  model = hf_fixtures.save_t5_encoder(tmp_path, pytorch_bin=True)
  assert not (tmp_path / "model.safetensors").exists()
  np.testing.assert_allclose(_ours(tmp_path), _reference(model), atol=1e-4)


def test_encoder_decoder_checkpoint_leaves_the_decoder_out(tmp_path):
  """google/t5-v1_1-* are T5ForConditionalGeneration checkpoints."""
  encoder = hf_fixtures.save_t5_encoder(tmp_path, encoder_decoder=True)
  np.testing.assert_allclose(_ours(tmp_path), _reference(encoder), atol=1e-4)


def test_sharded_safetensors(tmp_path):
  """model.safetensors.index.json with two shards, as the large checkpoints come."""
  model = hf_fixtures.save_t5_encoder(tmp_path / "whole")
  state = safetensors.numpy.load_file(tmp_path / "whole" / "model.safetensors")
  folder = tmp_path / "sharded"
  folder.mkdir()
  (folder / "config.json").write_text((tmp_path / "whole" / "config.json").read_text())
  names, weight_map = sorted(state), {}
  for i, part in enumerate((names[::2], names[1::2])):
    shard = f"model-0000{i + 1}-of-00002.safetensors"
    safetensors.numpy.save_file({k: state[k] for k in part}, folder / shard)
    weight_map.update({k: shard for k in part})
  (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
  np.testing.assert_allclose(_ours(folder), _reference(model), atol=1e-4)


def _rewrite_weights(folder, edit):
  state = safetensors.numpy.load_file(folder / "model.safetensors")
  edit(state)
  safetensors.numpy.save_file(state, folder / "model.safetensors")


def test_missing_and_unexpected_tensors_are_named(tmp_path):
  hf_fixtures.save_t5_encoder(tmp_path)
  _rewrite_weights(tmp_path, lambda s: s.pop("encoder.block.1.layer.1.DenseReluDense.wo.weight"))
  with pytest.raises(pretrained.CheckpointError,
                     match=r"missing tensors \['encoder.block.1.layer.1.DenseReluDense.wo"):
    pretrained.load_hf_t5_encoder(tmp_path)
  _rewrite_weights(tmp_path, lambda s: s.update(
      {"encoder.block.1.layer.1.DenseReluDense.wo.weight": np.zeros((16, 40), np.float32),
       "encoder.block.2.layer.0.layer_norm.weight": np.ones(16, np.float32)}))
  with pytest.raises(pretrained.CheckpointError,
                     match=r"unexpected tensors \['encoder.block.2.layer.0.layer_norm.weight'\]"):
    pretrained.load_hf_t5_encoder(tmp_path)


def test_misshapen_tensor_and_bad_config_are_named(tmp_path):
  hf_fixtures.save_t5_encoder(tmp_path)
  _rewrite_weights(tmp_path, lambda s: s.update(
      {"encoder.final_layer_norm.weight": np.ones(17, np.float32)}))
  with pytest.raises(pretrained.CheckpointError, match="encoder.final_layer_norm.weight"):
    pretrained.load_hf_t5_encoder(tmp_path)
  config = json.loads((tmp_path / "config.json").read_text())
  (tmp_path / "config.json").write_text(json.dumps(dict(config, feed_forward_proj="gated-silu")))
  with pytest.raises(pretrained.CheckpointError, match="feed_forward_proj='gated-silu'"):
    pretrained.load_hf_t5_encoder(tmp_path)
  del config["d_kv"]
  (tmp_path / "config.json").write_text(json.dumps(config))
  with pytest.raises(pretrained.CheckpointError, match="missing field 'd_kv'"):
    pretrained.load_hf_t5_encoder(tmp_path)
  with pytest.raises(pretrained.CheckpointError, match="no weights found"):
    pretrained.read_state_dict(tmp_path / "nothing_here")


def _dual_encoder(config, architecture, embedding_dim, ids):
  model = dual_encoder.DualEncoder(config, architecture, embedding_dim)
  return model, nn.unbox(model.init(jax.random.key(0), ids, ids))["params"]


def test_gtr_folder_equals_sentence_transformers_encode(tmp_path):
  hf_fixtures.save_gtr(tmp_path / "gtr")
  reference = sentence_transformers.SentenceTransformer(str(tmp_path / "gtr"), device="cpu")
  want = reference.encode(TEXTS)
  ids = reference.tokenize(TEXTS)["input_ids"].numpy().astype(np.int32)

  config, tower, kernel = pretrained.load_initial_checkpoint(tmp_path / "gtr")
  assert config.mlp_activations == ("relu",) and kernel.shape == (16, 12)
  model, params = _dual_encoder(config, "sde", kernel.shape[1], ids)
  params = pretrained.with_pretrained(params, "sde", tower, kernel)
  for method in (model.encode_queries, model.encode_passages):
    got = model.apply({"params": params}, ids, method=method)
    np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("architecture", ["ade", "ade_spl"])
def test_asymmetric_towers_start_from_the_same_encoder(tmp_path, architecture):
  hf_fixtures.save_gtr(tmp_path / "gtr")
  config, tower, kernel = pretrained.load_sentence_transformers(tmp_path / "gtr")
  model, fresh = _dual_encoder(config, architecture, 12, IDS)
  loaded = pretrained.with_pretrained(fresh, architecture, tower, kernel)
  q = model.apply({"params": loaded}, IDS, method=model.encode_queries)
  p = model.apply({"params": loaded}, IDS, method=model.encode_passages)
  np.testing.assert_array_equal(q, p)  # identical towers and projections at the start
  # Without the Dense kernel, projections keep their fresh initialisation.
  towers_only = pretrained.with_pretrained(fresh, architecture, tower)
  for name in fresh:
    if name.endswith("projection"):
      np.testing.assert_array_equal(towers_only[name]["kernel"], fresh[name]["kernel"])
    else:
      np.testing.assert_array_equal(towers_only[name]["token_embedding"],
                                    tower["token_embedding"])


def test_hf_folder_as_initial_checkpoint(tmp_path):
  hf_fixtures.save_t5_encoder(tmp_path)
  config, tower, kernel = pretrained.load_initial_checkpoint(tmp_path)
  assert kernel is None and config.mlp_activations == ("gelu", "linear")
  with pytest.raises(pretrained.CheckpointError, match="INITIAL_CHECKPOINT_PATH"):
    pretrained.load_initial_checkpoint(tmp_path / "absent")


def test_gtr_folder_with_other_pooling_or_dense_is_refused(tmp_path):
  hf_fixtures.save_gtr(tmp_path / "gtr")
  pooling = tmp_path / "gtr" / "1_Pooling" / "config.json"
  pooling.write_text(json.dumps(dict(json.loads(pooling.read_text()), pooling_mode="cls")))
  with pytest.raises(pretrained.CheckpointError, match="mean-pool"):
    pretrained.load_sentence_transformers(tmp_path / "gtr")
  pooling.write_text(json.dumps({"pooling_mode": "mean"}))
  dense = tmp_path / "gtr" / "2_Dense" / "config.json"
  dense.write_text(json.dumps(dict(json.loads(dense.read_text()),
                                   activation_function="torch.nn.modules.activation.Tanh")))
  with pytest.raises(pretrained.CheckpointError, match="Tanh"):
    pretrained.load_sentence_transformers(tmp_path / "gtr")


def test_pretrained_weights_of_the_wrong_size_are_refused(tmp_path):
  hf_fixtures.save_t5_encoder(tmp_path)
  _, tower = pretrained.load_hf_t5_encoder(tmp_path)
  bigger = t5.T5Config(vocab_size=64, d_model=16, d_ff=40, num_heads=2, head_dim=6,
                       num_layers=3, relative_attention_num_buckets=8)
  _, params = _dual_encoder(bigger, "sde", 12, IDS)
  with pytest.raises(pretrained.CheckpointError, match="layers_2"):
    pretrained.with_pretrained(params, "sde", tower)
