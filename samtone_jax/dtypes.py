"""The activations' dtype when gin leaves it to the machine (`ACTIVATION_DTYPE = 'auto'`).

bfloat16 activations pay where the hardware multiplies bfloat16 natively: the matrix units
of GPUs and TPUs, and CPUs with AVX512-BF16 or AMX (a T5 v1.1 small train step 1.51x faster
than in float32 on an AVX512-BF16 CPU). Elsewhere XLA:CPU converts bfloat16 products to
float32, and the same step took 1.22x float32's time on a CPU without AVX-512
(docs/performance.md). So the default is bfloat16 on GPU, TPU and such CPUs, float32 on
other CPUs and backends. `default_activation_dtype` is the rule, a pure function of the
backend and the CPU's flags; `activation_dtype` applies it to this machine once and logs it.
"""

import functools
import logging
import pathlib
from typing import AbstractSet, Optional

AUTO = "auto"
CPUINFO = pathlib.Path("/proc/cpuinfo")
# /proc/cpuinfo flags of the CPU features that multiply bfloat16 natively, and their names.
BF16_CPU_FLAGS = {"avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX"}


def cpuinfo(path: pathlib.Path = CPUINFO) -> Optional[dict[str, str]]:
  """The first processor's fields of /proc/cpuinfo (e.g. {"model name": "AMD EPYC",
  "flags": "fpu ... avx2"}), or None where it cannot be read (not Linux)."""
  try:
    lines = pathlib.Path(path).read_text(errors="replace").splitlines()
  except OSError:
    return None
  fields = {}
  for line in lines:
    if not line.strip():
      if fields:
        break
      continue
    key, _, value = line.partition(":")
    fields[key.strip()] = value.strip()
  return fields


def cpu_flags(path: pathlib.Path = CPUINFO) -> Optional[set[str]]:
  """The CPU's flags from /proc/cpuinfo (empty where it lists none, as on ARM), or None
  where it cannot be read."""
  fields = cpuinfo(path)
  return None if fields is None else set(fields.get("flags", "").split())


def default_activation_dtype(backend: str,
                             flags: Optional[AbstractSet[str]]) -> tuple[str, str]:
  """The activations' dtype on `backend` and why.

  Args:
    backend: `jax.default_backend()`: 'cpu', 'gpu', 'tpu' or a plugin's name.
    flags: the CPU's /proc/cpuinfo flags (`cpu_flags()`), None where they could not be read.

  Returns:
    ('bfloat16' or 'float32', the reason in a few words, for the log).
  """
  if backend in ("gpu", "tpu"):
    return "bfloat16", f"{backend.upper()}: its matrix units multiply bfloat16 natively"
  if backend != "cpu":
    return "float32", (f"backend {backend!r}: bfloat16 is the default on GPU, TPU and CPUs"
                       " with AVX512-BF16 or AMX only")
  if flags is None:
    return "float32", (f"CPU whose flags could not be read (no {CPUINFO}), so not known to"
                       " multiply bfloat16 natively")
  native = [name for flag, name in BF16_CPU_FLAGS.items() if flag in flags]
  if native:
    return "bfloat16", f"CPU with {' and '.join(native)}"
  return "float32", ("CPU without AVX512-BF16 or AMX, where a bfloat16 step is slower than a"
                     " float32 one")


@functools.cache
def activation_dtype() -> str:
  """`default_activation_dtype` of this machine (JAX's default backend, /proc/cpuinfo's
  flags), decided and logged once: "Activation dtype: float32 (CPU without ...)". Starts
  JAX's backend."""
  import jax  # pylint: disable=g-import-not-at-top  (benchmarks/_common imports this module)
  dtype, why = default_activation_dtype(jax.default_backend(), cpu_flags())
  logging.getLogger(__name__).info("Activation dtype: %s (%s)", dtype, why)
  return dtype
