#!/bin/bash
# The study at scale (simulation/scale/README.md): seeds 0-2 on 4 IID sites with the pooled
# baseline (and local-only at seed 0: it costs as much again), the pretraining ablation (transfer
# with no pretraining rounds, with its pooled baseline) and natural sites (one per ECG cart,
# seed 0, federated), then the tables and the figure.
#   bash simulation/scale/run.sh RUNS [SEEDS]         (SEEDS default "0 1 2")
# The 20,000-patient twin is synthesized and prepared once into $FEDECG_CACHE (~5 min).
# A finished study is skipped; an interrupted one is resumed from its last round.
set -euo pipefail
runs=${1:?usage: run.sh RUNS [SEEDS]}
seeds=${2:-0 1 2}
config=simulation/scale/config.yaml
mkdir -p "$runs"
no_pretraining=(--set federation.rounds.pretrain=0 --set 'train.models=[transfer]')
natural=(--set partition.method=natural --set partition.column=cart_id
         --set partition.num_sites=11)
study() {  # name, then fedecg simulate arguments
    local name=$1; shift
    [ -f "$runs/$name/summary.json" ] && return 0
    local start; start=$(date +%s)
    if [ -d "$runs/$name" ]; then
        fedecg simulate --resume "$runs/$name" --quiet >> "$runs/$name.log" 2>&1
    else
        fedecg simulate --config "$config" --out "$runs/$name" --quiet "$@" > "$runs/$name.log" 2>&1
    fi
    echo "wall $(( $(date +%s) - start )) s" >> "$runs/$name.log"
}
for seed in $seeds; do
    baselines=pooled; [ "$seed" = 0 ] && baselines=true
    study "iid-s$seed" --seeds "$seed" --set "baselines=$baselines"
    study "no-pretraining-s$seed" --seeds "$seed" --set baselines=pooled "${no_pretraining[@]}"
done
study "natural-s0" --seeds 0 --set baselines=false "${natural[@]}"
python simulation/scale/tables.py "$runs" --figure "$runs/scale.png" | tee "$runs/results.md"
