"""The XLA flags this project sets before JAX starts its backend.

XLA:CPU's default schedule orders a program for concurrency: independent ops run side by
side, each on part of the threads, and their buffers live longer. Its memory-minimising
schedule (`--xla_cpu_enable_concurrency_optimized_scheduler=false`) took a T5 v1.1 small
train step 7-10% faster on a 2-core CPU, float32 and bfloat16, in a third less temporary
memory. Other backends ignore the flag. A flag that `XLA_FLAGS` already names keeps the
user's value. XLA stops at start-up on a flag it does not know, so tests/test_xla_flags.py
checks that the installed XLA still takes these.
"""

import os

CPU_DEFAULTS = ("--xla_cpu_enable_concurrency_optimized_scheduler=false",)


def set_cpu_defaults() -> None:
  """Adds CPU_DEFAULTS to the XLA_FLAGS environment variable, but none whose name it already
  sets. Takes effect only before JAX's first computation (when it starts its backend)."""
  flags = os.environ.get("XLA_FLAGS", "")
  missing = [f for f in CPU_DEFAULTS if f.split("=")[0] not in flags]
  os.environ["XLA_FLAGS"] = " ".join([flags, *missing]).strip()
