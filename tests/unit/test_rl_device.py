"""GRPO batches follow the policy's device (a GPU in the GPU check), built on CPU first."""

from __future__ import annotations

from dataclasses import dataclass

from rl.batching import make_batch


@dataclass
class Tok:
    prompt_token_ids: list[int]
    completion_token_ids: list[int]
    advantage: float = 0.0


def test_batch_moves_every_tensor_and_keeps_the_rest() -> None:
    samples = [Tok([5, 6, 7], [8, 9], 1.0), Tok([5], [4, 3, 2], -1.0)]
    batch = make_batch(samples, [0, 1], pad_token_id=0)
    moved = batch.to("meta")  # a device with no storage: proves each tensor went, on any machine
    tensors = [name for name, value in vars(moved).items() if hasattr(value, "device")]
    assert len(tensors) == 8 and all(getattr(moved, name).device.type == "meta" for name in tensors)
    assert moved.sample_indices == [0, 1]
    assert batch.completion_ids.device.type == "cpu"  # the original is untouched
    assert moved.completion_ids.shape == batch.completion_ids.shape
