"""samtone-jax: dual-encoder retrievers trained with SamToNe, T5X-style, in JAX/Flax."""

import importlib.resources

__version__ = "0.1.0"

# The shipped gin files (models/, architectures/, losses/, runs/, experiments/), found from any
# working directory: entry points put this folder on gin's search path.
GIN_CONFIGS_DIR = importlib.resources.files("samtone_jax.gin_configs")
