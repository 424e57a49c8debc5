"""The ``qa-chat-gold`` judge: the qa-chat task's documented gold function (gilbench/data/qachat.py).

It knows the reference answers of every chatterbot trivia and chatterbot-qa question, so it needs nothing
from the run; the policy trains on a learned reward model and is judged by this function (Gao et al. 2023).
"""

from __future__ import annotations

from gilbench.data import qachat
from gilbench.errors import GilbenchError
from gilbench.eval.judges import ScoreJudge
from gilbench.registry import register_judge


@register_judge("qa-chat-gold")
def qa_chat_gold_judge(arg: str | None, ctx=None):
    """The qa-chat gold function as a judge (``qa-chat-gold[:TIE_MARGIN]``, default 0.05)."""
    try:
        margin = float(arg) if arg else 0.05
    except ValueError:
        margin = -1.0
    if not 0 <= margin < float("inf"):
        raise GilbenchError(f"--judge qa-chat-gold:{arg}: the tie margin must be a number >= 0, e.g. qa-chat-gold:0.05")
    task = getattr(ctx, "task", "") or ""
    if task and not task.startswith("qa-chat"):
        raise GilbenchError(
            f"the qa-chat-gold judge scores the qa-chat task only, not task {task}; use --judge rm:auto or gold"
        )
    qa = qachat.read_qa()
    gold = qachat.GoldFunction({**qa["trivia"], **qa["chatterbot-qa"]}, semantic=True)
    return ScoreJudge(
        score_batch=gold.score,
        tie_margin=margin,
        judge_id=f"gold-{qachat.GOLD_VERSION}",
        info={"gold": qachat.GOLD_VERSION, "kind_weights": qachat.KIND_WEIGHTS, "serious_tone": qachat.SERIOUS_TONE},
    )
