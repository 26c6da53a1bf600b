#!/usr/bin/env bash
# Reproduces docs/RESULTS.md from scratch on a CPU machine (no download): 3-seed
# comparisons with floors on the two built-in sound sets and the demo shapes, then copies
# their tables and plots into docs/results/. About 22 hours on 2 cores, summed from the
# arms' times (a SimCLR arm takes 4-7 minutes, its sound event detection 3 more, a BYOL
# arm 10, an arm at 4x the budget about 17); each compare skips the
# runs already done and resumes an arm from its last checkpoint, so an interrupted run
# continues where it stopped.
#
#   bash experiments/reproduce_results.sh [WORK_DIR]
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-comparisons}"
mkdir -p "$work"
cd "$work"
# every comparison but those of the read gate was made before the gate joined the composed
# group: efference.read_gate=0 reproduces them (the separate pipeline's and vision's value)
quiet=(trainer.progress=false efference.read_gate=0)
# the composed group as measured before its action loss weighed in over the first half
# of the run (a constant 0.3)
c03=(augment=composed efference.lambda_manip_warmup=0)
# the separate pipeline, the audio default up to 0.1
sep=(augment=separate)
# the separate pipeline on the demo sound set: class, pitch register, loudness band, action
# probe, and sound event detection (frame and event F1) of the same arms
stec-audio compare compare.methods=[simclr] "${sep[@]}" evaluate.with_sed=true compare.out=audio \
    "${quiet[@]}"
# BYOL instead of SimCLR (the floors are those of the first comparison)
stec-audio compare compare.methods=[byol] "${sep[@]}" compare.floors=[] compare.out=audio_byol \
    "${quiet[@]}"
# the same confirmed on the second built-in set (instrument phrases in rooms)
stec-audio compare data=notes compare.methods=[simclr] "${sep[@]}" compare.out=notes "${quiet[@]}"
# a pitch shift of up to 12 semitones among the actions: what invariance costs, what the
# efference copy keeps (the floors are those of the first comparison)
stec-audio compare compare.methods=[simclr] "${sep[@]}" compare.floors=[] augment.pitch.enabled=true \
    augment.pitch.max_semitones=12 compare.out=audio_pitch "${quiet[@]}"
# the same with the pitch difference made readable (no RRC, no mixup), one seed
stec-audio compare compare.methods=[simclr] "${sep[@]}" compare.floors=[] compare.seeds=[0] \
    augment.pitch.enabled=true augment.pitch.max_semitones=12 augment.rrc.enabled=false \
    augment.mixup.enabled=false compare.out=audio_pitch_readable "${quiet[@]}"
# the composed time-frequency action space on both sound sets, the demo at 4x the budget
# (one seed, no floors), paired by seed against the separate pipeline, and what can be
# read from the views themselves
stec-audio compare compare.methods=[simclr] "${c03[@]}" compare.out=audio_composed \
    "${quiet[@]}"
stec-audio compare data=notes compare.methods=[simclr] "${c03[@]}" \
    compare.out=notes_composed "${quiet[@]}"
stec-audio compare compare.methods=[simclr] "${c03[@]}" compare.seeds=[0] \
    compare.floors=[] trainer.epochs=120 compare.out=audio_composed_4x "${quiet[@]}"
stec-audio compare compare.methods=[simclr] "${c03[@]}" compare.seeds=[1] \
    compare.floors=[] trainer.epochs=120 compare.out=audio_composed_4x_seed1 "${quiet[@]}"
stec-audio compare compare.methods=[simclr] "${c03[@]}" compare.seeds=[2] \
    compare.floors=[] trainer.epochs=120 compare.out=audio_composed_4x_seed2 "${quiet[@]}"
stec-audio compare data=notes compare.methods=[simclr] "${c03[@]}" compare.seeds=[0] \
    compare.floors=[] trainer.epochs=120 compare.out=notes_composed_4x "${quiet[@]}"
stec-audio compare data=notes compare.methods=[simclr] "${c03[@]}" compare.seeds=[1] \
    compare.floors=[] trainer.epochs=120 compare.out=notes_composed_4x_seed1 "${quiet[@]}"
# the second corpus's shipped group with 5 seeds: seeds 0-2 are those of notes_composed
mkdir -p notes_composed_5seeds
cp -r notes_composed/simclr-* notes_composed/floor-* notes_composed_5seeds/
stec-audio compare data=notes compare.methods=[simclr] "${c03[@]}" \
    compare.seeds=[0,1,2,3,4] compare.out=notes_composed_5seeds "${quiet[@]}"
# variants of the inverse model, which reuse the invariant arms and the floors (they have
# no inverse model): 128 features of its own (`_split`, the group until the class cost
# was traced to it), the same with the frames detached (`_detach`) and with the action loss
# at weight 1.0 (`_lambda1`, the group as first measured)
reuse() { mkdir -p "$2"; cp -r "$1"/simclr-off "$1"/floor-* "$2/" 2>/dev/null || true; }
for name in audio_composed notes_composed audio_composed_4x; do
    reuse "$name" "${name}_split"
    reuse "$name" "${name}_lambda1"
done
reuse audio_composed audio_composed_detach
# the lag profile's peaks standardised (`_peaks`), also with the frames detached
for name in audio_composed notes_composed; do
    reuse "$name" "${name}_peaks"
    reuse "$name" "${name}_peaks_detach"
done
peaks=(efference.standardise_peaks=true)
stec-audio compare compare.methods=[simclr] "${c03[@]}" "${peaks[@]}" \
    compare.out=audio_composed_peaks "${quiet[@]}"
stec-audio compare data=notes compare.methods=[simclr] "${c03[@]}" "${peaks[@]}" \
    compare.out=notes_composed_peaks "${quiet[@]}"
stec-audio compare compare.methods=[simclr] "${c03[@]}" "${peaks[@]}" \
    efference.detach_frames=true compare.out=audio_composed_peaks_detach "${quiet[@]}"
stec-audio compare data=notes compare.methods=[simclr] "${c03[@]}" "${peaks[@]}" \
    efference.detach_frames=true compare.out=notes_composed_peaks_detach "${quiet[@]}"
split=(efference.equivariant_dims=128)
stec-audio compare compare.methods=[simclr] "${c03[@]}" "${split[@]}" \
    compare.out=audio_composed_split "${quiet[@]}"
stec-audio compare data=notes compare.methods=[simclr] "${c03[@]}" "${split[@]}" \
    compare.out=notes_composed_split "${quiet[@]}"
stec-audio compare compare.methods=[simclr] "${c03[@]}" "${split[@]}" compare.seeds=[0] \
    compare.floors=[] trainer.epochs=120 compare.out=audio_composed_4x_split "${quiet[@]}"
stec-audio compare compare.methods=[simclr] "${c03[@]}" "${split[@]}" \
    efference.detach_frames=true compare.out=audio_composed_detach "${quiet[@]}"
stec-audio compare compare.methods=[simclr] "${c03[@]}" "${split[@]}" \
    efference.lambda_manip=1.0 compare.out=audio_composed_lambda1 "${quiet[@]}"
stec-audio compare data=notes compare.methods=[simclr] "${c03[@]}" "${split[@]}" \
    efference.lambda_manip=1.0 compare.out=notes_composed_lambda1 "${quiet[@]}"
stec-audio compare compare.methods=[simclr] "${c03[@]}" "${split[@]}" \
    efference.lambda_manip=1.0 compare.seeds=[0] compare.floors=[] trainer.epochs=120 \
    compare.out=audio_composed_4x_lambda1 "${quiet[@]}"
# the second corpus's class cost: the action loss at a constant 0.1 (`_lambda01`) and at
# 0.3 reached over the first half of the run (`_warmup`, now the group's), 5 seeds on both
# sound sets (the demo's seeds 3-4 of the invariant arm and the floors are new)
for name in lambda01 warmup; do
    reuse notes_composed_5seeds "notes_composed_$name"
    reuse audio_composed "audio_composed_$name"
done
for corpus in audio notes; do
    data=()
    [ "$corpus" = notes ] && data=(data=notes)
    stec-audio compare "${data[@]}" compare.methods=[simclr] "${c03[@]}" efference.lambda_manip=0.1 \
        compare.seeds=[0,1,2,3,4] compare.out="${corpus}_composed_lambda01" "${quiet[@]}"
    stec-audio compare "${data[@]}" compare.methods=[simclr] augment=composed \
        compare.seeds=[0,1,2,3,4] compare.out="${corpus}_composed_warmup" "${quiet[@]}"
done
# the budget curve of the group with its warm-up: seed 0 of both arms at 4x the budget
stec-audio compare compare.methods=[simclr] augment=composed compare.seeds=[0] \
    compare.floors=[] trainer.epochs=120 compare.out=audio_composed_warmup_4x "${quiet[@]}"
# the default's choice (0.2): the separate pipeline's inverse arm for seeds 0, 3 and 4 on
# both sound sets (seed 0 again: run with this release), joined with the first comparisons'
# seeds 1-2 and paired by seed against the composed group's inverse arm (5 seeds)
for corpus in audio notes; do
    data=()
    [ "$corpus" = notes ] && data=(data=notes)
    stec-audio compare "${data[@]}" compare.methods=[simclr] "${sep[@]}" \
        compare.efference=[inverse] compare.floors=[] compare.seeds=[0,3,4] \
        compare.out="${corpus}_separate_seeds034" "${quiet[@]}"
done
paired=("$repo/experiments/paired_across.py")
for corpus in audio notes; do
    python "${paired[@]}" "$corpus,${corpus}_separate_seeds034" "${corpus}_composed_warmup" \
        --arm simclr-inverse > "${corpus}_composed_warmup/paired_vs_separate_5seeds.txt"
done
# a first look at the composed group's price on the second corpus (inverse arms, seeds
# 0-2): the gain predicted again, and a pitch range of 6 semitones instead of 12
variant=(data=notes compare.methods=[simclr] augment=composed compare.efference=[inverse]
    compare.floors=[] compare.seeds=[0,1,2])
stec-audio compare "${variant[@]}" augment.fader.predict=true compare.out=notes_composed_gain \
    "${quiet[@]}"
stec-audio compare "${variant[@]}" augment.geometry.max_semitones=6 \
    compare.out=notes_composed_st6 "${quiet[@]}"
# and the separate pipeline's backgrounds (mixup on, its ratio not predicted), and views
# drawn anywhere in the clip instead of overlapping
stec-audio compare "${variant[@]}" augment.mixup.enabled=true compare.out=notes_composed_mixup \
    "${quiet[@]}"
stec-audio compare "${variant[@]}" augment.geometry.span=null \
    compare.out=notes_composed_anywhere "${quiet[@]}"
for name in gain st6 mixup anywhere; do
    for base in notes_composed_warmup notes,notes_separate_seeds034; do
        python "${paired[@]}" "$base" "notes_composed_$name" --arm simclr-inverse
    done > "notes_composed_$name/paired_vs_shipped_and_separate.txt"
done
# mixup's backgrounds in the composed group, confirmed on the demo (both arms, 5 seeds),
# its invariant arm on the second corpus (seeds 0-2), and half the background (ratio up to
# 0.2) on both corpora (inverse arms, seeds 0-2), and mixup at 4x the budget (seed 0, and seed 1's inverse arm)
mix=(compare.methods=[simclr] augment=composed augment.mixup.enabled=true compare.floors=[])
stec-audio compare "${mix[@]}" compare.efference=[off,inverse] compare.seeds=[0,1,2,3,4] \
    compare.out=audio_composed_mixup "${quiet[@]}"
stec-audio compare data=notes "${mix[@]}" compare.efference=[off] compare.seeds=[0,1,2] \
    compare.out=notes_composed_mixup_off "${quiet[@]}"
for corpus in audio notes; do
    data=()
    [ "$corpus" = notes ] && data=(data=notes)
    stec-audio compare "${data[@]}" "${mix[@]}" augment.mixup.ratio=[0.0,0.2] \
        compare.efference=[inverse] compare.seeds=[0,1,2] compare.out="${corpus}_composed_mixup02" \
        "${quiet[@]}"
done
stec-audio compare "${mix[@]}" compare.efference=[off,inverse] compare.seeds=[0] \
    trainer.epochs=120 compare.out=audio_composed_mixup_4x "${quiet[@]}"
stec-audio compare "${mix[@]}" compare.efference=[inverse] compare.seeds=[1] \
    trainer.epochs=120 compare.out=audio_composed_mixup_4x_seed1 "${quiet[@]}"
for arm in simclr-inverse simclr-off; do
    python "${paired[@]}" audio_composed_warmup audio_composed_mixup --arm "$arm"
done > audio_composed_mixup/paired_vs_shipped_and_separate.txt
python "${paired[@]}" audio,audio_separate_seeds034 audio_composed_mixup --arm simclr-inverse \
    >> audio_composed_mixup/paired_vs_shipped_and_separate.txt
python "${paired[@]}" notes_composed_mixup_off notes_composed_mixup --arm simclr-off \
    --arm-b simclr-inverse > notes_composed_mixup_off/paired_inverse_vs_off_and_vs_shipped.txt
python "${paired[@]}" notes_composed_warmup notes_composed_mixup_off --arm simclr-off \
    >> notes_composed_mixup_off/paired_inverse_vs_off_and_vs_shipped.txt
for corpus in audio notes; do
    for base in "${corpus}_composed_warmup" "${corpus}_composed_mixup"; do
        python "${paired[@]}" "$base" "${corpus}_composed_mixup02" --arm simclr-inverse
    done > "${corpus}_composed_mixup02/paired_vs_shipped_and_mixup.txt"
done
# one background per clip (mixup's stage=clip: mixed into the whole clip, shared by its two
# views), both arms, 5 seeds on both corpora, against the shipped group and a background
# per view, at 4x the budget on the demo (seed 0); how well two views' envelopes align
# under each, and what whole-view readers read
for corpus in audio notes; do
    data=()
    [ "$corpus" = notes ] && data=(data=notes)
    stec-audio compare "${data[@]}" "${mix[@]}" augment.mixup.stage=clip \
        compare.efference=[off,inverse] compare.seeds=[0,1,2,3,4] \
        compare.out="${corpus}_composed_mixclip" "${quiet[@]}"
    for arm in simclr-inverse simclr-off; do
        python "${paired[@]}" "${corpus}_composed_warmup" "${corpus}_composed_mixclip" --arm "$arm"
    done > "${corpus}_composed_mixclip/paired_vs_shipped_and_view_stage.txt"
done
stec-audio compare "${mix[@]}" augment.mixup.stage=clip compare.efference=[off,inverse] \
    compare.seeds=[0] trainer.epochs=120 compare.out=audio_composed_mixclip_4x "${quiet[@]}"
for arm in simclr-inverse simclr-off; do
    python "${paired[@]}" audio_composed_mixup audio_composed_mixclip --arm "$arm"
done >> audio_composed_mixclip/paired_vs_shipped_and_view_stage.txt
python "${paired[@]}" notes_composed_mixup notes_composed_mixclip --arm simclr-inverse \
    >> notes_composed_mixclip/paired_vs_shipped_and_view_stage.txt
python "${paired[@]}" notes_composed_mixup_off notes_composed_mixclip --arm simclr-off \
    >> notes_composed_mixclip/paired_vs_shipped_and_view_stage.txt
for stage in view clip; do
    for block in 1 2; do
        python "$repo/experiments/time_alignment.py" --block "$block" \
            augment.mixup.enabled=true augment.mixup.stage="$stage"
    done
done > audio_composed_mixclip/time_alignment.txt
for stage in clip view; do
    python "$repo/experiments/action_readability.py" --readers cnn,xcorr augment=composed \
        augment.mixup.enabled=true augment.mixup.predict=true augment.mixup.stage="$stage"
done > audio_composed_mixclip/readability.txt
# the forward model's own head beside the inverse model (efference=both,
# forward_head=own; EquiMod), with the features split for it and the inverse model
# (equivariant_dims=128; SIE) and without, seeds 0-2 on both corpora, paired against the
# shipped group's arms
for corpus in audio notes; do
    data=()
    [ "$corpus" = notes ] && data=(data=notes)
    for name in equimod sie; do
        extra=()
        [ "$name" = sie ] && extra=("${split[@]}")
        stec-audio compare "${data[@]}" compare.methods=[simclr] augment=composed \
            compare.floors=[] compare.efference=[both] efference.forward_head=own "${extra[@]}" \
            compare.seeds=[0,1,2] compare.out="${corpus}_composed_$name" "${quiet[@]}"
        for arm in simclr-off simclr-inverse; do
            python "${paired[@]}" "${corpus}_composed_warmup" "${corpus}_composed_$name" \
                --arm "$arm" --arm-b simclr-both
        done > "${corpus}_composed_$name/paired_vs_shipped.txt"
    done
    python "${paired[@]}" "${corpus}_composed_equimod" "${corpus}_composed_sie" \
        --arm simclr-both >> "${corpus}_composed_sie/paired_vs_shipped.txt"
done
stec-audio compare compare.methods=[simclr] augment=composed compare.floors=[] \
    compare.efference=[both] efference.forward_head=own compare.seeds=[0] trainer.epochs=120 \
    compare.out=audio_composed_equimod_4x "${quiet[@]}"
for arm in simclr-off simclr-inverse; do
    python "${paired[@]}" audio_composed_warmup_4x audio_composed_equimod_4x --arm "$arm" \
        --arm-b simclr-both
done > audio_composed_equimod_4x/paired_vs_shipped.txt
# the default at 4x, seed 1 (its invariant arm is audio_composed_4x_seed1's)
stec-audio compare compare.methods=[simclr] compare.floors=[] compare.efference=[inverse] \
    compare.seeds=[1] trainer.epochs=120 compare.out=audio_composed_warmup_4x_seed1 "${quiet[@]}"
python "${paired[@]}" audio_composed_warmup_4x,audio_composed_4x_seed1 \
    audio_composed_warmup_4x,audio_composed_warmup_4x_seed1 --arm simclr-off \
    --arm-b simclr-inverse > audio_composed_warmup_4x_seed1/paired_vs_off.txt
# the read gate: the separate pipeline (where little is read) and the composed default
stec-audio compare compare.methods=[simclr] compare.floors=[] augment=separate \
    compare.efference=[off,inverse] compare.seeds=[0,1,2] compare.out=audio_separate_today "${quiet[@]}"
for out in audio_separate_gate:separate audio_composed_gate:composed; do
    stec-audio compare compare.methods=[simclr] compare.floors=[] augment="${out#*:}" \
        compare.efference=[inverse] compare.seeds=[0,1,2] compare.out="${out%%:*}" \
        "${quiet[@]}" efference.read_gate=0.05
done
{
    python "${paired[@]}" audio_separate_today audio_separate_today --arm simclr-off --arm-b simclr-inverse
    python "${paired[@]}" audio_separate_today audio_separate_gate --arm simclr-off --arm-b simclr-inverse
    python "${paired[@]}" audio_separate_today audio_separate_gate --arm simclr-inverse --arm-b simclr-inverse
} > audio_separate_gate/paired.txt
# the gate in the composed group (its default since): 5 seeds on both corpora, paired with
# the group before it (the same seeds of its inverse and invariant arms)
for corpus in audio notes; do
    data=()
    [ "$corpus" = notes ] && data=(data=notes)
    stec-audio compare "${data[@]}" compare.methods=[simclr] compare.floors=[] \
        compare.efference=[inverse] compare.seeds=[0,1,2,3,4] \
        compare.out="${corpus}_composed_gate" trainer.progress=false
    for arm in simclr-inverse simclr-off; do
        python "${paired[@]}" "${corpus}_composed_warmup" "${corpus}_composed_gate" --arm "$arm" \
            --arm-b simclr-inverse
    done > "${corpus}_composed_gate/paired_vs_shipped.txt"
done
# the gated group at 4x the budget, seeds 0-1 (the invariant arms are the group's at 4x)
stec-audio compare compare.methods=[simclr] compare.floors=[] compare.efference=[inverse] \
    compare.seeds=[0,1] trainer.epochs=120 compare.out=audio_composed_gate_4x trainer.progress=false
for base in "audio_composed_warmup_4x,audio_composed_4x_seed1 --arm simclr-off" \
    "audio_composed_warmup_4x,audio_composed_warmup_4x_seed1 --arm simclr-inverse"; do
    # shellcheck disable=SC2086 # the folders and the arm, split on purpose
    python "${paired[@]}" $base audio_composed_gate_4x --arm-b simclr-inverse
done > audio_composed_gate_4x/paired_vs_shipped.txt
# the group before the gate at 4x the budget, seed 2 (its invariant arm is audio_composed_4x_seed2's)
stec-audio compare compare.methods=[simclr] compare.floors=[] compare.efference=[inverse] \
    compare.seeds=[2] trainer.epochs=120 compare.out=audio_composed_warmup_4x_seed2 "${quiet[@]}"
python "${paired[@]}" audio_composed_warmup_4x,audio_composed_4x_seed1,audio_composed_4x_seed2 \
    audio_composed_warmup_4x,audio_composed_warmup_4x_seed1,audio_composed_warmup_4x_seed2 \
    --arm simclr-off --arm-b simclr-inverse > audio_composed_warmup_4x_seed2/paired_vs_off.txt
python "${paired[@]}" notes_composed_5seeds notes_composed_lambda01 --arm simclr-inverse \
    > notes_composed_lambda01/paired_vs_shipped.txt
python "${paired[@]}" audio_composed audio_composed_lambda01 --arm simclr-inverse \
    > audio_composed_lambda01/paired_vs_shipped.txt
for corpus in audio notes; do
    shipped="${corpus}_composed"
    [ "$corpus" = notes ] && shipped=notes_composed_5seeds
    for base in "$shipped" "${corpus}_composed_lambda01"; do
        python "${paired[@]}" "$base" "${corpus}_composed_warmup" --arm simclr-inverse
    done > "${corpus}_composed_warmup/paired_vs_shipped_and_lambda01.txt"
    for name in lambda01 warmup; do
        python "${paired[@]}" "$corpus" "${corpus}_composed_$name" --arm simclr-inverse \
            > "${corpus}_composed_$name/paired_vs_separate.txt"
    done
done
for corpus in audio notes; do
    for arm in simclr-inverse simclr-off; do
        python "${paired[@]}" "$corpus" "${corpus}_composed" --arm "$arm"
    done > "${corpus}_composed/paired_vs_separate.txt"
    python "${paired[@]}" "${corpus}_composed_split" "${corpus}_composed" --arm simclr-inverse \
        > "${corpus}_composed/paired_vs_split.txt"
    python "${paired[@]}" "${corpus}_composed_lambda1" "${corpus}_composed_split" \
        --arm simclr-inverse > "${corpus}_composed_split/paired_vs_lambda1.txt"
    python "${paired[@]}" "${corpus}_composed" "${corpus}_composed_peaks" --arm simclr-inverse \
        > "${corpus}_composed_peaks/paired_vs_shipped.txt"
done
for corpus in audio notes; do
    python "${paired[@]}" "${corpus}_composed_peaks" "${corpus}_composed_peaks_detach" \
        --arm simclr-inverse > "${corpus}_composed_peaks_detach/paired_vs_peaks.txt"
    python "${paired[@]}" "${corpus}_composed" "${corpus}_composed_peaks_detach" \
        --arm simclr-inverse > "${corpus}_composed_peaks_detach/paired_vs_shipped.txt"
done
python "$repo/experiments/frame_reader_scale.py" augment=composed \
    encoder.init=audio_composed/simclr-inverse/seed0/checkpoints/last.pt \
    > audio_composed_peaks/frame_reader_scale.txt
python "${paired[@]}" audio_composed_split audio_composed_detach --arm simclr-inverse \
    > audio_composed_detach/paired_vs_split.txt
readers=("$repo/experiments/action_readability.py" --readers cnn,xcorr)
python "${readers[@]}" augment=composed augment.fader.predict=true > audio_composed/readability.txt
python "${readers[@]}" "${sep[@]}" > audio/readability.txt
python "$repo/experiments/action_readability.py" --modality vision --readers cnn --passes 4 \
    > audio_composed/readability_vision.txt
for block in 1 2 8; do
    python "$repo/experiments/time_alignment.py" --block "$block"
done > audio_composed/time_alignment.txt
python "$repo/experiments/time_alignment.py" augment.mixup.enabled=true \
    >> audio_composed/time_alignment.txt
stec-vision compare trainer.epochs=8 compare.out=vision "${quiet[@]}"
# segmentation beside classification, same arms and seeds
stec-vision compare trainer.epochs=8 compare.methods=[simclr] evaluate.with_segmentation=true \
    compare.out=vision_dense "${quiet[@]}"
# the same at the default budget (30 epochs)
stec-vision compare compare.methods=[simclr] evaluate.with_segmentation=true \
    compare.out=vision_dense30 "${quiet[@]}"
for name in audio audio_byol notes audio_pitch audio_pitch_readable audio_composed notes_composed \
    audio_composed_4x audio_composed_4x_seed1 audio_composed_4x_seed2 audio_composed_split notes_composed_split \
    audio_composed_4x_split \
    audio_composed_detach audio_composed_lambda1 notes_composed_lambda1 audio_composed_4x_lambda1 \
    audio_composed_peaks notes_composed_peaks audio_composed_peaks_detach \
    notes_composed_peaks_detach notes_composed_4x notes_composed_4x_seed1 notes_composed_5seeds \
    notes_composed_lambda01 audio_composed_lambda01 notes_composed_warmup audio_composed_warmup \
    audio_separate_seeds034 notes_separate_seeds034 audio_composed_warmup_4x \
    notes_composed_gain notes_composed_st6 notes_composed_mixup notes_composed_anywhere \
    audio_composed_mixup notes_composed_mixup_off audio_composed_mixup02 notes_composed_mixup02 \
    audio_composed_mixup_4x audio_composed_mixup_4x_seed1 audio_composed_mixclip \
    notes_composed_mixclip audio_composed_mixclip_4x audio_composed_equimod audio_composed_equimod_4x \
    notes_composed_equimod audio_composed_sie notes_composed_sie audio_composed_warmup_4x_seed1 \
    audio_separate_today audio_separate_gate audio_composed_gate notes_composed_gate \
    audio_composed_warmup_4x_seed2 audio_composed_gate_4x vision vision_dense vision_dense30; do
    mkdir -p "$repo/docs/results/$name"
    cp "$name"/comparison*.csv "$name"/comparison.json "$name"/report.md "$name"/*.png \
        "$repo/docs/results/$name/"
    cp "$name"/*.txt "$repo/docs/results/$name/" 2>/dev/null || true
done
echo "reports copied to $repo/docs/results/"
