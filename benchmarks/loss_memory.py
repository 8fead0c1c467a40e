"""Per-device memory and time: the sharded contrastive loss against a naive one.

On 8 simulated CPU devices, compiles value-and-gradient (with respect to both embeddings)
of three computations of the same loss (SamToNe, query side, bidirectional):
- `naive`: each device gathers the global batch and computes the textbook loss on it: the
  full [B, B] matrices Q P^T, Q Q^T and P Q^T, and a log-softmax over each query's row of
  [Q P^T | Q Q^T] and each passage's row of P Q^T;
- `unsharded`: each device gathers the global batch and runs `losses.contrastive_loss` on
  it (our implementation, [B, B] logits, no row split);
- `sharded`: `losses.sharded_contrastive_loss`, each device only its own [B/8, B] logits,
and reports the per-device temporary bytes of the compiler's memory analysis (exact, no
allocation) and the ratios sharded / naive (checked: <= 1/5 at B = 4096) and
sharded / unsharded (what the row split alone saves), then times them (median of several
runs in this process) where `--time_up_to` allows.

  python benchmarks/loss_memory.py [--batches 512 4096 16384] [--time_up_to 4096]

Writes benchmarks/results/loss_memory.json.
"""

import argparse
import json
import os
import pathlib

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=8").strip()

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from samtone_jax import losses

import _common  # pylint: disable=g-bad-import-order  (this folder)

DEVICES = 8
DIM = 768
OPTIONS = dict(temperature=0.01, same_tower="query", bidirectional=True)
TARGET_BATCH, TARGET_RATIO = 4096, 1 / 5


def textbook_loss(q, p):
  """SamToNe (query side), bidirectional, from the full matrices: [B, d] x 2 -> scalar."""
  assert OPTIONS == dict(temperature=OPTIONS["temperature"], same_tower="query",
                         bidirectional=True)
  t = OPTIONS["temperature"]
  batch = q.shape[0]
  self_pairs = jnp.eye(batch, dtype=bool)
  qq = jnp.where(self_pairs, -jnp.inf, q @ q.T / t)  # [B, B], no self-similarity
  query_rows = jax.nn.log_softmax(jnp.concatenate([q @ p.T / t, qq], axis=1))  # [B, 2B]
  passage_rows = jax.nn.log_softmax(p @ q.T / t)  # [B, B]
  return -(jnp.mean(jnp.diagonal(query_rows)) + jnp.mean(jnp.diagonal(passage_rows)))


def gathered(loss):
  """Each device gathers the whole batch and computes `loss` on all of it."""

  def per_device(q, p):
    gather = lambda x: lax.all_gather(x, "data", tiled=True)
    return lax.pmean(loss(gather(q), gather(p)), "data")  # equal on every device

  return lambda mesh: jax.shard_map(per_device, mesh=mesh, in_specs=P("data"),
                                    out_specs=P())


VERSIONS = {
    "naive": gathered(textbook_loss),
    "unsharded": gathered(lambda q, p: losses.contrastive_loss(q, p, **OPTIONS)[0]),
    "sharded": lambda mesh: (lambda f: lambda q, p: f(q, p)[0])(
        losses.sharded_contrastive_loss(mesh, **OPTIONS)),
}


def compile_value_and_grad(loss, mesh, batch):
  spec = jax.ShapeDtypeStruct((batch, DIM), jnp.float32,
                              sharding=NamedSharding(mesh, P("data")))
  return jax.jit(jax.value_and_grad(loss, (0, 1))).lower(spec, spec).compile()


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batches", type=int, nargs="+", default=[512, 4096, 16384])
  parser.add_argument("--time_up_to", type=int, default=4096,
                      help="time the batches up to this size (the naive version at 16384 "
                           "takes minutes a run on a 2-core machine)")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results"
                                           / "loss_memory.json"))
  args = parser.parse_args()
  assert jax.device_count() == DEVICES, jax.devices()
  mesh = jax.make_mesh((DEVICES,), ("data",), axis_types=(AxisType.Auto,))
  sharding = NamedSharding(mesh, P("data"))
  rng = np.random.default_rng(0)
  unit_rows = lambda batch: jax.device_put(
      (lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True))(
          rng.normal(size=(batch, DIM))).astype(np.float32), sharding)

  # The three versions compute the same value and gradients.
  small = [unit_rows(64), unit_rows(64)]
  results = [compile_value_and_grad(make(mesh), mesh, 64)(*small) for make in VERSIONS.values()]
  for other in results[1:]:
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 results[0], other)

  rows = []
  mib = lambda b: b / 2**20
  print(f"value+grad of the loss {OPTIONS}, d={DIM}, {DEVICES} devices; per-device temporary"
        " memory (MiB) and median time (s):")
  print(f"{'B':>6} " + " ".join(f"{name + ' MiB':>14}" for name in VERSIONS)
        + f" {'/naive':>7} {'/unsharded':>10} " + " ".join(f"{n + ' s':>12}" for n in VERSIONS))
  for batch in args.batches:
    compiled = {name: compile_value_and_grad(make(mesh), mesh, batch)
                for name, make in VERSIONS.items()}
    row = {"batch": batch, "dim": DIM, "devices": DEVICES}
    for name, c in compiled.items():
      row[f"{name}_temp_bytes"] = c.memory_analysis().temp_size_in_bytes
    row["memory_ratio"] = row["sharded_temp_bytes"] / row["naive_temp_bytes"]
    row["memory_ratio_unsharded"] = row["sharded_temp_bytes"] / row["unsharded_temp_bytes"]
    line = (f"{batch:6d} " + " ".join(f"{mib(row[n + '_temp_bytes']):14.1f}" for n in VERSIONS)
            + f" {row['memory_ratio']:7.3f} {row['memory_ratio_unsharded']:10.3f}")
    if batch <= args.time_up_to:
      data = [unit_rows(batch), unit_rows(batch)]
      for name, c in compiled.items():
        row[f"{name}_seconds"] = _common.time_calls(lambda: c(*data), args.repeats)
      row["time_ratio"] = row["sharded_seconds"] / row["naive_seconds"]
      line += " " + " ".join(f"{row[n + '_seconds']:12.4f}" for n in VERSIONS)
    rows.append(row)
    print(line, flush=True)

  target = [r for r in rows if r["batch"] == TARGET_BATCH]
  met = bool(target) and target[0]["memory_ratio"] <= TARGET_RATIO
  print(f"target: sharded/naive temporary memory <= {TARGET_RATIO:.2f} at B={TARGET_BATCH}:"
        f" {'met' if met else 'NOT met' if target else 'not measured'}")
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({
      "benchmark": "loss_memory", "options": OPTIONS, "machine": _common.machine(),
      "rows": rows,
      "target": {"batch": TARGET_BATCH, "max_ratio": TARGET_RATIO, "met": met}}, indent=2))
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
