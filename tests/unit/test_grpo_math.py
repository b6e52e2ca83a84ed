"""GRPO maths checked against values computed by hand: advantages, grouping, the loss, clipping."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest

from dspylite.trace import TraceRecord
from rl.batching import make_batch, plan_micro_batches
from rl.groups import build_groups, group_advantages
from rl.loss import grpo_loss

torch = pytest.importorskip("torch")


# ---- advantages ---------------------------------------------------------------------------------


def test_advantages_match_hand_values():
    # mean 1/3, population std sqrt(2/9) = 0.471405
    adv = group_advantages([1.0, 0.0, 0.0], eps=0.0)
    assert adv == pytest.approx([1.414214, -0.707107, -0.707107], abs=1e-6)
    # eps sits in the denominator next to the std
    adv = group_advantages([1.0, 0.0, 0.0, 1.0], eps=1e-4)
    assert adv == pytest.approx([0.5 / 0.5001, -0.5 / 0.5001, -0.5 / 0.5001, 0.5 / 0.5001])


def test_advantages_without_std_scaling_are_centred_rewards():
    assert group_advantages([0.2, 0.6, 1.0], scale_by_std=False) == pytest.approx([-0.4, 0.0, 0.4])


# ---- grouping -----------------------------------------------------------------------------------


@dataclass
class FakeRollout:
    example_key: str
    rollout_id: int
    reward: float
    traces: list = field(default_factory=list)


def _trace(name: str, prompt: list[int] | None = (1, 2), completion: list[int] | None = (3,)) -> TraceRecord:
    return TraceRecord(
        predictor_name=name,
        signature="a -> b",
        inputs={},
        messages=[],
        completion="",
        model="m",
        adapter="chat",
        prompt_token_ids=list(prompt) if prompt is not None else None,
        completion_token_ids=list(completion) if completion is not None else None,
    )


def test_groups_follow_call_index_and_drop_zero_variance_and_singletons():
    # Example "a": rollouts call `loop` 1, 2 and 3 times; `final` once each.
    rollouts = [
        FakeRollout("a", 0, 1.0, [_trace("loop"), _trace("final")]),
        FakeRollout("a", 1, 0.0, [_trace("loop"), _trace("loop"), _trace("final")]),
        FakeRollout("a", 2, 0.5, [_trace("loop"), _trace("loop"), _trace("loop"), _trace("final")]),
        # Example "b": every rollout earns the same reward -> its groups carry no signal.
        FakeRollout("b", 0, 1.0, [_trace("loop"), _trace("final")]),
        FakeRollout("b", 1, 1.0, [_trace("loop"), _trace("final")]),
    ]
    result = build_groups(rollouts, eps=0.0)
    keys = {g.key: g for g in result.groups}
    # a/loop/0 and a/final/0 hold all three rollouts; a/loop/1 only the two that made a second call.
    assert set(keys) == {("a", "loop", 0), ("a", "loop", 1), ("a", "final", 0)}
    assert [s.rollout_id for s in keys[("a", "loop", 1)].samples] == [1, 2]
    assert result.num_groups == 6  # a/loop/0, a/loop/1, a/loop/2, a/final/0, b/loop/0, b/final/0
    assert result.singleton_groups == 1  # a/loop/2: only rollout 2 made a third call
    assert result.zero_variance_groups == 2  # b/loop/0 and b/final/0
    assert result.zero_variance_fraction == pytest.approx(2 / 5)
    adv = {(s.predictor_name, s.call_index, s.rollout_id): s.advantage for s in result.samples}
    # rewards (1, 0, 0.5): mean 0.5, population std sqrt(1/6) = 0.408248
    assert adv[("final", 0, 0)] == pytest.approx(1.224745, abs=1e-6)
    assert adv[("final", 0, 1)] == pytest.approx(-1.224745, abs=1e-6)
    assert adv[("final", 0, 2)] == pytest.approx(0.0, abs=1e-9)
    # the second loop call compares rollouts 1 and 2 only: rewards (0, 0.5) -> -1, +1
    assert adv[("loop", 1, 1)] == pytest.approx(-1.0)
    assert adv[("loop", 1, 2)] == pytest.approx(1.0)
    assert len(result.samples) == 8


def test_second_call_group_uses_only_its_members_rewards():
    rollouts = [
        FakeRollout("a", 0, 1.0, [_trace("p")]),
        FakeRollout("a", 1, 0.0, [_trace("p"), _trace("p")]),
        FakeRollout("a", 2, 1.0, [_trace("p"), _trace("p")]),
    ]
    result = build_groups(rollouts, eps=0.0)
    second = next(g for g in result.groups if g.call_index == 1)
    assert second.rewards == [0.0, 1.0]
    assert [s.advantage for s in second.samples] == pytest.approx([-1.0, 1.0])


def test_unparsed_call_rescued_by_json_fallback_earns_the_format_failure_reward():
    broken = _trace("p")
    broken.error = "Expected to find output fields"
    broken_retry = _trace("p")
    broken_retry.adapter = "json"
    rollouts = [
        # The chat completion did not parse; ChatAdapter's JSON retry answered and the rollout scored 1.
        FakeRollout("a", 0, 1.0, [broken, broken_retry]),
        FakeRollout("a", 1, 1.0, [_trace("p")]),
    ]
    result = build_groups(rollouts, eps=0.0, format_failure_reward=-0.5)
    first = next(g for g in result.groups if g.call_index == 0)
    # Without the rule both members would earn 1.0: a zero-variance group, the broken format unpunished.
    assert first.rewards == [-0.5, 1.0]
    assert [s.advantage for s in first.samples] == pytest.approx([-1.0, 1.0])
    assert result.singleton_groups == 1  # the retry has no peer at call index 1


def test_samples_without_token_ids_are_counted_not_trained():
    rollouts = [
        FakeRollout("a", 0, 1.0, [_trace("p", prompt=None, completion=None)]),
        FakeRollout("a", 1, 0.0, [_trace("p")]),
    ]
    result = build_groups(rollouts)
    assert result.untrainable_samples == 1
    assert [s.rollout_id for s in result.samples] == [1]


def test_predictor_filter_limits_training_but_not_call_indexing():
    rollouts = [
        FakeRollout("a", 0, 1.0, [_trace("x"), _trace("y")]),
        FakeRollout("a", 1, 0.0, [_trace("x"), _trace("y")]),
    ]
    result = build_groups(rollouts, predictors=["y"])
    assert {s.predictor_name for s in result.samples} == {"y"}
    assert len(result.samples) == 2


# ---- loss ---------------------------------------------------------------------------------------


def _loss_inputs():
    ratios = torch.tensor([[1.0, 1.5, 0.7], [0.5, 1.1, 1.0]])
    old = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, -0.9]])
    logps = (old + torch.log(ratios)).clone().requires_grad_(True)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    advantages = torch.tensor([1.0, -0.5])
    return logps, old, mask, advantages


def test_loss_token_mean_and_clipping_match_hand_values():
    logps, old, mask, advantages = _loss_inputs()
    out = grpo_loss(logps, old, advantages, mask, epsilon_low=0.2)
    # sample 0 (A=+1): ratios 1.0, 1.5 -> clipped to 1.2, 0.7 (unclipped: min picks 0.7 < 0.8)
    # sample 1 (A=-0.5): ratio 0.5 -> clipped to 0.8 (-0.4 < -0.25), 1.1 inside; third token masked
    # token mean: (-1.0 - 1.2 - 0.7 + 0.4 + 0.55) / 5 tokens
    assert out.loss.item() == pytest.approx(-1.95 / 5, abs=1e-6)
    assert out.clipped_tokens == 2
    assert out.tokens == 5
    out.loss.backward()
    # d/dlogp of -A * ratio / N where unclipped; zero where the clipped term is active or masked.
    expected = torch.tensor([[-1.0 / 5, 0.0, -0.7 / 5], [0.0, 0.5 * 1.1 / 5, 0.0]])
    assert torch.allclose(logps.grad, expected, atol=1e-6)


def test_loss_sequence_normalisation_matches_hand_value():
    logps, old, mask, advantages = _loss_inputs()
    out = grpo_loss(logps, old, advantages, mask, epsilon_low=0.2, normalization="sequence")
    assert out.loss.item() == pytest.approx(((-2.9 / 3) + (0.95 / 2)) / 2, abs=1e-6)


def test_loss_kl_term_matches_hand_value():
    logps, old, mask, advantages = _loss_inputs()
    ln2 = math.log(2.0)
    delta = torch.tensor([[0.0, ln2, 0.0], [-ln2, 0.0, 5.0]])  # the 5.0 sits on a masked token
    ref = logps.detach() + delta
    out = grpo_loss(logps, old, advantages, mask, ref_logps=ref, beta=0.1, epsilon_low=0.2)
    # k3(ln 2) = 2 - ln2 - 1 = 0.306853; k3(-ln 2) = 0.5 + ln2 - 1 = 0.193147; sum 0.5
    assert out.kl == pytest.approx(0.5, abs=1e-6)
    assert out.loss.item() == pytest.approx((-1.95 + 0.1 * 0.5) / 5, abs=1e-6)
    assert out.policy_loss == pytest.approx(-1.95 / 5, abs=1e-6)


def test_asymmetric_clip_uses_epsilon_high_for_positive_advantages():
    logps, old, mask, advantages = _loss_inputs()
    out = grpo_loss(logps, old, advantages, mask, epsilon_low=0.2, epsilon_high=0.6)
    # 1.5 is now inside [0.8, 1.6]: -1.0 - 1.5 - 0.7 + 0.4 + 0.55
    assert out.loss.item() == pytest.approx(-2.25 / 5, abs=1e-6)
    assert out.clipped_tokens == 1


def test_micro_batches_with_step_normalizer_sum_to_full_batch_loss():
    logps, old, mask, advantages = _loss_inputs()
    full = grpo_loss(logps, old, advantages, mask)
    parts = [
        grpo_loss(logps[i : i + 1], old[i : i + 1], advantages[i : i + 1], mask[i : i + 1], normalizer=5.0)
        for i in range(2)
    ]
    assert sum(p.loss for p in parts).item() == pytest.approx(full.loss.item(), abs=1e-6)


def test_loss_rejects_beta_without_reference():
    logps, old, mask, advantages = _loss_inputs()
    with pytest.raises(ValueError, match="ref_logps"):
        grpo_loss(logps, old, advantages, mask, beta=0.1)


# ---- batching -----------------------------------------------------------------------------------


@dataclass
class Tok:
    prompt_token_ids: list[int]
    completion_token_ids: list[int]
    advantage: float = 0.0


def test_batch_holds_each_prompt_once_and_aligns_completions():
    samples = [Tok([5, 6, 7], [8, 9], 1.0), Tok([5], [4, 3, 2], -1.0), Tok([5, 6, 7], [1], 0.5)]
    batch = make_batch(samples, [0, 1, 2], pad_token_id=0)
    assert batch.prompt_ids.tolist() == [[5, 6, 7], [0, 0, 5]]  # distinct prompts, left-padded
    assert batch.prompt_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch.prompt_positions[1].tolist()[2:] == [0]
    assert batch.prompt_lengths.tolist() == [3, 1]
    assert batch.prompt_index.tolist() == [0, 1, 0]
    assert batch.completion_ids.tolist() == [[8, 9, 0], [4, 3, 2], [1, 0, 0]]
    assert batch.completion_mask.tolist() == [[1, 1, 0], [1, 1, 1], [1, 0, 0]]
    assert batch.advantages.tolist() == [1.0, -1.0, 0.5]
    assert batch.num_tokens == 6


def test_micro_batch_plan_keeps_shared_prompts_together_and_respects_limits():
    shared = [1] * 20
    samples = [Tok(shared, [2] * 3) for _ in range(4)] + [Tok([1] * n, [2] * 3) for n in (10, 2, 7, 30)]
    plan = plan_micro_batches(samples, max_tokens=60, max_rows=4)
    assert sorted(i for b in plan for i in b) == list(range(8))
    assert any(set(range(4)) <= set(b) for b in plan)  # the four completions of one prompt share a batch
    for b in plan:
        assert len(b) <= 4
        if len({tuple(samples[i].prompt_token_ids) for i in b}) > 1:
            prompts = {tuple(samples[i].prompt_token_ids) for i in b}
            cost = len(prompts) * max(len(p) for p in prompts) + len(b) * 3
            assert cost <= 60


def test_shared_prompt_logprobs_and_gradients_equal_separate_sequences():
    transformers = pytest.importorskip("transformers")
    from rl.loss import completion_logprobs

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        head_dim=16,
        max_position_embeddings=64,
    )
    model = transformers.LlamaForCausalLM(config).eval()
    samples = [
        Tok([5, 6, 7, 11], [8, 9], 1.0),
        Tok([5, 12], [4, 3, 2], -1.0),
        Tok([5, 6, 7, 11], [9, 9, 9, 9], 0.5),
        Tok([5, 12], [7], -0.5),
    ]
    batch = make_batch(samples, range(len(samples)), pad_token_id=0)
    batched = completion_logprobs(model, batch, temperature=0.7)
    (batched * batch.completion_mask * batch.advantages.unsqueeze(1)).sum().backward()
    shared_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    total = 0.0
    for row, sample in enumerate(samples):
        ids = torch.tensor([sample.prompt_token_ids + sample.completion_token_ids])
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float() / 0.7, dim=-1)
        p = len(sample.prompt_token_ids)
        expected = torch.stack([logp[p - 1 + t, tok] for t, tok in enumerate(sample.completion_token_ids)])
        got = batched[row, : len(expected)].detach()
        assert got.tolist() == pytest.approx(expected.detach().tolist(), abs=1e-4)
        total = total + (expected * sample.advantage).sum()
    total.backward()
    for name, param in model.named_parameters():
        assert torch.allclose(param.grad, shared_grads[name], atol=1e-5), name


def test_learning_rate_schedules_match_hand_values():
    from rl.config import GRPOConfig, learning_rate_at

    linear = GRPOConfig(num_steps=4, learning_rate=1.0)
    assert [learning_rate_at(linear, s) for s in (1, 2, 3, 4)] == pytest.approx([1.0, 0.75, 0.5, 0.25])
    constant = GRPOConfig(num_steps=4, learning_rate=1.0, lr_scheduler_type="constant")
    assert [learning_rate_at(constant, s) for s in (1, 4)] == [1.0, 1.0]
    cosine = GRPOConfig(num_steps=4, learning_rate=1.0, lr_scheduler_type="cosine")
    assert learning_rate_at(cosine, 3) == pytest.approx(0.5)
    warm = GRPOConfig(num_steps=10, learning_rate=1.0, warmup_ratio=0.2)  # 2 warmup steps
    assert [learning_rate_at(warm, s) for s in (1, 2, 3)] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert learning_rate_at(warm, 10) == pytest.approx(1.0 - 7 / 8)


def test_unknown_lr_schedule_is_rejected_by_name():
    from rl.config import GRPOConfig

    with pytest.raises(ValueError, match="lr_scheduler_type"):
        GRPOConfig(lr_scheduler_type="step")
