"""The ("data", "model") mesh and T5X's logical axis rules: the rules as T5X writes them, the
mesh's device order, the shardings of named axes, and a base model initialised split over
the "model" axis."""

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from jax.sharding import NamedSharding, PartitionSpec as P

from samtone_jax import dual_encoder, partitioning, t5

# T5X's standard_logical_axis_rules (t5x/partitioning.py), as {logical name: mesh axes in
# order of preference}, by (activation_partitioning_dims, parameter_partitioning_dims).
T5X_RULES = {"batch": ["data"], "vocab": ["model"], "mlp": ["model"], "heads": ["model"],
             "kv": [None], "joined_kv": ["model"], "relpos_buckets": [None], "length": [None],
             "layers": [None], "projection": [None]}
T5X_EMBED = {(1, 1): [None], (2, 1): ["model"], (1, 2): ["data"], (2, 2): ["model", "data"]}


def _as_preferences(rules):
  preferences = {}
  for name, axis in rules:
    preferences.setdefault(name, []).append(axis)
  return preferences


@pytest.mark.parametrize("dims", sorted(T5X_EMBED))
def test_standard_rules_are_t5x_rules(dims):
  rules = partitioning.standard_logical_axis_rules(*dims)
  assert _as_preferences(rules) == dict(T5X_RULES, embed=T5X_EMBED[dims])
  extra = partitioning.standard_logical_axis_rules(*dims, additional_rules=[("new", "model")])
  assert list(extra) == [*rules, ("new", "model")]
  with pytest.raises(ValueError, match="activation_partitioning_dims=3"):
    partitioning.standard_logical_axis_rules(3, 1)


def test_the_mesh_groups_consecutive_devices_along_model():
  ids = lambda mesh: [[d.id for d in row] for row in mesh.devices]
  mesh = partitioning.create_mesh()
  assert mesh.axis_names == ("data", "model") and ids(mesh) == [[i] for i in range(8)]
  mesh = partitioning.create_mesh(2, devices=jax.devices()[::-1])  # in any order given
  assert ids(mesh) == [[0, 1], [2, 3], [4, 5], [6, 7]]
  assert ids(partitioning.create_mesh(4, devices=jax.devices()[:4])) == [[0, 1, 2, 3]]


@pytest.mark.parametrize("num_partitions", [0, 3, 16])
def test_a_model_axis_that_does_not_divide_the_devices_is_refused(num_partitions):
  with pytest.raises(ValueError, match=f"NUM_PARTITIONS={num_partitions} must be >= 1 and"
                                       " divide the 8 devices"):
    partitioning.create_mesh(num_partitions)


def test_a_model_axis_across_processes_is_refused():
  """Two processes of 4 devices: a "model" group of 8 would span both."""
  devices = [types.SimpleNamespace(process_index=i // 4, id=i) for i in range(8)]
  with pytest.raises(ValueError, match="NUM_PARTITIONS=8 must divide the 4 devices of each"
                                       " process"):
    partitioning.create_mesh(8, devices=devices)


@pytest.mark.parametrize("parameter_dims, embed", [(1, None), (2, "data")])
def test_logical_shardings_map_names_through_the_rules(parameter_dims, embed):
  """Named leaves (arrays or abstract) are split as the rules say; unnamed ones replicated."""
  mesh = partitioning.create_mesh(2)  # 4 x 2
  rules = partitioning.standard_logical_axis_rules(parameter_partitioning_dims=parameter_dims)
  boxed = {"mlp": {"kernel": nn.LogicallyPartitioned(jnp.zeros((4, 6)), ("embed", "mlp"))},
           "embedding": nn.LogicallyPartitioned(jax.ShapeDtypeStruct((8, 4), jnp.float32),
                                                ("vocab", "embed")),
           "scale": nn.LogicallyPartitioned(jnp.zeros(4), ("embed",)),
           "unnamed": jnp.zeros(3)}
  want = {("mlp", "kernel"): (P(embed, "model"), 2), ("embedding",): (P("model", embed), 2),
          ("scale",): (P(embed), 1), ("unnamed",): (P(), 1)}
  got = traverse_util.flatten_dict(partitioning.logical_shardings(boxed, mesh, rules))
  assert got.keys() == want.keys()
  for path, (spec, ndim) in want.items():
    assert isinstance(got[path], NamedSharding) and got[path].mesh == mesh, path
    assert got[path].is_equivalent_to(NamedSharding(mesh, spec), ndim), (path, got[path])


# Token ids of two queries and two passages (EOS 1, padding 0).
QUERIES = np.array([[5, 6, 7, 1, 0, 0], [8, 9, 1, 0, 0, 0]], np.int32)
PASSAGES = np.array([[10, 11, 12, 13, 14, 1], [15, 16, 17, 1, 0, 0]], np.int32)


def test_sharded_initialisation_splits_model_parallel_weights():
  """Base SDE on a 2 x 4 ("data", "model") mesh: each device holds a quarter of every
  model-parallel weight and never a full copy of the model."""
  model = dual_encoder.DualEncoder(t5.T5Config(), "sde", 768)  # T5 v1.1 base
  mesh = partitioning.create_mesh(num_partitions=4)
  assert dict(mesh.shape) == {"data": 2, "model": 4}
  rules = partitioning.standard_logical_axis_rules()
  init = lambda key: model.init(key, QUERIES, PASSAGES)
  shardings = partitioning.logical_shardings(jax.eval_shape(init, jax.random.key(0)), mesh,
                                             rules)
  params = nn.unbox(jax.jit(init, out_shardings=shardings)(jax.random.key(0)))["params"]

  total = sum(x.nbytes for x in jax.tree.leaves(params))
  flat = traverse_util.flatten_dict(params)
  for device in mesh.devices.flat:
    held = 0
    for path, x in flat.items():
      (shard,) = [s for s in x.addressable_shards if s.device == device]
      held += shard.data.nbytes
      split = x.sharding.spec != jax.sharding.PartitionSpec() and any(
          axis == "model" for axis in x.sharding.spec)
      if x.ndim == 2 and path[-1] in ("kernel", "token_embedding") and "projection" not in path:
        assert split, path  # every T5 matrix is model-parallel
      if split:
        assert shard.data.size * 4 == x.size, path
    assert held < 0.26 * total, (device, held / total)
