"""LoRA SFT (finetune.sft) on a micro Llama built in the test: label masking, adapter files, bad input.

Real TRL + PEFT, a few optimizer steps, no vLLM. The vLLM side is in tests/integration/test_finetune_vllm.py.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from sft_helpers import build_micro_model, qa_runs

from dspylite.errors import TrainingError
from finetune.config import FinetuneConfig, LoraSettings
from finetune.data import build_sft_data
from finetune.sft import (
    METADATA_FILE,
    build_sft_trainer,
    epochs_for,
    latest_checkpoint,
    linear_module_names,
    train_lora,
)


@pytest.fixture(scope="module")
def micro_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_micro_model(tmp_path_factory.mktemp("micro") / "model")


def config(**overrides) -> FinetuneConfig:
    base = {
        "max_steps": 2,
        "per_device_train_batch_size": 4,
        "logging_steps": 1,
        "save_steps": 2,
        "threads": 1,
        "max_length": 256,
        "learning_rate": 1e-2,
        "lora": LoraSettings(r=4, alpha=8),
    }
    return FinetuneConfig(**{**base, **overrides})


def _check_batch_masks_prompts(setup, data, tokenizer) -> None:
    rows = data.train[:4]
    collator = setup.trainer.data_collator
    prepared = [setup.trainer.train_dataset[i] for i in range(4)]
    batch = collator(prepared)
    labels, input_ids = batch["labels"], batch["input_ids"]
    if "position_ids" in batch:  # padding-free: one flattened row; split it at position 0
        starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist() + [labels.shape[1]]
        segments = [(labels[0, a:b], input_ids[0, a:b]) for a, b in zip(starts[:-1], starts[1:], strict=True)]
    else:
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        segments = [(labels[i, :n], input_ids[i, :n]) for i, n in enumerate(lengths)]
    assert len(segments) == 4
    for row, (seg_labels, seg_ids) in zip(rows, segments, strict=True):
        prompt_len = len(
            tokenizer.apply_chat_template(
                row.prompt, add_generation_prompt=True, tokenize=True, return_dict=False
            )
        )
        assert (seg_labels[:prompt_len] == -100).all(), "a prompt token carries a label"
        assert (seg_labels[prompt_len:] == seg_ids[prompt_len:]).all(), "a completion token is masked"
        trained = tokenizer.decode(seg_ids[prompt_len:].tolist())
        assert trained.startswith(row.completion[0]["content"])
        assert "<|im_end|>" in trained  # the model learns to stop


@pytest.mark.parametrize("padding_free", [False, True])
def test_collated_batches_carry_minus_100_on_every_prompt_token(
    micro_model: Path, tmp_path: Path, padding_free: bool
) -> None:
    from transformers import AutoTokenizer

    data = build_sft_data(qa_runs(12), val_fraction=0.0)
    setup = build_sft_trainer(
        data,
        config(padding_free=padding_free, group_by_length=False),
        tmp_path / "run",
        model_path=micro_model,
    )
    _check_batch_masks_prompts(setup, data, AutoTokenizer.from_pretrained(micro_model))


def test_train_lora_saves_a_safetensors_adapter_with_metadata_that_peft_loads(
    micro_model: Path, tmp_path: Path
) -> None:
    data = build_sft_data(qa_runs(24), val_fraction=0.25)
    result = train_lora(data, config(max_steps=3), tmp_path / "run", model_path=micro_model)
    path = Path(result.path)
    assert path == tmp_path / "run" / "adapters" / "sft-1"
    assert (path / "adapter_model.safetensors").is_file()
    adapter_config = json.loads((path / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(micro_model.resolve())
    assert adapter_config["r"] == 4
    meta = json.loads((path / METADATA_FILE).read_text())
    assert meta["base_model"] == str(micro_model.resolve())
    assert meta["data_hash"] == data.data_hash == result.data_hash
    assert meta["config"]["lora"]["r"] == 4
    assert meta["metrics"]["global_step"] == 3 and "eval_loss" in meta["metrics"]
    assert result.metrics["train_tokens"] > 0 and result.metrics["train_tokens_per_second"] > 0
    # metrics as JSONL and TensorBoard
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r.get("phase") == "sft" and "loss" in r] == [1, 2, 3]
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    # no leftovers of the temp-dir-then-rename write
    assert [p.name for p in (tmp_path / "run" / "adapters").iterdir()] == ["sft-1"]

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(micro_model), str(path))
    assert any("lora_A" in name for name, _ in tuned.named_parameters())

    assert meta["precision"] == {
        "train_dtype": "float32",
        "serving_dtype": None,
        "match": None,
        "note": "trained in float32; the serving precision was not recorded",
    }

    second = train_lora(
        data,
        config(max_steps=3, learning_rate=5e-3),
        tmp_path / "run",
        model_path=micro_model,
        serving_dtype="bfloat16",
    )
    assert second.name == "sft-2" and second.path != result.path
    precision = json.loads((Path(second.path) / METADATA_FILE).read_text())["precision"]
    assert precision["serving_dtype"] == "bfloat16" and precision["match"] is False


def test_unknown_target_module_is_refused_before_training_and_lists_the_linear_modules(
    micro_model: Path, tmp_path: Path
) -> None:
    data = build_sft_data(qa_runs(8), val_fraction=0.0)
    cfg = config(lora=LoraSettings(r=4, target_modules=["q_proj", "c_attn"]))
    with pytest.raises(TrainingError, match=r"\['c_attn'\] not found.*'down_proj'.*'q_proj'"):
        train_lora(data, cfg, tmp_path / "run", model_path=micro_model)
    assert not (tmp_path / "run" / "adapters").exists()


def test_linear_module_names_of_a_llama(micro_model: Path) -> None:
    from transformers import AutoModelForCausalLM

    names = linear_module_names(AutoModelForCausalLM.from_pretrained(micro_model))
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= set(names)


def test_empty_data_is_refused(micro_model: Path, tmp_path: Path) -> None:
    empty = build_sft_data(qa_runs(0))
    with pytest.raises(TrainingError, match="trainset is empty"):
        train_lora(empty, config(), tmp_path / "run", model_path=micro_model)
    filtered = build_sft_data([*qa_runs(3)], metric_threshold=2.0)
    with pytest.raises(TrainingError, match=r"0/3 runs passed"):
        train_lora(filtered, config(), tmp_path / "run", model_path=micro_model)


def test_a_messages_dataset_is_refused_because_trl_would_train_on_the_prompt(
    micro_model: Path, tmp_path: Path
) -> None:
    from datasets import Dataset

    rows = build_sft_data(qa_runs(4), val_fraction=0.0).train
    messages = Dataset.from_list([{"messages": r.prompt + r.completion} for r in rows])
    with pytest.raises(TrainingError, match="lacks the 'prompt' column"):
        train_lora(messages, config(), tmp_path / "run", model_path=micro_model)


def test_a_full_disk_becomes_a_training_error_naming_the_directory(
    micro_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from peft import PeftModel

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    data = build_sft_data(qa_runs(8), val_fraction=0.0)
    # while checkpointing
    monkeypatch.setattr(PeftModel, "save_pretrained", full)
    with pytest.raises(TrainingError, match=r"disk full while writing to .*run/checkpoints/sft-"):
        train_lora(data, config(max_steps=1), tmp_path / "run", model_path=micro_model)
    monkeypatch.undo()
    # while writing the adapter itself: nothing half-written is left behind
    monkeypatch.setattr("dspylite.utils.io._fsync_file", lambda path: full(None))
    with pytest.raises(TrainingError, match=r"disk full while writing to .*run/adapters"):
        train_lora(
            data, config(max_steps=1, save_steps=100, resume=False), tmp_path / "run", model_path=micro_model
        )
    assert list((tmp_path / "run" / "adapters").iterdir()) == []  # no .tmp-* leftover either


def test_an_interrupted_run_resumes_from_its_last_checkpoint(micro_model: Path, tmp_path: Path) -> None:
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt("simulated kill")

    data = build_sft_data(qa_runs(24), val_fraction=0.0)
    cfg = config(max_steps=4, save_steps=2)
    with pytest.raises(KeyboardInterrupt):
        train_lora(data, cfg, tmp_path / "run", model_path=micro_model, callbacks=[Crash()])
    assert not (tmp_path / "run" / "adapters").exists() or not list((tmp_path / "run" / "adapters").iterdir())
    checkpoints = list((tmp_path / "run" / "checkpoints").iterdir())
    assert len(checkpoints) == 1
    assert latest_checkpoint(checkpoints[0]).endswith("checkpoint-2")

    result = train_lora(data, cfg, tmp_path / "run", model_path=micro_model)
    assert result.resumed_from is not None and result.resumed_from.endswith("checkpoint-2")
    assert result.metrics["global_step"] == 4
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r["step"] for r in steps if r.get("phase") == "sft" and "loss" in r]
    # steps 1-2 ran once (before the kill); the kill came before step 3 was logged; 3-4 ran after the resume
    assert logged == [1, 2, 3, 4]


def test_changed_data_does_not_resume_from_another_runs_checkpoint(micro_model: Path, tmp_path: Path) -> None:
    cfg = config(max_steps=2, save_steps=1)
    train_lora(
        build_sft_data(qa_runs(8, seed=1), val_fraction=0.0), cfg, tmp_path / "run", model_path=micro_model
    )
    other = train_lora(
        build_sft_data(qa_runs(8, seed=2), val_fraction=0.0), cfg, tmp_path / "run", model_path=micro_model
    )
    assert other.resumed_from is None


def test_latest_checkpoint_skips_an_incomplete_one(tmp_path: Path) -> None:
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-4").mkdir()  # killed while writing: no trainer_state.json yet
    assert latest_checkpoint(tmp_path).endswith("checkpoint-2")
    assert latest_checkpoint(tmp_path / "missing") is None


def test_few_rows_get_more_epochs_so_min_steps_run() -> None:
    cfg = FinetuneConfig(num_train_epochs=2, min_steps=100, per_device_train_batch_size=16)
    assert epochs_for(cfg, 160) == 10  # 10 steps per epoch
    assert epochs_for(cfg, 10_000) == 2  # plenty of rows: the configured epochs
    assert epochs_for(FinetuneConfig(min_steps=0), 160) == 2.0
    assert epochs_for(FinetuneConfig(max_steps=7), 160) == 2.0  # max_steps decides; epochs are ignored
