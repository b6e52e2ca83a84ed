"""The SFT loss computed on completion positions only: the LM head never sees a prompt or padding token.

TRL's ``SFTTrainer`` (1.16) scores through a chunked, fused LM head that, on devices without Triton
(every CPU), runs over *every* position of the padded batch (its "compact" mode is Triton-only) and
folds each ``tokens x 32k`` logits tile with about eight elementwise passes for the log-prob, the
entropy and the top-1 flag. With a 49k-token vocabulary and rows that are mostly prompt (SmolLM2 on
the demo's rows: ~10% of the tokens are completion), that head costs more than the 30 layers under it.

``CompletionLossSFTTrainer.compute_loss`` runs the backbone, picks the hidden states whose next-token
label is not -100, and projects only those through the LM head. The loss is the same (the summed
negative log-likelihood over completion tokens, divided by ``num_items_in_batch`` when the Trainer
gives it, else by the batch's completion tokens), and so are the logged ``entropy`` and
``mean_token_accuracy`` (over the same valid positions). Anything this path does not cover (several
processes, a custom ``compute_loss_func``, label smoothing, another ``loss_type``, MoE aux losses,
``return_outputs``) goes to TRL's own ``compute_loss`` unchanged.
"""

from __future__ import annotations

from typing import Any

# Completion positions projected through the LM head at once; longer batches are split and each
# chunk's logits recomputed in the backward pass (torch.utils.checkpoint), so memory stays bounded.
HEAD_CHUNK_TOKENS = 2048


def completion_nll(hidden: Any, weight: Any, bias: Any, targets: Any) -> tuple[Any, Any, Any]:
    """(summed NLL with grad, per-position entropy, per-position top-1 flag) for ``hidden`` (K, H)
    projected by ``weight`` (V, H) and scored against ``targets`` (K,)."""
    import torch
    from torch.nn import functional as F

    def chunk_nll(h: Any, t: Any) -> Any:
        logits = F.linear(h, weight, bias).float()
        return F.cross_entropy(logits, t, reduction="sum")

    total = hidden.new_zeros((), dtype=torch.float32)
    entropies, top1 = [], []
    for start in range(0, hidden.shape[0], HEAD_CHUNK_TOKENS):
        h, t = hidden[start : start + HEAD_CHUNK_TOKENS], targets[start : start + HEAD_CHUNK_TOKENS]
        if hidden.shape[0] <= HEAD_CHUNK_TOKENS or not torch.is_grad_enabled():
            total = total + chunk_nll(h, t)
        else:
            from torch.utils.checkpoint import checkpoint

            total = total + checkpoint(chunk_nll, h, t, use_reentrant=False)
        with torch.no_grad():  # the metrics TRL logs, on the same positions
            logits = F.linear(h.detach(), weight, bias).float()
            logp = torch.log_softmax(logits, dim=-1)
            entropies.append(-(logp.exp() * logp).sum(-1))
            top1.append(logits.argmax(-1) == t)
    if not entropies:  # no completion token in the batch: a differentiable zero
        return hidden.sum() * 0.0, hidden.new_zeros(0), hidden.new_zeros(0, dtype=torch.bool)
    return total, torch.cat(entropies), torch.cat(top1)


def completion_loss_trainer_class() -> type:
    """TRL's ``SFTTrainer`` with ``compute_loss`` on completion positions (imported lazily: trl is heavy)."""
    import torch
    from trl import SFTTrainer

    class CompletionLossSFTTrainer(SFTTrainer):
        """``SFTTrainer`` whose loss projects only completion positions through the LM head."""

        def _completion_path(self, return_outputs: bool) -> bool:
            return (
                not return_outputs
                and self.accelerator.num_processes == 1
                and self.compute_loss_func is None
                and self.label_smoother is None
                and getattr(self.args, "loss_type", "nll") == "nll"
                and not getattr(self, "aux_loss_enabled", False)
                and hasattr(self, "_metrics")  # the bookkeeping of the TRL versions this mirrors
                and hasattr(self, "_total_train_tokens")
            )

        def compute_loss(
            self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            if not self._completion_path(return_outputs) or "labels" not in inputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            mode = "train" if self.model.training else "eval"
            causal_lm = self.accelerator.unwrap_model(model)
            if hasattr(causal_lm, "get_base_model"):  # PEFT: its LoRA layers live inside the base model
                causal_lm = causal_lm.get_base_model()
            backbone_inputs = {k: v for k, v in inputs.items() if k != "labels"}
            backbone_inputs["use_cache"] = False
            hidden = causal_lm.base_model(**backbone_inputs).last_hidden_state
            labels = inputs["labels"][:, 1:]
            mask = labels != -100
            head = causal_lm.get_output_embeddings()
            nll, entropy, top1 = completion_nll(hidden[:, :-1][mask], head.weight, head.bias, labels[mask])
            denominator = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
            loss = nll / torch.as_tensor(denominator, device=nll.device)

            valid = int(mask.sum())
            metrics = self._metrics[mode]
            metrics["entropy"].append(float(entropy.sum()) / valid if valid else 0.0)
            metrics["mean_token_accuracy"].append(float(top1.sum()) / valid if valid else 0.0)
            if mode == "train":
                if "attention_mask" in inputs:
                    seen = int(inputs["attention_mask"].sum())
                else:  # padding-free: one row holding every real token
                    seen = int(inputs["position_ids"].size(1))
                self._total_train_tokens += seen
            metrics["num_tokens"] = [self._total_train_tokens]
            return loss

    return CompletionLossSFTTrainer
