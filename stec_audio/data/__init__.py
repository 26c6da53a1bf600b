"""Audio data: everything between a file on disk and a normalised log-mel batch.

``io`` decodes a file robustly (resampling, mono, the bad-file log), ``frontend`` is the
BYOL-A log-mel front end and the normalisation statistics, ``clip_index`` the column table
every source becomes (ESC-50, manifest and folder readers in ``datasets``, AudioSet's
segment lists in ``audioset``), ``datasets`` the clip datasets over it, ``cache`` the
float16 log-mel cache, ``demo`` and ``demo_notes`` the two built-in generated sets, and
``strong`` the strong labels (event onsets and offsets) of sound event detection. These
modules import the core (:mod:`stec`) and one another only: never the augmenters, the
encoders, evaluation, :mod:`stec_audio.app` or the CLI (``tests/test_packaging.py``
checks it). This ``__init__`` imports nothing, so that the HEAR API, which needs only the
front end, stays light.
"""
