"""Audio evaluation beyond the clip-level probe of :mod:`stec.evaluation`.

``frames`` computes the timestamped frame embeddings of every clip of an index (HEAR's
``get_timestamp_embeddings``, with the per-frame log-mel floor), ``sed`` evaluates sound
event detection on them (splits, frame and event F1, the results table) and ``sed_probe``
is its frame probe (class-balanced ridge regression, ``lambda`` and thresholds chosen out
of fold). These modules may import the core, :mod:`stec_audio.data`, the encoders, the
weight loading and :mod:`stec_audio.hear`; never the augmenters, :mod:`stec_audio.app` or
the CLI. The commands that read a config and build the index for them
(``evaluate task=sed``, ``embed frames=true``) live in :mod:`stec_audio.cli`
(``tests/test_packaging.py`` checks the direction).
"""
