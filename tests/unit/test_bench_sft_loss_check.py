"""The SFT bench's loss check: speed counts only when the two trainers' held-out losses agree."""

from bench.sft import losses_agree


def test_one_seed_each_far_apart_disagrees() -> None:
    agree, text = losses_agree([0.0282], [0.0195])
    assert not agree
    assert "44.6% apart" in text


def test_means_within_tolerance_agree() -> None:
    agree, text = losses_agree([0.0282, 0.0098], [0.0195, 0.0218])
    assert agree
    assert "within 15%" in text


def test_gap_inside_the_seed_spread_agrees() -> None:
    # 29% apart in the mean, but one side's two seeds are further apart than the two means
    agree, text = losses_agree([0.030, 0.010], [0.015, 0.016])
    assert agree
    assert "inside the seed spread" in text


def test_gap_outside_the_seed_spread_disagrees() -> None:
    agree, text = losses_agree([0.030, 0.031], [0.015, 0.016])
    assert not agree
    assert "seed-to-seed standard deviation" in text
