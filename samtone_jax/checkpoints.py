"""Checkpoints: a run's saved TrainStates with their input positions, and parameters to load.

A training run keeps, for each saved step, an orbax checkpoint of its TrainState
(MODEL_DIR/checkpoints/<step>) and each process's input-pipeline position at that step
(MODEL_DIR/input_positions/<step>: a TensorFlow iterator checkpoint, one file a process).
`Checkpointer` saves both, position first, so that a checkpoint always has the position it
refers to, and on resume takes the newest checkpoint that restores: one that does not
(unreadable or missing files, a state of another model, a missing or damaged input position)
is reported and moved aside to MODEL_DIR/damaged/<step>, or, with `strict`, stops the run.
With several processes, a checkpoint restores only if it does on every one (`agreed`).

`restore_or_initialise` gives a run its state: the newest checkpoint, else a new state with
its towers from INITIAL_CHECKPOINT_PATH when set. `load_params` gives the other commands a
checkpoint's parameters, from a run or a pretrained Hugging Face folder.
"""

import dataclasses
import logging
import os
import pathlib
import shutil
from typing import Any, Callable, Optional, TypeVar

import flax.linen as nn
import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from samtone_jax import dual_encoder, inputs, loop, partitioning, pretrained, run_dir, settings
from samtone_jax import trainer

_LOG = logging.getLogger("samtone_jax.checkpoints")
T = TypeVar("T")


# --- A training run's checkpoints ----------------------------------------------------------------

class Checkpointer:
  """Orbax checkpoints of the TrainState, each with the input position of its step."""

  def __init__(self, run: run_dir.RunDir, batches: inputs.GlobalBatches,
               checkpointing: settings.Checkpointing):
    """Keeps the newest `checkpointing.keep` checkpoints; with `.strict_restore`, a newest
    checkpoint that does not restore stops the run instead of being moved aside. A context
    manager: on exit, waits for the saves under way."""
    self._run, self._batches, self._strict = run, batches, checkpointing.strict_restore
    self._manager = ocp.CheckpointManager(  # a save that a crash cut short is a temporary
        run.checkpoints,                    # folder: never restored, removed here
        options=ocp.CheckpointManagerOptions(max_to_keep=checkpointing.keep, create=True,
                                             cleanup_tmp_directories=True))
    self._params_norm = jax.jit(optax.tree.norm)

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *_) -> None:
    self._manager.wait_until_finished()

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, state: trainer.TrainState, step: int) -> None:
    """Saves `state` (of step `step`), unless saved already; TrainingError if its
    parameters are not finite. Older input positions go with their checkpoints."""
    latest = self.latest_step()
    if latest == step:
      return
    loop.check_finite(step, {"params_norm": float(self._params_norm(state.params))}, latest)
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

  def restore(self, abstract_state: trainer.TrainState) -> trainer.TrainState:
    """The newest checkpoint that restores into the abstract (sharded) state, and its input
    position; newer ones are moved aside.

    Raises:
      loop.TrainingError: no checkpoint restores, or (strict) the newest does not.
    """
    damaged, restorer = {}, restoring_manager(self._run.checkpoints)
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
    `restoring_manager`, so that every process gets to the agreement)."""

    def restore() -> trainer.TrainState:
      state = restorer.restore(step, args=ocp.args.StandardRestore(abstract_state))
      position = self._run.input_position(step)
      if not position.is_dir():
        raise FileNotFoundError(f"no input position {position}")
      self._batches.restore(position)
      return state

    return agreed(restore)

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

    _, error = agreed(move)
    if error is not None:
      _refuse(f"the checkpoint of step {step} ({self._run.checkpoint(step)}) does not restore"
              f" and could not be moved aside to {target}: {error}. Move it and"
              f" {self._run.input_position(step)} aside by hand.")
    self._manager.reload()


def _refuse(message: str) -> None:
  """Logs `message` as one line, then raises it as a TrainingError: the storage layer's
  threads may still print as the process exits, and cut into the traceback's last line."""
  _LOG.error("%s", message)
  raise loop.TrainingError(message)


def restore_or_initialise(checkpointer: Checkpointer, model: dual_encoder.DualEncoder,
                          optimizer: optax.GradientTransformation, seed: int,
                          mesh: jax.sharding.Mesh, rules: partitioning.LogicalRules,
                          initial_checkpoint_path: Optional[str], example: trainer.Batch
                          ) -> tuple[trainer.TrainState, trainer.TrainState]:
  """(state, its shardings): the newest checkpoint that restores; else a new state, its
  towers from INITIAL_CHECKPOINT_PATH when set."""
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


# --- A checkpoint's parameters, for the other commands -------------------------------------------

def resolve_checkpoint(path: str | pathlib.Path, name: str = "CHECKPOINT_PATH",
                       need_config: bool = False) -> tuple[run_dir.RunDir, int]:
  """(run, step) of a training MODEL_DIR (its newest checkpoint) or a `checkpoints/<step>`.

  Args:
    path: the folder a user named.
    name: the flag or gin macro that named it, for the errors.
    need_config: whether the run must have its config.gin (to read its model from).

  Raises:
    FileNotFoundError: neither a run with a checkpoint nor one of its checkpoints.
  """
  path = pathlib.Path(path).absolute()
  if path.name.isdigit() and path.parent.name == "checkpoints":
    run, step = run_dir.RunDir(path.parent.parent), int(path.name)
  else:
    run, step = run_dir.RunDir(path), None
  if need_config and not run.config.is_file():
    raise FileNotFoundError(f"{name}={str(path)!r}: not a training MODEL_DIR or one of its"
                            f" checkpoints/<step> folders ({run.config} is missing).")
  step = run.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"{name}={str(path)!r}: no checkpoint in {run.checkpoints} (nor a"
                            " checkpoints/<step> folder or a pretrained model folder).")
  return run, step


def pinned_checkpoint(checkpoint_path: str | pathlib.Path, name: str = "CHECKPOINT_PATH"
                      ) -> tuple[pathlib.Path, Optional[int]]:
  """(folder, step) of what a checkpoint path names, looked up once: a pretrained folder
  (step None), or a run's `checkpoints/<step>` (a MODEL_DIR: its newest now, as process 0
  found it, for every process). A command loads the folder (`load_params`) and labels what
  it writes with it, so that a checkpoint saved meanwhile changes neither.

  Raises:
    FileNotFoundError: as `resolve_checkpoint`.
  """
  if is_pretrained_folder(checkpoint_path):
    return pathlib.Path(checkpoint_path).absolute(), None
  run, step = resolve_checkpoint(checkpoint_path, name)
  step = int(multihost_utils.broadcast_one_to_all(np.int32(step)))
  return run.checkpoint(step), step


def is_pretrained_folder(path: str | pathlib.Path) -> bool:
  """Whether `path` is a Hugging Face T5 or sentence-transformers folder."""
  path = pathlib.Path(path)
  return (path / "modules.json").exists() or (path / "config.json").exists()


def load_params(model: Optional[dual_encoder.DualEncoder], checkpoint_path: str | pathlib.Path,
                lengths: dict, mesh: Optional[jax.sharding.Mesh] = None,
                name: str = "CHECKPOINT_PATH") -> dict:
  """The model's parameters from a training MODEL_DIR, a `checkpoints/<step>` folder, or a
  pretrained Hugging Face / sentence-transformers folder (named by `name`, for errors).

  The parameters are partitioned over `mesh` (default: all devices, no "model" axis) as
  training partitions them (T5X's logical axis rules), whatever devices and mesh saved them:
  with NUM_PARTITIONS = m, each device holds about 1/m of the weights. Only a checkpoint's
  TrainState parameters are read; without `model`, they are replicated.

  Raises:
    pretrained.CheckpointError: the checkpoint does not restore (damaged files); the error
      names the newest checkpoint of the run that does.
  """
  mesh = partitioning.create_mesh() if mesh is None else mesh
  shardings = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  if model is not None:
    ids = jax.ShapeDtypeStruct((1, lengths["queries"]), jax.numpy.int32)
    boxed = jax.eval_shape(model.init, jax.random.key(0), ids, ids)["params"]
    shardings = partitioning.logical_shardings(
        boxed, mesh, partitioning.standard_logical_axis_rules())
  if is_pretrained_folder(checkpoint_path):
    config, tower, kernel = pretrained.load_initial_checkpoint(checkpoint_path)
    pretrained.check_compatible(config, model.config, f"{name}={str(checkpoint_path)!r}")
    ids = jax.numpy.zeros((1, lengths["queries"]), jax.numpy.int32)
    params = nn.unbox(model.init(jax.random.key(0), ids, ids))["params"]
    return jax.device_put(pretrained.with_pretrained(
        jax.device_get(params), model.architecture, tower, kernel), shardings)
  run, step = resolve_checkpoint(checkpoint_path, name)
  _LOG.info("Parameters of step %d from %s.", step, run.path)
  manager = restoring_manager(run.checkpoints, item_handlers=ocp.PyTreeCheckpointHandler())
  params, error = agreed(lambda: _restore_params(manager, step, shardings))
  if error is None:
    return params
  good = next((s for s in sorted(manager.all_steps(), reverse=True) if s < step
               and agreed(lambda s=s: _restore_params(manager, s, shardings))[1] is None), None)
  raise pretrained.CheckpointError(
      f"{name}={str(checkpoint_path)!r}: the checkpoint of step {step} ({run.checkpoint(step)})"
      f" does not restore: {error}. " + (
          f"The newest checkpoint that does is step {good}: {run.checkpoint(good)}."
          if good is not None else f"No older checkpoint in {run.checkpoints} restores."))


def _restore_params(manager: ocp.CheckpointManager, step: int, shardings: Any) -> dict:
  """The `params` of checkpoint `step`'s TrainState, with `shardings` (one sharding for
  all, or a tree of them like the parameters)."""
  metadata = manager.item_metadata(step)["params"]
  if isinstance(shardings, jax.sharding.Sharding):
    shardings = jax.tree.map(lambda _: shardings, metadata)
  target = {"params": jax.tree.map(
      lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      metadata, shardings)}
  return manager.restore(step, args=ocp.args.PyTreeRestore(
      target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
      partial_restore=True))["params"]


# --- Restores that every process agrees on -------------------------------------------------------

def restoring_manager(directory: pathlib.Path, **kwargs) -> ocp.CheckpointManager:
  """A read-only orbax CheckpointManager of `directory` (`kwargs`: its other arguments) whose
  restores wait for no other process: orbax ends a restore with a barrier across processes,
  which a process whose restore raised would never reach; `agreed` agrees instead."""
  local = ocp.options.MultiprocessingOptions(primary_host=jax.process_index(),
                                             active_processes={jax.process_index()})
  return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
      read_only=True, create=False, save_interval_steps=0, multiprocessing_options=local),
      **kwargs)


def agreed(attempt: Callable[[], T]) -> tuple[Optional[T], Optional[str]]:
  """(attempt(), None), or (None, what went wrong: its error here, else the processes where
  it raised) when `attempt` raises on this process or on another. Every process calls it and
  meets one all-gather, whatever fails where; so `attempt` must wait for no other process
  (restore through a `restoring_manager`)."""
  result, error = None, None
  try:
    result = attempt()
  except Exception as e:  # pylint: disable=broad-except  # the storage layer's, said plainly
    error = f"{type(e).__name__}: {first_line(e)}"
  if jax.process_count() > 1:
    failed = multihost_utils.process_allgather(np.int32(error is not None))
    if failed.any() and error is None:
      result, error = None, f"it failed on process(es) {np.flatnonzero(failed).tolist()}"
  return result, error


def first_line(error: BaseException, limit: int = 300) -> str:
  """An exception's message: its first line, without TensorStore's spec dump, at most
  `limit` characters."""
  text = (str(error).strip().splitlines() or [""])[0].split(" See full TensorStore details")[0]
  return text if len(text) <= limit else text[:limit] + " ..."
