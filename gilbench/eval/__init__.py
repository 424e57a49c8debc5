"""Evaluation: pairwise judges (``openai``, ``hf``, ``rm``, plugins), the both-orders protocol, statistics and ``compare``.

    from gilbench.eval.compare import compare
    from gilbench.eval.judges import JudgeContext, ScoreJudge, build_judge

Submodules are imported on demand so ``import gilbench.eval`` stays light (no torch, no network).
"""
