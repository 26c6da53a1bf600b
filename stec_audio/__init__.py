"""Audio S-TEC: robust audio I/O, the BYOL-A log-mel front end, ESC-50 / AudioSet /
manifest / folder datasets, a log-mel cache, action-emitting spectrogram augmenters,
AudioNTT2020 and ResNet encoders, the HEAR API and the ``stec-audio`` CLI.

Where things live (docs/audio.md, "Where things live"): :mod:`stec_audio.data` (decoding,
front end, clip indexes, datasets, cache, built-in sets, strong labels),
:mod:`stec_audio.augment` (the augmenters and the pipeline builder) and
:mod:`stec_audio.evaluation` (frame embeddings, sound event detection); at the top the
encoders (``encoders``), the weight loading (``weights``), the HEAR API (``hear``), the
wiring from a config (``app``) and the CLI (``cli``). Imports run one way: ``augment`` and
``data`` import neither each other nor anything above them, ``evaluation`` imports no
augmenter, and nothing but the CLI imports ``app`` or ``cli`` (tests/test_packaging.py).

The modules are imported on demand (``from stec_audio.augment import TimeCrop``) so that
``import stec_audio.hear`` stays light for evaluation kits.
"""
