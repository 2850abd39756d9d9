#!/usr/bin/env bash
# The fidelity study of issue 9 (experiments/fidelity/README.md): ResNet20 on the CIFAR-10
# folder, all 36 configurations, the 25,000 / 25,000 search split, 20 epochs, graph mode on
# the CPU. Each step resumes when run again; finished steps are skipped.
#
#   bash experiments/fidelity/study.sh [STEP ...]     (default: every step, in order)
#
# Steps: k1_s0 k4_s0 k1_s1 k4_s1 (the paper's method, K = 1 and 4, seeds 0 and 1, no warm-up),
# k4w_s0 k4w_s1 (K = 4 with a shared warm-up, see the top README), k1lr_s0 k4lr_s0 k1lr_s1 k4lr_s1
# (one epoch of learning-rate warm-up), k4ps_s0 k4ps_s1 (K = 4, --budget=per_set: each weight
# set gets EPOCHS epochs' worth of steps, the run 4 x EPOCHS epochs, the paper's protocol),
# k1x4_s0 k1x4_s1 (K = 1 for 4 x EPOCHS epochs: k4ps's compute), oracle_k1_s0 oracle_k4_s0
# oracle_k4_s1 (the PyTorch oracle, same split and budget; EXTRA's --train_size/--val_size
# reach its split too), analyse.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-../shared/data/cifar10}
OUT=${OUT:-runs/fidelity}
EPOCHS=${EPOCHS:-20}
# Extra flags for every search, e.g. EXTRA="--train_size=15000 --val_size=5000" (a smaller budget).
read -r -a EXTRA_FLAGS <<< "${EXTRA:-}"
COMMON=(--dataset=folder:$DATA --configs=all --epochs=$EPOCHS --val_fraction=0.5
        --batch_size=128 --learning_rate=0.1 --min_learning_rate=0.001 --momentum=0.9
        --weight_decay=0 --max_temperature=100 --downsample=maxpool --batchnorm=batch_stats
        --final_eval=all_pairs --estimate=assigned --nojit_compile --noprogress --log_every=100
        "${EXTRA_FLAGS[@]}")

search() {  # NAME K SEED [extra flags]
  local name=$1 k=$2 seed=$3; shift 3
  python -m mixnas_tf.train --workdir=$OUT/$name --num_models=$k --seed=$seed "${COMMON[@]}" "$@"
}

oracle() {  # K SEED
  local k=$1 seed=$2
  [ -f $OUT/oracle_split_seed$seed.npz ] || python experiments/oracle/export_split.py \
      --dataset=folder:$DATA --seed=$seed --val_fraction=0.5 "${EXTRA_FLAGS[@]}" \
      --out=$OUT/oracle_split_seed$seed.npz
  python experiments/oracle/mixture_torch.py --split=$OUT/oracle_split_seed$seed.npz \
      --workdir=$OUT/oracle_k${k}_s$seed --num_models=$k --epochs=$EPOCHS --seed=$seed
}

run_step() {
  case $1 in
    k1_s0) search k1_s0 1 0 --warmup_epochs=0 ;;
    k4_s0) search k4_s0 4 0 --shared_epochs=0 --warmup_epochs=0 ;;
    k1_s1) search k1_s1 1 1 --warmup_epochs=0 ;;
    k4_s1) search k4_s1 4 1 --shared_epochs=0 --warmup_epochs=0 ;;
    k4w_s0) search k4w_s0 4 0 --shared_epochs=$((EPOCHS / 2)) --warmup_epochs=0 ;;
    k4w_s1) search k4w_s1 4 1 --shared_epochs=$((EPOCHS / 2)) --warmup_epochs=0 ;;
    k1lr_s0) search k1lr_s0 1 0 --warmup_epochs=1 ;;
    k4lr_s0) search k4lr_s0 4 0 --shared_epochs=0 --warmup_epochs=1 ;;
    k1lr_s1) search k1lr_s1 1 1 --warmup_epochs=1 ;;
    k4lr_s1) search k4lr_s1 4 1 --shared_epochs=0 --warmup_epochs=1 ;;
    k4ps_s0) search k4ps_s0 4 0 --shared_epochs=0 --warmup_epochs=1 --budget=per_set ;;
    k4ps_s1) search k4ps_s1 4 1 --shared_epochs=0 --warmup_epochs=1 --budget=per_set ;;
    k1x4_s0) search k1x4_s0 1 0 --warmup_epochs=1 --epochs=$((4 * EPOCHS)) ;;
    k1x4_s1) search k1x4_s1 1 1 --warmup_epochs=1 --epochs=$((4 * EPOCHS)) ;;
    oracle_k1_s0) oracle 1 0 ;;
    oracle_k4_s0) oracle 4 0 ;;
    oracle_k4_s1) oracle 4 1 ;;
    analyse) python experiments/fidelity/analyse.py --runs=$OUT \
                 --truth=../shared/reference/resnet20_cifar10_configs.csv:baseline_avg \
                 --out=experiments/results/fidelity ;;
    *) echo "error: unknown step $1" >&2; exit 2 ;;
  esac
}

STEPS=("$@")
[ ${#STEPS[@]} -gt 0 ] || STEPS=(k1_s0 k4_s0 k4w_s0 k1_s1 k4_s1 k4w_s1 oracle_k1_s0 oracle_k4_s0 analyse)
for step in "${STEPS[@]}"; do
  echo "=== $step $(date -u +%FT%TZ)"
  run_step "$step"
done
