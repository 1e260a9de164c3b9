"""Load multiple-choice QA sources (MedQA, bigbio med_qa, MMLU-Pro) into one schema.

Every recipe (SFT, PPO, evaluation) reads questions through `load_mcqa`, so the prompt builder and
the verifier only ever see one shape: `id`, `question`, `options` (texts in letter order), `answer`
(one upper-case letter), `answer_index` and `source`. The schema is detected from each row, not from
the source name, so a local copy of any of the public files works the same as the Hub id.

Rows are checked as plain Python dicts before a `datasets.Dataset` is built: a bad row stops the load
with a `ValueError` naming the file (or Hub id), the row and the field. Nothing is dropped silently.
Row numbers are 1-based; in a JSON Lines file they are line numbers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import datasets

from medrlvr_trl.mcqa_schema import FEATURES, RowProblem, normalise_row
from medrlvr_trl.user_errors import UserError

logger = logging.getLogger(__name__)

DATA_SUFFIXES = (".jsonl", ".json", ".parquet")
_LOCAL_HINT = "pass a local path instead: a .jsonl/.json/.parquet file, or a folder holding {split}.jsonl"
_SPLIT_WORDS = {"train", "dev", "val", "valid", "validation", "test"}


class DataSourceError(UserError):
    """A source that cannot be read at all (Hub unreachable, unknown split, unsupported file)."""


class MissingDataFileError(DataSourceError, FileNotFoundError):
    """A local path that does not exist; also a `FileNotFoundError` so either kind of handler works."""


@dataclass(frozen=True)
class SkippedRows:
    """Rows that `skip_invalid_rows` left out of a load: how many, and the first few problems."""

    count: int = 0
    first: tuple[str, ...] = ()

    def as_record(self) -> dict[str, Any]:
        """For run_info.json and the log."""
        return {"count": self.count, "first": list(self.first)}


MAX_SKIPPED_SHOWN = 5


def load_mcqa(
    source: str,
    split: str = "train",
    *,
    category: str | None = None,
    limit: int | None = None,
    skip_invalid_rows: bool = False,
    revision: str | None = None,
) -> datasets.Dataset:
    """Read one split of a multiple-choice source and return it in the shared schema (`read_mcqa`)."""
    return read_mcqa(
        source, split, category=category, limit=limit, skip_invalid_rows=skip_invalid_rows, revision=revision
    )[0]


def read_mcqa(
    source: str,
    split: str = "train",
    *,
    category: str | None = None,
    limit: int | None = None,
    skip_invalid_rows: bool = False,
    revision: str | None = None,
) -> tuple[datasets.Dataset, SkippedRows]:
    """Read one split of a multiple-choice source: the rows in the shared schema, and those skipped.

    `source` is a local path (a .jsonl/.json/.parquet file, or a folder holding `{split}.jsonl`,
    `{split}.json` or `{split}.parquet`) or a Hub dataset id; a Hub config name follows a colon, as in
    `bigbio/med_qa:med_qa_en_source`. For a single file `split` only names the rows in fallback ids.
    `category` keeps rows whose `category` field matches case-insensitively (MMLU-Pro "health");
    `limit` keeps the first N rows after filtering. Rows the category filter removes are not checked;
    every other row is, even past `limit`, so a bad row cannot hide behind a small smoke-test limit.
    A row that cannot be used is an error naming the file, row and field; with `skip_invalid_rows`
    it is left out instead, and the count and the first few problems are logged and returned, so one
    bad row in 10,000 does not end a real run and none disappears unreported.
    """
    if limit is not None and limit < 1:
        raise UserError(f"limit must be a positive number of rows or None, got {limit!r}")
    origin, name, rows = _read_source(source, split, revision)
    if not rows:
        raise DataSourceError(f"{origin} holds no rows; check the path and split")
    if category is not None:
        rows = _filter_category(rows, category, origin)
    records: list[dict[str, Any]] = []
    problems: list[str] = []
    first_row_of_id: dict[str, int] = {}
    for number, row in rows:
        try:
            record = normalise_row(row, fallback_id=f"{name}-{split}-{number}")
            if record["id"] in first_row_of_id:
                raise RowProblem(
                    "id", f"id {record['id']!r} is already used by row {first_row_of_id[record['id']]}"
                )
        except RowProblem as err:
            problem = f"{origin}, row {number}, field '{err.field}': {err.problem}"
            if not skip_invalid_rows:
                raise UserError(
                    f"{problem}. Fix or remove this row in the source, or pass --skip_invalid_rows true"
                ) from None
            problems.append(problem)
            continue
        first_row_of_id[record["id"]] = number
        records.append({**record, "source": name})
    if not records:
        raise DataSourceError(f"{origin}: every row is invalid; the first: {problems[0]}")
    if limit is not None:
        records = records[:limit]
    skipped = SkippedRows(count=len(problems), first=tuple(problems[:MAX_SKIPPED_SHOWN]))
    if skipped.count:
        logger.warning(
            "skipped %d invalid rows of %s (skip_invalid_rows): %s", skipped.count, origin, skipped.first
        )
    logger.info("loaded %d rows from %s", len(records), origin)
    return datasets.Dataset.from_list(records, features=FEATURES), skipped


def is_local_source(source: str) -> bool:
    """Whether `source` names a local file or folder (one that exists, or a path-like name such as
    `./x`, `/x`, `~/x` or `x.jsonl`) rather than a Hub dataset id."""
    return (
        Path(source).expanduser().exists()
        or source.startswith((".", "/", "~"))
        or source.lower().endswith(DATA_SUFFIXES)
    )


def questions_sha256(rows: Any) -> str:
    """SHA-256 of the loaded questions (id, question, options, gold letter, in order), so two runs or
    results can be checked to be on the same questions when a Hub source changes under the same name.

    Training records it in run_info.json and evaluation in results.json: equal hashes, same questions.
    """
    digest = hashlib.sha256()
    for fields in zip(rows["id"], rows["question"], rows["options"], rows["answer"], strict=True):
        digest.update((json.dumps(list(fields), ensure_ascii=False) + "\n").encode("utf-8"))
    return digest.hexdigest()


# --- reading rows --------------------------------------------------------------------------------


def _read_source(
    source: str, split: str, revision: str | None = None
) -> tuple[str, str, list[tuple[int, Any]]]:
    """Return (origin for messages, short source name, numbered rows) for a path or a Hub id
    (`revision`: a Hub commit, branch or tag; Hub ids only)."""
    path = Path(source).expanduser()
    if revision is not None and is_local_source(source):
        raise UserError(f"data source {source!r} is a local path; a revision applies to Hub datasets only")
    if path.is_dir():
        file = _split_file(path, split)
        return str(file), path.name, _read_file(file)
    if path.is_file():
        parent_name = path.resolve().parent.name
        name = (
            parent_name if path.stem.lower() in _SPLIT_WORDS | {split.lower()} and parent_name else path.stem
        )
        return str(path), name, _read_file(path)
    if is_local_source(source):
        raise MissingDataFileError(
            f"data file {source!r} does not exist; check the path (relative to {Path.cwd()})"
        )
    return _read_hub(source, split, revision)


def _split_file(folder: Path, split: str) -> Path:
    candidates = [
        folder / f"{split}{suffix}" for suffix in DATA_SUFFIXES if (folder / f"{split}{suffix}").is_file()
    ]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        names = ", ".join(c.name for c in candidates)
        raise DataSourceError(f"{folder} holds several files for split {split!r} ({names}); keep only one")
    present = sorted(p.name for p in folder.iterdir() if p.suffix in DATA_SUFFIXES)
    wanted = ", ".join(f"{split}{suffix}" for suffix in DATA_SUFFIXES)
    raise MissingDataFileError(f"{folder} has none of {wanted}; data files present: {present or 'none'}")


def _read_file(path: Path) -> list[tuple[int, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq  # a dependency of `datasets`; only parquet reads need it

        return list(enumerate(pq.read_table(path).to_pylist(), start=1))
    if suffix not in (".jsonl", ".json"):
        raise DataSourceError(f"{path}: unsupported file type {suffix!r}; use .jsonl, .json or .parquet")
    text = path.read_text(encoding="utf-8")
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # many published ".json" files are JSON Lines; read them as such below
        if isinstance(data, list):
            return list(enumerate(data, start=1))
        if data is not None:
            raise DataSourceError(f"{path}: expected a JSON list of row objects, found {type(data).__name__}")
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, row {number}: not valid JSON ({err.msg}). Fix this line.") from None
    return rows


def _read_hub(source: str, split: str, revision: str | None = None) -> tuple[str, str, list[tuple[int, Any]]]:
    repo, _, config = source.partition(":")
    origin = f"Hub dataset {source!r} (split {split!r}" + (f", revision {revision!r})" if revision else ")")
    hint = _LOCAL_HINT.format(split=split)
    offline_env = any(
        os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )
    # The libraries read the offline flag once, at import; if it was set later they would retry the
    # network for tens of seconds, so fail now instead.
    if offline_env and not datasets.config.HF_HUB_OFFLINE:
        raise DataSourceError(f"cannot load {origin}: the Hub is offline (HF_HUB_OFFLINE is set); {hint}")
    try:
        dataset = _load_hub_split(repo, config, split, revision)
    except (OSError, ValueError, RuntimeError) as err:  # RuntimeError: script datasets (datasets >= 4)
        reason = (
            "the Hub is unreachable (HF_HUB_OFFLINE is set, or no connection)"
            if isinstance(err, ConnectionError)
            else err
        )
        raise DataSourceError(f"cannot load {origin}: {reason}; {hint}") from err
    return origin, repo.rsplit("/", 1)[-1], list(enumerate(dataset.to_list(), start=1))


PARQUET_EXPORT = "refs/convert/parquet"
"""The Hub's own parquet conversion of a dataset, one folder per config (`config/split/*.parquet`)."""


def _load_hub_split(repo: str, config: str, split: str, revision: str | None = None) -> datasets.Dataset:
    """One split of a Hub dataset. A dataset published as a loading script (bigbio's `med_qa`), which
    `datasets` >= 4 no longer runs, is read from the Hub's parquet export of the named config instead.

    `revision` pins the commit read (for a script dataset: a commit of its parquet export, which the
    Hub's converter rewrites), so two runs read the same questions."""
    pinned = {} if revision is None else {"revision": revision}
    try:
        return datasets.load_dataset(repo, config or None, split=split, **pinned)
    except (RuntimeError, ValueError) as err:
        # At a commit of the parquet export there is no script, and `datasets` reads the repo as plain
        # files, in which the config name is not a builder config: that read is the parquet one below.
        script = isinstance(err, RuntimeError) and "scripts are no longer supported" in str(err)
        export_commit = isinstance(err, ValueError) and revision is not None and f"'{config}'" in str(err)
        if not config or not (script or export_commit):
            raise
    logger.info(
        "%s is a loading script; reading config %s from its parquet export (%s)", repo, config, PARQUET_EXPORT
    )
    return datasets.load_dataset(repo, data_dir=config, split=split, revision=revision or PARQUET_EXPORT)


def _filter_category(rows: list[tuple[int, Any]], category: str, origin: str) -> list[tuple[int, Any]]:
    wanted = category.strip().casefold()
    kept, present = [], set()
    for number, row in rows:
        value = row.get("category") if isinstance(row, dict) else None
        if not isinstance(value, str):
            raise ValueError(
                f"{origin}, row {number}, field 'category': a category filter ({category!r}) needs a text "
                f"'category' field in every row. Drop the filter or fix the row."
            )
        present.add(value.strip())
        if value.strip().casefold() == wanted:
            kept.append((number, row))
    if not kept:
        raise ValueError(
            f"{origin}: no rows with category {category!r}; categories present: {sorted(present)}"
        )
    logger.info("category %r: kept %d of %d rows of %s", category, len(kept), len(rows), origin)
    return kept


# --- train/test contamination --------------------------------------------------------------------

NGRAM_WORDS = 8
"""Near-duplicates are judged on word 8-grams of the normalised question; a question of fewer words
has none, so it can only match exactly."""
NEAR_DUPLICATE_THRESHOLD = 0.5
"""A question is a near-duplicate when at least this share of its distinct word 8-grams occurs in
the other set's questions: a copy with a changed age, dose or last sentence keeps most of them."""
MATCH_KINDS = ("exact", "near")


@dataclass(frozen=True)
class OverlapMatch:
    """One question of `b` found in `a`: `exact` (same normalised text) or `near` (shared 8-grams)."""

    id: str
    match_id: str
    kind: str
    ngram_overlap: float


@dataclass(frozen=True)
class OverlapReport:
    """How many questions of `b` (usually a test set) also appear in `a` (usually the training set).

    `exact` and `near` are disjoint: a near-duplicate is not also an exact copy. `examples` holds the
    first few matches, in `b`'s order, to inspect by hand.
    """

    size_a: int
    size_b: int
    exact: int
    near: int
    threshold: float
    ngram: int
    examples: tuple[OverlapMatch, ...]

    @property
    def overlapping(self) -> int:
        return self.exact + self.near

    @property
    def fraction_of_b(self) -> float:
        return self.overlapping / self.size_b if self.size_b else 0.0

    def as_record(self) -> dict[str, Any]:
        """For results.json."""
        return {
            "n": self.size_b,
            "train_n": self.size_a,
            "exact": self.exact,
            "near": self.near,
            "fraction": self.fraction_of_b,
            "threshold": self.threshold,
            "ngram": self.ngram,
            "examples": [asdict(match) for match in self.examples],
        }


def normalise_question(text: str) -> str:
    """Case-, whitespace- and punctuation-insensitive form of a question, for matching copies."""
    return " ".join(re.sub(r"[^\w\s]|_", " ", text.casefold()).split())


def word_ngrams(text: str, n: int = NGRAM_WORDS) -> set[int]:
    """Hashes of the distinct word n-grams of the normalised text; empty below n words.

    Hashes, not the word tuples, are kept so a 10,000-question index stays small; they are only
    compared within one process.
    """
    words = normalise_question(text).split()
    return {hash(tuple(words[i : i + n])) for i in range(len(words) - n + 1)}


@dataclass(frozen=True)
class QuestionIndex:
    """One set's questions indexed by normalised text and by word n-gram, so each question of another
    set is looked up in constant time instead of being compared with every question."""

    ids: tuple[str, ...]
    questions: tuple[str, ...]
    first_of_text: dict[str, int]
    first_of_ngram: dict[int, int]
    ngram: int = NGRAM_WORDS

    @classmethod
    def build(
        cls, ids: Sequence[str], questions: Sequence[str], *, ngram: int = NGRAM_WORDS
    ) -> QuestionIndex:
        """Index rows in order; a text or n-gram shared by several rows points at the first of them."""
        first_of_text: dict[str, int] = {}
        first_of_ngram: dict[int, int] = {}
        for row, question in enumerate(questions):
            first_of_text.setdefault(normalise_question(question), row)
            for gram in word_ngrams(question, ngram):
                first_of_ngram.setdefault(gram, row)
        return cls(tuple(ids), tuple(questions), first_of_text, first_of_ngram, ngram)

    @classmethod
    def of(cls, dataset: datasets.Dataset) -> QuestionIndex:
        return cls.build(dataset["id"], dataset["question"])

    def match(self, question: str, threshold: float) -> tuple[str, str, float] | None:
        """(kind, id of the matching row, share of the question's n-grams found in any row), or None."""
        row = self.first_of_text.get(normalise_question(question))
        if row is not None:
            return "exact", self.ids[row], 1.0
        grams = word_ngrams(question, self.ngram)
        shared = [g for g in grams if g in self.first_of_ngram]
        if not grams or len(shared) / len(grams) < threshold:
            return None
        closest = self._closest(grams, {self.first_of_ngram[g] for g in shared})
        return "near", self.ids[closest], len(shared) / len(grams)

    def _closest(self, grams: set[int], candidates: set[int]) -> int:
        """The candidate row sharing the most of `grams`, the earliest on a tie (a reproducible example).

        Candidates are the rows first holding one of the shared n-grams, so only a few are re-read.
        """
        return min(
            candidates, key=lambda row: (-len(grams & word_ngrams(self.questions[row], self.ngram)), row)
        )


def question_overlap(
    a: datasets.Dataset | QuestionIndex,
    b: datasets.Dataset,
    *,
    threshold: float = NEAR_DUPLICATE_THRESHOLD,
    max_examples: int = 5,
    names: tuple[str, str] = ("a", "b"),
) -> OverlapReport:
    """Count rows of `b` whose question also occurs in `a`, exactly or as a near-duplicate, and log it.

    Exact: equal after `normalise_question`. Near: not exact, and at least `threshold` of the
    question's distinct word 8-grams occur in `a`'s questions (any of them); a question shorter than
    8 words counts only when exact. Pass a `QuestionIndex` to reuse one index of `a` for several `b`.
    """
    index = a if isinstance(a, QuestionIndex) else QuestionIndex.of(a)
    counts = dict.fromkeys(MATCH_KINDS, 0)
    examples: list[OverlapMatch] = []
    for row_id, question in zip(b["id"], b["question"], strict=True):
        found = index.match(question, threshold)
        if found is None:
            continue
        kind, match_id, share = found
        counts[kind] += 1
        if len(examples) < max_examples:
            examples.append(OverlapMatch(row_id, match_id, kind, share))
    report = OverlapReport(
        size_a=len(index.ids),
        size_b=len(b),
        exact=counts["exact"],
        near=counts["near"],
        threshold=threshold,
        ngram=index.ngram,
        examples=tuple(examples),
    )
    _log_overlap(report, names)
    return report


def _log_overlap(report: OverlapReport, names: tuple[str, str]) -> None:
    name_a, name_b = names
    if not report.overlapping:
        logger.info(
            "question overlap: none of %d rows of %s appear in %s (%d rows)",
            report.size_b,
            name_b,
            name_a,
            report.size_a,
        )
        return
    logger.warning(
        "question overlap: %d of %d rows of %s (%.1f%%) also appear in %s: %d exact, %d near "
        "(>= %.0f%% of word %d-grams shared); e.g. (%s id, %s id) %s",
        report.overlapping,
        report.size_b,
        name_b,
        100 * report.fraction_of_b,
        name_a,
        report.exact,
        report.near,
        100 * report.threshold,
        report.ngram,
        name_b,
        name_a,
        [(m.id, m.match_id) for m in report.examples],
    )


def unique_question_indices(questions: Sequence[str]) -> list[int]:
    """Row indices that keep the first of each group of questions equal after `normalise_question`.

    A set holding the same question twice weighs it twice; accuracy on these rows counts it once.
    """
    first: dict[str, int] = {}
    for row, question in enumerate(questions):
        first.setdefault(normalise_question(question), row)
    return sorted(first.values())
