"""The device mesh and logical-axis partitioning, after T5X's PjitPartitioner.

One mesh over all devices of all processes, with axes ("data", "model"): the batch is split
over "data", and parameters (and some activations) over "model" through logical axis rules
that map the names the modules give their axes (`vocab`, `embed`, `mlp`, ...) onto mesh
axes. `num_partitions` is the size of the "model" axis, as in T5X.
"""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh

LogicalRules = Sequence[tuple[str, Optional[str]]]


def standard_logical_axis_rules(
    activation_partitioning_dims: int = 1,
    parameter_partitioning_dims: int = 1,
    additional_rules: Optional[LogicalRules] = None) -> LogicalRules:
  """T5X's default rules from logical axis names to the ("data", "model") mesh axes.

  Args:
    activation_partitioning_dims: 2 also splits activations' `embed` over "model".
    parameter_partitioning_dims: 2 also splits parameters' `embed` over "data".
    additional_rules: rules appended to the standard ones (for new logical names).

  Returns:
    A sequence of (logical name, mesh axis or None); the first rule for a name wins.
  """
  rules = [("batch", "data"), ("vocab", "model"), ("mlp", "model"), ("heads", "model"),
           ("kv", None), ("joined_kv", "model")]
  embed = {(1, 1): [("embed", None)], (2, 1): [("embed", "model")],
           (1, 2): [("embed", "data")], (2, 2): [("embed", "model"), ("embed", "data")]}
  key = (activation_partitioning_dims, parameter_partitioning_dims)
  if key not in embed:
    raise ValueError(f"activation_partitioning_dims={key[0]} with"
                     f" parameter_partitioning_dims={key[1]} is not supported (1 or 2 each).")
  rules += embed[key]
  rules += [("relpos_buckets", None), ("length", None), ("layers", None),
            ("projection", None)]
  return tuple(rules) + tuple(additional_rules or ())


def create_mesh(num_partitions: int = 1, devices: Optional[Sequence[Any]] = None) -> Mesh:
  """A ("data", "model") mesh over `devices` (default: all devices of all processes).

  The "model" axis has `num_partitions` devices; devices of one process stay together along
  "data" so that each process feeds a contiguous part of the batch. Both axes are
  `AxisType.Auto`: the compiler propagates shardings from the logical-axis constraints.
  """
  devices = list(jax.devices() if devices is None else devices)
  if num_partitions < 1 or len(devices) % num_partitions:
    raise ValueError(f"NUM_PARTITIONS={num_partitions} must be >= 1 and divide the"
                     f" {len(devices)} devices.")
  per_process = len(devices) // len({d.process_index for d in devices})
  if per_process % num_partitions:
    # A "model" group spanning processes would make them share batch rows, which the input
    # pipeline (one shard a process) does not feed.
    raise ValueError(f"NUM_PARTITIONS={num_partitions} must divide the {per_process} devices"
                     " of each process.")
  devices.sort(key=lambda d: (d.process_index, d.id))
  grid = np.array(devices).reshape(len(devices) // num_partitions, num_partitions)
  return Mesh(grid, ("data", "model"), axis_types=(AxisType.Auto, AxisType.Auto))


def logical_shardings(boxed_tree: Any, mesh: Mesh, rules: LogicalRules) -> Any:
  """NamedShardings for a tree of `nn.LogicallyPartitioned` leaves (abstract or not).

  Leaves without logical names are replicated.
  """
  return nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed_tree), mesh, rules)
