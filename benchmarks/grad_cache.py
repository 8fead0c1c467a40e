"""Gradient caching: per-device memory of a train step, and its time overhead.

Memory: the compiler's temporary memory (exact, nothing allocated: the state and batch are
abstract) of the train step of a T5 v1.1 base symmetric dual encoder at batch 512, lengths
64/256, plain and with GRAD_CACHE_CHUNK = 32, in float32 and bfloat16 activations (checked: the chunked step at most 1/4 of the plain
one).

Time: the plain and the chunked train step of a smaller model in the machine's default
activation dtype (`samtone_jax.dtypes`), interleaved in one process
(median of the rounds' ratios, in wall-clock and in the process's CPU time, which holds when
other processes share the machine; GradCache's extra forward pass makes about 4/3 the work).

  python benchmarks/grad_cache.py [--size base] [--batch 512] [--lengths 64,256]
      [--chunk 32] [--time_size small] [--time_batch 64] [--time_lengths 32,128]
      [--time_chunk 16] [--rounds 5]

Runs on the devices there are (one CPU device by default: per device = the whole step).
Writes benchmarks/results/grad_cache.json (or --out).
"""

import argparse
import json
import pathlib
import statistics

import jax

from samtone_jax import dtypes, losses, optimizers, partitioning, trainer

import _common  # pylint: disable=g-bad-import-order  (this folder)
import train_throughput  # pylint: disable=g-bad-import-order

TARGET_RATIO = 1 / 4


def temp_bytes(size: str, batch: int, lengths: tuple[int, int], dtype: str, chunk) -> dict:
  """The compiled step's memory analysis: temporary, argument and output bytes."""
  model = train_throughput.jax_model(size, dtype)
  mesh = partitioning.create_mesh()
  rules = partitioning.standard_logical_axis_rules()
  optimizer = optimizers.adafactor(1e-3)
  example = trainer.example_batch(batch, dict(zip(("queries", "passages"), lengths)))
  state, _ = trainer.create_train_state(model, optimizer, jax.random.key(0), example, mesh,
                                        rules, abstract=True)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  example = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding)
             for k, v in example.items()}
  step = trainer.make_train_step(
      model, optimizer, losses.sharded_contrastive_loss(mesh, **train_throughput.LOSS),
      lambda _: 1e-3, grad_cache_chunk=chunk)
  with jax.set_mesh(mesh):
    analysis = jax.jit(step).lower(state, example).compile().memory_analysis()
  return {"temp_bytes": analysis.temp_size_in_bytes,
          "argument_bytes": analysis.argument_size_in_bytes,
          "output_bytes": analysis.output_size_in_bytes}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", choices=sorted(train_throughput.SIZES), default="base")
  parser.add_argument("--batch", type=int, default=512)
  parser.add_argument("--lengths", default="64,256")
  parser.add_argument("--chunk", type=int, default=32)
  parser.add_argument("--dtypes", default="float32,bfloat16")
  parser.add_argument("--time_size", choices=sorted(train_throughput.SIZES), default="small")
  parser.add_argument("--time_batch", type=int, default=64)
  parser.add_argument("--time_lengths", default="32,128")
  parser.add_argument("--time_chunk", type=int, default=16)
  parser.add_argument("--rounds", type=int, default=5, help="timed rounds (0: no timing)")
  parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results"
                                           / "grad_cache.json"))
  args = parser.parse_args()
  lengths = tuple(int(x) for x in args.lengths.split(","))
  mib = lambda b: b / 2**20

  print(f"per-device memory of a train step (compiler's analysis), T5 v1.1 {args.size} SDE,"
        f" batch {args.batch}, lengths {lengths}, {jax.device_count()} device(s):")
  print(f"{'activations':>12} {'plain MiB':>11} {f'chunk {args.chunk} MiB':>14} {'ratio':>7}"
        f" {'parameters+state MiB':>21}")
  memory = []
  for dtype in args.dtypes.split(","):
    plain = temp_bytes(args.size, args.batch, lengths, dtype, None)
    cached = temp_bytes(args.size, args.batch, lengths, dtype, args.chunk)
    row = {"dtype": dtype, "plain": plain, "chunked": cached,
           "ratio": cached["temp_bytes"] / plain["temp_bytes"]}
    memory.append(row)
    print(f"{dtype:>12} {mib(plain['temp_bytes']):11.1f} {mib(cached['temp_bytes']):14.1f}"
          f" {row['ratio']:7.3f} {mib(plain['argument_bytes']):21.1f}", flush=True)
  met = all(row["ratio"] <= TARGET_RATIO for row in memory)
  print(f"target: chunked / plain temporary memory <= {TARGET_RATIO}: "
        f"{'met' if met else 'NOT met'}")

  timing = None
  if args.rounds:
    time_lengths = tuple(int(x) for x in args.time_lengths.split(","))
    batch = train_throughput.random_batch(args.time_batch, time_lengths)
    dtype = dtypes.activation_dtype()
    runs = {name: train_throughput.jax_train_step(args.time_size, batch, dtype, chunk)[0]
            for name, chunk in (("plain", None), ("chunked", args.time_chunk))}
    for run in runs.values():
      run()
    times = {name: [] for name in runs}  # (wall, cpu) seconds
    for i in range(args.rounds):
      for name, run in runs.items():
        times[name].append(train_throughput.seconds(run))
      print(f"round {i + 1}/{args.rounds}: plain {times['plain'][-1][0]:.3f} s, chunked"
            f" {times['chunked'][-1][0]:.3f} s", flush=True)
    ratio = [statistics.median(c[k] / p[k] for p, c in zip(times["plain"], times["chunked"]))
             for k in (0, 1)]
    timing = {"size": args.time_size, "batch": args.time_batch, "lengths": time_lengths,
              "chunk": args.time_chunk, "dtype": dtype, "seconds": times,
              "ratio_wall": ratio[0], "ratio_cpu": ratio[1]}
    print(f"time of a step, T5 v1.1 {args.time_size} SDE, batch {args.time_batch}, lengths"
          f" {time_lengths}: chunk {args.time_chunk} / plain = {ratio[0]:.3f} wall-clock,"
          f" {ratio[1]:.3f} CPU time (medians of {args.rounds} interleaved rounds' ratios)")

  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({
      "benchmark": "grad_cache", "size": args.size, "batch": args.batch, "lengths": lengths,
      "chunk": args.chunk, "machine": _common.machine(), "memory": memory,
      "target": {"max_ratio": TARGET_RATIO, "met": met},
      "timing": timing}, indent=2))
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
