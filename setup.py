"""samtone-jax: one install, `pip install -e ".[test]"` (or `pip install .`)."""

import setuptools

setuptools.setup(
    name="samtone-jax",
    version="0.1.0",
    description=("Dual-encoder retrievers trained with SamToNe (same tower negatives), "
                 "T5X-style, in JAX/Flax."),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # tasks/ and gin_configs/ stay top-level folders (users extend them) and are installed
    # inside the package, so that both `pip install .` and `pip install -e .` give
    # `import samtone_jax.tasks` and the gin files from any working directory.
    packages=["samtone_jax", "samtone_jax.tasks", "samtone_jax.gin_configs"],
    package_dir={
        "samtone_jax": "samtone_jax",
        "samtone_jax.tasks": "tasks",
        "samtone_jax.gin_configs": "gin_configs",
    },
    package_data={"samtone_jax.gin_configs": ["*.gin", "*/*.gin", "*/*/*.gin"],
                  "samtone_jax.tasks": ["vocab/*.model"]},
    install_requires=[
        "jax>=0.10",
        "flax>=0.12",
        "numpy>=1.26",
        "gin-config>=0.5",
        "safetensors>=0.4",
        "seqio>=0.0.19",
        "tensorflow>=2.16",
        "tensorflow-datasets>=4.9",
        "importlib_resources",  # tensorflow-datasets imports it without declaring it
        "sentencepiece>=0.2",
        "tensorboard",  # event files (tf.summary)
        "orbax-checkpoint>=0.11",
        "optax>=0.2",
        "tqdm",
        "matplotlib",  # the analysis figures
        "scikit-learn",  # t-SNE of the analysis figures
        "bm25s>=0.2",  # BM25 for mining negatives and the evaluations' baseline row
        # BM25's analysis as Lucene's English analyzer: the original Porter stemmer
        # (Stemmer.Stemmer("porter")) and Unicode word boundaries (regex.WORD).
        "PyStemmer>=2.2",
        "regex",
    ],
    extras_require={
        # benchmarks/retrieval.py compares with faiss's exact search.
        "bench": ["faiss-cpu"],
        # python -m samtone_jax.export writes PyTorch sentence-transformers folders.
        "export": ["torch", "transformers>=5", "sentence-transformers>=6"],
        "test": [
            "pytest>=8",
            "hypothesis>=6.100",
            # The independent references: Hugging Face's T5 and sentence-transformers on
            # PyTorch (the CPU build of 2.13.0 lies on the project's machines).
            "torch==2.13.0",
            "transformers>=5",
            "sentence-transformers>=6",
            "dill",  # tensorflow_datasets.testing needs it
            "pytrec-eval-terrier",  # trec_eval, the reference of metrics.py
        ],
    },
)
