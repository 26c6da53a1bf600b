#!/usr/bin/env bash
# Reproduces docs/RESULTS.md from scratch on a CPU machine (no download; about 2 hours
# on 2 cores): the audio and vision comparisons on the built-in demo data, 3 seeds each,
# then copies their tables and plots into docs/results/.
#
#   bash experiments/reproduce_results.sh [WORK_DIR]
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-comparisons}"
mkdir -p "$work"
cd "$work"
stec-audio compare trainer.progress=false compare.out=audio
stec-vision compare trainer.epochs=8 trainer.progress=false compare.out=vision
for modality in audio vision; do
    mkdir -p "$repo/docs/results/$modality"
    cp "$modality"/comparison.csv "$modality"/comparison.json "$modality"/report.md "$modality"/*.png \
        "$repo/docs/results/$modality/"
done
echo "reports copied to $repo/docs/results/{audio,vision}"
