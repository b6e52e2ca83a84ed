"""dspylite.activity: exclusive wall time per (stage, activity), recorded on the main thread only."""

from __future__ import annotations

import threading
import time

import pytest

from dspylite import activity
from dspylite.utils.parallel import parallel_map


@pytest.fixture(autouse=True)
def clean():
    activity.reset()
    yield
    activity.reset()


class FakeClock:
    """A clock that moves only when a test says so: exact figures, none of a busy machine's noise."""

    def __init__(self) -> None:
        self.now = 0.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(activity, "_clock", fake)
    return fake


def test_nested_activities_take_their_time_out_of_the_enclosing_one(clock: FakeClock) -> None:
    with activity.stage("sft"):
        with activity.activity("training"):
            clock.sleep(0.05)
            with activity.activity("adapter sync"):
                clock.sleep(0.03)
        clock.sleep(0.02)
    sft = activity.breakdown()["sft"]
    assert sft["adapter sync"] == pytest.approx(0.03)
    assert sft["training"] == pytest.approx(0.05)
    assert sft["other"] == pytest.approx(0.02)
    assert sum(sft.values()) == pytest.approx(0.10)  # the stage's wall time, exactly split


def test_a_default_label_yields_to_a_specific_one_but_counts_on_its_own(clock: FakeClock) -> None:
    with activity.stage("prompt"):
        parallel_map(lambda _: clock.sleep(0.02), range(2), num_threads=2)  # "program runs"
        with activity.activity("evaluation"):
            parallel_map(lambda _: clock.sleep(0.5), range(2), num_threads=2)
    prompt = activity.breakdown()["prompt"]
    assert prompt["program runs"] == pytest.approx(0.04) and prompt["evaluation"] == pytest.approx(1.0)
    assert prompt.get("other", 0.0) == pytest.approx(0.0)


def test_other_threads_record_nothing() -> None:
    def work() -> None:
        with activity.stage("thread"), activity.activity("training"):
            time.sleep(0.01)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert activity.breakdown() == {}


def test_table_rows_give_minutes_per_stage_a_total_and_shares() -> None:
    rows = activity.table_rows({"": {"server start": 60.0}, "sft": {"training": 120.0, "other": 60.0}})
    assert [r["stage"] for r in rows] == ["setup", "sft", "total", "share"]
    assert rows[1]["training"] == "2.0" and rows[1]["total"] == "3.0"
    assert rows[2]["total"] == "4.0" and rows[3]["training"] == "50%" and rows[3]["server start"] == "25%"
    assert list(rows[0])[1:] == ["server start", "training", "other", "total"]  # the fixed column order


def test_breakdown_adds_an_interrupted_runs_time_to_this_ones(clock: FakeClock) -> None:
    with activity.stage("sft"), activity.activity("training"):
        clock.sleep(0.02)
    earlier = {"baseline": {"evaluation": 60.0}, "sft": {"training": 10.0, "program runs": 5.0}}
    totals = activity.breakdown(earlier)
    assert totals["baseline"] == {"evaluation": 60.0}
    assert totals["sft"]["program runs"] == 5.0 and totals["sft"]["training"] == pytest.approx(10.02)
    assert earlier["sft"]["training"] == 10.0  # the argument is not modified
    assert activity.breakdown()["sft"]["training"] == pytest.approx(0.02)


def test_bootstrap_teacher_runs_count_as_program_runs() -> None:
    import dspylite as dspy
    from dspylite.teleprompt import BootstrapFewShot
    from dspylite.utils.dummy_lm import DummyLM

    lm = DummyLM({"2+2": {"answer": "4"}, "3+3": {"answer": "6"}})
    trainset = [
        dspy.Example(question=q, answer=a).with_inputs("question") for q, a in [("2+2", "4"), ("3+3", "6")]
    ]
    with activity.stage("prompt"):
        BootstrapFewShot(metric=lambda e, p, t=None: True, max_bootstrapped_demos=2).compile(
            dspy.Predict("question -> answer", lm=lm), trainset=trainset
        )
    assert activity.breakdown()["prompt"].get("program runs", 0.0) > 0.0
