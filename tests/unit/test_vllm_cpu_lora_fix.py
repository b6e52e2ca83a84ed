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


def test_slot_groups_name_each_slot_once_and_leave_out_rows_without_an_adapter() -> None:
    assert _vllm_entry.slot_groups(torch.tensor([3, 3, 3])) == [(3, None)]
    assert _vllm_entry.slot_groups(torch.tensor([-1, -1])) == []
    assert _vllm_entry.slot_groups(torch.tensor([], dtype=torch.long)) == []
    groups = _vllm_entry.slot_groups(torch.tensor([2, -1, 0, 2]))
    assert [(slot, rows.tolist()) for slot, rows in groups] == [(0, [2]), (2, [0, 3])]


# ---- the grouped add_lora_linear against vLLM's own, on vLLM's CPU punica wrapper ---------------------------


@pytest.fixture(scope="module")
def punica_cpu():  # noqa: ANN201
    return pytest.importorskip("vllm.lora.punica_wrapper.punica_cpu")


def _wrapper(punica_cpu, indices: list[int], prefill: bool):  # noqa: ANN001, ANN202
    wrapper = punica_cpu.PunicaWrapperCPU(max_num_batched_tokens=64, max_batches=16, device="cpu")
    n = len(indices)
    wrapper._token_lora_indices[:n].copy_(torch.tensor(indices))
    wrapper.indices_len = [n, n, n, n]
    if prefill:
        wrapper._update_prefill_metadata(wrapper.token_lora_indices)
    wrapper.is_prefill = prefill
    return wrapper


def _linear_case(rows: int, dtype: torch.dtype):  # noqa: ANN202
    """A q/k/v-like layer: three slices of different widths, 4 adapter slots, rank 8."""
    torch.manual_seed(1)
    slices, width, rank = (12, 4, 4), 10, 8
    a = tuple(torch.randn(4, 1, rank, width, dtype=dtype) for _ in slices)
    b = tuple(torch.randn(4, 1, size, rank, dtype=dtype) for size in slices)
    return (
        torch.randn(rows, width, dtype=dtype),
        a,
        b,
        slices,
        torch.randn(rows, sum(slices) + 3, dtype=dtype),
    )


@pytest.mark.parametrize("prefill", [False, True])
@pytest.mark.parametrize(
    "indices",
    [[1, 1, 1, 1, 1], [-1, -1, -1, -1, -1], [2, -1, 0, 2, 3], [3, 3, -1, -1, 0]],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("scale", [1.0, 0.5])  # vLLM's linear layers pass 1.0 (the scaling is in B)
def test_grouped_add_lora_linear_equals_vllms_with_the_fixed_ops(
    punica_cpu,
    monkeypatch: pytest.MonkeyPatch,
    indices: list[int],
    prefill: bool,
    dtype: torch.dtype,
    scale: float,
) -> None:
    import importlib

    ops = importlib.import_module("vllm.lora.ops.torch_ops.lora_ops")  # sgmv_* call bgmv_* from here
    for name, function in _vllm_entry._FIXED.items():  # the reference: vLLM's wrapper on the fixed ops
        monkeypatch.setattr(punica_cpu, name, function)
        monkeypatch.setattr(ops, name, function)
    original = punica_cpu.PunicaWrapperCPU.add_lora_linear
    grouped = _vllm_entry.grouped_add_lora_linear(original)
    x, a, b, slices, y = _linear_case(len(indices), dtype)
    expected, actual = y.clone(), y.clone()
    original(_wrapper(punica_cpu, indices, prefill), expected, x, a, b, scale, slices)
    grouped(_wrapper(punica_cpu, indices, prefill), actual, x, a, b, scale, slices)
    tolerance = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 5e-2}
    torch.testing.assert_close(actual, expected, **tolerance)
    assert torch.equal(actual[:, sum(slices) :], y[:, sum(slices) :])  # columns past the slices untouched
    for row, index in enumerate(indices):
        if index < 0:  # rows without an adapter keep the base output exactly
            assert torch.equal(actual[row], y[row])


def test_grouped_add_lora_linear_regroups_after_the_step_changes(punica_cpu) -> None:
    original = punica_cpu.PunicaWrapperCPU.add_lora_linear
    grouped = _vllm_entry.grouped_add_lora_linear(original)
    wrapper = _wrapper(punica_cpu, [1, 1, 1], prefill=False)
    x, a, b, slices, y = _linear_case(3, torch.float32)
    grouped(wrapper, y.clone(), x, a, b, 1.0, slices)
    assert wrapper._dspylite_slot_groups == [(1, None)]

    def update(self, new):  # noqa: ANN001, ANN202 - stands in for vLLM's update_metadata
        self._token_lora_indices[:3].copy_(torch.tensor(new))

    _vllm_entry.regroup_on_update(update)(wrapper, [-1, -1, -1])
    out = y.clone()
    grouped(wrapper, out, x, a, b, 1.0, slices)
    assert torch.equal(out, y)  # the new step has no adapter rows: nothing added


def test_calls_the_grouping_does_not_cover_go_to_vllms_own(punica_cpu) -> None:
    calls = []

    def original(self, y, x, a, b, scale, slices, *, buffer=None, **kwargs):  # noqa: ANN001, ANN202
        calls.append((buffer, kwargs))

    grouped = _vllm_entry.grouped_add_lora_linear(original)
    x, a, b, slices, y = _linear_case(3, torch.float32)
    grouped(_wrapper(punica_cpu, [1, 1, 1], False), y, x, a, b, 1.0, slices, buffer=(1,))
    grouped(_wrapper(punica_cpu, [1, 1, 1], False), y, x, a, b, 1.0, slices, add_inputs=False)
    grouped(_wrapper(punica_cpu, [1, 1], False), y, x, a, b, 1.0, slices)  # rows != indices
    assert len(calls) == 3


def test_the_grouped_linear_installs_once_on_the_wrapper_class(punica_cpu, monkeypatch) -> None:
    cls = punica_cpu.PunicaWrapperCPU
    monkeypatch.setattr(cls, "add_lora_linear", cls.add_lora_linear)
    monkeypatch.setattr(cls, "update_metadata", cls.update_metadata)
    assert _vllm_entry.apply_grouped_linear(punica_cpu)
    assert cls.add_lora_linear._dspylite and not _vllm_entry.apply_grouped_linear(punica_cpu)
