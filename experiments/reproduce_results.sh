#!/usr/bin/env bash
# Reproduces docs/RESULTS.md from scratch on a CPU machine (no download): 3-seed
# comparisons with floors on the two built-in sound sets and the demo shapes, then copies
# their tables and plots into docs/results/. About 2.5 hours on 2 cores (a SimCLR arm takes
# 5-7 minutes); each compare skips the arms already done, so an interrupted run resumes
# where it stopped. Add byol to compare.methods for the BYOL arms (about 10 minutes each).
#
#   bash experiments/reproduce_results.sh [WORK_DIR]
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-comparisons}"
mkdir -p "$work"
cd "$work"
quiet=(trainer.progress=false)
# the defaults on the demo sound set: class, pitch register, loudness band, action probe
stec-audio compare compare.methods=[simclr] compare.out=audio "${quiet[@]}"
# the same defaults confirmed on the second built-in set (instrument phrases in rooms)
stec-audio compare data=notes compare.methods=[simclr] compare.out=notes "${quiet[@]}"
# a pitch shift of up to 12 semitones among the actions: what invariance costs, what the
# efference copy keeps (the floors are those of the first comparison)
stec-audio compare compare.methods=[simclr] compare.floors=[] augment.pitch.enabled=true \
    augment.pitch.max_semitones=12 compare.out=audio_pitch "${quiet[@]}"
# the same with the pitch difference made readable (no RRC, no mixup), one seed
stec-audio compare compare.methods=[simclr] compare.floors=[] compare.seeds=[0] \
    augment.pitch.enabled=true augment.pitch.max_semitones=12 augment.rrc.enabled=false \
    augment.mixup.enabled=false compare.out=audio_pitch_readable "${quiet[@]}"
stec-vision compare trainer.epochs=8 compare.out=vision "${quiet[@]}"
# segmentation beside classification, same arms and seeds
stec-vision compare trainer.epochs=8 compare.methods=[simclr] evaluate.with_segmentation=true \
    compare.out=vision_dense "${quiet[@]}"
for name in audio notes audio_pitch audio_pitch_readable vision vision_dense; do
    mkdir -p "$repo/docs/results/$name"
    cp "$name"/comparison*.csv "$name"/comparison.json "$name"/report.md "$name"/*.png \
        "$repo/docs/results/$name/"
done
echo "reports copied to $repo/docs/results/"
