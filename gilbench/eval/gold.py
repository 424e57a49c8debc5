"""The ``gold`` judge: the chitchat tasks' documented preference function (gilbench/data/chitchat_preference.py).

A task with a known preference function registers its gold judge here, beside the other judges, calling the
function its data module documents; the judge name stays the task family's (``gold`` for chitchat).
"""

from __future__ import annotations

from gilbench.data import chitchat_preference as chitchat
from gilbench.errors import GilbenchError
from gilbench.eval.judges import ScoreJudge
from gilbench.registry import register_judge


def gold_judge_setup(name: str, arg: str | None, ctx, task_family: str) -> float:
    """The tie margin of a gold judge (``NAME[:TIE_MARGIN]``, default 0.05), after checking that the run's task
    is the family whose documented function the judge computes."""
    try:
        margin = float(arg) if arg else 0.05
    except ValueError:
        margin = -1.0
    if not 0 <= margin < float("inf"):
        raise GilbenchError(f"--judge {name}:{arg}: the tie margin must be a number >= 0, e.g. {name}:0.05")
    task = getattr(ctx, "task", "") or ""
    if task and not task.startswith(task_family):
        raise GilbenchError(
            f"the {name} judge scores the {task_family} tasks only, not task {task}; use --judge rm:auto or openai:MODEL"
        )
    return margin


@register_judge("gold")
def gold_judge(arg: str | None, ctx=None):
    """The chitchat preference function as a judge (``gold[:TIE_MARGIN]``), independent of any trained reward
    model, as in reward-overoptimisation studies: the policy is trained on the learned RM, judged by this."""
    margin = gold_judge_setup("gold", arg, ctx, task_family="chitchat")
    scorer = chitchat.PreferenceScorer(relevance=True)
    return ScoreJudge(
        score_batch=lambda prompts, responses: scorer.score(
            [chitchat.clean(p) for p in prompts], [chitchat.clean(r) for r in responses]
        ),
        tie_margin=margin,
        judge_id=f"gold-{chitchat.PREFERENCE_VERSION}",
        info={"preference": chitchat.PREFERENCE_VERSION, "weights": dict(chitchat.WEIGHTS)},
    )
