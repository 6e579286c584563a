#!/usr/bin/env bash
# The full-recipe paired run of benchmarks/results/full_recipe_cifar10_lt_r100_seed0.json: configs/cifar10_lt_r100.yaml
# (200 epochs) with logit adjustment, CAMC global against its cosine counterpart (--camc none), same seed. One
# single-thread process per row, side by side (2-core CPU). Rerunning resumes each row from its last.pth.tar.
# Usage: bash benchmarks/full_recipe_pair.sh <cifar10-jpeg dir with train/ and test/> <output dir>
set -euo pipefail
data=${1:?data dir}
out=${2:?output dir}
cd "$(dirname "$0")/.."
run() {
  local exp=$1; shift
  local resume=()
  [ -f "$out/$exp/last.pth.tar" ] && resume=(--resume "$out/$exp/last.pth.tar")
  OMP_NUM_THREADS=1 .venv/bin/python train.py -c configs/cifar10_lt_r100.yaml --data-dir "$data" \
    --loss logit_adjusted --eval-interval 10 --output "$out" --experiment "$exp" "${resume[@]}" "$@" \
    > "$out/$exp.log" 2>&1
  .venv/bin/python validate.py --model resnet32_camc_lt --checkpoint "$out/$exp/last.pth.tar" --data-dir "$data" \
    --split test --results-file "$out/$exp/validate.json" > "$out/$exp/validate.log" 2>&1
}
mkdir -p "$out"
run camc_global_la_s0 --camc global &
run la_cosine_s0 --camc none &
wait
