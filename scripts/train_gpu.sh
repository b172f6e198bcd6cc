#!/usr/bin/env bash
# Train a survey's 'fine' model (2048 time cells) on one GPU machine in one call: simulate a first
# training set and caustic-crossing enrichment set on the CPU cores, then train on the GPU with the
# batches drawn on the device and the schedule fitted to a wall-time budget, while worker processes
# keep simulating fresh light curves that join the training set as they arrive (--stream-prior,
# --stream-enrich). trained/roman v5 was made with the same recipe before streaming existed
# (120,000 + 24,000 light curves simulated first, no stream; docs/npe.md). Run it from the
# repository root:
#
#   OUT=/path/for/the/model bash scripts/train_gpu.sh
#
# Settings (environment): SURVEY (roman), N_PRIOR (40000), N_CROSS (8000), SEED (21; the enrichment
# set uses SEED+1), STREAM_PRIOR (240000) and STREAM_CROSS (40000) light curves streamed during
# training by STREAM_WORKERS processes (all cores but two), BUDGET (training minutes, 6.5), BATCH
# (512), LR (7e-4), WARMUP (300), WORKERS (all cores; first simulation and pre-binning), WORK (scratch
# folder, /tmp/mulens-gpu), NETWORK (fine). The model goes to $OUT/model, the log to $OUT/log.txt.
set -euo pipefail
: "${OUT:?set OUT to the output folder}"
SURVEY=${SURVEY:-roman}; N_PRIOR=${N_PRIOR:-40000}; N_CROSS=${N_CROSS:-8000}; SEED=${SEED:-21}
STREAM_PRIOR=${STREAM_PRIOR:-240000}; STREAM_CROSS=${STREAM_CROSS:-40000}
BUDGET=${BUDGET:-6.5}; BATCH=${BATCH:-512}; LR=${LR:-7e-4}; WARMUP=${WARMUP:-300}
WORKERS=${WORKERS:-$(nproc)}; STREAM_WORKERS=${STREAM_WORKERS:-$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))}
WORK=${WORK:-/tmp/mulens-gpu}; PY=${PY:-python3}; NETWORK=${NETWORK:-fine}
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=15
mkdir -p "$OUT" "$WORK"
exec > >(tee -a "$OUT/log.txt") 2>&1
stamp() { echo "[$(date -u +%H:%M:%S)] $*"; }
stamp "start: $(nproc) cores"; nvidia-smi -L 2>/dev/null || true
$PY -c "import jax, flax, optax, numpyro; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'numpyro', numpyro.__version__, jax.devices())"
stamp "simulate $N_PRIOR prior light curves"
JAX_PLATFORMS=cpu $PY -m mulens_sbi simulate --survey "$SURVEY" --n "$N_PRIOR" --seed "$SEED" \
  --workers "$WORKERS" --out "$WORK/prior" --no-progress
stamp "simulate $N_CROSS caustic-crossing planetary light curves"
JAX_PLATFORMS=cpu $PY -m mulens_sbi simulate --survey "$SURVEY" --n "$N_CROSS" --seed $((SEED + 1)) \
  --condition caustic-crossing --workers "$WORKERS" --out "$WORK/cross" --no-progress
stamp "train (streaming $STREAM_PRIOR + $STREAM_CROSS more light curves from $STREAM_WORKERS processes)"
args=(--data "$WORK/prior" --holdout-shards 1 --enrich "$WORK/cross" --enrich-fraction 0.25
      --network "$NETWORK" --sampler device --budget-minutes "$BUDGET" --max-steps 1000000
      --batch-size "$BATCH" --learning-rate "$LR" --warmup-steps "$WARMUP" --eval-every 500
      --checkpoint-every 2000 --patience 0 --workers "$WORKERS" --checkpoint-dir "$WORK/ck"
      --stream-prior "$STREAM_PRIOR" --stream-enrich "$STREAM_CROSS" --stream-workers "$STREAM_WORKERS"
      --out "$OUT/model")
rc=0
$PY -m mulens_sbi train "${args[@]}" --max-minutes "$($PY -c "print($BUDGET + 1.5)")" || rc=$?
if [ "$rc" = 3 ]; then  # the hard time limit struck first: save the best parameters so far
  stamp "out of time: saving the checkpoint's best parameters"
  $PY -m mulens_sbi train "${args[@]}" --stop
elif [ "$rc" != 0 ]; then
  exit "$rc"
fi
stamp "done"
