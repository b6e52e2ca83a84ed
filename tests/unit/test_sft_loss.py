"""finetune.sft_loss: the completion-only LM head gives TRL's loss, gradients and metrics, for less work.

A micro Llama, real TRL + PEFT: the same collated batch goes through ``CompletionLossSFTTrainer``'s
``compute_loss`` and through TRL's own (the parent class), and the loss, every LoRA gradient and the
logged entropy / token accuracy must agree; also with the head split into checkpointed chunks, in eval
mode, and in padding-free batches.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sft_helpers import build_micro_model, qa_runs

from finetune import sft_loss
from finetune.config import FinetuneConfig, LoraSettings
from finetune.data import build_sft_data
from finetune.sft import build_sft_trainer


@pytest.fixture(scope="module")
def micro_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_micro_model(tmp_path_factory.mktemp("micro") / "model")


def _setup(model: Path, tmp_path: Path, **overrides):
    data = build_sft_data(qa_runs(24), val_fraction=0.0, seed=0)
    cfg = FinetuneConfig(
        max_steps=1,
        per_device_train_batch_size=6,
        threads=1,
        max_length=256,
        tensorboard=False,
        lora=LoraSettings(r=4, alpha=8),
        **overrides,
    )
    setup = build_sft_trainer(data, cfg, tmp_path / "run", model_path=str(model))
    trainer = setup.trainer
    with torch.no_grad():  # a LoRA that is not zero, so its gradients and the loss depend on it
        for name, param in trainer.model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
    rows = [trainer.train_dataset[i] for i in range(6)]
    return trainer, trainer.data_collator(rows)


def _loss_and_grads(trainer, batch, compute) -> tuple[float, dict[str, torch.Tensor], dict[str, float]]:
    trainer.model.zero_grad(set_to_none=True)
    for values in trainer._metrics.values():
        values.clear()
    loss = compute(trainer.model, dict(batch), num_items_in_batch=None)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items() if k != "num_tokens"}
    return float(loss.detach()), grads, metrics


def _assert_same_as_trl(trainer, batch) -> None:
    trainer.model.train()
    ours = _loss_and_grads(trainer, batch, trainer.compute_loss)
    parent = super(type(trainer), trainer).compute_loss
    theirs = _loss_and_grads(trainer, batch, parent)
    assert ours[0] == pytest.approx(theirs[0], rel=1e-5)
    assert ours[1].keys() == theirs[1].keys() and len(ours[1]) > 0
    for name, grad in ours[1].items():
        torch.testing.assert_close(grad, theirs[1][name], rtol=1e-4, atol=1e-7, msg=name)
    assert ours[2]["entropy"] == pytest.approx(theirs[2]["entropy"], rel=1e-4)
    assert ours[2]["mean_token_accuracy"] == pytest.approx(theirs[2]["mean_token_accuracy"])


def test_completion_only_head_matches_trls_loss_and_lora_gradients(micro_model: Path, tmp_path: Path) -> None:
    trainer, batch = _setup(micro_model, tmp_path)
    assert type(trainer).__name__ == "CompletionLossSFTTrainer"
    assert trainer._completion_path(return_outputs=False)
    _assert_same_as_trl(trainer, batch)


def test_chunked_head_with_recompute_matches_too(
    micro_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer, batch = _setup(micro_model, tmp_path)
    completion_tokens = int((batch["labels"][:, 1:] != -100).sum())
    monkeypatch.setattr(sft_loss, "HEAD_CHUNK_TOKENS", max(1, completion_tokens // 3))  # >= 3 chunks
    _assert_same_as_trl(trainer, batch)


def test_padding_free_batches_match(micro_model: Path, tmp_path: Path) -> None:
    trainer, batch = _setup(micro_model, tmp_path, padding_free=True)
    assert "position_ids" in batch and "attention_mask" not in batch
    _assert_same_as_trl(trainer, batch)


def test_eval_loss_is_trls(micro_model: Path, tmp_path: Path) -> None:
    trainer, batch = _setup(micro_model, tmp_path)
    trainer.model.eval()
    with torch.no_grad():
        ours = float(trainer.compute_loss(trainer.model, dict(batch)))
        theirs = float(super(type(trainer), trainer).compute_loss(trainer.model, dict(batch)))
    assert ours == pytest.approx(theirs, rel=1e-5)


def test_a_batch_without_completion_tokens_gives_a_finite_zero(micro_model: Path, tmp_path: Path) -> None:
    trainer, batch = _setup(micro_model, tmp_path)
    batch = dict(batch)
    batch["labels"] = torch.full_like(batch["labels"], -100)
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    assert float(loss.detach()) == 0.0


def test_training_counts_the_same_tokens_seen(micro_model: Path, tmp_path: Path) -> None:
    trainer, batch = _setup(micro_model, tmp_path)
    trainer.model.train()
    before = trainer._total_train_tokens
    trainer.compute_loss(trainer.model, dict(batch))
    assert trainer._total_train_tokens - before == int(batch["attention_mask"].sum())
