"""SeqIO task registrations and evaluation sets, installed as `samtone_jax.tasks`.

Importing this package registers every source: one module each (msmarco, multireqa, beir,
own_data, quickstart). Each reads its official files, builds its training pairs as a TFDS
dataset (tasks/pairs.py), registers SeqIO tasks over them and names its evaluation sets in
the library's registry (samtone_jax/eval_sets.py). The library never imports this package:
the entry points do (samtone_jax/launch.py, `setup_host`). A new source is one more module
here; see README.md.
"""

from samtone_jax.tasks import beir  # pylint: disable=unused-import
from samtone_jax.tasks import msmarco  # pylint: disable=unused-import
from samtone_jax.tasks import multireqa  # pylint: disable=unused-import
from samtone_jax.tasks import own_data  # pylint: disable=unused-import
from samtone_jax.tasks import quickstart  # pylint: disable=unused-import
