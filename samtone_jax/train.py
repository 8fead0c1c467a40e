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

import json
import logging
from typing import Callable, Optional, Sequence

import gin
import jax
import seqio
import tensorflow as tf

from samtone_jax import atomic, checkpoints, dual_encoder, embedder, evaluator, inputs, launch
from samtone_jax import losses, loop, optimizers, partitioning, run_dir, settings, trainer
from samtone_jax.settings import check, is_int

_LOG = logging.getLogger("samtone_jax.train")
# Evaluation sets with more documents are embedded into shards under MODEL_DIR and searched a
# chunk at a time (bounded memory); smaller ones in memory.
STREAMED_CORPUS = 200_000


def train(*, model: dual_encoder.DualEncoder = gin.REQUIRED, model_dir: str = gin.REQUIRED,
          train_steps: int = gin.REQUIRED, data: settings.Data = gin.REQUIRED,
          loss: settings.Loss = gin.REQUIRED, optimizer: settings.Optimizer = gin.REQUIRED,
          checkpointing: settings.Checkpointing = gin.REQUIRED,
          evaluation: settings.Evaluation = gin.REQUIRED, num_partitions: int = 1,
          grad_cache_chunk: Optional[int] = None, initial_checkpoint_path: Optional[str] = None,
          require_initial_checkpoint: bool = False, seed: int = 0, log_period: int = 50,
          skip_nonfinite_steps: bool = False, log_example_ids: bool = False) -> dict[str, float]:
  """Trains a dual encoder; returns the final evaluation metrics (also in metrics.json).

  Args:
    model: the DualEncoder (MODEL).
    model_dir: checkpoints, config.gin, event files and metrics.json go here (MODEL_DIR).
    train_steps: steps in all, counted across restarts (TRAIN_STEPS).
    data, loss, optimizer, checkpointing, evaluation: the settings (`settings`).
    num_partitions: size of the mesh's "model" axis (NUM_PARTITIONS).
    grad_cache_chunk: None, or encode the batch this many examples at a time with gradient
      caching: the same loss and gradients, one chunk's activations (GRAD_CACHE_CHUNK).
    initial_checkpoint_path: a Hugging Face T5 or sentence-transformers folder to start a new
      run from (INITIAL_CHECKPOINT_PATH); required with require_initial_checkpoint.
    seed: initialisation, dropout and data order (SEED).
    log_period: print and write summaries every N steps (and, with several processes, agree
      on a SIGTERM).
    skip_nonfinite_steps: a step with a non-finite loss or gradient changes nothing and is
      counted, instead of stopping the run (SKIP_NONFINITE).
    log_example_ids: append each step's content ids to MODEL_DIR/example_ids.jsonl.
  """
  # --- Checks, before anything is written or compiled ----------------------------------------
  run = run_dir.RunDir(model_dir)
  _check_settings(run, train_steps, optimizer, num_partitions, seed, log_period,
                  initial_checkpoint_path, require_initial_checkpoint)

  # --- Mesh --------------------------------------------------------------------------------
  mesh, rules = _mesh(num_partitions, data.batch_size, grad_cache_chunk)

  # --- Model, optimizer, loss --------------------------------------------------------------
  schedule = optimizers.linear_decay_schedule(optimizer.learning_rate, train_steps,
                                              optimizer.warmup_steps)
  adafactor = optimizers.adafactor(schedule, initial_step=optimizer.adafactor_initial_step)
  loss_fn = _loss_function(mesh, loss)
  evaluate = _evaluation(model, loss_fn, mesh, run, data, evaluation)  # reads the sets now
  step_fn = trainer.make_train_step(model, adafactor, loss_fn, schedule, dropout_seed=seed,
                                    grad_cache_chunk=grad_cache_chunk)
  if skip_nonfinite_steps:
    step_fn = trainer.skip_nonfinite(step_fn)

  # --- Data ----------------------------------------------------------------------------------
  batches = _training_batches(data, evaluation, mesh, seed)

  # --- State: restore, or initialise (and load pretrained weights) ---------------------------
  run.path.mkdir(parents=True, exist_ok=True)
  if jax.process_index() == 0:
    atomic.write_atomically(run.config, gin.operative_config_str())
  with checkpoints.Checkpointer(run, batches, checkpointing) as checkpointer:
    state, shardings = checkpoints.restore_or_initialise(
        checkpointer, model, adafactor, seed, mesh, rules, initial_checkpoint_path,
        trainer.example_batch(data.batch_size, data.task_feature_lengths, data.num_negatives))

    # --- Loop ------------------------------------------------------------------------------
    train_step = trainer.compile_train_step(step_fn, shardings, mesh, rules)
    writer = tf.summary.create_file_writer(str(run.summaries))
    step = int(state.step)
    last = min(train_steps, step + (checkpointing.steps_per_run or train_steps))
    progress = loop.Progress(writer, data.batch_size, train_steps, step,
                             checkpointer.latest_step, count_skipped=skip_nonfinite_steps)
    with loop.StopSignal(log_period) as stop:
      while step < last and not stop.agreed(step):
        batch = next(batches)
        if log_example_ids:
          loop.log_example_ids(run.example_ids, step + 1, batch)
        state, metrics = train_step(state, batch)
        step += 1
        progress.add(step, metrics)  # reads the step before's, while this one runs
        if loop.itstime(step, log_period, train_steps):
          progress.log(step)
        if loop.itstime(step, checkpointing.period, train_steps):
          progress.read()  # a step that failed is not saved
          checkpointer.save(state, step)
        if (loop.itstime(step, evaluation.period, train_steps, at_last=False)
            and not stop.agreed(step)):
          loop.write_summaries(writer, step, evaluate(state))
      progress.read()
      if step < train_steps:
        _LOG.warning("%s: saving step %d and stopping.", f"signal {stop.signal}" if stop.signal
                     else f"steps_per_run={checkpointing.steps_per_run}", step)
        checkpointer.save(state, step)
        return {"step": step}

  # --- End: evaluation and metrics.json -------------------------------------------------------
  final = dict(evaluate(state), step=step, **progress.final())
  loop.write_summaries(writer, step, final)
  if jax.process_index() == 0:
    atomic.write_atomically(run.metrics, json.dumps(final, indent=2, sort_keys=True))
  _LOG.info("Done: %s", json.dumps(final, sort_keys=True))
  return final


# --- Checks ------------------------------------------------------------------------------------

def _check_settings(run: run_dir.RunDir, train_steps: int, optimizer: settings.Optimizer,
                    num_partitions: int, seed: int, log_period: int,
                    initial_checkpoint_path: Optional[str],
                    require_initial_checkpoint: bool) -> None:
  """ValueError naming the macro (or binding) of the first value out of range (the
  settings' own ranges are checked when gin builds them)."""
  for name, value in {"TRAIN_STEPS": train_steps, "NUM_PARTITIONS": num_partitions,
                      "train_lib.train.log_period": log_period}.items():
    check(name, is_int(value), value, "must be a positive int.")
  check("WARMUP_STEPS", optimizer.warmup_steps < train_steps, optimizer.warmup_steps,
        f"must be an int in [0, TRAIN_STEPS={train_steps}).")
  check("SEED", is_int(seed, 0), seed, "must be an int >= 0.")
  check("INITIAL_CHECKPOINT_PATH", initial_checkpoint_path is not None
        or not require_initial_checkpoint or run.latest_step() is not None,
        initial_checkpoint_path,
        "this experiment fine-tunes pretrained T5 v1.1 towers (REQUIRE_INITIAL_CHECKPOINT ="
        " True). Download them once, e.g. `hf download google/t5-v1_1-base --local-dir"
        " /data/t5-v1_1-base` (README, \"Pretrained weights\"), and pass"
        " --gin.INITIAL_CHECKPOINT_PATH=\"'/data/t5-v1_1-base'\" with"
        " --gin.vocabularies.t5_vocabulary_path.path=\"'/data/t5-v1_1-base/spiece.model'\";"
        " or --gin.REQUIRE_INITIAL_CHECKPOINT=False to train from random initialisation.")


def _mesh(num_partitions: int, batch_size: int, grad_cache_chunk: Optional[int]
          ) -> tuple[jax.sharding.Mesh, partitioning.LogicalRules]:
  """The device mesh, over which the batch (and a GradCache chunk) must split evenly, and
  the logical axis rules."""
  mesh = partitioning.create_mesh(num_partitions)
  devices = mesh.shape["data"]
  check("BATCH_SIZE", batch_size % devices == 0, batch_size,
        f"must be a multiple of the {devices} data-parallel devices.")
  check("GRAD_CACHE_CHUNK", grad_cache_chunk is None or (
      is_int(grad_cache_chunk) and batch_size % grad_cache_chunk == 0
      and grad_cache_chunk % devices == 0), grad_cache_chunk,
      f"must be None or a positive int that divides BATCH_SIZE={batch_size} and is a"
      f" multiple of the {devices} data-parallel devices.")
  _LOG.info("Mesh %s over %d devices of %d processes.", dict(mesh.shape), jax.device_count(),
            jax.process_count())
  return mesh, partitioning.standard_logical_axis_rules()


def _training_batches(data: settings.Data, evaluation: settings.Evaluation,
                      mesh: jax.sharding.Mesh, seed: int) -> inputs.GlobalBatches:
  """The training split's global batches; ValueError if EVAL_SPLIT is not a split (known once
  the task's source is read)."""
  batches = inputs.GlobalBatches(
      data.mixture_or_task_name, "train", global_batch_size=data.batch_size, mesh=mesh,
      num_shards=data.input_shards, seed=seed, task_feature_lengths=data.task_feature_lengths,
      num_negatives=data.num_negatives)
  splits = seqio.get_mixture_or_task(data.mixture_or_task_name).splits
  check("EVAL_SPLIT", evaluation.split is None or evaluation.split in splits, evaluation.split,
        f"is not a split of {data.mixture_or_task_name} ({sorted(splits)}); None: no"
        " evaluation.")
  return batches


# --- The loss and the evaluations --------------------------------------------------------------

def _loss_function(mesh: jax.sharding.Mesh, loss: settings.Loss) -> Callable:
  """The loss over the global batch, its duplicate masking as `loss.mask_duplicates` says."""
  loss_fn = losses.sharded_contrastive_loss(mesh, **loss.options())
  if loss.mask_duplicates:
    return loss_fn
  return lambda q, p, *, negative_emb=None, negative_ids=None, **_: loss_fn(
      q, p, negative_emb=negative_emb, negative_ids=negative_ids)  # empty slots still go


def _evaluation(model: dual_encoder.DualEncoder, loss_fn: Callable, mesh: jax.sharding.Mesh,
                run: run_dir.RunDir, data: settings.Data, evaluation: settings.Evaluation
                ) -> Callable[[trainer.TrainState], dict[str, float]]:
  """`state -> {"retrieval/<set>/<metric>": ..., "eval/<metric>": ...}`: corpus-level
  retrieval on the run's evaluation sets (a corpus of over STREAMED_CORPUS documents goes
  through shards in MODEL_DIR/eval_embeddings/<set>), and in-batch metrics on held-out
  batches. The sets are read now: ValueError for one that is missing, or two whose names
  clash."""
  retrieval_evaluator = evaluator.Evaluator(
      evaluation.tasks, k=evaluation.k, embeddings_dir=run.eval_embeddings,
      stream_above=STREAMED_CORPUS)
  eval_step = jax.jit(lambda params, batch: trainer.batch_loss(model, loss_fn, params, batch)[1])
  vocabulary = embedder.task_vocabulary(data.mixture_or_task_name)

  def evaluate(state: trainer.TrainState) -> dict[str, float]:
    embed = embedder.Embedder.of_model(model, state.params, vocabulary,
                                       data.task_feature_lengths, mesh, checkpoint=run.path,
                                       step=int(state.step))
    results = {f"retrieval/{name}/{metric}": value
               for name, found in retrieval_evaluator(embed).items()
               for metric, value in found.items()}
    if evaluation.split:
      results.update(_in_batch_evaluation(eval_step, state.params, mesh, data, evaluation))
    return results

  return evaluate


def _in_batch_evaluation(eval_step: Callable, params, mesh: jax.sharding.Mesh,
                         data: settings.Data, evaluation: settings.Evaluation
                         ) -> dict[str, float]:
  """{"eval/<metric>": value}: `eval_step`'s `(params, batch) -> metrics`, averaged over
  `evaluation.batches` batches of its split (repeated if shorter, so that every process sees
  as many)."""
  ds = inputs.get_dataset(data.mixture_or_task_name, evaluation.split,
                          data.task_feature_lengths, data.batch_size // jax.process_count(),
                          shard_index=jax.process_index(), num_shards=jax.process_count(),
                          shuffle=False, num_epochs=None, num_negatives=data.num_negatives)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  totals, count = {}, 0
  for local in ds.take(evaluation.batches).as_numpy_iterator():
    batch = {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
    with jax.set_mesh(mesh):
      metrics = jax.device_get(eval_step(params, batch))
    totals = {k: totals.get(k, 0.0) + float(v) for k, v in metrics.items()}
    count += 1
  if not count:
    _LOG.warning("EVAL_SPLIT %r of %s has less than one batch; no evaluation.",
                 evaluation.split, data.mixture_or_task_name)
    return {}
  return {f"eval/{k}": v / count for k, v in totals.items()}


def main(argv: Optional[Sequence[str]] = None) -> None:
  launch.run_configurable(train, argv)


if __name__ == "__main__":
  # Run the module's canonical copy, which the gin files bind, not this __main__ copy.
  from samtone_jax import train as _train_module  # pylint: disable=g-import-not-at-top
  _train_module.main()
