r"""Training, T5X-style: `python -m samtone_jax.train --gin_file=... [--gin.NAME=VALUE ...]`.

  python -m samtone_jax.train --gin_file=experiments/quickstart.gin \
      --gin.MODEL_DIR="'/tmp/quickstart'"

Flags: `--gin_file` (repeatable; the shipped gin_configs/ is always on the search path),
`--gin.NAME=VALUE` (a binding or macro, repeatable), `--gin_search_paths` (comma-separated).
The operative config is written to MODEL_DIR/config.gin. A run restarted with the same
MODEL_DIR resumes from its latest checkpoint, input position included. SIGTERM writes a
checkpoint and exits. A step whose loss or gradient norm is not finite stops the run, naming
the step (or, with SKIP_NONFINITE, leaves the parameters as they were and is counted).

`train()` reads top to bottom: checks, mesh, model and loss, data, state (restore, or
initialise and load INITIAL_CHECKPOINT_PATH), loop (step, metrics, checkpoint, evaluation),
and the final checkpoint and metrics.json.
"""

import argparse
import dataclasses
import json
import logging
import math
import os
import pathlib
import shutil
import signal
import sys
import time
from typing import Any, Optional, Sequence

import gin
import jax
import numpy as np
from jax.experimental import multihost_utils
import optax
import orbax.checkpoint as ocp
import seqio
import tensorflow as tf

import samtone_jax
from samtone_jax import dual_encoder, inputs, losses, optimizers, partitioning, pretrained
from samtone_jax import retrieval, trainer
from samtone_jax.tasks import eval_sets as eval_sets_lib

_LOG = logging.getLogger("samtone_jax.train")


class TrainingError(RuntimeError):
  """A run that cannot go on (a non-finite loss, a checkpoint that does not fit)."""


def _check(name: str, ok: bool, value: Any, what: str) -> None:
  if not ok:
    raise ValueError(f"{name}={value!r}: {what}")


def _is_int(value: Any, low: int = 1) -> bool:
  """Whether `value` is an int (not a bool) >= low."""
  return isinstance(value, int) and not isinstance(value, bool) and value >= low


def train(*, model: dual_encoder.DualEncoder = gin.REQUIRED, model_dir: str = gin.REQUIRED,
          train_steps: int = gin.REQUIRED, batch_size: int = gin.REQUIRED,
          mixture_or_task_name: str = gin.REQUIRED, task_feature_lengths: dict = gin.REQUIRED,
          temperature: float = 0.01, same_tower: str = "query", bidirectional: bool = True,
          pair_alpha: float = 0.0, mask_duplicates: bool = False, num_negatives: int = 0,
          learning_rate: float = 1e-3, warmup_steps: int = 0, num_partitions: int = 1,
          grad_cache_chunk: Optional[int] = None,
          checkpoint_period: int = 1000, keep_checkpoints: int = 3, eval_period: int = 1000,
          eval_split: Optional[str] = "validation", eval_batches: int = 20,
          eval_tasks: Sequence[str] = (), eval_k: int = 1000,
          initial_checkpoint_path: Optional[str] = None, seed: int = 0,
          log_period: int = 50, steps_per_run: Optional[int] = None,
          input_shards: Optional[int] = None, skip_nonfinite_steps: bool = False,
          log_example_ids: bool = False) -> dict[str, float]:
  """Trains a dual encoder; returns the final evaluation metrics (also in metrics.json).

  Args:
    model: the DualEncoder (MODEL).
    model_dir: checkpoints, config.gin, event files and metrics.json go here (MODEL_DIR).
    train_steps: steps in all, counted across restarts (TRAIN_STEPS).
    batch_size: the global batch, all in-batch negatives (BATCH_SIZE).
    mixture_or_task_name: a SeqIO task or mixture (MIXTURE_OR_TASK_NAME).
    task_feature_lengths: {"queries": Lq, "passages": Lp} (TASK_FEATURE_LENGTHS).
    temperature, same_tower, bidirectional, pair_alpha: the loss (losses/*.gin).
    mask_duplicates: remove duplicate texts from the denominators, by content ids.
    num_negatives: hard negatives an example (tasks with `negative_passages`).
    learning_rate, warmup_steps: the schedule, decaying linearly to 0 at train_steps.
    num_partitions: size of the mesh's "model" axis (NUM_PARTITIONS).
    grad_cache_chunk: None, or encode the batch this many examples at a time with gradient
      caching (GradCache): the same loss and gradients over the whole batch, with the
      activations of one chunk in memory, for one more forward pass (GRAD_CACHE_CHUNK).
    checkpoint_period, keep_checkpoints: save every N steps (and at the end), keep the last.
    eval_period, eval_split, eval_batches: in-batch metrics on `eval_batches` batches of
      `eval_split` every N steps and at the end (None: no evaluation).
    eval_tasks, eval_k: corpus-level retrieval (P@1, MRR, MRR@10, Recall@k, nDCG@k) on these
      evaluation sets (tasks/eval_sets.py; EVAL_TASKS), each query against its whole corpus
      (top eval_k), at the same times.
    initial_checkpoint_path: Hugging Face T5 or sentence-transformers folder to start from
      when MODEL_DIR has no checkpoint (INITIAL_CHECKPOINT_PATH).
    seed: initialisation, dropout and data order.
    log_period: print and write summaries every N steps.
    steps_per_run: end this invocation, with a checkpoint, after this many steps (for job
      time limits: the next invocation with the same MODEL_DIR goes on; None: to the end).
    input_shards: read the data in this many shards, each process a contiguous share (None:
      one a process); the global batches depend on it, not on the number of processes.
    skip_nonfinite_steps: a step whose loss or gradient norm is not finite keeps the
      parameters and optimizer state as they were, and is counted (`skipped_steps` in the
      summaries: in each log period; in metrics.json: in this invocation) instead of
      stopping the run (SKIP_NONFINITE).
    log_example_ids: append each step's content ids (`query_ids`, `passage_ids`) to
      MODEL_DIR/example_ids.jsonl, one JSON line a step, to check which examples a run saw
      (steps that a restart runs again appear again: the later line is the one that counts).
  """
  # --- Checks, before anything is written or compiled ----------------------------------------
  positive = {"TRAIN_STEPS": train_steps, "BATCH_SIZE": batch_size,
              "CHECKPOINT_PERIOD": checkpoint_period, "EVAL_PERIOD": eval_period,
              "NUM_PARTITIONS": num_partitions, "keep_checkpoints": keep_checkpoints,
              "eval_batches": eval_batches, "eval_k": eval_k, "log_period": log_period}
  for name, value in positive.items():
    _check(name, _is_int(value), value, "must be a positive int.")
  for name, value in {"steps_per_run": steps_per_run, "input_shards": input_shards}.items():
    _check(name, value is None or _is_int(value), value, "must be a positive int or None.")
  _check("TASK_FEATURE_LENGTHS", isinstance(task_feature_lengths, dict)
         and set(task_feature_lengths) == {"queries", "passages"}
         and all(_is_int(v, 2) for v in task_feature_lengths.values()), task_feature_lengths,
         "must be {'queries': Lq, 'passages': Lp}, ints >= 2 (room for a token and EOS).")
  _check("NUM_NEGATIVES", _is_int(num_negatives, 0), num_negatives, "must be an int >= 0.")
  _check("LEARNING_RATE", isinstance(learning_rate, (int, float)) and learning_rate > 0
         and math.isfinite(learning_rate), learning_rate, "must be a finite number > 0.")
  _check("WARMUP_STEPS", _is_int(warmup_steps, 0) and warmup_steps < train_steps, warmup_steps,
         f"must be an int in [0, TRAIN_STEPS={train_steps}).")
  _check("SEED", _is_int(seed, 0), seed, "must be an int >= 0.")
  loss_options = dict(temperature=temperature, same_tower=same_tower,
                      bidirectional=bidirectional, pair_alpha=pair_alpha)
  try:
    losses.check_options(**loss_options)
  except ValueError as e:
    raise ValueError(f"TEMPERATURE={temperature!r}, SAME_TOWER={same_tower!r}, BIDIRECTIONAL="
                     f"{bidirectional!r}, PAIR_ALPHA={pair_alpha!r}: {e}") from None
  retrieval_sets = {name: eval_sets_lib.get(name) for name in eval_tasks}  # read them now
  model_dir = pathlib.Path(model_dir)

  # --- Mesh --------------------------------------------------------------------------------
  mesh = partitioning.create_mesh(num_partitions)
  rules = partitioning.standard_logical_axis_rules()
  _check("BATCH_SIZE", batch_size % mesh.shape["data"] == 0, batch_size,
         f"must be a multiple of the {mesh.shape['data']} data-parallel devices.")
  _check("GRAD_CACHE_CHUNK", grad_cache_chunk is None or (
      _is_int(grad_cache_chunk) and batch_size % grad_cache_chunk == 0
      and grad_cache_chunk % mesh.shape["data"] == 0), grad_cache_chunk,
      f"must be None or a positive int that divides BATCH_SIZE={batch_size} and is a"
      f" multiple of the {mesh.shape['data']} data-parallel devices.")
  _LOG.info("Mesh %s over %d devices of %d processes.", dict(mesh.shape), jax.device_count(),
            jax.process_count())

  # --- Model, optimizer, loss --------------------------------------------------------------
  schedule = optimizers.linear_decay_schedule(learning_rate, train_steps, warmup_steps)
  optimizer = optimizers.adafactor(schedule)
  loss_fn = losses.sharded_contrastive_loss(mesh, **loss_options)
  if not mask_duplicates:
    unmasked = loss_fn
    loss_fn = lambda q, p, *, negative_emb=None, query_ids=None, passage_ids=None: unmasked(
        q, p, negative_emb=negative_emb)
  step_fn = trainer.make_train_step(model, optimizer, loss_fn, schedule, dropout_seed=seed,
                                    grad_cache_chunk=grad_cache_chunk)
  if skip_nonfinite_steps:
    step_fn = trainer.skip_nonfinite(step_fn)

  # --- Data ----------------------------------------------------------------------------------
  data = dict(task_feature_lengths=task_feature_lengths, num_negatives=num_negatives)
  batches = inputs.GlobalBatches(mixture_or_task_name, "train", global_batch_size=batch_size,
                                 mesh=mesh, num_shards=input_shards, seed=seed, **data)
  splits = seqio.get_mixture_or_task(mixture_or_task_name).splits
  _check("EVAL_SPLIT", eval_split is None or eval_split in splits, eval_split,
         f"is not a split of {mixture_or_task_name} ({sorted(splits)}); None: no evaluation.")

  # --- State: restore, or initialise (and load pretrained weights) ---------------------------
  model_dir.mkdir(parents=True, exist_ok=True)
  if jax.process_index() == 0:
    _write_atomically(model_dir / "config.gin", gin.operative_config_str())
  checkpoints = ocp.CheckpointManager(  # a save that a crash cut short is a temporary folder:
      (model_dir / "checkpoints").absolute(),  # never restored, removed here
      options=ocp.CheckpointManagerOptions(max_to_keep=keep_checkpoints, create=True,
                                           cleanup_tmp_directories=True))
  positions = model_dir / "input_positions"
  restored = checkpoints.latest_step()
  state, shardings = trainer.create_train_state(
      model, optimizer, jax.random.key(seed),
      trainer.example_batch(batch_size, task_feature_lengths, num_negatives), mesh, rules,
      abstract=restored is not None)  # a restore fills the abstract state: one copy only
  if restored is not None:
    state = checkpoints.restore(restored, args=ocp.args.StandardRestore(state))
    batches.restore(positions / str(restored))
    _LOG.info("Resumed from step %d of %s.", restored, model_dir)
  elif initial_checkpoint_path:
    config, tower, kernel = pretrained.load_initial_checkpoint(initial_checkpoint_path)
    pretrained.check_compatible(config, model.config,
                                f"INITIAL_CHECKPOINT_PATH={initial_checkpoint_path!r}")
    params = pretrained.with_pretrained(jax.device_get(state.params), model.architecture, tower,
                                        kernel)
    state = dataclasses.replace(state, params=jax.device_put(params, shardings.params))
    _LOG.info("Initialised the towers from %s (%s).", initial_checkpoint_path, config)

  params_norm = jax.jit(optax.global_norm)

  def finite_values(step, metrics) -> dict[str, float]:
    """The metrics as floats; TrainingError if one is not finite (in a step not skipped)."""
    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
    if not values.get("skipped") and not all(math.isfinite(v) for v in values.values()):
      raise TrainingError(
          f"non-finite training metrics at step {step}: {values}. The last good"
          f" checkpoint (step {checkpoints.latest_step()}) is kept in {model_dir}"
          " (SKIP_NONFINITE = True skips such steps instead).")
    return values

  def log_ids(step, batch):
    ids = {k: multihost_utils.process_allgather(batch[k], tiled=True).tolist()
           for k in ("query_ids", "passage_ids")}
    if jax.process_index() == 0:  # one unbuffered write: a line is whole even after a kill
      with (model_dir / "example_ids.jsonl").open("ab", buffering=0) as f:
        f.write((json.dumps(dict(step=step, **ids)) + "\n").encode())

  def save(state):
    step = int(state.step)
    if checkpoints.latest_step() == step:
      return
    finite_values(step, {"params_norm": params_norm(state.params)})
    (positions / str(step)).mkdir(parents=True, exist_ok=True)
    batches.save(positions / str(step))  # before the checkpoint that refers to it
    checkpoints.save(step, args=ocp.args.StandardSave(state))
    checkpoints.wait_until_finished()
    kept = {str(s) for s in checkpoints.all_steps()}
    if jax.process_index() == 0:
      for old in positions.iterdir():
        if old.name.isdigit() and old.name not in kept:
          shutil.rmtree(old, ignore_errors=True)

  # --- Evaluation: in-batch metrics on held-out batches, corpus-level retrieval ---------------
  eval_step = jax.jit(lambda params, batch: trainer.batch_loss(model, loss_fn, params, batch)[1])
  vocabulary = seqio.get_mixture_or_task(mixture_or_task_name).output_features[
      "queries"].vocabulary
  encode = lambda method: lambda params, ids: model.apply({"params": params}, ids,
                                                          method=method)

  def evaluate(params) -> dict[str, float]:
    results = {}
    for name, eval_set in retrieval_sets.items():
      found, _ = retrieval.evaluate(encode(model.encode_queries), encode(model.encode_passages),
                                    params, eval_set, vocabulary, task_feature_lengths, mesh,
                                    k=eval_k)
      results.update({f"retrieval/{name}/{k}": v for k, v in found.items()})
    return dict(results, **_in_batch_evaluation(params))

  def _in_batch_evaluation(params) -> dict[str, float]:
    if not eval_split:
      return {}
    ds = inputs.get_dataset(mixture_or_task_name, eval_split, task_feature_lengths,
                            batch_size // jax.process_count(), shard_index=jax.process_index(),
                            num_shards=jax.process_count(), shuffle=False, num_epochs=None,
                            num_negatives=num_negatives)  # repeats: equal counts everywhere
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    totals, count = {}, 0
    for local in ds.take(eval_batches).as_numpy_iterator():
      batch = {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
      with jax.set_mesh(mesh):
        metrics = jax.device_get(eval_step(params, batch))
      totals = {k: totals.get(k, 0.0) + float(v) for k, v in metrics.items()}
      count += 1
    if not count:
      _LOG.warning("EVAL_SPLIT %r of %s has less than one batch; no evaluation.", eval_split,
                   mixture_or_task_name)
      return {}
    return {f"eval/{k}": v / count for k, v in totals.items()}

  # --- Loop ------------------------------------------------------------------------------------
  train_step = trainer.compile_train_step(step_fn, shardings, mesh, rules)
  writer = tf.summary.create_file_writer(str(model_dir / "summaries"))
  stop = {"signal": None}
  previous = signal.signal(signal.SIGTERM, lambda signum, _: stop.update(signal=signum))
  last = train_steps if steps_per_run is None else min(train_steps,
                                                        int(state.step) + steps_per_run)
  start_time, start_step = time.perf_counter(), int(state.step)
  metrics, skipped, skipped_total = {}, 0, 0  # skipped: since the last summary; in all

  def stopping() -> bool:  # every process stops at the same step
    flag = np.int32(stop["signal"] is not None)
    if jax.process_count() > 1:
      flag = multihost_utils.process_allgather(flag).max()
    return bool(flag)

  try:
    while int(state.step) < last and not stopping():
      batch = next(batches)
      if log_example_ids:
        log_ids(int(state.step) + 1, batch)
      state, metrics = train_step(state, batch)
      step = int(state.step)
      values = finite_values(step, metrics)  # every step: a non-finite one stops the run
      skipped += int(values.pop("skipped", 0))
      if step % log_period == 0 or step == train_steps:
        rate = (step - start_step) * batch_size / (time.perf_counter() - start_time)
        eta = (train_steps - step) * batch_size / max(rate, 1e-9)
        _LOG.info("step %d/%d  loss %.4f  acc %.3f  mrr %.3f  lr %.2e  %.0f examples/s  ETA"
                  " %.0f s%s", step, train_steps, values["loss"], values["accuracy_qp"],
                  values["mrr_qp"], values["learning_rate"], rate, eta,
                  f"  skipped {skipped}" if skipped else "")
        if skip_nonfinite_steps:
          values["skipped_steps"] = skipped
        _write_summaries(writer, step, dict(values, examples_per_second=rate))
        start_time, start_step = time.perf_counter(), step
        skipped_total, skipped = skipped_total + skipped, 0
      if step % checkpoint_period == 0 or step == train_steps:
        save(state)
      if step % eval_period == 0 and step != train_steps and stop["signal"] is None:
        _write_summaries(writer, step, evaluate(state.params))
    if int(state.step) < train_steps:
      reason = f"signal {stop['signal']}" if stop["signal"] else f"steps_per_run={steps_per_run}"
      _LOG.warning("%s: saving step %d and stopping.", reason, int(state.step))
      save(state)
      return {"step": int(state.step)}
  finally:
    signal.signal(signal.SIGTERM, previous)
    checkpoints.wait_until_finished()

  # --- End: evaluation and metrics.json -------------------------------------------------------
  final = dict(evaluate(state.params), step=int(state.step))
  final.update({f"train/{k}": float(v) for k, v in jax.device_get(metrics).items()
                if k != "skipped"})
  if skip_nonfinite_steps:
    final["train/skipped_steps"] = skipped_total
  _write_summaries(writer, int(state.step), final)
  if jax.process_index() == 0:
    _write_atomically(model_dir / "metrics.json", json.dumps(final, indent=2, sort_keys=True))
  _LOG.info("Done: %s", json.dumps(final, sort_keys=True))
  return final


def _write_atomically(path: pathlib.Path, text: str) -> None:
  """Writes `path` whole or not at all (a crash leaves the old file or none)."""
  temporary = path.with_name(path.name + ".tmp")
  temporary.write_text(text)
  os.replace(temporary, path)


def _write_summaries(writer, step: int, values: dict[str, float]) -> None:
  if jax.process_index() != 0:
    return
  with writer.as_default(step=step):
    for name, value in values.items():
      tf.summary.scalar(name, value)
  writer.flush()


def parse_flags(argv: Sequence[str]) -> argparse.Namespace:
  """--gin_file (repeatable), --gin.NAME=VALUE (repeatable), --gin_search_paths."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--gin_file", action="append", default=[], help="a gin file")
  parser.add_argument("--gin_search_paths", default="",
                      help="comma-separated folders to find gin files in")
  parser.add_argument("--coordinator_address", help="host:port of process 0, for a run on"
                      " several processes (as T5X's flag); SLURM and Open MPI jobs need none")
  parser.add_argument("--process_count", type=int, help="processes in all")
  parser.add_argument("--process_index", type=int, help="this process's index")
  parser.add_argument("--heartbeat_timeout_seconds", type=int, default=100,
                      help="a process silent this long (dead, preempted) ends the others' run"
                      " with an error (JAX's coordination service; its default)")
  args, rest = parser.parse_known_args(argv)
  args.gin_bindings = []
  for arg in rest:
    if not arg.startswith("--gin.") or "=" not in arg:
      parser.error(f"unrecognised argument {arg!r} (expected --gin.NAME=VALUE)")
    args.gin_bindings.append(arg[len("--gin."):])
  if not args.gin_file:
    parser.error("at least one --gin_file is needed, e.g. experiments/quickstart.gin")
  return args


def parse_gin(gin_files: Sequence[str], bindings: Sequence[str],
              search_paths: Sequence[str] = ()) -> None:
  """Parses gin files (found on the search paths, the shipped gin_configs/ last) and
  bindings, as T5X does."""
  for path in [*search_paths, str(samtone_jax.GIN_CONFIGS_DIR)]:
    gin.add_config_file_search_path(path)
  gin.parse_config_files_and_bindings(gin_files, bindings, finalize_config=False)


def setup_logging() -> None:
  """samtone_jax's progress lines on stdout (JAX and TensorFlow keep their own logs)."""
  handler = logging.StreamHandler(sys.stdout)
  handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
  ours = logging.getLogger("samtone_jax")
  ours.setLevel(logging.INFO)
  ours.addHandler(handler)
  ours.propagate = False


def initialize_processes(args: argparse.Namespace) -> None:
  """jax.distributed.initialize for a run on several processes (flags, SLURM or Open MPI)."""
  timeout = dict(heartbeat_timeout_seconds=args.heartbeat_timeout_seconds)
  if args.coordinator_address:
    jax.distributed.initialize(args.coordinator_address, args.process_count,
                               args.process_index, **timeout)
  elif "SLURM_JOB_ID" in os.environ or "OMPI_COMM_WORLD_SIZE" in os.environ:
    jax.distributed.initialize(**timeout)  # JAX reads the cluster's own variables


def main(argv: Optional[Sequence[str]] = None) -> None:
  setup_logging()
  args = parse_flags(sys.argv[1:] if argv is None else argv)
  initialize_processes(args)
  parse_gin(args.gin_file, args.gin_bindings,
            [p for p in args.gin_search_paths.split(",") if p])
  gin.get_configurable(train)()


if __name__ == "__main__":
  # Run the module's canonical copy, which the gin files bind, not this __main__ copy.
  from samtone_jax import train as _train_module  # pylint: disable=g-import-not-at-top
  _train_module.main()
