"""samtone-jax: dual-encoder retrievers trained with SamToNe, T5X-style, in JAX/Flax."""

import contextlib
import importlib.resources
import os

__version__ = "0.1.0"

# The shipped gin files (models/, architectures/, losses/, runs/, experiments/), found from any
# working directory: entry points put this folder on gin's search path.
GIN_CONFIGS_DIR = importlib.resources.files("samtone_jax.gin_configs")


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

  Imported once here with the GPUs hidden from it, so that it reserves none of their memory,
  and quietly: on a machine without CUDA its import and GPU probing print "Could not find cuda
  drivers" and a `cuInit` error on every run. Only the native log lines of this import are
  discarded; TensorFlow logs as usual afterwards.
  """
  with _native_stderr_discarded():
    try:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
    except ImportError:  # the model, loss and trainer modules work without it
      return
    tf.config.set_visible_devices([], "GPU")


_import_tensorflow_for_the_host()
