"""The replacement CPU LoRA ops in serving/_vllm_entry.py (torch only; vLLM is not imported)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from serving import _vllm_entry  # noqa: E402


def _reference(inputs, weights, indices):  # noqa: ANN001, ANN202
    """What a LoRA op must compute: each row's own adapter, nothing for index -1."""
    rows = []
    for row, index in zip(inputs, indices.tolist(), strict=True):
        rows.append(torch.zeros(weights.shape[-2]) if index < 0 else weights[index, 0] @ row)
    return torch.stack(rows)


def _weights(slots: int = 3, out: int = 4, width: int = 5):  # noqa: ANN202
    torch.manual_seed(0)
    return torch.randn(slots, 1, out, width)


def test_shrink_gives_no_delta_to_rows_without_an_adapter() -> None:
    weights, inputs = _weights(), torch.randn(4, 5)
    indices = torch.tensor([0, -1, 2, -1])
    out = torch.full((4, 4), 7.0)
    _vllm_entry.bgmv_shrink(inputs, weights, out, indices, 0.5)
    assert torch.allclose(out, 0.5 * _reference(inputs, weights, indices), atol=1e-6)
    assert torch.all(out[1] == 0) and torch.all(out[3] == 0)


@pytest.mark.parametrize("add_inputs", [True, False])
def test_expand_adds_nothing_for_rows_without_an_adapter(add_inputs: bool) -> None:
    weights, inputs = _weights(), torch.randn(3, 5)
    indices = torch.tensor([-1, 1, -1])
    base = torch.randn(3, 4)
    out = base.clone()
    _vllm_entry.bgmv_expand(inputs, weights, out, indices, add_inputs)
    expected = (base if add_inputs else 0) + _reference(inputs, weights, indices)
    assert torch.allclose(out, expected, atol=1e-6)
    if add_inputs:
        assert torch.equal(out[0], base[0]) and torch.equal(out[2], base[2])


def test_expand_slice_writes_only_its_slice() -> None:
    weights, inputs = _weights(out=2), torch.randn(2, 5)
    indices = torch.tensor([2, -1])
    base = torch.randn(2, 6)
    out = base.clone()
    _vllm_entry.bgmv_expand_slice(inputs, weights, out, indices, 3, 2, True)
    assert torch.equal(out[:, :3], base[:, :3]) and torch.equal(out[:, 5:], base[:, 5:])
    assert torch.allclose(out[0, 3:5], base[0, 3:5] + weights[2, 0] @ inputs[0], atol=1e-6)
    assert torch.equal(out[1], base[1])


def test_probe_tells_buggy_ops_from_fixed_ones() -> None:
    def buggy_shrink(inputs, weights, output, indices, scaling=1.0):  # noqa: ANN001, ANN202
        selected = weights[indices].squeeze(1)  # -1 wraps around to the last slot
        output[:, : selected.shape[1]] = scaling * torch.einsum("bi, boi -> bo", inputs, selected)

    assert _vllm_entry.ops_are_affected(buggy_shrink)
    assert not _vllm_entry.ops_are_affected(_vllm_entry.bgmv_shrink)


@pytest.mark.parametrize(
    "indices",
    [
        [1, 1, 1, 1, 1, 1],  # one adapter for the whole batch: a single matmul
        [-1, -1, -1, -1, -1, -1],  # base model only
        [2, -1, 0, 2, 0, -1],  # mixed: grouped by slot, rows keep their order
    ],
)
def test_grouped_delta_equals_the_per_row_reference(indices: list[int]) -> None:
    weights, inputs = _weights(out=7, width=5), torch.randn(6, 5)
    index = torch.tensor(indices)
    delta = _vllm_entry._lora_delta(inputs, weights, index, torch.float32)
    assert delta.shape == (6, 7)
    assert torch.allclose(delta, _reference(inputs, weights, index), atol=1e-5)


def test_grouped_delta_casts_to_the_output_dtype() -> None:
    weights, inputs = _weights(), torch.randn(3, 5)
    delta = _vllm_entry._lora_delta(inputs, weights, torch.tensor([0, -1, 0]), torch.bfloat16)
    assert delta.dtype == torch.bfloat16
    expected = _reference(inputs, weights, torch.tensor([0, -1, 0]))
    assert torch.allclose(delta.float(), expected, atol=5e-2)
