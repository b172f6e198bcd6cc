#!/usr/bin/env bash
# Train a survey's 'fine' model (2048 time cells) on one GPU machine in one call of at most ~10 minutes.
# Run it from the repository root:
#
#   OUT=/path/for/the/outputs bash scripts/train_gpu.sh
#
# RECIPE=simulate (default): every training batch is simulated on the GPU inside the training step
# (`mulens-sbi train --sampler simulate --survey roman_season`, mulens_sbi/data/ondevice.py): fresh
# prior draws, whole 72-day seasons at the full cadence, caustic-crossing candidates weighted back to
# the prior, no shards. In the same call:
#   1. held-out whole-season events (prior and caustic-crossing sets) are simulated on the CPU cores
#      in the background (`mulens-sbi simulate`, resumable);
#   2. scripts/bench_train.py measures light curves per second: simulation alone, the network step
#      alone and both, on this GPU ($OUT/bench.json);
#   3. training with the learning-rate schedule fitted to BUDGET minutes, checkpoints in $WORK/ck
#      (running the same command again resumes it; a hard time limit saves the best parameters);
#   4. the new model and the shipped one (SHIPPED, event windows) are validated on the same held-out
#      whole-season events, and the model card is written.
# RECIPE=stream: the earlier recipe (shards simulated on the CPU cores first and streamed while the
# GPU trains; trained/roman v5 was made with it before streaming existed).
#
# Settings (environment): SPEC (roman_season; stream: roman), NETWORK (fine), BATCH (512), LR (7e-4),
# WARMUP (300), BUDGET (training minutes: 3.5 simulate, 6.5 stream), ENRICH (0.25: share of each batch
# given to caustic-crossing candidates), INIT_FROM (a model folder to fine-tune from; default none),
# SEED (21), BENCH_STEPS (20; 0 skips the benchmark), N_VAL (1000) and N_VAL_CROSS (300) held-out
# events, SHIPPED (trained/roman; empty skips its validation), DEADLINE (seconds for the whole call,
# 570: the training budget shrinks and optional steps are skipped when they would not fit), WORK
# (scratch, /tmp/mulens-gpu; checkpoints and the compilation cache live there), PY
# (python3). Stream recipe only: N_PRIOR (40000), N_CROSS (8000), STREAM_PRIOR (240000),
# STREAM_CROSS (40000), STREAM_WORKERS (all cores but two), WORKERS (all cores).
# Outputs: $OUT/model (weights, posterior.json, training.json, validation.json, README.md),
# $OUT/shipped_on_seasons/validation.json, $OUT/bench.json, $OUT/log.txt.
set -euo pipefail
: "${OUT:?set OUT to the output folder}"
RECIPE=${RECIPE:-simulate}
NETWORK=${NETWORK:-fine}; BATCH=${BATCH:-512}; LR=${LR:-7e-4}; WARMUP=${WARMUP:-300}; SEED=${SEED:-21}
WORK=${WORK:-/tmp/mulens-gpu}; PY=${PY:-python3}; DEADLINE=${DEADLINE:-570}
WORKERS=${WORKERS:-$(nproc)}
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=15 XLA_PYTHON_CLIENT_PREALLOCATE=false
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"  # the repository's mulens_sbi, installed or not
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$WORK/jax-cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=1
mkdir -p "$OUT" "$WORK"
exec > >(tee -a "$OUT/log.txt") 2>&1
stamp() { echo "[$(date -u +%H:%M:%S) +${SECONDS}s] $*"; }
fits() { [ "$SECONDS" -lt $((DEADLINE - $1)) ]; }  # fits N: N more seconds fit before the deadline
stamp "start: $(nproc) cores, recipe $RECIPE"; nvidia-smi -L 2>/dev/null || true
$PY -c "import jax, flax, optax, numpyro; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'numpyro', numpyro.__version__, jax.devices())"

train_and_stop() {  # train with a hard time limit; when it strikes, save the checkpoint's best parameters
  local rc=0
  $PY -m mulens_sbi train "$@" --max-minutes "$($PY -c "print($BUDGET + 1.5)")" || rc=$?
  if [ "$rc" = 3 ]; then
    stamp "out of time: saving the checkpoint's best parameters"
    $PY -m mulens_sbi train "$@" --stop
  elif [ "$rc" != 0 ]; then
    exit "$rc"
  fi
}

if [ "$RECIPE" = simulate ]; then
  SPEC=${SPEC:-roman_season}; BUDGET=${BUDGET:-3.5}; ENRICH=${ENRICH:-0.25}; INIT_FROM=${INIT_FROM:-}
  BENCH_STEPS=${BENCH_STEPS:-20}; N_VAL=${N_VAL:-1000}; N_VAL_CROSS=${N_VAL_CROSS:-300}
  SHIPPED=${SHIPPED-trained/roman}
  CPU_WORKERS=$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))
  stamp "held-out whole-season events on $CPU_WORKERS CPU processes, in the background"
  (JAX_PLATFORMS=cpu $PY -m mulens_sbi simulate --survey "$SPEC" --n "$N_VAL" --seed $((SEED + 100)) \
     --shard-size 250 --workers "$CPU_WORKERS" --out "$WORK/val" --no-progress &&
   JAX_PLATFORMS=cpu $PY -m mulens_sbi simulate --survey "$SPEC" --n "$N_VAL_CROSS" --seed $((SEED + 101)) \
     --condition caustic-crossing --shard-size 100 --workers "$CPU_WORKERS" --out "$WORK/cross" --no-progress) \
    > "$OUT/heldout.log" 2>&1 &
  heldout=$!
  if [ "$BENCH_STEPS" != 0 ]; then
    stamp "benchmark: light curves per second, simulation vs network step"
    $PY scripts/bench_train.py --survey "$SPEC" --network "$NETWORK" --batch "$BATCH" --steps "$BENCH_STEPS" \
      --enrich "$ENRICH" --seed "$SEED" --json "$OUT/bench.json"
  fi
  # what is left for training: the deadline less ~4 min for start-up, validations and the card
  BUDGET=$($PY -c "print(round(max(1.0, min($BUDGET, ($DEADLINE - $SECONDS - 240) / 60 - 1.5)), 2))")
  stamp "train: every batch simulated on the GPU ($BUDGET min budget)"
  args=(--sampler simulate --survey "$SPEC" --simulate-enrich "$ENRICH" --network "$NETWORK"
        --budget-minutes "$BUDGET" --max-steps 1000000 --batch-size "$BATCH" --learning-rate "$LR"
        --warmup-steps "$WARMUP" --eval-every 500 --checkpoint-every 1000 --patience 0 --seed "$SEED"
        --checkpoint-dir "$WORK/ck" --out "$OUT/model")
  if [ -n "$INIT_FROM" ]; then args+=(--init-from "$INIT_FROM"); fi
  [ -e "$OUT/model/posterior.json" ] && args+=(--overwrite)
  train_and_stop "${args[@]}"
  stamp "waiting for the held-out events"
  wait "$heldout" || { echo "held-out simulation failed:"; tail -20 "$OUT/heldout.log"; exit 1; }
  val=(--data "$WORK/val" --holdout-shards $(( (N_VAL + 249) / 250 )) --n "$N_VAL" --n-samples 300
       --caustic-data "$WORK/cross" --overwrite --no-progress)
  if fits 60; then
    stamp "validate the new model on the held-out whole-season events"
    $PY -m mulens_sbi validate --model "$OUT/model" "${val[@]}"
  else stamp "skipped: validation of the new model (deadline)"; fi
  if [ -n "$SHIPPED" ] && fits 60; then
    stamp "validate the shipped model ($SHIPPED) on the same events"
    $PY -m mulens_sbi validate --model "$SHIPPED" "${val[@]}" --other-spec --out "$OUT/shipped_on_seasons"
  else stamp "skipped: validation of the shipped model"; fi
  $PY scripts/build_model_card.py "$OUT/model"
elif [ "$RECIPE" = stream ]; then
  SPEC=${SPEC:-roman}; BUDGET=${BUDGET:-6.5}; N_PRIOR=${N_PRIOR:-40000}; N_CROSS=${N_CROSS:-8000}
  STREAM_PRIOR=${STREAM_PRIOR:-240000}; STREAM_CROSS=${STREAM_CROSS:-40000}
  STREAM_WORKERS=${STREAM_WORKERS:-$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))}
  stamp "simulate $N_PRIOR prior light curves"
  JAX_PLATFORMS=cpu $PY -m mulens_sbi simulate --survey "$SPEC" --n "$N_PRIOR" --seed "$SEED" \
    --workers "$WORKERS" --out "$WORK/prior" --no-progress
  stamp "simulate $N_CROSS caustic-crossing planetary light curves"
  JAX_PLATFORMS=cpu $PY -m mulens_sbi simulate --survey "$SPEC" --n "$N_CROSS" --seed $((SEED + 1)) \
    --condition caustic-crossing --workers "$WORKERS" --out "$WORK/cross" --no-progress
  stamp "train (streaming $STREAM_PRIOR + $STREAM_CROSS more light curves from $STREAM_WORKERS processes)"
  train_and_stop --data "$WORK/prior" --holdout-shards 1 --enrich "$WORK/cross" --enrich-fraction 0.25 \
    --network "$NETWORK" --sampler device --budget-minutes "$BUDGET" --max-steps 1000000 \
    --batch-size "$BATCH" --learning-rate "$LR" --warmup-steps "$WARMUP" --eval-every 500 \
    --checkpoint-every 2000 --patience 0 --workers "$WORKERS" --checkpoint-dir "$WORK/ck" \
    --stream-prior "$STREAM_PRIOR" --stream-enrich "$STREAM_CROSS" --stream-workers "$STREAM_WORKERS" \
    --out "$OUT/model"
else
  echo "RECIPE must be simulate or stream, got $RECIPE"; exit 2
fi
stamp "done"
