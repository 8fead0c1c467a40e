"""One process of the two-process sharded-loss test (tests/test_multiprocess_loss.py).

Run as `python -m tests.multiprocess_loss_worker --process_id=I --port=P --out=F.npz`: joins
a 2-process JAX cluster on 127.0.0.1 (gloo CPU collectives, 2 simulated devices a process),
feeds its local half of the global batch and writes the loss, the metrics and the gradient
rows of its own examples to `--out`.
"""

import argparse
import os

import numpy as np

from tests import cluster

NUM_PROCESSES = 2
DEVICES_PER_PROCESS = 2
BATCH = 24
OPTIONS = dict(temperature=0.05, same_tower="both", pair_alpha=0.1)


def global_batch():
  """The global batch as numpy arrays, the same in every process."""
  rng = np.random.default_rng(1234)
  unit = lambda *s: (lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True))(
      rng.normal(size=s)).astype(np.float32)
  return dict(query_emb=unit(BATCH, 8), passage_emb=unit(BATCH, 8),
              negative_emb=unit(BATCH, 2, 8),
              query_ids=rng.integers(0, 6, BATCH).astype(np.int32),
              passage_ids=rng.integers(0, 6, BATCH).astype(np.int32))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--process_id", type=int, required=True)
  parser.add_argument("--port", type=int, required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument("--exit_after_initialize", action="store_true",
                      help="die right after joining the cluster (to test the peer's exit)")
  args = parser.parse_args()

  jax = cluster.join(args.process_id, args.port, NUM_PROCESSES, DEVICES_PER_PROCESS)
  from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
  from samtone_jax import losses  # pylint: disable=g-import-not-at-top
  if args.exit_after_initialize:
    os._exit(3)  # pylint: disable=protected-access
  assert jax.device_count() == NUM_PROCESSES * DEVICES_PER_PROCESS, jax.devices()

  # Process p's devices hold the rows [p * B/2, (p + 1) * B/2) of the global batch.
  devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
  mesh = Mesh(np.array(devices), ("data",), axis_types=(AxisType.Auto,))
  sharding = NamedSharding(mesh, P("data"))
  rows = slice(args.process_id * BATCH // NUM_PROCESSES,
               (args.process_id + 1) * BATCH // NUM_PROCESSES)
  arrays = {k: jax.make_array_from_process_local_data(sharding, v[rows])
            for k, v in global_batch().items()}

  loss_fn = losses.sharded_contrastive_loss(mesh, **OPTIONS)

  def loss(q, p, n, query_ids, passage_ids):
    return loss_fn(q, p, negative_emb=n, query_ids=query_ids, passage_ids=passage_ids)

  (value, metrics), grads = jax.jit(jax.value_and_grad(loss, (0, 1, 2), has_aux=True))(
      arrays["query_emb"], arrays["passage_emb"], arrays["negative_emb"],
      arrays["query_ids"], arrays["passage_ids"])
  local_rows = lambda x: np.concatenate(
      [np.asarray(s.data) for s in sorted(x.addressable_shards, key=lambda s: s.index[0].start)])
  np.savez(args.out, loss=np.asarray(value.addressable_data(0)),
           **{f"metric_{k}": np.asarray(v.addressable_data(0)) for k, v in metrics.items()},
           **{f"grad_{i}": local_rows(g) for i, g in enumerate(grads)})
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
