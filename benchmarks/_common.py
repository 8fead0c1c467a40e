"""What the benchmarks share: the machine they ran on, a median timing loop, and what the
studies that train many runs need (a run in a subprocess on one thread, mean and standard
deviation over seeds).

The scripts are run as `python benchmarks/<name>.py`, so this folder is first on sys.path
and they `import _common` (as grad_cache.py imports train_throughput). Importing this module
imports no JAX (only samtone_jax.dtypes, whose /proc/cpuinfo reader it shares):
`machine(devices=False)` describes the machine without starting a backend (a parent process
that only orchestrates others, as train_throughput.py's and replicate.py's).
"""

import importlib.metadata
import os
import pathlib
import platform
import statistics
import subprocess
import time
from typing import Any, Callable, Optional, Sequence

from samtone_jax import dtypes

ROOT = pathlib.Path(__file__).resolve().parents[1]
# XLA on one CPU thread: on 2 cores, two one-thread runs do more than one run on both.
ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def _version(package: str) -> Optional[str]:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def machine(devices: bool = True) -> dict[str, Any]:
  """The machine and software a benchmark ran on, for its JSON.

  Args:
    devices: also the JAX backend and its devices (this starts the backend: a parent
      process that must not hold a GPU passes False).

  Returns:
    {"platform", "architecture", "python", "cpu" (/proc/cpuinfo's model name, else
    platform.processor() or the architecture), "cores", "avx512" (flag avx512f),
    "avx512_bf16", "amx" (any amx_* flag; the three False where /proc/cpuinfo has no flags),
    "jax", "jaxlib"}, and with `devices`: "backend", "devices" (the count), "device_kind".
  """
  fields = dtypes.cpuinfo() or {}
  model, flags = fields.get("model name"), set(fields.get("flags", "").split())
  info = {
      "platform": platform.platform(),
      "architecture": platform.machine(),
      "python": platform.python_version(),
      "cpu": model or platform.processor() or platform.machine(),
      "cores": os.cpu_count(),
      "avx512": "avx512f" in flags,
      "avx512_bf16": "avx512_bf16" in flags,
      "amx": any(flag.startswith("amx_") for flag in flags),
      "jax": _version("jax"),
      "jaxlib": _version("jaxlib"),
  }
  if devices:
    import jax  # pylint: disable=g-import-not-at-top
    info.update(backend=jax.default_backend(), devices=jax.device_count(),
                device_kind=jax.devices()[0].device_kind)
  return info


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
  """The median wall-clock seconds of `repeats` calls of `fn()`, after `warmup` untimed
  ones; each call waits for the JAX arrays it returns (`jax.block_until_ready`)."""
  import jax  # pylint: disable=g-import-not-at-top
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def run_logged(command: Sequence[str], log: pathlib.Path, one_thread: bool) -> None:
  """Runs `command` from the repository root, its output to the file `log`; with
  `one_thread`, XLA in it on one CPU thread (ONE_THREAD).

  Raises:
    RuntimeError: if it exits non-zero, naming the log.
  """
  env = dict(os.environ)
  if one_thread:
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + ONE_THREAD).strip()
  with open(log, "w") as f:
    done = subprocess.run(list(command), cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                          check=False)
  if done.returncode:
    raise RuntimeError(f"{' '.join(command[:3])} failed; see {log}")


def mean_std(values: Sequence[float]) -> dict[str, float]:
  """{"mean", "std" (the sample standard deviation, 0 for one value), "n"} of `values`."""
  return {"mean": statistics.fmean(values),
          "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def mean_std_text(summary: Optional[dict[str, float]]) -> str:
  """"0.300 ± 0.265" of a `mean_std` summary; "n/a" for None."""
  if summary is None:
    return "n/a"
  return f"{summary['mean']:.3f} ± {summary['std']:.3f}"
