#!/bin/bash
# The study at scale (simulation/scale/README.md), one `fedecg simulate` per study folder:
#   iid-s0            4 IID sites, seed 0: signal-only and transfer; pooled and local-only
#   iid-s1, iid-s2    seeds 1 and 2: signal-only and transfer; pooled
#   no-pretraining-s0, -s1, -s2   the ablation: transfer without its pretraining rounds,
#                     pooled
#   natural-s0, -s1, -s2   natural sites (one per ECG cart, 11), signal-only and transfer,
#                     federated (pooled is the same model as iid-s0's: the same rows)
#   multimodal-s0, -s1, -s2   the multimodal model (labs at inference: the reference, not a
#                     deployable ECG model), 4 IID sites, pooled
# Local-only at seeds 1-2 costs as much as federated again; on 2 CPU cores it did not fit
# (README.md here).
# then the tables and the figure (RUNS/results.md, RUNS/scale.png).
#   bash simulation/scale/run.sh RUNS [STUDY ...]     (default: all of the above, in order)
# The 20,000-patient twin is synthesized and prepared once into $FEDECG_CACHE (~5 min). A
# finished study is skipped; an interrupted one is resumed from its last round.
set -euo pipefail
runs=${1:?usage: run.sh RUNS [STUDY ...]}
shift
studies=("$@")
[ ${#studies[@]} -gt 0 ] || studies=(iid-s0 iid-s1 iid-s2 no-pretraining-s0 no-pretraining-s1
                                     no-pretraining-s2 natural-s0 multimodal-s0 multimodal-s1
                                     multimodal-s2 natural-s1 natural-s2)
config=simulation/scale/config.yaml
mkdir -p "$runs"
two_models=(--set 'train.models=[signal-only,transfer]')
arguments() {  # the fedecg simulate settings of one study
    case $1 in
        iid-s0) echo --seeds 0 "${two_models[@]}" ;;
        iid-s1|iid-s2) echo --seeds "${1#iid-s}" --set baselines=pooled "${two_models[@]}" ;;
        no-pretraining-s[0-9]) echo --seeds "${1#no-pretraining-s}" --set baselines=pooled \
            --set federation.rounds.pretrain=0 --set 'train.models=[transfer]' ;;
        multimodal-s[0-9]) echo --seeds "${1#multimodal-s}" --set baselines=pooled \
            --set 'train.models=[multimodal]' ;;
        natural-s[0-9]) echo --seeds "${1#natural-s}" --set baselines=false \
            --set partition.method=natural \
            --set partition.column=cart_id --set partition.num_sites=11 "${two_models[@]}" ;;
        *) echo "unknown study $1" >&2; return 1 ;;
    esac
}
for name in "${studies[@]}"; do
    [ -f "$runs/$name/summary.json" ] && continue
    read -r -a settings <<< "$(arguments "$name")"
    start=$(date +%s)
    if [ -d "$runs/$name" ]; then
        fedecg simulate --resume "$runs/$name" --quiet >> "$runs/$name.log" 2>&1
    else
        fedecg simulate --config "$config" --out "$runs/$name" --quiet "${settings[@]}" \
            > "$runs/$name.log" 2>&1
    fi
    echo "wall $(( $(date +%s) - start )) s" >> "$runs/$name.log"
done
python simulation/scale/tables.py "$runs" --figure "$runs/scale.png" | tee "$runs/results.md"
