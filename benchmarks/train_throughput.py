"""Training throughput: this project's train step against sentence-transformers, and MFU.

On one machine, interleaved round by round (ours, theirs, the matmul rate), each in a process
of its own (started once, idle while the others run), each round timing the second of two
consecutive steps:
- ours: the jit-compiled train step (`trainer.make_train_step`: forward, SamToNe loss,
  backward, Adafactor update) of a symmetric dual encoder on T5 v1.1 towers;
- theirs: sentence-transformers' `MultipleNegativesRankingLoss` with
  `directions=("query_to_doc", "query_to_query")` (query-side SamToNe in one joint softmax)
  on a Hugging Face `T5EncoderModel` of the same sizes, with mean pooling, the same
  projection and normalisation, and torch's Adafactor;
- the machine's dense matmul rate: a large square matrix product in JAX (in the activations'
  dtype; accumulated in float32).

The activations' dtype is --dtype, by default the machine's (`samtone_jax.dtypes`, as the
model files' ACTIVATION_DTYPE = 'auto': bfloat16 on GPU, TPU and CPUs with AVX512-BF16 or
AMX, float32 on other CPUs).

Each measurement of a contender (an untimed step and the timed one) has a time limit, twice
`--step_timeout` (300 s): a contender over it is stopped, and reported as timed out in the
table and the JSON (`timed_out`), while the others go on.

Before the rounds and after them, each contender also runs `--alone` times back to back
while the others idle; the benchmark reports each one's time in the rounds over its time
alone (before and after together), and, for every timed run, the largest share of the
machine that an idle contender took meanwhile (from /proc/<pid>/stat): a fair interleaving
leaves both near 1 and 0. The JSON records the CPU model and its AVX-512, AVX512-BF16 and
AMX flags.

Both train steps see the same random token ids (no padding), the same batch and lengths, and
the same loss: SamToNe on the query side in the query->passage direction only (the
sentence-transformers loss has no separate passage->query term), temperature 0.01.

Model FLOPs utilisation (MFU) = 6 x (parameters other than the token embedding) x (tokens a
step) / step time / matmul rate, the usual count of the forward and backward matrix
products (attention's own products, 1-4% here, are not counted). On a GPU it is also given
against the card's nominal bfloat16 dense peak.

  python benchmarks/train_throughput.py [--size small] [--batch 64] [--lengths 32,128]
      [--dtype float32|bfloat16] [--with_float32] [--steps 5] [--alone 2] [--skip_torch]
      [--step_timeout 300] [--out PATH]

Imports only samtone_jax's model, loss, trainer, optimizer and partitioning modules (no gin,
SeqIO or TensorFlow), so it runs wherever JAX, Flax, optax (and, for the comparison, torch,
transformers and sentence-transformers) are installed. Writes
benchmarks/results/train_throughput.json (or --out).
"""

import argparse
import json
import math
import multiprocessing
import os
import pathlib
import statistics
import tempfile
import time
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from samtone_jax import (dtypes, dual_encoder, losses, optimizers, partitioning, t5, trainer,
                         xla_flags)

import _common  # pylint: disable=g-bad-import-order  (this folder)

# T5 v1.1 encoder sizes (gin_configs/models/t5_1_1_*.gin): head dim 64, vocabulary 32128.
SIZES = {
    "small": dict(d_model=512, d_ff=1024, num_heads=6, num_layers=8),
    "base": dict(d_model=768, d_ff=2048, num_heads=12, num_layers=12),
    "large": dict(d_model=1024, d_ff=2816, num_heads=16, num_layers=24),
}
VOCAB, HEAD_DIM, EMBEDDING_DIM, TEMPERATURE = 32128, 64, 768, 0.01
LOSS = dict(temperature=TEMPERATURE, same_tower="query", bidirectional=False)
# Nominal dense bfloat16 peaks (FLOP/s, without sparsity) by device kind.
NOMINAL_BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
QUIET = 0.05  # a round is quiet when other processes took less of the machine than this


def random_batch(batch: int, lengths: tuple[int, int], seed: int = 0) -> dict[str, np.ndarray]:
  """Token ids in [1, VOCAB) without padding: {"queries": [B, Lq], "passages": [B, Lp]}."""
  rng = np.random.default_rng(seed)
  return {name: rng.integers(1, VOCAB, (batch, length)).astype(np.int32)
          for name, length in zip(("queries", "passages"), lengths)}


def jax_model(size: str, dtype: str) -> dual_encoder.DualEncoder:
  config = t5.T5Config(vocab_size=VOCAB, head_dim=HEAD_DIM, dtype=dtype, **SIZES[size])
  return dual_encoder.DualEncoder(config, "sde", embedding_dim=EMBEDDING_DIM)


def jax_non_embedding_params(params) -> int:
  """How many parameters of our model are not the token embedding."""
  return sum(x.size for path, x in jax.tree_util.tree_leaves_with_path(params)
             if "token_embedding" not in jax.tree_util.keystr(path))


def jax_train_step(size: str, batch: dict[str, np.ndarray], dtype: str,
                   grad_cache_chunk=None):
  """Our compiled train step on all devices, ready to run: (run, non-embedding parameters,
  the compiled step's FLOPs by XLA's cost analysis or None). `run()` takes one step and
  waits for it."""
  model = jax_model(size, dtype)
  mesh = partitioning.create_mesh()
  rules = partitioning.standard_logical_axis_rules()
  schedule = optimizers.linear_decay_schedule(1e-3, 10_000)
  optimizer = optimizers.adafactor(schedule)
  state, shardings = trainer.create_train_state(model, optimizer, jax.random.key(0), batch,
                                                mesh, rules)
  step = trainer.make_train_step(model, optimizer, losses.sharded_contrastive_loss(mesh, **LOSS),
                                 schedule, grad_cache_chunk=grad_cache_chunk)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  batch = {k: jax.device_put(v, sharding) for k, v in batch.items()}
  with jax.set_mesh(mesh):
    compiled = jax.jit(step, donate_argnums=(0,)).lower(state, batch).compile()
  try:
    flops = float(compiled.cost_analysis()["flops"])
  except (KeyError, TypeError, IndexError):
    flops = None
  params = jax_non_embedding_params(state.params)
  holder = {"state": state}

  def run():
    holder["state"], metrics = compiled(holder["state"], batch)
    jax.block_until_ready(metrics)

  return run, params, flops


def st_model(size: str, device: str, max_seq_length: int = 512,
             words: tuple[str, ...] = ()):
  """sentence-transformers' SDE on a randomly initialised `T5EncoderModel` of T5 v1.1
  `size`: mean pooling, a 768-d projection without bias, L2 normalisation. Its tokenizer
  splits on whitespace and maps `words` to ids 3, 4, ... (0-2: pad, EOS, unknown)."""
  import tokenizers
  import torch
  import transformers
  import sentence_transformers
  try:
    from sentence_transformers.sentence_transformer import modules
  except ImportError:  # releases before the modules moved
    from sentence_transformers import models as modules

  dims = SIZES[size]
  config = transformers.T5Config(
      vocab_size=VOCAB, d_model=dims["d_model"], d_ff=dims["d_ff"], d_kv=HEAD_DIM,
      num_heads=dims["num_heads"], num_layers=dims["num_layers"],
      feed_forward_proj="gated-gelu", dropout_rate=0.0, relative_attention_num_buckets=32,
      relative_attention_max_distance=128)
  torch.manual_seed(0)
  folder = tempfile.mkdtemp(prefix="t5_encoder_")
  transformers.T5EncoderModel(config).save_pretrained(folder)
  vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: 3 + i for i, w in enumerate(words)}}
  tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, "<unk>"))
  tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
  transformers.PreTrainedTokenizerFast(
      tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
  ).save_pretrained(folder)
  return sentence_transformers.SentenceTransformer(modules=[
      modules.Transformer(folder, max_seq_length=max_seq_length),
      modules.Pooling(dims["d_model"], pooling_mode="mean"),
      modules.Dense(dims["d_model"], EMBEDDING_DIM, bias=False,
                    activation_function=torch.nn.Identity()),
      modules.Normalize()], device=device)


def torch_non_embedding_params(model) -> int:
  return sum(p.numel() for name, p in model.named_parameters()
             if "shared" not in name and "embed_tokens" not in name)


def torch_train_step(size: str, batch: dict[str, np.ndarray], dtype: str, device: str):
  """sentence-transformers' train step on a T5EncoderModel of the same sizes: (run, model
  parameters other than the token embedding). The step feeds token ids directly."""
  import torch
  try:
    from sentence_transformers.sentence_transformer import losses as st_losses
  except ImportError:  # releases before the modules moved
    from sentence_transformers import losses as st_losses

  model = st_model(size, device)
  model.train()
  loss = st_losses.MultipleNegativesRankingLoss(
      model, scale=1.0 / TEMPERATURE, directions=("query_to_doc", "query_to_query"))
  optimizer = torch.optim.Adafactor(model.parameters(), lr=1e-3)
  features = [{"input_ids": torch.from_numpy(ids).long().to(device),
               "attention_mask": torch.ones(ids.shape, dtype=torch.long, device=device)}
              for ids in (batch["queries"], batch["passages"])]
  autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16,
                            enabled=dtype == "bfloat16")

  def run():
    with autocast:
      value = loss(features, None)
    value.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device.startswith("cuda"):
      torch.cuda.synchronize()

  return run, torch_non_embedding_params(model)


def matmul_rate(dtype: str, backend: str):
  """`measure()` -> (FLOP/s, FLOP per CPU second of this process) of a large square matrix
  product in JAX of `dtype` operands accumulated in float32 (the dense layers' product),
  timed over ~1 s."""
  n = 4096 if backend == "cpu" else 8192
  a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), dtype)
  matmul = jax.jit(lambda x: jnp.dot(x, x, preferred_element_type=jnp.float32))
  jax.block_until_ready(matmul(a))
  start = time.perf_counter()
  jax.block_until_ready(matmul(a))
  repeats = max(1, round(1.0 / (time.perf_counter() - start)))

  def measure():
    def products():  # one output alive at a time: all `repeats` of them would fill a GPU
      for _ in range(repeats):
        out = matmul(a)
      jax.block_until_ready(out)
    wall, cpu, others = seconds(products)
    return repeats * 2 * n**3 / wall, repeats * 2 * n**3 / cpu, others

  return measure


def _cpu_seconds_since_boot():
  """(busy, all) CPU seconds of the whole machine, all CPUs, from /proc/stat (None where
  there is none)."""
  try:
    with open("/proc/stat", encoding="ascii") as f:
      ticks = [int(x) for x in f.readline().split()[1:]]
  except OSError:
    return None
  hz = os.sysconf("SC_CLK_TCK")
  return (sum(ticks) - ticks[3] - ticks[4]) / hz, sum(ticks) / hz  # less idle and iowait


def process_cpu_seconds(pid: int) -> float:
  """User + system CPU seconds of process `pid` so far, all its threads, from
  /proc/<pid>/stat (nan where there is none)."""
  try:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
      fields = f.read().rsplit(")", 1)[1].split()  # after the command name
  except OSError:
    return math.nan
  return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def seconds(run) -> tuple[float, float, float]:
  """(wall-clock seconds, CPU seconds of this process (all threads), the share of the
  machine's CPU time that other processes took meanwhile (nan where unknown)) of `run()`."""
  machine = _cpu_seconds_since_boot()
  wall, cpu = time.perf_counter(), time.process_time()
  run()
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  if machine is None:
    return wall, cpu, math.nan
  busy, total = (after - before for after, before in zip(_cpu_seconds_since_boot(), machine))
  return wall, cpu, max(busy - cpu, 0.0) / total


def summary(times: dict, rates: list, rounds: list[int], model_flops: float, batch: int,
            clocks: list[str], nominal, no_mfu=()) -> dict:
  """Medians over `rounds` of each contender's step: seconds, examples/s, MFU (each round's
  step against the matmul rate measured beside it; not for the contenders in `no_mfu`, whose
  products are of another dtype) and, on the others' rows, how many times faster ours is
  (unless ours timed out), for each clock."""
  rows = {}
  for name, measured in times.items():
    rows[name] = row = {}
    for c, clock in enumerate(clocks):
      step = [measured[i][c] for i in rounds]
      row[f"{clock}_seconds"] = statistics.median(step)
      if name not in no_mfu:
        row[f"mfu_{clock}"] = statistics.median(model_flops / (t * rates[i][c])
                                                for t, i in zip(step, rounds))
      if name != "samtone_jax" and "samtone_jax" in times:
        row[f"ours_faster_{clock}"] = statistics.median(
            measured[i][c] / times["samtone_jax"][i][c] for i in rounds)
    row["examples_per_second"] = batch / row["wall_seconds"]
    if nominal and name not in no_mfu:
      row["mfu_nominal_bf16_peak"] = model_flops / row["wall_seconds"] / nominal
  return rows


def print_table(rows: dict) -> None:
  """`summary`'s rows, and a line for each row {"timed_out": when, "timeout_s": limit}."""
  columns = [("wall_seconds", "step s", "{:.3f}"), ("examples_per_second", "examples/s",
                                                    "{:.2f}"),
             ("mfu_wall", "MFU", "{:.1%}"), ("ours_faster_wall", "ours x", "{:.2f}"),
             ("mfu_nominal_bf16_peak", "MFU/peak", "{:.1%}"), ("cpu_seconds", "CPU s", "{:.2f}"),
             ("mfu_cpu", "MFU(CPU s)", "{:.1%}"), ("ours_faster_cpu", "ours x(CPU s)", "{:.2f}")]
  columns = [c for c in columns if any(c[0] in row for row in rows.values())]
  print(f"{'':22}" + "".join(f"{title:>14}" for _, title, _ in columns))
  for name, row in rows.items():
    if "timed_out" in row:
      print(f"{name:22}  timed out in {row['timed_out']}: a measurement (two steps) took"
            f" over {row['timeout_s']:g} s")
      continue
    print(f"{name:22}" + "".join(f"{form.format(row[key]) if key in row else '':>14}"
                                 for key, _, form in columns))


class ContenderTimeout(RuntimeError):
  """A contender took longer than its time limit to measure; its process has been stopped."""


class Contender:
  """A timed thing (a train step, an encode, the matmul rate) in a process of its own, so
  that no runtime's idle threads or allocator slow another. The process runs
  `build(**kwargs)` -> (measure, info): `measure()` does the work once and returns (wall s
  or rate, CPU s or rate, the share of the machine other processes took). Each
  `measure(watch)` runs it twice and times the second run, as in training, where steps
  follow steps: on the 2-core CPU the first step after another process's work was up to 2x
  slower (the first measurement's untimed run is also the warm-up). It also returns the
  largest share of the machine (CPU seconds over wall seconds x cores) that a process of
  `watch` (the other contenders, idle meanwhile) took during the timed run.

  `timeout`: the seconds that one `measure` (both runs) may take, None for no limit. Past
  it the process is killed and `measure` raises ContenderTimeout: a step that never ends
  stops the contender, not the benchmark.
  """

  def __init__(self, build: Callable[..., tuple[Callable[[], tuple], dict]],
               timeout: Optional[float] = None, **kwargs):
    context = multiprocessing.get_context("spawn")
    self._conn, child = context.Pipe()
    self._name = getattr(build, "__name__", build)
    self._timeout = timeout
    self._process = context.Process(target=_serve, args=(child, build), kwargs=kwargs,
                                    daemon=True)
    self._process.start()
    self.pid = self._process.pid
    self.info = self._reply()

  @property
  def alive(self) -> bool:
    return self._process.exitcode is None

  def _reply(self, timeout: Optional[float] = None):
    if not self._conn.poll(timeout):
      self._process.kill()
      self._process.join()
      raise ContenderTimeout(f"{self._name}: a measurement took over {timeout:g} s (two runs);"
                             " stopped")
    reply = self._conn.recv()
    if isinstance(reply, BaseException):
      raise reply
    return reply

  def measure(self, watch: Sequence["Contender"] = ()) -> tuple:
    """(what `measure()` returns..., the largest idle share of `watch`)."""
    self._conn.send(("measure", [c.pid for c in watch if c is not self]))
    return self._reply(self._timeout)

  def close(self):
    if self.alive:
      self._conn.send(("stop", []))
      self._process.join()


def _serve(conn, build, **kwargs):
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # torch shares a GPU
  try:
    measure, info = build(**kwargs)
    conn.send(info)
    while True:
      command, watch = conn.recv()
      if command != "measure":
        break
      measure()  # untimed: the first run after the others ran is slower (see Contender)
      before, start = [process_cpu_seconds(pid) for pid in watch], time.perf_counter()
      result = measure()
      wall = time.perf_counter() - start
      idle = [(process_cpu_seconds(pid) - b) / (wall * os.cpu_count())
              for pid, b in zip(watch, before)]
      conn.send((*result, max(idle, default=0.0)))
  except BaseException as e:  # pylint: disable=broad-except  (the parent raises it)
    conn.send(RuntimeError(f"{getattr(build, '__name__', build)}: {type(e).__name__}: {e}"))
    raise


def measure_or_drop(contenders: dict[str, Contender], name: str, rate: Contender, runs: int,
                    timed_out: Optional[dict[str, str]], when: str) -> Optional[list[tuple]]:
  """`runs` measurements of `contenders[name]` back to back, the other contenders and the
  matmul rate watched meanwhile. A contender over its time limit (ContenderTimeout) gives
  None: it is removed from `contenders` and recorded in `timed_out` as {name: `when`}
  (`timed_out` None: the error propagates)."""
  try:
    return [contenders[name].measure([*contenders.values(), rate]) for _ in range(runs)]
  except ContenderTimeout as e:
    if timed_out is None:
      raise
    print(f"{when}: {e}", flush=True)
    timed_out[name] = when
    del contenders[name]
    return None


def measure_alone(contenders: dict[str, Contender], rate: Contender, runs: int,
                  timed_out: dict[str, str], when: str) -> dict[str, list[tuple]]:
  """Each contender's `runs` measurements back to back while the others idle, then the
  matmul rate's: {name or "matmul": [measurement]}, without the contenders that ran over
  their time limit (recorded in `timed_out`, see `measure_or_drop`)."""
  alone = {}
  for name in list(contenders):
    measured = measure_or_drop(contenders, name, rate, runs, timed_out, when)
    if measured is not None:
      alone[name] = measured
  alone["matmul"] = [rate.measure([*contenders.values(), rate]) for _ in range(runs)]
  return alone


def interleave(contenders: dict[str, Contender], rate: Contender, rounds: int,
               label: str = "round", timed_out: Optional[dict[str, str]] = None
               ) -> tuple[dict[str, list[tuple]], list[tuple]]:
  """`rounds` rounds of each contender's `measure`, then the matmul rate's, printed as they
  come: ({name: [(wall s, CPU s, others' share, idle share)] a round}, [(FLOP/s, FLOP per
  CPU second, others' share, idle share)] a round).

  With `timed_out` given, a contender over its time limit (ContenderTimeout) is recorded
  there as {name: "<label> <i>"} and dropped: from `contenders`, from the rounds after, and
  from the times returned. Without it, the error propagates.
  """
  times, rates = {name: [] for name in contenders}, []
  for i in range(rounds):
    when = f"{label} {i + 1}"
    for name in list(contenders):
      measured = measure_or_drop(contenders, name, rate, 1, timed_out, when)
      if measured is None:
        del times[name]
      else:
        times[name] += measured
    rates.append(rate.measure([*contenders.values(), rate]))
    print(f"{when}/{rounds}: " + ", ".join(
        f"{name} {times[name][-1][0]:.3f} s" for name in contenders)
          + f", matmul {rates[-1][0] / 1e12:.3f} TFLOP/s; other processes took "
          + "/".join(f"{m[-1][2]:.0%}" for m in [*times.values(), rates])
          + " of the machine, an idle contender at most "
          + "/".join(f"{m[-1][3]:.1%}" for m in [*times.values(), rates]), flush=True)
  return times, rates


def jax_info(dtype) -> dict:
  """Starts JAX's backend under the XLA flags the entry points set (`xla_flags`); returns
  the backend, its devices, those flags and the activations' dtype (None: the machine's
  default, `dtypes.activation_dtype`)."""
  xla_flags.set_cpu_defaults()
  machine = _common.machine()
  backend = machine["backend"]
  return {"backend": backend, "device_kind": machine["device_kind"],
          "devices": machine["devices"], "machine": machine,
          "xla_flags": os.environ["XLA_FLAGS"],
          "dtype": dtype or dtypes.activation_dtype()}


def build_jax_step(size: str, batch: int, lengths: tuple[int, int], dtype=None,
                   grad_cache_chunk=None):
  """A Contender's build: our train step, compiled (the first measurement's untimed step
  warms it up, within the time limit)."""
  info = jax_info(dtype)
  step, info["params"], info["xla_flops"] = jax_train_step(
      size, random_batch(batch, lengths), info["dtype"], grad_cache_chunk)
  return lambda: seconds(step), info


def build_torch_step(size: str, batch: int, lengths: tuple[int, int], dtype: str,
                     device: str):
  """A Contender's build: sentence-transformers' train step on `device` (the first
  measurement's untimed step warms it up, within the time limit)."""
  import torch
  step, params = torch_train_step(size, random_batch(batch, lengths), dtype, device)
  return lambda: seconds(step), {"params": params, "torch": torch.__version__,
                                 "threads": torch.get_num_threads()}


def build_rate(dtype=None):
  """A Contender's build: the matmul rate (`matmul_rate`)."""
  info = jax_info(dtype)
  return matmul_rate(info["dtype"], info["backend"]), info


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", choices=sorted(SIZES), default="small")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--lengths", default="32,128", help="query and passage lengths")
  parser.add_argument("--dtype", choices=["float32", "bfloat16"],
                      help="activations (parameters stay float32); default: the machine's,"
                           " bfloat16 on GPU, TPU and CPUs with AVX512-BF16 or AMX, else"
                           " float32")
  parser.add_argument("--steps", type=int, default=5, help="timed rounds after compilation")
  parser.add_argument("--step_timeout", type=float, default=300,
                      help="seconds a contender's step may take: a measurement (an untimed"
                           " step and the timed one) over twice this stops the contender,"
                           " which is reported as timed out")
  parser.add_argument("--alone", type=int, default=2,
                      help="timed runs of each contender back to back before the rounds and"
                           " after them, the others idle: what each takes alone")
  parser.add_argument("--grad_cache_chunk", type=int, help="our step with gradient caching")
  parser.add_argument("--skip_torch", action="store_true", help="ours and the matmul rate only")
  parser.add_argument("--with_float32", action="store_true",
                      help="also our step with float32 activations: what --dtype gains")
  parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results"
                                           / "train_throughput.json"))
  args = parser.parse_args()
  lengths = tuple(int(x) for x in args.lengths.split(","))
  common = dict(size=args.size, batch=args.batch, lengths=lengths,
                timeout=2 * args.step_timeout)
  # The parent process only orchestrates: it starts no JAX backend (on a GPU it would hold
  # memory) and times nothing itself.
  contenders = {"samtone_jax": Contender(build_jax_step, dtype=args.dtype,
                                         grad_cache_chunk=args.grad_cache_chunk, **common)}
  info = contenders["samtone_jax"].info
  backend, dtype, params, xla_flops = (info[k] for k in ("backend", "dtype", "params",
                                                         "xla_flops"))
  tokens = args.batch * sum(lengths)
  print(f"backend {backend} ({info['devices']} x {info['device_kind']}), T5 v1.1 {args.size}"
        f" SDE, batch {args.batch}, lengths {lengths}, {dtype} activations, one process"
        " each", flush=True)
  model_flops = 6 * params * tokens
  no_mfu = set()
  if args.with_float32 and dtype != "float32":
    contenders["samtone_jax_float32"] = Contender(
        build_jax_step, dtype="float32", grad_cache_chunk=args.grad_cache_chunk, **common)
    no_mfu.add("samtone_jax_float32")
  torch_info = None
  if not args.skip_torch:
    contenders["sentence_transformers"] = Contender(
        build_torch_step, dtype=dtype, device="cuda" if backend == "gpu" else "cpu", **common)
    torch_info = contenders["sentence_transformers"].info
    if torch_info["params"] != params:
      raise AssertionError(f"the models differ: {params} parameters here,"
                           f" {torch_info['params']} in torch (token embeddings aside)")
  rate = Contender(build_rate, dtype=dtype, timeout=2 * args.step_timeout)

  # Round by round: each step, then the matmul rate. Wall-clock figures are what a user
  # waits; on a CPU, the CPU seconds of the process (all threads) are also given. Each
  # measurement records the share of the machine that other processes took meanwhile: on a
  # shared machine the figures of the quiet rounds (others under QUIET of it) are also given.
  # Each contender alone (`--alone` runs back to back, the others idle) before the rounds
  # and again after them, so that a drift of the machine during the run cancels: an
  # interleaved round should take what the contender takes alone. A contender whose
  # measurement runs over the time limit is stopped, and reported as timed out.
  timed_out = {}
  alone = measure_alone(contenders, rate, args.alone, timed_out, "the runs alone before the"
                        " rounds")
  if args.alone:
    median = {name: statistics.median(m[0] for m in runs) for name, runs in alone.items()}
    print(f"alone, before the rounds (medians of {args.alone}): " + ", ".join(
        f"{name} {median[name]:.3f} s" for name in contenders)
          + f", matmul {median['matmul'] / 1e12:.3f} TFLOP/s", flush=True)
  times, rates = interleave(contenders, rate, args.steps, timed_out=timed_out)
  after = measure_alone(contenders, rate, args.alone, timed_out, "the runs alone after the"
                        " rounds")
  alone = {name: alone[name] + runs for name, runs in after.items()}
  for contender in [*contenders.values(), rate]:
    contender.close()

  clocks = ["wall", "cpu"] if backend == "cpu" else ["wall"]
  nominal = next((peak for kind, peak in NOMINAL_BF16_PEAK.items()
                  if kind in info["device_kind"]), None) if backend == "gpu" else None
  every = list(range(args.steps))
  quiet = [i for i in every if all(m[i][2] < QUIET for m in [*times.values(), rates])]
  rows = summary(times, rates, every, model_flops, args.batch, clocks, nominal, no_mfu)
  rows.update({name: {"timed_out": when, "timeout_s": 2 * args.step_timeout}
               for name, when in timed_out.items()})
  quiet_rows = summary(times, rates, quiet, model_flops, args.batch, clocks, nominal, no_mfu
                       ) if quiet else None

  print(f"\nmatmul rate (JAX, {dtype}, median): {statistics.median(r[0] for r in rates) / 1e12:.3f}"
        f" TFLOP/s; model FLOPs a step: 6 x {params / 1e6:.2f}M x {tokens} tokens ="
        f" {model_flops / 1e12:.3f} TFLOP" + (f" (XLA's count of the compiled step:"
                                              f" {xla_flops / 1e12:.3f})" if xla_flops else ""))
  print(f"all {args.steps} rounds (medians):")
  print_table(rows)
  interleaved_over_alone = {}
  if args.alone:
    for name, runs in alone.items():  # for the matmul rate, a rate: alone over interleaved
      ratio = statistics.median(m[0] for m in (times.get(name) or rates)) / statistics.median(
          m[0] for m in runs)
      interleaved_over_alone[name] = 1 / ratio if name == "matmul" else ratio
    print("time interleaved / alone (before and after the rounds): " + ", ".join(
        f"{name} {ratio:.3f}" for name, ratio in interleaved_over_alone.items()))
  if quiet_rows:
    print(f"the {len(quiet)} quiet rounds (other processes under {QUIET:.0%} of the machine):")
    print_table(quiet_rows)

  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({
      "benchmark": "train_throughput", "machine": info["machine"], "size": args.size,
      "batch": args.batch, "lengths": lengths, "dtype": dtype,
      "grad_cache_chunk": args.grad_cache_chunk, "loss": LOSS,
      "xla_flags": info["xla_flags"],  # our step's, as the entry points set them
      "one_process_each": True, "non_embedding_params": params, "tokens_per_step": tokens,
      "model_flops_per_step": model_flops, "xla_flops_per_step": xla_flops,
      "matmul_flops_per_second": statistics.median(r[0] for r in rates),
      "matmul_flops_per_cpu_second": statistics.median(r[1] for r in rates),
      "matmul_all": rates, "torch": torch_info,
      "nominal_bf16_peak": nominal, "step_seconds": times, "rows": rows,
      "step_timeout_s": args.step_timeout, "timed_out": timed_out,
      "max_idle_contender_share": max(m[3] for m in [*sum(times.values(), []), *rates]),
      "alone": alone, "interleaved_over_alone": interleaved_over_alone,
      "quiet": {"max_others_share": QUIET, "rounds": quiet, "rows": quiet_rows}}, indent=2))
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
