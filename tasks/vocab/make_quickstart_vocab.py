"""Trains quickstart_spm.model, the SentencePiece vocabulary of the quickstart data set.

Run from the repository root: `python tasks/vocab/make_quickstart_vocab.py` (about 10 s). It
trains on the queries and passages of the train split of `samtone_jax.tasks.quickstart` (the
standard library of the running Python; the committed model was made with the release it
prints) and writes quickstart_spm.model beside this script. Training is deterministic: the
sentences come in the set's fixed order, unshuffled and all of them, on one thread.

The settings, and why:

- T5's special ids, pad 0, EOS 1, UNK 2 and no BOS, so that the model is interchangeable with
  T5's (`seqio.SentencePieceVocabulary` assumes them). `add_dummy_prefix` stays on, as in T5.
- `model_type="unigram"` (T5's) and `vocab_size=2000` (of which 3 special and 256 byte pieces):
  about 2 million characters of train text fill it with whole identifiers and keywords.
- `byte_fallback=True` and `character_coverage=1.0`: a character outside the vocabulary
  becomes its UTF-8 bytes, never UNK, and every character of the train split is a piece.
- Whitespace is meaningful in code, so nothing normalises it: `normalization_rule_name=
  "identity"` (no NFKC either), `remove_extra_whitespaces=False`. `split_by_whitespace=True`
  starts a piece at each space, and `allow_whitespace_only_pieces=True` lets a run of spaces
  (an indentation) be one piece: about 3 characters a token instead of 2. Newlines are
  ordinary characters and end up inside pieces ("):\\n").
- Decoding an encoding gives the text back exactly, indentation and newlines included
  (tests/test_quickstart.py checks it on the test split).
- `max_sentence_length=16384` bytes: a passage (up to 4,000 characters) is one sentence.
"""

import io
import pathlib

import sentencepiece as spm

from samtone_jax.tasks import quickstart

MODEL_PATH = pathlib.Path(__file__).resolve().parent / "quickstart_spm.model"
VOCAB_SIZE = 2000
TRAINER_OPTIONS = dict(
    model_type="unigram",
    vocab_size=VOCAB_SIZE,
    pad_id=0,
    eos_id=1,
    unk_id=2,
    bos_id=-1,
    byte_fallback=True,
    character_coverage=1.0,
    normalization_rule_name="identity",
    remove_extra_whitespaces=False,
    split_by_whitespace=True,
    allow_whitespace_only_pieces=True,
    max_sentence_length=16384,
    input_sentence_size=0,
    shuffle_input_sentence=False,
    num_threads=1,
    minloglevel=1,
)


def train_texts() -> list[str]:
  """The query and the passage of every train pair, in the set's order."""
  return [text for pair in quickstart.build_pairs()["train"]
          for text in (pair["query"], pair["passage"])]


def train_model(texts: list[str]) -> bytes:
  """The serialized SentencePiece model trained on `texts` with TRAINER_OPTIONS."""
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=model,
                                 **TRAINER_OPTIONS)
  return model.getvalue()


def main():
  texts = train_texts()
  MODEL_PATH.write_bytes(train_model(texts))
  print(f"Wrote {MODEL_PATH} ({VOCAB_SIZE} pieces) from {len(texts)} texts of the"
        f" quickstart train split, Python {quickstart.PYTHON_VERSION}.")


if __name__ == "__main__":
  main()
