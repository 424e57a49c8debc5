"""The ``qa-chat-gold`` judge: the qa-chat task's documented gold function (gilbench/data/qachat_gold.py).

It knows the reference answers of every chatterbot trivia and chatterbot-qa question, so it needs nothing
from the run; the policy trains on a learned reward model and is judged by this function (Gao et al. 2023).
"""

from __future__ import annotations

from gilbench.data.qachat_gold import GOLD_VERSION, KIND_WEIGHTS, SERIOUS_TONE, judge_gold_function
from gilbench.eval.gold import gold_judge_setup
from gilbench.eval.judges import ScoreJudge
from gilbench.registry import register_judge


@register_judge("qa-chat-gold")
def qa_chat_gold_judge(arg: str | None, ctx=None):
    """The qa-chat gold function as a judge (``qa-chat-gold[:TIE_MARGIN]``, default 0.05)."""
    margin = gold_judge_setup("qa-chat-gold", arg, ctx, task_family="qa-chat")
    gold = judge_gold_function()
    return ScoreJudge(
        score_batch=gold.score,
        tie_margin=margin,
        judge_id=f"gold-{GOLD_VERSION}",
        info={"gold": GOLD_VERSION, "kind_weights": KIND_WEIGHTS, "serious_tone": SERIOUS_TONE},
    )
