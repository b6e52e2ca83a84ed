"""A custom program for the README's quick start: route a support ticket to a team.

    dspylite eval configs/eval.yaml model=smollm2-135m-instruct task.name=custom \
        task.program=examples.my_task.program:Triage task.metric=examples.my_task.program:team_match \
        task.dataset=examples/my_task/data.jsonl task.inputs=[ticket] lm.adapter=json lm.max_tokens=32

or, with the same keys from a file, any job: `dspylite JOB examples/my_task/task.yaml`. Each row of
data.jsonl holds the input (`ticket`) and the label (`team`); the job holds out a quarter as dev and a
quarter as test (task.dev_fraction, task.test_fraction).
"""

from typing import Literal

import dspylite as dspy


class RouteTicket(dspy.Signature):
    """Route a customer support ticket to the team that handles it."""

    ticket: str = dspy.InputField()
    team: Literal["billing", "shipping", "account", "technical"] = dspy.OutputField()


class Triage(dspy.Module):
    def __init__(self):
        super().__init__()
        self.route = dspy.Predict(RouteTicket)

    def forward(self, ticket):
        return self.route(ticket=ticket)


def team_match(example, prediction, trace=None):
    """1.0 when the predicted team is the labelled one."""
    return float(prediction.team == example.team)
