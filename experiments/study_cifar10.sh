#!/usr/bin/env bash
# The CPU-scale ranking study on the CIFAR-10 folder (experiments/README_study.md).
#
#   bash experiments/study_cifar10.sh [STEP ...]
#
# STEP: truth, search_k1, search_k4, tune_random, rank, report, collect, or all (default).
# Every step resumes where it stopped: run the same command again after an interruption.
# Environment:
#   DATA=../shared/data/cifar10   the image folder (PATH/train/<class>/*.jpg)
#   OUT=runs/study_cifar10        work directories (checkpoints; not committed)
#   RESULTS=experiments/results/study_cifar10   the small files to commit (collect)
#   SMOKE=1                       a few-minute version (5 configurations, tiny subsets,
#                                 1-2 epochs, no XLA) that checks the pipeline end to end;
#                                 its default OUT is runs/study_cifar10_smoke and it
#                                 collects into OUT/results, never into experiments/.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
DATA="${DATA:-../shared/data/cifar10}"  # relative to the repository root

if [[ "${SMOKE:-0}" == 1 ]]; then
  OUT="${OUT:-$ROOT/runs/study_cifar10_smoke}"
  RESULTS="${RESULTS:-$OUT/results}"
  CONFIGS="1;24;29;34;36"  # [1,1,8], the default, the paper's K=4 pick, the best, [8,1,1]
  TRUTH=(--train_size=512 --test_size=256 --epochs=1 --batch_size=64 --nojit_compile)
  SEARCH=(--train_size=512 --val_size=256 --epochs=2 --batch_size=64 --nojit_compile)
  TUNE=(--train_size=512 --test_size=256 --budget_epochs=2 --epochs_per_trial=1
        --batch_size=64 --nojit_compile)
else
  OUT="${OUT:-$ROOT/runs/study_cifar10}"
  RESULTS="${RESULTS:-$ROOT/experiments/results/study_cifar10}"
  # The 12 configurations of experiments/cifar10_folder_cpu.flags (the default, the
  # paper's picks, both extremes and a spread of others); CONFIGS=all for all 36
  # (about three times the cost of the truth step).
  CONFIGS="${CONFIGS:-4,3,3;5,3,2;7,1,2;1,1,8;8,1,1;3,3,4;6,2,2;2,4,4;4,4,2;5,2,3;3,5,2;6,3,1}"
  # Ground truth: 10 epochs over 5,000 training images per configuration, evaluated on
  # 2,000 images held out of the training split (seed 0).
  # Graph mode (--nojit_compile): 1.6x faster than XLA on a CPU (README, Performance).
  TRUTH=(--train_size=5000 --test_size=2000 --epochs=10 --nojit_compile)
  # Searches: 15 epochs over a 10,000-image search-train subset = 150,000 training images
  # (plus one 128-image validation batch per step); 2,000 search-validation images for the
  # final evaluation. The same for K = 1 and K = 4.
  # These are the flags of experiments/cifar10_folder_cpu.flags, so the K = 4 search is
  # the same run as `mixnas_tf.train --flagfile=experiments/cifar10_folder_cpu.flags`.
  SEARCH=(--train_size=10000 --val_size=2000 --epochs=15
          --nojit_compile)
  # KerasTuner random search at the same cost: 30 epochs x 5,000 images = 150,000
  # training images, as 10 trials of 3 epochs. --seed=1 (below): its trials share neither
  # initialisation nor held-out images with the ground-truth runs (seed 0).
  TUNE=(--train_size=5000 --test_size=2000 --budget_epochs=30 --epochs_per_trial=3
        --nojit_compile)
fi
COMMON=(--dataset="folder:$DATA" --noprogress --log_every=20)

truth() {
  python -m mixnas_tf.exhaustive --workdir="$OUT/truth" --configs="$CONFIGS" \
      --eval_split=holdout --holdout_fraction=0.1 --seed=0 --seeds=1 \
      --learning_rate=0.1 --schedule=cosine --weight_decay=5e-4 \
      "${TRUTH[@]}" "${COMMON[@]}"
}

search() {  # $1 = K
  python -m mixnas_tf.train --workdir="$OUT/search_k$1" --configs="$CONFIGS" \
      --num_models="$1" --max_temperature=100 --val_fraction=0.5 --seed=0 \
      --learning_rate=0.1 --min_learning_rate=0.001 --weight_decay=0 \
      --batchnorm=batch_stats --final_eval=all_pairs --estimate=assigned --warmup_epochs=0 \
      "${SEARCH[@]}" "${COMMON[@]}"
}

tune_random() {
  python -m mixnas_tf.tune --tuner=random --workdir="$OUT/tune_random" \
      --configs="$CONFIGS" --holdout_fraction=0.1 --seed=1 \
      --learning_rate=0.1 --schedule=cosine --weight_decay=5e-4 \
      "${TUNE[@]}" "${COMMON[@]}"
}

rank() {
  python -m mixnas_tf.rank --truth="$OUT/truth/table.csv" \
      --estimate="$OUT/search_k1" --estimate="$OUT/search_k4" \
      --estimate="$OUT/tune_random"
  python -m mixnas_tf.rank --truth="$OUT/truth/table.csv" \
      --estimate="$OUT/search_k1" --estimate="$OUT/search_k4" \
      --estimate="$OUT/tune_random" --json > "$OUT/rank.json"
}

report() {
  python -m mixnas_tf.report --search="$OUT/search_k1,$OUT/search_k4" \
      --ground_truth="$OUT/truth/table.csv" --tuner="$OUT/tune_random" \
      --out="$OUT/report"
}

collect() {  # The small result files, for committing (no checkpoints, no data).
  mkdir -p "$RESULTS/report"
  cp "$OUT/truth/table.csv" "$RESULTS/truth_table.csv"
  cp "$OUT/truth/flags.json" "$RESULTS/truth_flags.json"
  for k in 1 4; do
    cp "$OUT/search_k$k/results.json" "$RESULTS/search_k${k}_results.json"
    cp "$OUT/search_k$k/ranking.csv" "$RESULTS/search_k${k}_ranking.csv"
    cp "$OUT/search_k$k/flags.json" "$RESULTS/search_k${k}_flags.json"
  done
  cp "$OUT/tune_random/tune_results.json" "$RESULTS/tune_random_results.json"
  cp "$OUT/tune_random/flags.json" "$RESULTS/tune_random_flags.json"
  cp "$OUT/rank.json" "$RESULTS/rank.json"
  cp "$OUT/report/"*.md "$OUT/report/"*.png "$RESULTS/report/"
  echo "collected into $RESULTS"
}

steps=("$@")
if [[ ${#steps[@]} -eq 0 || "${steps[0]}" == all ]]; then
  steps=(truth search_k1 search_k4 tune_random rank report collect)
fi
for step in "${steps[@]}"; do
  echo "=== $step ($(date '+%F %T'))"
  case "$step" in
    truth) truth ;;
    search_k1) search 1 ;;
    search_k4) search 4 ;;
    tune_random) tune_random ;;
    rank) rank ;;
    report) report ;;
    collect) collect ;;
    *) echo "error: unknown step $step (truth, search_k1, search_k4, tune_random, rank," \
            "report, collect, all)" >&2; exit 2 ;;
  esac
done
