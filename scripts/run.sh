#!/usr/bin/env bash
# The main job: set up ./.venv, then train resnet32_camc_lt on CIFAR-10-LT (imbalance 100) with
# configs/cifar10_lt_r100.yaml (200 epochs: meant for a GPU; pass --epochs N for a shorter run).
#   bash scripts/run.sh                        # CIFAR-10 through torchvision's download (needs internet)
#   bash scripts/run.sh --data-dir DIR         # a class-per-folder tree with train/ and test/ (CIFAR-10 JPEGs)
# Any other train.py option is passed through, e.g. --epochs 10 --device cpu.
# Relative paths in path options are taken from the directory you call it from.
set -euo pipefail
caller=$PWD
cd "$(dirname "$0")/.."
bash scripts/setup.sh
abs() { case "$1" in /*) printf '%s' "$1" ;; *) printf '%s' "$caller/$1" ;; esac; }
path_opts=' --data-dir --output --resume --initial-checkpoint --pretrained-path --train-list --val-list -c --config '
data_args=(--dataset torch/cifar10 --dataset-download --data-dir data/cifar10)
args=()
expect_path=0
for arg in "$@"; do
  if [ "$expect_path" = 1 ]; then args+=("$(abs "$arg")"); expect_path=0; continue; fi
  case "$arg" in
    --data-dir|--data-dir=*) data_args=() ;;
  esac
  case "$arg" in
    --*=*) opt=${arg%%=*}
           if [[ "$path_opts" == *" $opt "* ]]; then args+=("$opt=$(abs "${arg#*=}")"); continue; fi ;;
    *) if [[ "$path_opts" == *" $arg "* ]]; then expect_path=1; fi ;;
  esac
  args+=("$arg")
done
exec .venv/bin/python train.py -c configs/cifar10_lt_r100.yaml "${data_args[@]}" "${args[@]}"
