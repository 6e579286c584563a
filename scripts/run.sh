#!/usr/bin/env bash
# The main job: set up ./.venv, then train resnet32_camc_lt on CIFAR-10-LT (imbalance 100) with
# configs/cifar10_lt_r100.yaml (200 epochs: meant for a GPU; pass --epochs N for a shorter run).
#   bash scripts/run.sh                        # CIFAR-10 through torchvision's download (needs internet)
#   bash scripts/run.sh --data-dir DIR         # a class-per-folder tree with train/ and test/ (CIFAR-10 JPEGs)
# Any other train.py option is passed through, e.g. --epochs 10 --device cpu.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
data_args=(--dataset torch/cifar10 --dataset-download --data-dir data/cifar10)
for arg in "$@"; do
  case "$arg" in --data-dir|--data-dir=*) data_args=() ;; esac
done
exec .venv/bin/python train.py -c configs/cifar10_lt_r100.yaml "${data_args[@]}" "$@"
