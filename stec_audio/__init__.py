"""Audio S-TEC: robust audio I/O, the BYOL-A log-mel front end, ESC-50 / AudioSet /
manifest / folder datasets, a log-mel cache, action-emitting spectrogram augmenters,
AudioNTT2020 and ResNet encoders, the HEAR API and the ``stec-audio`` CLI.

The modules are imported on demand (``from stec_audio.augment import TimeCrop``) so that
``import stec_audio.hear`` stays light for evaluation kits.
"""
