r"""What every entry point shares: the host, flags, gin, logging, processes, and a run's model.

Every `main` first calls `setup_host`: TensorFlow imported quietly with the GPUs hidden from
it, and every source of `samtone_jax.tasks` registered. A module that is an entry point also
calls it before its own imports when run as a program (`if __name__ == "__main__"` at its
top), so that TensorFlow's import, which those imports make, is the quiet one.

`train` and `evaluate` are gin configurables run by `run_configurable`:

  python -m samtone_jax.train --gin_file=experiments/quickstart.gin --gin.MODEL_DIR="'/tmp/q'"

Flags, as T5X's: `--gin_file` (repeatable; the shipped gin_configs/ is always on the search
path), `--gin.NAME=VALUE` (a binding or macro, repeatable), `--gin_search_paths`
(comma-separated), and for a run on several processes `--coordinator_address`,
`--process_count`, `--process_index`, `--heartbeat_timeout_seconds`.

`export` and `analysis` start from a finished run instead: `read_run` gives the model
(MODEL) and the macros of its config.gin.

Both stop before anything runs when the gin files leave a macro `%gin.REQUIRED` or use one
that none sets (`check_macros`), naming the macros and the files.
"""

import argparse
import contextlib
import logging
import os
import pathlib
import sys
from typing import Any, Callable, Optional, Sequence

import gin

import samtone_jax
from samtone_jax import settings, xla_flags


@contextlib.contextmanager
def _native_stderr_discarded():
  """Sends whatever is written to file descriptor 2 to /dev/null meanwhile: native code's
  log lines, and Python's `sys.stderr` writes too (an exception raised inside still
  propagates, and is printed after)."""
  saved = os.dup(2)
  try:
    with open(os.devnull, "wb") as devnull:
      os.dup2(devnull.fileno(), 2)
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)


def _import_tensorflow_for_the_host() -> None:
  """TensorFlow only feeds the input pipeline, on the host; JAX owns the accelerators.

  Imported with the GPUs hidden from it, so that it reserves none of their memory, and
  quietly: on a machine without CUDA its import and GPU probing print "Could not find cuda
  drivers" and a `cuInit` error on every run. Only the native log lines of this import are
  discarded; TensorFlow logs as usual afterwards. A second call changes nothing.
  """
  with _native_stderr_discarded():
    try:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
    except ImportError:  # the model, loss and trainer modules work without it
      return
    try:
      tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # its runtime started already, by a caller that used it first
      logging.getLogger("samtone_jax").warning(
          "TensorFlow started before samtone_jax set up the host: it keeps the GPUs it sees,"
          " and may hold some of their memory.")


def setup_host() -> None:
  """What a program sets up before anything else: TensorFlow on the host only, quietly
  (`_import_tensorflow_for_the_host`), and every source of tasks/ registered: its SeqIO
  tasks, evaluation sets and gin configurables, which gin files and EVAL_TASKS name.
  Every entry point's `main` calls it, and `read_run`; calling it again changes nothing."""
  _import_tensorflow_for_the_host()
  # Here, not at the top: the library never imports the sources that register into it.
  import samtone_jax.tasks  # pylint: disable=g-import-not-at-top,unused-import,redefined-outer-name


def parse_flags(argv: Sequence[str]) -> argparse.Namespace:
  """--gin_file (repeatable), --gin.NAME=VALUE (repeatable), --gin_search_paths, processes.

  Returns:
    The flags, with `gin_bindings` (the NAME=VALUE strings) and `search_paths` (a list).
  """
  parser = argparse.ArgumentParser(description="samtone_jax: T5X-style flags")
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
  args.search_paths = [p for p in args.gin_search_paths.split(",") if p]
  return args


class _GinSearchPathFilter(logging.Filter):
  """Drops gin's `Path not found: ...` lines: it logs one at ERROR for every search path a
  file is not in before it finds the file, and the last search path is always ours."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Path not found: ")


def parse_gin(gin_files: Sequence[str], bindings: Sequence[str] = (),
              search_paths: Sequence[str] = ()) -> None:
  """Parses gin files (found on the search paths, the shipped gin_configs/ last) and
  bindings, as T5X does. A file found nowhere still fails, naming the file. A run's
  config.gin written by an earlier version, which binds on `train` what `settings` holds
  now, is read as it is meant (`settings.upgrade_bindings`)."""
  for path in [*search_paths, str(samtone_jax.GIN_CONFIGS_DIR)]:
    gin.add_config_file_search_path(path)
  quiet = _GinSearchPathFilter()
  logging.getLogger().addFilter(quiet)
  try:
    for gin_file in gin_files:
      text = pathlib.Path(gin_file).read_text() if os.path.isfile(gin_file) else ""
      upgraded = settings.upgrade_bindings(text, whole_file=True)
      if upgraded != text:
        gin.parse_config(upgraded)
      else:
        gin.parse_config_file(gin_file)
    gin.parse_config(settings.upgrade_bindings("\n".join(bindings)))
  finally:
    logging.getLogger().removeFilter(quiet)


def _is_required(value: Any) -> bool:
  return isinstance(value, gin.config.ConfigurableReference) and repr(value) == "%gin.REQUIRED"


def missing_macros() -> list[str]:
  """The gin macros (and bindings) of the parsed configuration left `%gin.REQUIRED`, and the
  macros that a binding uses and no file sets, in the order first met.

  gin's own `finalize` checks both, but stops at the first with the whole configuration in
  its message, and locks the configuration; gin gives no public view of all its bindings.
  """
  config = gin.config._CONFIG  # pylint: disable=protected-access
  missing = []
  for (scope, selector), bindings in config.items():
    for name, value in bindings.items():
      if _is_required(value):  # `NAME = %gin.REQUIRED` binds gin.macro's value in scope NAME
        missing.append(scope if selector == "gin.macro" else
                       f"{scope}{'/' if scope else ''}{selector}.{name}")
      for ref in gin.config.iterate_references(value, to=gin.get_configurable(gin.config.macro)):
        macro = "/".join(ref.scopes)
        if (macro, "gin.macro") not in config:
          missing.append(macro)
  return list(dict.fromkeys(missing))


def check_macros(gin_files: Sequence[str], bindings: Sequence[str] = ()) -> None:
  """Raises ValueError naming the macros that the parsed gin files and bindings leave unset
  (see `missing_macros`), before anything runs: a macro left `%gin.REQUIRED` would otherwise
  reach the code as a bare placeholder object."""
  missing = missing_macros()
  if missing:
    parsed = ", ".join(map(str, gin_files)) + (" and the --gin bindings" if bindings else "")
    names = (f"macro {missing[0]} is" if len(missing) == 1 else
             f"macros {', '.join(missing)} are")
    raise ValueError(
        f"gin {names} not set (left %gin.REQUIRED, or used and never given a value) by the"
        f" gin files {parsed}. Set each in a gin file or with --gin.{missing[0]}=VALUE"
        " (strings in inner quotes).")


def setup_logging() -> None:
  """samtone_jax's progress lines on stdout (JAX and TensorFlow keep their own logs)."""
  ours = logging.getLogger("samtone_jax")
  if ours.handlers:
    return
  handler = logging.StreamHandler(sys.stdout)
  handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
  ours.setLevel(logging.INFO)
  ours.addHandler(handler)
  ours.propagate = False



def initialize_processes(args: argparse.Namespace) -> None:
  """jax.distributed.initialize for a run on several processes (flags, SLURM or Open MPI)."""
  import jax  # pylint: disable=g-import-not-at-top
  timeout = dict(heartbeat_timeout_seconds=args.heartbeat_timeout_seconds)
  if args.coordinator_address:
    jax.distributed.initialize(args.coordinator_address, args.process_count,
                               args.process_index, **timeout)
  elif "SLURM_JOB_ID" in os.environ or "OMPI_COMM_WORLD_SIZE" in os.environ:
    jax.distributed.initialize(**timeout)  # JAX reads the cluster's own variables


def run_configurable(function: Callable[..., Any], argv: Optional[Sequence[str]] = None) -> Any:
  """An entry point's main: logging, the host, flags, processes, gin; then `function` as gin
  binds it."""
  setup_logging()
  setup_host()
  args = parse_flags(sys.argv[1:] if argv is None else argv)
  xla_flags.set_cpu_defaults()
  initialize_processes(args)
  parse_gin(args.gin_file, args.gin_bindings, args.search_paths)
  check_macros(args.gin_file, args.gin_bindings)
  return gin.get_configurable(function)()


@gin.configurable
def _run_values(model=gin.REQUIRED, macros=gin.REQUIRED):
  return model, macros


def read_run(gin_files: Sequence[str], macros: Sequence[str], bindings: Sequence[str] = (),
             search_paths: Sequence[str] = ()) -> tuple[Any, dict[str, Any]]:
  """The model (MODEL) and the values of `macros` that gin files (a run's config.gin, then
  any overrides) set, with "VOCABULARY" (the task's vocabulary, its file as the files name
  it) when `macros` has MIXTURE_OR_TASK_NAME; gin's configuration is left empty, as it was
  found.

  The host is set up first (`setup_host`): a run's config.gin names the configurables of its
  task's source.

  Raises:
    ValueError: a macro that the files do not set, naming the macro and the files.
  """
  setup_host()
  gin.clear_config()
  values = "{" + ", ".join(f"'{name}': %{name}" for name in macros) + "}"
  parse_gin(gin_files, ["_run_values.model = %MODEL", f"_run_values.macros = {values}",
                        *bindings], search_paths)
  try:
    check_macros(gin_files, bindings)
    model, values = _run_values()
    if "MIXTURE_OR_TASK_NAME" in values:
      values["VOCABULARY"] = _task_vocabulary(values["MIXTURE_OR_TASK_NAME"])
    return model, values
  finally:
    gin.clear_config()


def _task_vocabulary(name: str) -> Any:
  """The task's vocabulary, its file resolved under the configuration parsed now (T5's
  vocabulary takes its file from gin when used: after `read_run`, gin is cleared)."""
  import seqio  # pylint: disable=g-import-not-at-top  # the host is set up (setup_host)
  vocabulary = seqio.get_mixture_or_task(name).output_features["queries"].vocabulary
  return vocabulary.resolved() if hasattr(vocabulary, "resolved") else vocabulary
