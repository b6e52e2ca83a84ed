"""Traces -> SFT rows: keep passing runs, one chat row per predictor call, dedupe, split, check lengths.

A row is TRL's conversational prompt/completion format::

    {"prompt": [<the exact messages the adapter sent>],
     "completion": [{"role": "assistant", "content": <the raw completion text>}], ...}

so TRL's ``SFTTrainer`` renders both through the model's chat template and puts the loss on the
completion tokens only. Rows are never rebuilt from parsed outputs (DESIGN.md, invariant 1): a record
whose completion did not parse is skipped and counted, not repaired. The server's token ids ride
along (``prompt_token_ids`` / ``completion_token_ids``) when it returned them.

Everything that is dropped is counted by reason in the data card, so a run that trains on fewer
rows than expected says why (invariant 7).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dspylite.errors import TrainingError
from dspylite.trace import TraceRecord
from dspylite.utils.io import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

DATA_DIR = "data"
DATASET_DIR = "dataset"  # datasets.DatasetDict.save_to_disk output, inside DATA_DIR
CARD_JSON = "data_card.json"
CARD_MD = "data_card.md"

# Reasons a run or a record is left out; the data card reports each count.
RUN_REASONS = ("below_threshold", "program_error", "metric_error", "no_traces")
RECORD_REASONS = (
    "parse_error",
    "empty_completion",
    "truncated_completion",
    "duplicate",
    "too_long",
    "balance",
)


@dataclass
class SFTRow:
    """One training row: the messages a predictor sent and the completion it got back."""

    prompt: list[dict[str, Any]]
    completion: list[dict[str, Any]]
    predictor: str
    example_id: str | None
    rollout_id: int | None
    model: str
    score: float
    prompt_token_ids: list[int] | None = None
    completion_token_ids: list[int] | None = None
    num_tokens: int | None = None  # prompt + completion under the tokenizer's chat template

    def key(self) -> str:
        """Identity for dedupe: what the model saw and said (not which run it came from)."""
        blob = json.dumps([self.prompt, self.completion], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DataCard:
    """What went into the data and what was left out, by reason."""

    runs_total: int = 0
    runs_passed: int = 0
    runs_dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RUN_REASONS, 0))
    records_seen: int = 0
    records_dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RECORD_REASONS, 0))
    rows_train: int = 0
    rows_val: int = 0
    rows_per_predictor: dict[str, dict[str, int]] = field(default_factory=dict)  # name -> {"train", "val"}
    rows_with_token_ids: int = 0
    too_long: list[dict[str, Any]] = field(default_factory=list)  # {"predictor", "example_id", "tokens"}
    max_length: int | None = None
    token_lengths: dict[str, float] = field(default_factory=dict)  # min / mean / max over kept rows
    metric_threshold: float = 1.0
    val_fraction: float = 0.0
    seed: int = 0
    models: dict[str, int] = field(default_factory=dict)  # served model name -> records kept
    data_hash: str = ""
    first_errors: dict[str, str] = field(default_factory=dict)  # reason -> one example message
    # balance_field's rows per predictor and value, before and after balancing ({} when not balanced)
    balance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        dropped_runs = ", ".join(f"{k}={v}" for k, v in self.runs_dropped.items() if v) or "none"
        dropped_records = ", ".join(f"{k}={v}" for k, v in self.records_dropped.items() if v) or "none"
        return (
            f"{self.runs_passed}/{self.runs_total} runs passed (dropped: {dropped_runs}); "
            f"{self.records_seen} predictor calls in passing runs (dropped: {dropped_records}); "
            f"{self.rows_train} train + {self.rows_val} val rows"
        )

    def to_markdown(self) -> str:
        lines = [
            "# SFT data card",
            "",
            f"- data hash: `{self.data_hash}`",
            f"- metric threshold: a run passes when its score >= {self.metric_threshold}",
            f"- runs: {self.runs_total} total, {self.runs_passed} passed",
            f"- predictor calls in passing runs: {self.records_seen}",
            f"- rows: {self.rows_train} train, {self.rows_val} val (val fraction {self.val_fraction}, "
            f"seed {self.seed}); {self.rows_with_token_ids} carry the server's token ids",
            f"- max length: {self.max_length} tokens; lengths kept: {self.token_lengths or 'not measured'}",
        ]
        if self.balance:
            lines.append(
                f"- balanced over output field `{self.balance['field']}`: rows per value "
                f"{self.balance['before']} -> {self.balance['after']}"
            )
        lines += [
            "",
            "## Rows per predictor",
            "",
            "| predictor | train | val |",
            "|---|---|---|",
        ]
        for name, counts in sorted(self.rows_per_predictor.items()):
            lines.append(f"| {name} | {counts.get('train', 0)} | {counts.get('val', 0)} |")
        lines += ["", "## Left out", "", "| what | reason | count |", "|---|---|---|"]
        for reason, count in self.runs_dropped.items():
            lines.append(f"| runs | {reason} | {count} |")
        for reason, count in self.records_dropped.items():
            lines.append(f"| predictor calls | {reason} | {count} |")
        if self.too_long:
            lines += [
                "",
                f"## Rows longer than {self.max_length} tokens (left out, not truncated)",
                "",
                "| predictor | example | tokens |",
                "|---|---|---|",
            ]
            for item in self.too_long[:50]:
                lines.append(f"| {item['predictor']} | {item['example_id']} | {item['tokens']} |")
            if len(self.too_long) > 50:
                lines.append(f"| ... | {len(self.too_long) - 50} more | |")
        if self.first_errors:
            lines += ["", "## First message per reason", ""]
            lines += [f"- {reason}: {message}" for reason, message in sorted(self.first_errors.items())]
        return "\n".join(lines) + "\n"


@dataclass
class SFTData:
    train: list[SFTRow]
    val: list[SFTRow]
    card: DataCard

    @property
    def data_hash(self) -> str:
        return self.card.data_hash

    def rows(self) -> list[SFTRow]:
        return [*self.train, *self.val]

    def for_predictors(self, names: Iterable[str]) -> SFTData:
        """The rows of some predictors only (for one adapter per predictor); the card is recounted."""
        wanted = set(names)
        train = [r for r in self.train if r.predictor in wanted]
        val = [r for r in self.val if r.predictor in wanted]
        card = DataCard(**{**self.card.to_dict()})
        card.rows_train, card.rows_val = len(train), len(val)
        card.rows_per_predictor = {k: v for k, v in self.card.rows_per_predictor.items() if k in wanted}
        card.data_hash = _hash_rows(train, val)
        return SFTData(train, val, card)

    def to_datasets(self) -> Any:
        """A ``datasets.DatasetDict`` with ``train`` (and ``val`` when there are val rows)."""
        from datasets import Dataset, DatasetDict

        splits = {"train": Dataset.from_list([r.to_dict() for r in self.train], features=_features())}
        if self.val:
            splits["val"] = Dataset.from_list([r.to_dict() for r in self.val], features=_features())
        return DatasetDict(splits)

    def save(self, directory: str | Path) -> Path:
        """Write ``dataset/`` (save_to_disk), ``train.jsonl``, ``val.jsonl`` and the data card."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, rows in (("train", self.train), ("val", self.val)):
            text = "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in rows)
            atomic_write_text(directory / f"{name}.jsonl", text)
        atomic_write_json(directory / CARD_JSON, self.card.to_dict())
        atomic_write_text(directory / CARD_MD, self.card.to_markdown())
        if self.train:
            _save_dataset_atomically(self.to_datasets(), directory / DATASET_DIR)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> SFTData:
        """Read back what ``save`` wrote (from the JSONL files and the card)."""
        from dspylite.utils.io import read_jsonl

        directory = Path(directory)
        if not (directory / CARD_JSON).exists():
            raise TrainingError(f"no SFT data in {directory}: {CARD_JSON} is missing")
        card_data = json.loads((directory / CARD_JSON).read_text(encoding="utf-8"))
        card = DataCard(**{k: v for k, v in card_data.items() if k in DataCard.__dataclass_fields__})
        train = [SFTRow(**r) for r in read_jsonl(directory / "train.jsonl")]
        val = [SFTRow(**r) for r in read_jsonl(directory / "val.jsonl")]
        return cls(train, val, card)


def build_sft_data(
    runs: Iterable[Any],
    *,
    metric_threshold: float = 1.0,
    val_fraction: float = 0.1,
    seed: int = 0,
    dedupe: bool = True,
    tokenizer: Any = None,
    max_length: int | None = None,
    allowed_models: Sequence[str] | None = None,
    keep_truncated: bool = False,
    predictors: Sequence[str] | None = None,
    balance_field: str | None = None,
) -> SFTData:
    """Turn program runs into train/val SFT rows.

    ``runs``: one entry per program run with a ``score`` and its ``traces`` (TraceRecords or their
    dicts), e.g. ``dspylite.evaluate.ExampleResult``; optional ``error``/``error_kind``.
    A run passes when it has no error and ``score >= metric_threshold``.

    ``tokenizer`` (a tokenizer object or a model directory) measures each row under the chat
    template; rows over ``max_length`` (default: the tokenizer's ``model_max_length``) are left out
    and listed in the card. ``allowed_models``: the served model names traces may come from (the
    base model and its adapters); a record from any other model raises ``TrainingError`` naming it.
    ``predictors``: keep only these predictor names. ``balance_field``: an output field (a class
    label, e.g. ``answer: bool``); the rows of each predictor that outputs it are cut, by a seeded draw,
    to the same count for every value it took (the rarest value's count), because a small model's
    passing runs are mostly its favourite class and SFT on them only teaches that class.

    The split is by example id, so the rows of one example never land on both sides.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise TrainingError(f"val_fraction must be in [0, 1), got {val_fraction}")
    card = DataCard(metric_threshold=metric_threshold, val_fraction=val_fraction, seed=seed)
    rows: list[SFTRow] = []
    labels: dict[int, str] = {}  # id(row) -> its balance_field value (JSON), for rows that have one
    allowed = set(allowed_models) if allowed_models is not None else None
    wanted = set(predictors) if predictors is not None else None

    for run in runs:
        card.runs_total += 1
        reason, score, traces, message = _classify_run(run, metric_threshold)
        if reason is not None:
            card.runs_dropped[reason] += 1
            if message:
                card.first_errors.setdefault(reason, message)
            continue
        card.runs_passed += 1
        for raw in traces:
            record = raw if isinstance(raw, TraceRecord) else TraceRecord.from_dict(raw)
            if wanted is not None and record.predictor_name not in wanted:
                continue
            card.records_seen += 1
            drop = _record_problem(record, keep_truncated)
            if drop is not None:
                card.records_dropped[drop] += 1
                if drop == "parse_error":
                    card.first_errors.setdefault(drop, str(record.error)[:300])
                continue
            if allowed is not None and record.model not in allowed:
                raise TrainingError(
                    f"trace of predictor {record.predictor_name!r} (example {record.example_id}) came from model "
                    f"{record.model!r}, which is neither the base model being fine-tuned nor one of its adapters "
                    f"(allowed: {sorted(allowed)}); pass its name in allowed_models to distil from it on purpose"
                )
            row = _row_from_record(record, score)
            if balance_field is not None and record.outputs and balance_field in record.outputs:
                labels[id(row)] = json.dumps(record.outputs[balance_field], sort_keys=True, default=str)
            rows.append(row)

    if dedupe:
        rows = _dedupe(rows, card)
    if tokenizer is not None:
        rows = _check_lengths(rows, tokenizer, max_length, card)
    else:
        card.max_length = max_length
    if balance_field is not None:
        rows = _balance(rows, labels, balance_field, seed, card)

    train, val = _split(rows, val_fraction, seed)
    card.rows_train, card.rows_val = len(train), len(val)
    per: dict[str, dict[str, int]] = {}
    for split, split_rows in (("train", train), ("val", val)):
        for row in split_rows:
            per.setdefault(row.predictor, {"train": 0, "val": 0})[split] += 1
    card.rows_per_predictor = per
    card.rows_with_token_ids = sum(1 for r in rows if r.completion_token_ids)
    card.models = dict(Counter(r.model for r in rows))
    card.data_hash = _hash_rows(train, val)
    logger.info("SFT data: %s", card.summary())
    return SFTData(train, val, card)


def require_rows(data: SFTData) -> None:
    """Raise ``TrainingError`` explaining why when there is nothing to train on."""
    if data.train:
        return
    card = data.card
    if card.runs_total == 0:
        raise TrainingError("no program runs to build SFT data from: the trainset is empty")
    raise TrainingError(
        f"no SFT rows left to train on after filtering: {card.summary()}"
        + (f"; first errors: {card.first_errors}" if card.first_errors else "")
    )


# ---- helpers ------------------------------------------------------------------------------------------


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _classify_run(run: Any, threshold: float) -> tuple[str | None, float, list[Any], str | None]:
    score = _get(run, "score", 0.0)
    traces = list(_get(run, "traces", None) or [])
    error = _get(run, "error")
    kind = _get(run, "error_kind")
    if error:
        reason = "metric_error" if kind == "metric" else "program_error"
        return reason, score, traces, str(error)[:300]
    try:
        score = float(score)
    except (TypeError, ValueError):
        return "metric_error", 0.0, traces, f"score {score!r} is not a number"
    if score < threshold:
        return "below_threshold", score, traces, None
    if not traces:
        return "no_traces", score, traces, "a passing run carried no traces (run it with keep_traces=True)"
    return None, score, traces, None


def _record_problem(record: TraceRecord, keep_truncated: bool) -> str | None:
    if record.error is not None or record.outputs is None:
        return "parse_error"
    if not record.completion or not record.completion.strip():
        return "empty_completion"
    if record.finish_reason == "length" and not keep_truncated:
        return "truncated_completion"
    return None


def _row_from_record(record: TraceRecord, score: float) -> SFTRow:
    # The exact messages and the raw text: copied, never re-rendered from record.outputs.
    prompt = [{"role": str(m["role"]), "content": str(m["content"])} for m in record.messages]
    return SFTRow(
        prompt=prompt,
        completion=[{"role": "assistant", "content": record.completion}],
        predictor=record.predictor_name,
        example_id=record.example_id,
        rollout_id=record.rollout_id,
        model=record.model,
        score=score,
        prompt_token_ids=list(record.prompt_token_ids) if record.prompt_token_ids else None,
        completion_token_ids=list(record.completion_token_ids) if record.completion_token_ids else None,
    )


def _balance(
    rows: list[SFTRow], labels: dict[int, str], balance_field: str, seed: int, card: DataCard
) -> list[SFTRow]:
    """Per predictor, keep as many rows of each ``balance_field`` value as the rarest value has."""
    groups: dict[str, dict[str, list[int]]] = {}
    for index, row in enumerate(rows):
        if id(row) in labels:
            groups.setdefault(row.predictor, {}).setdefault(labels[id(row)], []).append(index)
    if not groups:
        raise TrainingError(
            f"balance_field={balance_field!r}: no passing row has an output field of that name; "
            "name one of the program's output fields, or leave balance_field unset"
        )
    rng = random.Random(seed)
    dropped: set[int] = set()
    before: dict[str, dict[str, int]] = {}
    after: dict[str, dict[str, int]] = {}
    for predictor, by_value in sorted(groups.items()):
        before[predictor] = {value: len(indices) for value, indices in sorted(by_value.items())}
        keep = min(before[predictor].values())
        if len(by_value) == 1:
            logger.warning(
                "balance_field=%r: every passing row of %s says %s; nothing to balance against",
                balance_field,
                predictor,
                next(iter(by_value)),
            )
        for _value, indices in sorted(by_value.items()):
            kept = set(rng.sample(indices, keep))
            dropped.update(i for i in indices if i not in kept)
        after[predictor] = {value: keep for value in sorted(by_value)}
    card.records_dropped["balance"] += len(dropped)
    card.balance = {"field": balance_field, "before": before, "after": after}
    return [row for index, row in enumerate(rows) if index not in dropped]


def _dedupe(rows: list[SFTRow], card: DataCard) -> list[SFTRow]:
    seen: set[str] = set()
    kept = []
    for row in rows:
        key = row.key()
        if key in seen:
            card.records_dropped["duplicate"] += 1
            continue
        seen.add(key)
        kept.append(row)
    return kept


def load_tokenizer(tokenizer: Any) -> Any:
    """A tokenizer object as is; a path or hub id loaded with ``AutoTokenizer``."""
    if isinstance(tokenizer, (str, Path)):
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(str(tokenizer))
        except (OSError, ValueError) as exc:
            raise TrainingError(f"cannot load the tokenizer of {tokenizer}: {exc}") from exc
    return tokenizer


def count_chat_tokens(tokenizer: Any, row: SFTRow) -> int:
    """Tokens of prompt + completion as the trainer will see them (the chat template applied)."""
    ids = tokenizer.apply_chat_template(row.prompt + row.completion, tokenize=True, return_dict=False)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return len(ids)


def _check_lengths(
    rows: list[SFTRow], tokenizer: Any, max_length: int | None, card: DataCard
) -> list[SFTRow]:
    tokenizer = load_tokenizer(tokenizer)
    if getattr(tokenizer, "chat_template", None) is None:
        raise TrainingError(
            "the tokenizer has no chat template; SFT rows are chats and need one "
            "(set tokenizer.chat_template or use a chat model)"
        )
    limit = max_length or _tokenizer_limit(tokenizer)
    card.max_length = limit
    kept, lengths = [], []
    for row in rows:
        row.num_tokens = count_chat_tokens(tokenizer, row)
        if limit is not None and row.num_tokens > limit:
            card.records_dropped["too_long"] += 1
            card.too_long.append(
                {"predictor": row.predictor, "example_id": row.example_id, "tokens": row.num_tokens}
            )
            continue
        kept.append(row)
        lengths.append(row.num_tokens)
    if card.too_long:
        logger.warning(
            "%d SFT rows are longer than %s tokens; they are left out (see the data card)",
            len(card.too_long),
            limit,
        )
    if lengths:
        card.token_lengths = {
            "min": min(lengths),
            "mean": round(sum(lengths) / len(lengths), 1),
            "max": max(lengths),
        }
    return kept


def _tokenizer_limit(tokenizer: Any) -> int | None:
    limit = getattr(tokenizer, "model_max_length", None)
    # transformers uses a huge sentinel (1e30) when the model declares no limit.
    return int(limit) if isinstance(limit, int) and limit < 10**9 else None


def _split(rows: list[SFTRow], val_fraction: float, seed: int) -> tuple[list[SFTRow], list[SFTRow]]:
    if val_fraction <= 0 or len(rows) < 2:
        return rows, []
    groups: dict[str, list[SFTRow]] = {}
    for row in rows:
        groups.setdefault(row.example_id or row.key(), []).append(row)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    n_val = max(1, round(len(keys) * val_fraction)) if len(keys) > 1 else 0
    val_keys = set(keys[:n_val])
    train = [r for r in rows if (r.example_id or r.key()) not in val_keys]
    val = [r for r in rows if (r.example_id or r.key()) in val_keys]
    return train, val


def _hash_rows(train: list[SFTRow], val: list[SFTRow]) -> str:
    digest = hashlib.sha256()
    for split, rows in (("train", train), ("val", val)):
        for row in rows:
            digest.update(f"{split}:{row.key()}\n".encode())
    return digest.hexdigest()[:16]


def _features() -> Any:
    from datasets import Features, List, Value

    message = {"role": Value("string"), "content": Value("string")}
    return Features(
        {
            "prompt": List(message),
            "completion": List(message),
            "predictor": Value("string"),
            "example_id": Value("string"),
            "rollout_id": Value("int64"),
            "model": Value("string"),
            "score": Value("float64"),
            "prompt_token_ids": List(Value("int64")),
            "completion_token_ids": List(Value("int64")),
            "num_tokens": Value("int64"),
        }
    )


def _save_dataset_atomically(dataset: Any, target: Path) -> None:
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        dataset.save_to_disk(str(tmp / "d"))
        if target.exists():
            shutil.rmtree(target)
        (tmp / "d").replace(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
