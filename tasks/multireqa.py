"""MultiReQA: sentence-level retrieval QA, rebuilt from the MRQA 2019 files.

MultiReQA publishes only sentence boundaries (`candidates.json.gz`) over the contexts of the
MRQA 2019 shared-task files. This module joins them as docs/design.md ("MultiReQA, rebuilt") says:

- `read_mrqa(path)`: the contexts of an MRQA file, with their questions and answer spans
  (MRQA's inclusive `char_spans` made half-open).
- `read_candidates(path)`: MultiReQA's sentences, grouped by context, in context order.
- `build(mrqa_path, candidates_path, name)`: training pairs and the evaluation set. The pool
  is every candidate sentence of the split; a sentence is relevant to a question when it
  fully contains one of the question's answer spans; questions with the same normalised
  text are one query; a question with no relevant sentence is dropped (and counted).
- `paths(data_dir, subset, split)`: where the downloaded files lie.

References:
  Guo et al., "MultiReQA: A Cross-Domain Evaluation for Retrieval Question Answering
  Models", Adapt-NLP 2021. https://arxiv.org/abs/2005.02507
  Fisch et al., "MRQA 2019 Shared Task: Evaluating Generalization in Reading
  Comprehension", MRQA 2019. https://github.com/mrqa/MRQA-Shared-Task-2019
"""

import collections
import dataclasses
import logging
import pathlib
from typing import Any, Iterator

import seqio
import tensorflow_datasets as tfds

from samtone_jax import data_files, eval_sets
from samtone_jax.data_files import DataError, RetrievalSet
from samtone_jax.tasks import pairs, vocabularies

# The five subsets with training data (MultiReQA `train/` and `dev/`), and the three that
# are evaluation only (MultiReQA `test/`).
SUBSETS = {
    "train_eval": ("SQuAD", "NaturalQuestions", "TriviaQA", "SearchQA", "HotpotQA"),
    "eval_only": ("BioASQ", "RelationExtraction", "TextbookQA"),
}

# The counts `build` returns, in this order.
STATS = ("contexts", "contexts_unmatched", "groups_unmatched", "questions",
         "questions_unmatched", "dropped", "merged", "queries", "sentences", "pairs")

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Question:
  """One MRQA question.

  Attributes:
    qid: MRQA's question id (32 hex digits).
    text: the question, as published.
    spans: the answers' character spans in the context, half-open [start, end), each once
      (SQuAD repeats a span once per annotator).
  """
  qid: str
  text: str
  spans: list[tuple[int, int]]


@dataclasses.dataclass(frozen=True)
class Context:
  """One MRQA context with its questions; `line` is its line in the file."""
  context: str
  questions: list[Question]
  line: int


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One MultiReQA sentence: `context[start:end]`; `line` is its line in the file."""
  candidate_id: str
  start: int
  end: int
  line: int


def read_mrqa(path: Any) -> Iterator[Context]:
  """Yields the contexts of an MRQA 2019 JSON-lines file (`.jsonl` or `.jsonl.gz`).

  The `{"header": ...}` line is skipped wherever it is (some samples have none). A
  context-level `id` is not read: it may be missing or empty.

  Raises:
    DataError: naming the file, line and field, for bad JSON, a missing field, a field of
      the wrong type, or a char span that is not an inclusive [start, end] in the context.
  """
  for line, record in data_files.iter_jsonl(path):
    if isinstance(record, dict) and "header" in record:
      continue
    context = data_files.field(record, "context", str, path, line)
    qas = data_files.field(record, "qas", list, path, line)
    yield Context(context, [_question(qa, len(context), path, line) for qa in qas], line)


def _question(qa: Any, context_len: int, path: Any, line: int) -> Question:
  """A `Question` from one entry of `qas`, its spans made half-open and checked."""
  qid = data_files.field(qa, "qid", str, path, line)
  text = data_files.field(qa, "question", str, path, line)
  spans = [_half_open(span, context_len, qid, path, line)
           for answer in data_files.field(qa, "detected_answers", list, path, line)
           for span in data_files.field(answer, "char_spans", list, path, line)]
  return Question(qid, text, list(dict.fromkeys(spans)))


def _half_open(span: Any, context_len: int, qid: str, path: Any, line: int) -> tuple[int, int]:
  """MRQA's inclusive `[start, end]` as the half-open `(start, end + 1)`."""
  if (not isinstance(span, list) or len(span) != 2
      or not all(isinstance(x, int) and not isinstance(x, bool) for x in span)
      or not 0 <= span[0] <= span[1] < context_len):
    raise DataError(path, line, f"question {qid}: field 'char_spans' holds {span!r}, not an"
                                f" inclusive [start, end] in a context of {context_len}"
                                " characters.")
  return span[0], span[1] + 1


def read_candidates(path: Any) -> dict[str, list[Candidate]]:
  """Reads a MultiReQA `candidates.json.gz` (JSON lines) into its contexts' sentences.

  A `candidate_id` is `<context key>/_<sentence>`, where the context key is `<Subset>_`
  followed by the context's qids joined by `/`, and the sentence is `<index>` (HotpotQA:
  `<paragraph>_<index>`). The file is sorted as strings (`_10` before `_2`) and some subsets
  skip indices, so sentences are ordered by their offsets, and known by `candidate_id`.

  Returns:
    context key -> its sentences, ordered by (start, end).

  Raises:
    DataError: naming the file and line, for bad JSON, a missing or mistyped field, an id of
      another form, a repeated id, or offsets that are not 0 <= start <= end.
  """
  groups = collections.defaultdict(list)
  seen = set()
  for line, record in data_files.iter_jsonl(path):
    candidate_id = data_files.field(record, "candidate_id", str, path, line)
    start = data_files.field(record, "response_start", int, path, line)
    end = data_files.field(record, "response_end", int, path, line)
    key, separator, _ = candidate_id.rpartition("/_")
    if not separator or not _qids(key):
      raise DataError(path, line, f"candidate_id {candidate_id!r} is not"
                                  " '<Subset>_<qid>/.../_<sentence>'.")
    if candidate_id in seen:
      raise DataError(path, line, f"candidate_id {candidate_id!r} repeats an earlier line.")
    if not 0 <= start <= end:
      raise DataError(path, line, f"response_start {start} and response_end {end} are not"
                                  " 0 <= start <= end.")
    seen.add(candidate_id)
    groups[key].append(Candidate(candidate_id, start, end, line))
  return {key: sorted(group, key=lambda c: (c.start, c.end)) for key, group in groups.items()}


def _qids(key: str) -> frozenset[str]:
  """The qids named by a context key `<Subset>_<qid>/<qid>/...` (empty if malformed)."""
  _, separator, qids = key.partition("_")
  names = qids.split("/")
  return frozenset(names) if separator and all(names) else frozenset()


def _new_qids(context: Context, seen: set[str], path: Any) -> frozenset[str]:
  """The qids of a context, added to `seen`; DataError if one was seen before."""
  qids = [q.qid for q in context.questions]
  repeated = seen.intersection(qids) or [q for q, n in collections.Counter(qids).items() if n > 1]
  if repeated:
    raise DataError(path, context.line, f"qid {sorted(repeated)[0]} appears twice in the file.")
  seen.update(qids)
  return frozenset(qids)


def _relevant(question: Question, sentences: list[Candidate]) -> list[str]:
  """The ids of the sentences that fully contain one of the question's answer spans."""
  return [s.candidate_id for s in sentences
          if any(s.start <= start and end <= s.end for start, end in question.spans)]


def _sentence_texts(context: Context, sentences: list[Candidate], path: Any) -> dict[str, str]:
  """candidate_id -> text of each sentence of a context; DataError if one runs past it."""
  for s in sentences:
    if s.end > len(context.context):
      raise DataError(path, s.line, f"{s.candidate_id} ends at {s.end}, past the end of its"
                                    f" context ({len(context.context)} characters, MRQA"
                                    f" line {context.line}).")
  return {s.candidate_id: context.context[s.start:s.end] for s in sentences}


def build(mrqa_path: Any, candidates_path: Any, name: str = ""
          ) -> tuple[list[dict[str, str]], RetrievalSet, dict[str, int]]:
  """Training pairs and the evaluation set of one MultiReQA subset and split.

  Each MRQA context is matched to the candidate group whose key names exactly its qids. The
  pool is every sentence of the matched groups, by `candidate_id` (equal texts are kept
  apart). A sentence is relevant to a question when it fully contains one of its answer
  spans. Questions with equal `normalize_text` are one query, with the union of their
  relevant sentences, under the qid and text of the first question kept. A question with
  no relevant sentence (its answer crosses a sentence boundary) is dropped. Contexts and
  groups that match nothing are left out, counted and logged as warnings.

  Args:
    mrqa_path: the MRQA file (`<Subset>.jsonl.gz`).
    candidates_path: the MultiReQA file (`candidates.json.gz`) built from it.
    name: the evaluation set's name.

  Returns:
    `(pairs, eval_set, stats)`:
    pairs: in file order, one dict per (query, relevant sentence) with `query`, `passage`
      (texts), `query_id` (the query's qid) and `passage_id` (the sentence's candidate_id).
    eval_set: the checked `RetrievalSet`: queries by qid, the pool by candidate_id, and
      qrels of relevance 1.
    stats: the counts named in `STATS`: `contexts`, `contexts_unmatched`,
      `groups_unmatched`, `questions` (all read), `questions_unmatched` (in unmatched
      contexts), `dropped`, `merged` (into an earlier query of the same text), `queries`,
      `sentences` and `pairs`; `questions` is the sum of `questions_unmatched`, `dropped`,
      `merged` and `queries`.

  Raises:
    DataError: as the readers, for a repeated qid, or a sentence past its context.
  """
  groups = read_candidates(candidates_path)
  key_of = {_qids(key): key for key in groups}
  queries, corpus, qrels, pairs = {}, {}, {}, []
  query_of_text, seen_qids, matched, unmatched = {}, set(), set(), []
  stats = dict.fromkeys(STATS, 0)
  for context in read_mrqa(mrqa_path):
    stats["contexts"] += 1
    stats["questions"] += len(context.questions)
    key = key_of.get(_new_qids(context, seen_qids, mrqa_path))
    if key is None:
      unmatched.append(context.line)
      stats["questions_unmatched"] += len(context.questions)
      continue
    matched.add(key)
    texts = _sentence_texts(context, groups[key], candidates_path)
    corpus.update(texts)
    for question in context.questions:
      relevant = _relevant(question, groups[key])
      if not relevant:
        stats["dropped"] += 1
        continue
      query_id = query_of_text.setdefault(data_files.normalize_text(question.text), question.qid)
      if query_id in queries:
        stats["merged"] += 1
      queries.setdefault(query_id, question.text)
      judged = qrels.setdefault(query_id, {})
      for candidate_id in relevant:
        if candidate_id not in judged:
          judged[candidate_id] = 1
          pairs.append({"query": queries[query_id], "passage": texts[candidate_id],
                        "query_id": query_id, "passage_id": candidate_id})
  stats.update(contexts_unmatched=len(unmatched), groups_unmatched=len(groups) - len(matched),
               queries=len(queries), sentences=len(corpus), pairs=len(pairs))
  _log(name, stats, unmatched, sorted(set(groups) - matched), mrqa_path, candidates_path)
  eval_set = RetrievalSet(queries, corpus, qrels, name).check(name or candidates_path)
  return pairs, eval_set, stats


def _log(name: str, stats: dict[str, int], unmatched_lines: list[int],
         unmatched_keys: list[str], mrqa_path: Any, candidates_path: Any) -> None:
  """Logs the counts of `build`, and a warning with examples for what matched nothing."""
  if unmatched_lines:
    _LOG.warning("MultiReQA %s: %d contexts of %s (%d questions) match no candidate group of"
                 " %s, e.g. lines %s; left out.", name, len(unmatched_lines), mrqa_path,
                 stats["questions_unmatched"], candidates_path, unmatched_lines[:3])
  if unmatched_keys:
    _LOG.warning("MultiReQA %s: %d candidate groups of %s match no context of %s, e.g. %s;"
                 " left out.", name, len(unmatched_keys), candidates_path, mrqa_path,
                 unmatched_keys[:3])
  _LOG.info("MultiReQA %s: %d questions read: %d dropped (answer in no single sentence), %d"
            " merged into an earlier query of the same text, %d queries; %d sentences; %d"
            " training pairs.", name, stats["questions"], stats["dropped"], stats["merged"],
            stats["queries"], stats["sentences"], stats["pairs"])


def paths(data_dir: Any, subset: str, split: str) -> tuple[str, str]:
  """The MRQA file and the MultiReQA candidates file of a subset and split.

  Expected layout under `data_dir` (both downloads as released):
    mrqa/train/<Subset>.jsonl.gz, mrqa/dev/<Subset>.jsonl.gz      (MRQA 2019; the
        out-of-domain subsets, such as BioASQ, are dev files too)
    multireqa/data/{train,dev,test}/<Subset>/candidates.json.gz   (the MultiReQA repository)

  MultiReQA's `train/` is built from MRQA train files and `dev/` (the evaluation sets of the
  five training subsets) from MRQA dev files; `test/` holds the evaluation-only subsets,
  also built from MRQA dev files.

  Args:
    data_dir: the folder holding `mrqa/` and `multireqa/`.
    subset: one of `SUBSETS["train_eval"]` or `SUBSETS["eval_only"]`.
    split: "train" or "dev" for a training subset, "test" for an evaluation-only one.

  Returns:
    `(mrqa_path, candidates_path)`, as strings; whether they exist is not checked.

  Raises:
    ValueError: for an unknown subset, or a split the subset does not have.
  """
  if subset in SUBSETS["train_eval"]:
    splits = ("train", "dev")
  elif subset in SUBSETS["eval_only"]:
    splits = ("test",)
  else:
    raise ValueError(f"unknown MultiReQA subset {subset!r}; expected one of"
                     f" {SUBSETS['train_eval'] + SUBSETS['eval_only']}.")
  if split not in splits:
    raise ValueError(f"MultiReQA {subset} has the splits {splits}, not {split!r}.")
  root = pathlib.Path(data_dir)
  mrqa = root / "mrqa" / ("train" if split == "train" else "dev") / f"{subset}.jsonl.gz"
  candidates = root / "multireqa" / "data" / split / subset / "candidates.json.gz"
  return str(mrqa), str(candidates)


# -- TFDS pairs and SeqIO tasks ------------------------------------------------------------


class Multireqa(pairs.PairsBuilder):
  """MultiReQA (question, answer sentence) pairs of one training subset: "train" from the
  MRQA train file, "validation" from the MRQA dev file (MultiReQA's dev/ sets)."""
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [pairs.PairsConfig(name=subset.lower(), description=subset)
                     for subset in SUBSETS["train_eval"]]
  SPLITS = ("train", "validation")
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put the MRQA 2019 files as released (mrqa/train/<Subset>.jsonl.gz,"
      " mrqa/dev/<Subset>.jsonl.gz) and the MultiReQA repository's data/ folder"
      " (multireqa/data/{train,dev}/<Subset>/candidates.json.gz) in the manual folder, or in"
      " $SAMTONE_DATA_DIR.")

  def iter_pairs(self, split, manual_dir):
    subset = self.builder_config.description
    pairs_list, _, _ = build(*paths(manual_dir, subset, "train" if split == "train" else "dev"),
                             name=f"multireqa/{subset}/{split}")
    for pair in pairs_list:
      yield {"query": pair["query"], "passage": pair["passage"]}


for _subset in SUBSETS["train_eval"]:
  pairs.register_pairs_task(f"multireqa_{_subset.lower()}",
                            f"multireqa/{_subset.lower()}:1.0.0", vocabularies.t5_vocabulary())
seqio.MixtureRegistry.remove("multireqa_all")
seqio.MixtureRegistry.add(
    "multireqa_all", [f"multireqa_{s.lower()}" for s in SUBSETS["train_eval"]],
    default_rate=seqio.mixing_rate_num_examples)
for _subset in SUBSETS["train_eval"] + SUBSETS["eval_only"]:
  eval_sets.register(
      f"multireqa_{_subset.lower()}",
      lambda subset=_subset: build(
          *paths(data_files.data_root(), subset,
                 "test" if subset in SUBSETS["eval_only"] else "dev"),
          name=f"multireqa/{subset}")[1])
