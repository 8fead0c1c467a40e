r"""Training, T5X-style: `python -m samtone_jax.train --gin_file=... [--gin.NAME=VALUE ...]`.

  python -m samtone_jax.train --gin_file=experiments/quickstart.gin \
      --gin.MODEL_DIR="'/tmp/quickstart'"

The flags are `launch`'s. The operative config is written to MODEL_DIR/config.gin. A run
restarted with the same MODEL_DIR resumes from its latest checkpoint, input position
included. SIGTERM writes a checkpoint and exits. A step whose loss or gradient norm is not
finite stops the run, naming the step (or, with SKIP_NONFINITE, leaves the parameters as
they were and is counted).

`train()` reads top to bottom: checks, mesh, model and loss, data, state (restore, or
initialise and load INITIAL_CHECKPOINT_PATH), evaluation, loop, and the final evaluation
and metrics.json. The loop reads each step's metrics while the next step runs, so the host
waits for the device only at log, checkpoint and evaluation steps.
"""

if __name__ == "__main__":  # a program: the host set up before these imports load TensorFlow
  from samtone_jax import launch as _launch  # pylint: disable=g-import-not-at-top
  _launch.setup_host()

import dataclasses
import json
import logging
import math
import os
import shutil
import signal
import time
from typing import Any, Callable, Optional, Sequence

import gin
import jax
import numpy as np
from jax.experimental import multihost_utils
import optax
import orbax.checkpoint as ocp
import seqio
import tensorflow as tf

from samtone_jax import atomic, dual_encoder, embedder, evaluator, inputs, launch, losses
from samtone_jax import optimizers, partitioning, pretrained, run_dir, trainer

_LOG = logging.getLogger("samtone_jax.train")
# Evaluation sets with more documents are embedded into shards under MODEL_DIR and searched a
# chunk at a time (bounded memory); smaller ones in memory.
STREAMED_CORPUS = 200_000


class TrainingError(RuntimeError):
  """A run that cannot go on (a non-finite loss, a checkpoint that does not fit)."""


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
          strict_restore: bool = False, require_initial_checkpoint: bool = False,
          adafactor_initial_step: int = 0, log_example_ids: bool = False) -> dict[str, float]:
  """Trains a dual encoder; returns the final evaluation metrics (also in metrics.json).

  Args:
    model: the DualEncoder (MODEL).
    model_dir: checkpoints, config.gin, event files and metrics.json go here (MODEL_DIR).
    train_steps: steps in all, counted across restarts (TRAIN_STEPS).
    batch_size: the global batch, all in-batch negatives (BATCH_SIZE).
    mixture_or_task_name: a SeqIO task or mixture (MIXTURE_OR_TASK_NAME).
    task_feature_lengths: {"queries": Lq, "passages": Lp} (TASK_FEATURE_LENGTHS).
    temperature, same_tower, bidirectional, pair_alpha: the loss (losses/*.gin).
    mask_duplicates: remove duplicate texts from the denominators, and hard negatives that
      are known positives of the anchor, by content ids.
    num_negatives: hard negatives an example (tasks with `negative_passages`), drawn from
      the example's pool.
    learning_rate, warmup_steps: the schedule, decaying linearly to 0 at train_steps.
    num_partitions: size of the mesh's "model" axis (NUM_PARTITIONS).
    grad_cache_chunk: None, or encode the batch this many examples at a time with gradient
      caching (GradCache): the same loss and gradients over the whole batch, with the
      activations of one chunk in memory, for one more forward pass (GRAD_CACHE_CHUNK).
    checkpoint_period, keep_checkpoints: save every N steps (and at the end), keep the last.
    eval_period, eval_split, eval_batches: in-batch metrics on `eval_batches` batches of
      `eval_split` every N steps and at the end (None: no evaluation).
    eval_tasks, eval_k: corpus-level retrieval (P@1, MRR, MRR@10, Recall@k, nDCG@k) on these
      evaluation sets (eval_sets.py; EVAL_TASKS), each query against its whole corpus
      (top eval_k), at the same times.
    initial_checkpoint_path: Hugging Face T5 or sentence-transformers folder to start from
      when MODEL_DIR has no checkpoint (INITIAL_CHECKPOINT_PATH).
    seed: initialisation, dropout and data order.
    log_period: print and write summaries every N steps; with several processes, also the
      steps at which they agree to stop on a SIGTERM.
    steps_per_run: end this invocation, with a checkpoint, after this many steps (for job
      time limits: the next invocation with the same MODEL_DIR goes on; None: to the end).
    input_shards: read the data in this many shards, each process a contiguous share (None:
      one a process); the global batches depend on it, not on the number of processes.
    skip_nonfinite_steps: a step whose loss or gradient norm is not finite keeps the
      parameters and optimizer state as they were, and is counted (`skipped_steps` in the
      summaries: in each log period; in metrics.json: in this invocation) instead of
      stopping the run (SKIP_NONFINITE).
    strict_restore: on resume, a newest checkpoint that does not restore stops the run,
      instead of being moved aside to MODEL_DIR/damaged/<step> for the newest one that does
      (STRICT_RESTORE).
    require_initial_checkpoint: refuse to start a new run (MODEL_DIR without a checkpoint)
      with INITIAL_CHECKPOINT_PATH None: for experiments that fine-tune pretrained towers
      (REQUIRE_INITIAL_CHECKPOINT; the paper's set it).
    adafactor_initial_step: the step Adafactor's second-moment decay counts from: T5X's
      fine-tuning restores the pretrained step (1,000,000 for T5 v1.1; the paper's
      experiments set that), 0 for training from scratch (ADAFACTOR_INITIAL_STEP).
    log_example_ids: append each step's content ids (`query_ids`, `passage_ids`) to
      MODEL_DIR/example_ids.jsonl, one JSON line a step, to check which examples a run saw
      (steps that a restart runs again appear again: the later line is the one that counts).
  """
  # --- Checks, before anything is written or compiled ----------------------------------------
  loss_options = dict(temperature=temperature, same_tower=same_tower,
                      bidirectional=bidirectional, pair_alpha=pair_alpha)
  _check_settings(train_steps=train_steps, batch_size=batch_size,
                  checkpoint_period=checkpoint_period, eval_period=eval_period,
                  num_partitions=num_partitions, keep_checkpoints=keep_checkpoints,
                  eval_batches=eval_batches, eval_k=eval_k, log_period=log_period,
                  steps_per_run=steps_per_run, input_shards=input_shards,
                  task_feature_lengths=task_feature_lengths, num_negatives=num_negatives,
                  learning_rate=learning_rate, warmup_steps=warmup_steps, seed=seed,
                  loss_options=loss_options)
  run = run_dir.RunDir(model_dir)
  _check("INITIAL_CHECKPOINT_PATH", initial_checkpoint_path is not None
         or not require_initial_checkpoint or run.latest_step() is not None,
         initial_checkpoint_path,
         "this experiment fine-tunes pretrained T5 v1.1 towers (REQUIRE_INITIAL_CHECKPOINT ="
         " True). Download them once, e.g. `hf download google/t5-v1_1-base --local-dir"
         " /data/t5-v1_1-base` (README, \"Pretrained weights\"), and pass"
         " --gin.INITIAL_CHECKPOINT_PATH=\"'/data/t5-v1_1-base'\" with"
         " --gin.vocabularies.t5_vocabulary_path.path=\"'/data/t5-v1_1-base/spiece.model'\";"
         " or --gin.REQUIRE_INITIAL_CHECKPOINT=False to train from random initialisation.")
  retrieval_evaluator = evaluator.Evaluator(  # reads the sets now; names that clash fail
      eval_tasks, k=eval_k, embeddings_dir=run.eval_embeddings, stream_above=STREAMED_CORPUS)

  # --- Mesh --------------------------------------------------------------------------------
  mesh = partitioning.create_mesh(num_partitions)
  rules = partitioning.standard_logical_axis_rules()
  _check_mesh(mesh, batch_size, grad_cache_chunk)
  _LOG.info("Mesh %s over %d devices of %d processes.", dict(mesh.shape), jax.device_count(),
            jax.process_count())

  # --- Model, optimizer, loss --------------------------------------------------------------
  schedule = optimizers.linear_decay_schedule(learning_rate, train_steps, warmup_steps)
  optimizer = optimizers.adafactor(schedule, initial_step=adafactor_initial_step)
  loss_fn = losses.sharded_contrastive_loss(mesh, **loss_options)
  if not mask_duplicates:
    unmasked = loss_fn
    loss_fn = lambda q, p, *, negative_emb=None, negative_ids=None, **_: unmasked(
        q, p, negative_emb=negative_emb, negative_ids=negative_ids)  # empty slots still go
  step_fn = trainer.make_train_step(model, optimizer, loss_fn, schedule, dropout_seed=seed,
                                    grad_cache_chunk=grad_cache_chunk)
  if skip_nonfinite_steps:
    step_fn = trainer.skip_nonfinite(step_fn)

  # --- Data ----------------------------------------------------------------------------------
  batches = inputs.GlobalBatches(mixture_or_task_name, "train", global_batch_size=batch_size,
                                 mesh=mesh, num_shards=input_shards, seed=seed,
                                 task_feature_lengths=task_feature_lengths,
                                 num_negatives=num_negatives)
  splits = seqio.get_mixture_or_task(mixture_or_task_name).splits
  _check("EVAL_SPLIT", eval_split is None or eval_split in splits, eval_split,
         f"is not a split of {mixture_or_task_name} ({sorted(splits)}); None: no evaluation.")

  # --- State: restore, or initialise (and load pretrained weights) ---------------------------
  run.path.mkdir(parents=True, exist_ok=True)
  if jax.process_index() == 0:
    atomic.write_atomically(run.config, gin.operative_config_str())
  checkpointer = _Checkpointer(run, batches, keep_checkpoints, strict_restore)
  state, shardings = _restore_or_initialise(
      checkpointer, model, optimizer, seed, mesh, rules, initial_checkpoint_path,
      trainer.example_batch(batch_size, task_feature_lengths, num_negatives))

  # --- Evaluation: in-batch metrics on held-out batches, corpus-level retrieval ---------------
  eval_step = jax.jit(lambda params, batch: trainer.batch_loss(model, loss_fn, params, batch)[1])

  def evaluate(state: trainer.TrainState) -> dict[str, float]:
    results = _retrieval_evaluation(retrieval_evaluator, embedder.Embedder.of_model(
        model, state.params, embedder.task_vocabulary(mixture_or_task_name),
        task_feature_lengths, mesh, checkpoint=run.path, step=int(state.step)))
    if eval_split:
      results.update(_in_batch_evaluation(
          eval_step, state.params, mesh, mixture_or_task_name, eval_split, task_feature_lengths,
          batch_size, eval_batches, num_negatives))
    return results

  # --- Loop ------------------------------------------------------------------------------------
  train_step = trainer.compile_train_step(step_fn, shardings, mesh, rules)
  writer = tf.summary.create_file_writer(str(run.summaries))
  step = int(state.step)
  last = train_steps if steps_per_run is None else min(train_steps, step + steps_per_run)
  progress = _Progress(writer, batch_size, train_steps, step, checkpointer.latest_step,
                       count_skipped=skip_nonfinite_steps)
  stop = _StopSignal(log_period)
  try:
    while step < last and not stop.agreed(step):
      batch = next(batches)
      if log_example_ids:
        _log_example_ids(run, step + 1, batch)
      state, metrics = train_step(state, batch)
      step += 1
      progress.add(step, metrics)  # reads the step before's, while this one runs
      if step % log_period == 0 or step == train_steps:
        progress.log(step)
      if step % checkpoint_period == 0 or step == train_steps:
        progress.read()  # a step that failed is not saved
        checkpointer.save(state, step)
      if step % eval_period == 0 and step != train_steps and not stop.agreed(step):
        _write_summaries(writer, step, evaluate(state))
    progress.read()
    if step < train_steps:
      reason = f"signal {stop.signal}" if stop.signal else f"steps_per_run={steps_per_run}"
      _LOG.warning("%s: saving step %d and stopping.", reason, step)
      checkpointer.save(state, step)
      return {"step": step}
  finally:
    stop.restore()
    checkpointer.wait_until_finished()

  # --- End: evaluation and metrics.json -------------------------------------------------------
  final = dict(evaluate(state), step=step)
  final.update({f"train/{k}": v for k, v in progress.values.items()})
  if skip_nonfinite_steps:
    final["train/skipped_steps"] = progress.skipped_total
  _write_summaries(writer, step, final)
  if jax.process_index() == 0:
    atomic.write_atomically(run.metrics, json.dumps(final, indent=2, sort_keys=True))
  _LOG.info("Done: %s", json.dumps(final, sort_keys=True))
  return final


# --- Checks ------------------------------------------------------------------------------------

def _check(name: str, ok: bool, value: Any, what: str) -> None:
  if not ok:
    raise ValueError(f"{name}={value!r}: {what}")


def _is_int(value: Any, low: int = 1) -> bool:
  """Whether `value` is an int (not a bool) >= low."""
  return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _check_settings(*, train_steps, batch_size, checkpoint_period, eval_period, num_partitions,
                    keep_checkpoints, eval_batches, eval_k, log_period, steps_per_run,
                    input_shards, task_feature_lengths, num_negatives, learning_rate,
                    warmup_steps, seed, loss_options) -> None:
  """ValueError naming the macro (or binding) of the first value out of range."""
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
  try:
    losses.check_options(**loss_options)
  except ValueError as e:
    o = loss_options
    raise ValueError(f"TEMPERATURE={o['temperature']!r}, SAME_TOWER={o['same_tower']!r},"
                     f" BIDIRECTIONAL={o['bidirectional']!r}, PAIR_ALPHA={o['pair_alpha']!r}:"
                     f" {e}") from None


def _check_mesh(mesh: jax.sharding.Mesh, batch_size: int, grad_cache_chunk: Optional[int]
                ) -> None:
  """The batch (and a GradCache chunk) must split evenly over the data-parallel devices."""
  devices = mesh.shape["data"]
  _check("BATCH_SIZE", batch_size % devices == 0, batch_size,
         f"must be a multiple of the {devices} data-parallel devices.")
  _check("GRAD_CACHE_CHUNK", grad_cache_chunk is None or (
      _is_int(grad_cache_chunk) and batch_size % grad_cache_chunk == 0
      and grad_cache_chunk % devices == 0), grad_cache_chunk,
      f"must be None or a positive int that divides BATCH_SIZE={batch_size} and is a"
      f" multiple of the {devices} data-parallel devices.")


def _check_finite(step: int, values: dict[str, float], latest_checkpoint: Optional[int]) -> None:
  """TrainingError if a value is not finite, naming the step and the last good checkpoint."""
  if not all(math.isfinite(v) for v in values.values()):
    raise TrainingError(
        f"non-finite training metrics at step {step}: {values}. The last good checkpoint"
        f" (step {latest_checkpoint}) is kept (SKIP_NONFINITE = True skips such steps"
        " instead).")


# --- State and checkpoints ---------------------------------------------------------------------

class _Checkpointer:
  """Orbax checkpoints of the TrainState, each with the input position of its step.

  On resume, a checkpoint that does not restore (unreadable or missing files, a state of
  another model, a missing or damaged input position) is reported and moved aside to
  MODEL_DIR/damaged/<step>, and the newest one that restores is used; with `strict`, the run
  stops instead. With several processes, a checkpoint restores only if it does on all.
  """

  def __init__(self, run: run_dir.RunDir, batches: inputs.GlobalBatches, keep: int,
               strict: bool):
    self._run, self._batches, self._strict = run, batches, strict
    self._manager = ocp.CheckpointManager(  # a save that a crash cut short is a temporary
        run.checkpoints,                    # folder: never restored, removed here
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             cleanup_tmp_directories=True))
    self._params_norm = jax.jit(optax.tree.norm)

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def restore(self, abstract_state: trainer.TrainState) -> trainer.TrainState:
    """The newest checkpoint that restores into the abstract (sharded) state, and its input
    position; newer ones are moved aside.

    Raises:
      TrainingError: no checkpoint restores, or (strict) the newest does not.
    """
    damaged, restorer = {}, run_dir.restoring_manager(self._run.checkpoints)
    for step in sorted(self._manager.all_steps(), reverse=True):
      state, error = self._try_restore(restorer, abstract_state, step)
      if state is not None:
        break
      damaged[step] = error
      _LOG.warning("The checkpoint of step %d (%s) does not restore: %s", step,
                   self._run.checkpoint(step), error)
      if self._strict:
        _refuse(
            f"the checkpoint of step {step} ({self._run.checkpoint(step)}) does not restore:"
            f" {error}. STRICT_RESTORE = True refuses to fall back to an older checkpoint;"
            f" move {self._run.checkpoint(step)} and {self._run.input_position(step)} aside"
            " by hand, or set STRICT_RESTORE = False.")
    else:
      _refuse(
          f"no checkpoint of {self._run.checkpoints} restores ("
          + "; ".join(f"step {s}: {e}" for s, e in damaged.items())
          + "). Nothing was moved: if the model or the number of processes changed, resume"
          " with the run's own config.gin, or start a new MODEL_DIR.")
    for bad in damaged:
      self._move_aside(bad)
    _LOG.info("Resumed from step %d of %s.", step, self._run.path)
    return state

  def _try_restore(self, restorer: ocp.CheckpointManager, abstract_state: trainer.TrainState,
                   step: int) -> tuple[Optional[trainer.TrainState], Optional[str]]:
    """(state, None), or (None, what went wrong) when the checkpoint of `step` or its input
    position does not restore, on this process or on another (`restorer`: a
    `run_dir.restoring_manager`, so that every process gets to the agreement)."""

    def restore() -> trainer.TrainState:
      state = restorer.restore(step, args=ocp.args.StandardRestore(abstract_state))
      position = self._run.input_position(step)
      if not position.is_dir():
        raise FileNotFoundError(f"no input position {position}")
      self._batches.restore(position)
      return state

    return run_dir.agreed(restore)

  def _move_aside(self, step: int) -> None:
    """Moves the checkpoint of `step` and its input position to MODEL_DIR/damaged/ (process
    0 moves them; TrainingError on every process if it cannot)."""
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"damaged checkpoint {step}")
    target = self._run.damaged(step)

    def move() -> None:
      if jax.process_index() == 0:
        target.mkdir(parents=True)
        for source, name in ((self._run.checkpoint(step), "checkpoint"),
                             (self._run.input_position(step), "input_position")):
          if source.exists():
            os.replace(source, target / name)
        _LOG.warning("Moved the checkpoint of step %d aside, to %s.", step, target)

    _, error = run_dir.agreed(move)
    if error is not None:
      _refuse(f"the checkpoint of step {step} ({self._run.checkpoint(step)}) does not restore"
              f" and could not be moved aside to {target}: {error}. Move it and"
              f" {self._run.input_position(step)} aside by hand.")
    self._manager.reload()

  def save(self, state: trainer.TrainState, step: int) -> None:
    """Saves `state` (of step `step`), unless saved already; TrainingError if its
    parameters are not finite. Older input positions go with their checkpoints."""
    if self.latest_step() == step:
      return
    _check_finite(step, {"params_norm": float(self._params_norm(state.params))},
                  self.latest_step())
    position = self._run.input_position(step)
    position.mkdir(parents=True, exist_ok=True)
    self._batches.save(position)  # before the checkpoint that refers to it
    self._manager.save(step, args=ocp.args.StandardSave(state))
    self._manager.wait_until_finished()
    kept = {str(s) for s in self._manager.all_steps()}
    if jax.process_index() == 0:
      for old in self._run.input_positions.iterdir():
        if old.name.isdigit() and old.name not in kept:
          shutil.rmtree(old, ignore_errors=True)

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()


def _refuse(message: str) -> None:
  """Logs `message` as one line, then raises it as a TrainingError: the storage layer's
  threads may still print as the process exits, and cut into the traceback's last line."""
  _LOG.error("%s", message)
  raise TrainingError(message)


def _restore_or_initialise(checkpointer: _Checkpointer, model: dual_encoder.DualEncoder,
                           optimizer: optax.GradientTransformation, seed: int,
                           mesh: jax.sharding.Mesh, rules: partitioning.LogicalRules,
                           initial_checkpoint_path: Optional[str], example: trainer.Batch
                           ) -> tuple[trainer.TrainState, trainer.TrainState]:
  """(state, its shardings): the latest checkpoint's; else a fresh one, its towers from
  INITIAL_CHECKPOINT_PATH when set."""
  resume = checkpointer.latest_step() is not None
  state, shardings = trainer.create_train_state(  # a restore fills the abstract state: one
      model, optimizer, jax.random.key(seed), example, mesh, rules, abstract=resume)  # copy
  if resume:
    return checkpointer.restore(state), shardings
  if initial_checkpoint_path:
    config, tower, kernel = pretrained.load_initial_checkpoint(initial_checkpoint_path)
    pretrained.check_compatible(config, model.config,
                                f"INITIAL_CHECKPOINT_PATH={initial_checkpoint_path!r}")
    params = pretrained.with_pretrained(jax.device_get(state.params), model.architecture, tower,
                                        kernel)
    state = dataclasses.replace(state, params=jax.device_put(params, shardings.params))
    _LOG.info("Initialised the towers from %s (%s).", initial_checkpoint_path, config)
  return state, shardings


# --- Evaluation --------------------------------------------------------------------------------

def _retrieval_evaluation(retrieval_evaluator: evaluator.Evaluator,
                          embed: embedder.Embedder) -> dict[str, float]:
  """{"retrieval/<set>/<metric>": value} of the run's evaluation sets; a corpus of over
  STREAMED_CORPUS documents goes through shards in MODEL_DIR/eval_embeddings/<set>
  (bounded memory; labelled with the run and the parameters' step)."""
  return {f"retrieval/{name}/{metric}": value
          for name, found in retrieval_evaluator(embed).items()
          for metric, value in found.items()}


def _in_batch_evaluation(eval_step: Callable, params: Any,
                         mesh: jax.sharding.Mesh, mixture_or_task_name: str, split: str,
                         lengths: dict[str, int], batch_size: int, num_batches: int,
                         num_negatives: int) -> dict[str, float]:
  """{"eval/<metric>": value}: `eval_step`'s `(params, batch) -> metrics`, averaged over
  `num_batches` batches of `split` (repeated if shorter, so that every process sees as many)."""
  ds = inputs.get_dataset(mixture_or_task_name, split, lengths,
                          batch_size // jax.process_count(), shard_index=jax.process_index(),
                          num_shards=jax.process_count(), shuffle=False, num_epochs=None,
                          num_negatives=num_negatives)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  totals, count = {}, 0
  for local in ds.take(num_batches).as_numpy_iterator():
    batch = {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
    with jax.set_mesh(mesh):
      metrics = jax.device_get(eval_step(params, batch))
    totals = {k: totals.get(k, 0.0) + float(v) for k, v in metrics.items()}
    count += 1
  if not count:
    _LOG.warning("EVAL_SPLIT %r of %s has less than one batch; no evaluation.", split,
                 mixture_or_task_name)
    return {}
  return {f"eval/{k}": v / count for k, v in totals.items()}


# --- The loop's helpers ------------------------------------------------------------------------

class _Progress:
  """Training metrics, read one step late: step n's are fetched while step n + 1 runs, so
  that the host waits for the device only where it must (a log line, a checkpoint)."""

  def __init__(self, writer, batch_size: int, train_steps: int, step: int,
               latest_checkpoint: Callable[[], Optional[int]], count_skipped: bool):
    self._writer, self._batch_size, self._train_steps = writer, batch_size, train_steps
    self._latest_checkpoint, self._count_skipped = latest_checkpoint, count_skipped
    self._pending = None  # (step, metrics on the device)
    self._start_time, self._start_step = time.perf_counter(), step
    self.values: dict[str, float] = {}  # the newest step read, less "skipped"
    self.skipped = 0  # skipped steps since the last log line
    self.skipped_total = 0  # and before it, in this invocation

  def add(self, step: int, metrics: dict[str, jax.Array]) -> None:
    """Takes step `step`'s metrics (not waited for) and reads the step before's."""
    self.read()
    self._pending = (step, metrics)

  def read(self) -> None:
    """Waits for the pending step's metrics; TrainingError if they are not finite (in a
    step that was not skipped)."""
    if self._pending is None:
      return
    step, metrics = self._pending
    self._pending = None
    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
    skipped = int(values.pop("skipped", 0))
    if not skipped:
      _check_finite(step, values, self._latest_checkpoint())
    self.skipped += skipped
    self.values = values

  def log(self, step: int) -> None:
    """A progress line and the summaries of step `step`."""
    self.read()
    values = self.values
    rate = (step - self._start_step) * self._batch_size / (time.perf_counter()
                                                           - self._start_time)
    eta = (self._train_steps - step) * self._batch_size / max(rate, 1e-9)
    _LOG.info("step %d/%d  loss %.4f  acc %.3f  mrr %.3f  lr %.2e  %.0f examples/s  ETA %.0f s"
              "%s%s",
              step, self._train_steps, values["loss"], values["accuracy_qp"], values["mrr_qp"],
              values["learning_rate"], rate, eta,
              f"  empty negatives {values['empty_negatives']:.1%}"
              if values.get("empty_negatives") else "",
              f"  skipped {self.skipped}" if self.skipped else "")
    summaries = dict(values, examples_per_second=rate)
    if self._count_skipped:
      summaries["skipped_steps"] = self.skipped
    _write_summaries(self._writer, step, summaries)
    self._start_time, self._start_step = time.perf_counter(), step
    self.skipped_total, self.skipped = self.skipped_total + self.skipped, 0


class _StopSignal:
  """SIGTERM, caught: the loop saves a checkpoint and stops. Every process stops at the same
  step: with several, they agree at each `period`-th step (one all-gather); alone, a
  process looks at every step, for free."""

  def __init__(self, period: int):
    self.signal = None
    self._period = period
    self._agreed = False
    self._previous = signal.signal(signal.SIGTERM, self._catch)

  def _catch(self, signum, _):
    self.signal = signum

  def agreed(self, step: int) -> bool:
    """Whether every process has been asked to stop, as of `step`."""
    if jax.process_count() == 1:
      return self.signal is not None
    if step % self._period == 0:
      flag = np.int32(self.signal is not None)
      self._agreed = bool(multihost_utils.process_allgather(flag).max())
    return self._agreed

  def restore(self) -> None:
    signal.signal(signal.SIGTERM, self._previous)


def _log_example_ids(run: run_dir.RunDir, step: int, batch: dict[str, jax.Array]) -> None:
  """Appends step `step`'s content ids to MODEL_DIR/example_ids.jsonl (process 0)."""
  ids = {k: multihost_utils.process_allgather(batch[k], tiled=True).tolist()
         for k in ("query_ids", "passage_ids")}
  if jax.process_index() == 0:  # one unbuffered write: a line is whole even after a kill
    with run.example_ids.open("ab", buffering=0) as f:
      f.write((json.dumps(dict(step=step, **ids)) + "\n").encode())


def _write_summaries(writer, step: int, values: dict[str, float]) -> None:
  if jax.process_index() != 0:
    return
  with writer.as_default(step=step):
    for name, value in values.items():
      tf.summary.scalar(name, value)
  writer.flush()


def main(argv: Optional[Sequence[str]] = None) -> None:
  launch.run_configurable(train, argv)


if __name__ == "__main__":
  # Run the module's canonical copy, which the gin files bind, not this __main__ copy.
  from samtone_jax import train as _train_module  # pylint: disable=g-import-not-at-top
  _train_module.main()
