#!/bin/bash
# The federated-quality study (simulation/federated_quality/README.md): the main job before and
# after, seeds 0-2, on 4 IID sites and on 8 Dirichlet(0.1) sites, then the tables.
#   bash simulation/federated_quality/run.sh RUNS          (about 1.5 h on 2 cores)
# "before" is the main job as it was (1 local epoch at batch 32, 8 + 4 + 12 rounds, no model
# selection): configs/quickstart.yaml with the settings it had. A finished study is skipped.
set -euo pipefail
runs=${1:?usage: run.sh RUNS}
mkdir -p "$runs"
before=(--set federation.batch_size=null --set federation.rounds.lab=4
        --set train.early_stopping.keep_best=false --set train.early_stopping.patience=null)
dirichlet8=(--set partition.method=dirichlet --set partition.alpha=0.1
            --set partition.num_sites=8 --set 'train.models=[transfer]')
study() {  # name, then fedecg simulate arguments
    local name=$1; shift
    [ -f "$runs/$name/summary.json" ] && return 0
    local start; start=$(date +%s)
    fedecg simulate --config configs/quickstart.yaml --out "$runs/$name" --quiet "$@" \
        > "$runs/$name.log" 2>&1 || { [ -d "$runs/$name" ] && fedecg simulate \
        --resume "$runs/$name" --quiet >> "$runs/$name.log" 2>&1; }
    echo "wall $(( $(date +%s) - start )) s" >> "$runs/$name.log"
}
for seed in 0 1 2; do
    study "before-iid-s$seed" --seeds "$seed" "${before[@]}"
    study "after-iid-s$seed" --seeds "$seed"
    study "before-dir8-s$seed" --seeds "$seed" "${before[@]}" "${dirichlet8[@]}"
    study "after-dir8-s$seed" --seeds "$seed" "${dirichlet8[@]}"
done
python simulation/federated_quality/compare.py "$runs" \
    --settings before-iid after-iid before-dir8 after-dir8 | tee "$runs/results.md"
