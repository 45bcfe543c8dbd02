#!/usr/bin/env bash
# Every GPU figure of the README in one run, sized for a short lease on one card (about 9 minutes
# on an H200): the GPU rows of the results table (means over 3 seeds), the WRN recipe (one run,
# with its calibration), and the ablation of airbench's methods on the fast CNN. The WRN and the
# ablation share the card (the small CNN's fits are mostly start-up and launch overhead), so the
# ablation's accuracies are clean and its times comparable with each other only.
#
#   bash scripts/gpu_figures.sh DATA_DIR OUT_DIR [ablation|recipes|wrn ...]
#
# EXTRA="--trainer.max_epochs=1 ..." passes options to every fit (a quick rehearsal on a CPU).
#
# Writes OUT_DIR/bench_gpu.csv (scripts/plot_frontier.py draws it), OUT_DIR/ablation_gpu.csv and
# OUT_DIR/gpu.log (every fit's summary lines). Each stage has its own time limit, so one that
# overruns costs only itself.
set -u
DATA=$1 OUT=$2
shift 2
STAGES=${*:-recipes wrn ablation resnet}
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PYTHON=${PYTHON:-python3}
LOGS=$(mktemp -d)
LOG=$OUT/gpu.log
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >>"$LOG" 2>&1

bench() {  # bench LIMIT_SECONDS CSV ARGS...: the time-to-accuracy benchmark, its summary in gpu.log
    local limit=$1 csv=$2
    shift 2
    timeout "$limit" "$PYTHON" scripts/bench_time_to_accuracy.py --data_dir "$DATA" --csv "$csv" \
        --logs "$LOGS/$(basename "$csv" .csv)" "$@" ${EXTRA:+--extra="$EXTRA"} >>"$LOG" 2>&1 || echo "bench $* exited $?" >>"$LOG"
    find "$LOGS/$(basename "$csv" .csv)" -name "*.log" -exec grep -H -E "Test accuracy|ECE|Calibrated" {} + >>"$LOG"
}

fit() {  # fit RECIPE LABEL SEED ARGS...: one timed fit, a row of ablation_gpu.csv
    local recipe=$1 label=$2 seed=$3 start end acc ece
    shift 3
    start=$(date +%s.%N)
    timeout 150 "$PYTHON" -m fashion_lightning fit --config "$recipe" --data.data_dir "$DATA" \
        --trainer.enable_progress_bar=false --trainer.logger.init_args.save_dir="$LOGS/ablation" \
        --seed_everything="$seed" "$@" ${EXTRA:-} >"$LOGS/fit.log" 2>&1
    end=$(date +%s.%N)
    acc=$(grep -o "Test accuracy: [0-9.]*%" "$LOGS/fit.log" | grep -o "[0-9.]*%")
    ece=$(grep -o "[0-9.]*% calibrated" "$LOGS/fit.log" | grep -o "^[0-9.]*%")
    echo "$recipe,$label,$seed,${acc:-failed},${ece:-},$("$PYTHON" -c "print(round($end - $start, 1))"),$*" >>"$OUT/ablation_gpu.csv"
    [ -n "$acc" ] || tail -5 "$LOGS/fit.log" >>"$LOG"
}

echo "recipe,row,seed,test_acc,test_ece,seconds,options" >"$OUT/ablation_gpu.csv"
for stage in $STAGES; do
    echo "== $stage $(date +%T)" >>"$LOG"
    case $stage in
        recipes) bench 200 "$OUT/bench_gpu.csv" --recipes cnn_fast cnn --seeds 3 ;;
        wrn) bench 330 "$OUT/bench_gpu_wrn.csv" --recipes wrn --seeds 1 & ;;  # beside the ablation
        ablation)
            for seed in 0 1; do
                while IFS='|' read -r label options; do
                    # shellcheck disable=SC2086  # the options are words on purpose
                    fit cnn_fast "$label" "$seed" $options
                done <scripts/ablation_rows.txt
            done
            ;;
        resnet)  # the CPU ResNet recipe (Muon, alternating flip) against AdamW alone, one seed
            fit resnet "AdamW alone, random flip" 0 --model.muon_lr=null --data.horizontal_flip=true
            fit resnet "as shipped" 0
            ;;
    esac
done
wait
echo "== done $(date +%T)" >>"$LOG"
