"""Decoding audio files into float32 mono waveforms, fixing their length, and logging bad files.

Decisions (they apply to every dataset in :mod:`stec_audio`):

- **Decoding** uses ``soundfile`` (WAV, FLAC, OGG/Vorbis, and MP3 where the installed
  libsndfile supports it). Integer formats (8/16/24/32-bit) are scaled to float32 in
  [-1, 1] by libsndfile; float formats are kept as they are.
- **Channels** are averaged into mono, unless ``channel`` picks one.
- **Sample rate**: every file is resampled to the requested rate with torchaudio's
  band-limited sinc resampler (``torchaudio.functional.resample``'s algorithm; the kernel
  is built once per rate pair). A rate never raises an error. Per-clip torch work runs
  on one thread (:func:`single_torch_thread`).
- **Non-finite samples** (NaN/inf): when at most ``max_nonfinite_fraction`` (default 1%) of
  the samples are non-finite they are replaced by 0 (isolated glitches) and the file is
  recorded as repaired in the :class:`BadFileLog` given (so run summaries name it); above
  that, or when every sample is non-finite, the file raises :class:`AudioError`.
- **Empty, truncated-to-header and undecodable files** raise :class:`AudioError` naming
  the file and the reason.
- **Silent files** (peak below :data:`SILENCE_PEAK`, about -120 dBFS, i.e. all-zero for
  16-bit audio) are legal audio: :func:`load_audio` returns them, and
  :func:`clip_problem` flags them as ``"silent"`` so that datasets can skip them
  (``skip_silent=True`` by default, since a silent clip teaches a self-supervised model
  nothing; pass ``skip_silent=False`` to keep them, e.g. for evaluation).
- **Very short files** (under ``min_seconds``) are flagged as ``"too short"`` by
  :func:`clip_problem`; longer clips that are shorter than the training length are
  zero-padded by :func:`fit_length`.
- **Bad-file policy** (:class:`BadFileLog`): skipped files are counted per reason and
  named (repaired files too, apart); once at least ``min_files`` files (or the whole dataset, when it is smaller) have
  been tried, a skipped fraction above ``max_bad_fraction`` (default 0.5) stops the run
  with :class:`TooManyBadFiles`, because it means a wrong path, format or codec rather than
  a few broken downloads. So 1 bad file among 3 never stops a tiny run, while a folder of
  undecodable files stops after 20 tries instead of training on nothing.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import threading
import weakref
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from stec.errors import UserError, name_some

#: Peak absolute amplitude under which a clip counts as silent (-120 dBFS; 16-bit LSB is
#: 3e-5, so a 16-bit file is silent exactly when all its samples are zero).
SILENCE_PEAK = 1e-6

#: File extensions treated as audio when scanning folders.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au")


def stec_cache_dir(name: str) -> Path:
    """``$STEC_CACHE/<name>``, else ``~/.cache/stec/<name>``: where generated and derived
    files (the built-in sound sets, the AudioSet index) live by default."""
    base = os.environ.get("STEC_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "stec") / name


class AudioError(Exception):
    """A file that cannot be used as audio; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class TooManyBadFiles(UserError, RuntimeError):
    """Raised when the fraction of skipped files shows that a dataset is unusable."""


@contextlib.contextmanager
def single_torch_thread() -> Iterator[None]:
    """Run the enclosed torch ops on one thread, then restore the thread count.

    Per-clip work (resampling one clip, one log-mel) is too small to split across threads:
    on a busy 2-core machine two threads made it 10-20x slower than one. DataLoader
    workers already use one thread; this covers the main process (``num_workers=0``).
    """
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@functools.lru_cache(maxsize=16)
def _resampler(orig: int, new: int) -> torchaudio.transforms.Resample:
    # Same sinc kernel as torchaudio.functional.resample, built once per rate pair.
    return torchaudio.transforms.Resample(orig, new)


def resample(wave: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Band-limited resampling of ``wave [S]`` (float32) from ``orig_rate`` to ``new_rate``."""
    if orig_rate == new_rate:
        return wave
    with torch.no_grad(), single_torch_thread():
        out = _resampler(int(orig_rate), int(new_rate))(torch.from_numpy(wave))
    return out.numpy()


def load_audio(
    path: str | os.PathLike,
    sample_rate: int = 16000,
    channel: int | None = None,
    max_nonfinite_fraction: float = 0.01,
    log: BadFileLog | None = None,
) -> np.ndarray:
    """Decode ``path`` into a float32 mono waveform ``[samples]`` at ``sample_rate``.

    Args:
        path: an audio file readable by soundfile (WAV/FLAC/OGG, MP3 with libsndfile >=
            1.1).
        sample_rate: output rate in Hz; other rates are resampled, never rejected.
        channel: keep only this channel (0-based) instead of averaging all channels.
        max_nonfinite_fraction: NaN/inf samples up to this fraction are set to 0; more
            raise :class:`AudioError`.
        log: where a file whose NaN/inf samples were set to 0 is recorded as repaired.

    Raises:
        AudioError: missing, empty, undecodable or header-only file; a ``channel`` the
            file lacks; too many or only non-finite samples.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise AudioError(path, "file not found") from None
    except OSError as err:
        raise AudioError(path, f"cannot access file ({err.strerror or err})") from None
    if size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, OSError) as err:
        raise AudioError(path, f"cannot decode audio ({err})") from None
    if data.shape[0] == 0:
        raise AudioError(path, "no audio samples (header only)")
    if channel is not None:
        if not 0 <= channel < data.shape[1]:
            raise AudioError(path, f"has {data.shape[1]} channel(s); channel={channel} requested")
        data = data[:, channel : channel + 1]
    finite = np.isfinite(data)
    if not finite.all():
        bad = 1.0 - finite.mean()
        if bad >= 1.0:
            raise AudioError(path, "all samples are NaN/inf")
        if bad > max_nonfinite_fraction:
            raise AudioError(
                path,
                f"{bad:.1%} of samples are NaN/inf (more than {max_nonfinite_fraction:.1%})",
            )
        data = np.where(finite, data, np.float32(0.0))
        if log is not None:
            log.repaired(path, f"{bad:.2%} of samples were NaN/inf")
    wave = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    wave = np.ascontiguousarray(wave, dtype=np.float32)
    return resample(wave, rate, sample_rate)


def clip_problem(
    wave: np.ndarray, sample_rate: int, min_seconds: float = 0.0, skip_silent: bool = True
) -> str | None:
    """The reason to skip a decoded ``wave [S]`` (``"silent"``, ``"too short ..."``), or None."""
    if wave.shape[-1] < min_seconds * sample_rate:
        return f"too short ({wave.shape[-1] / sample_rate:.3f} s < {min_seconds} s)"
    if skip_silent and (wave.size == 0 or float(np.abs(wave).max()) < SILENCE_PEAK):
        return "silent"
    return None


def fit_length(wave: np.ndarray, n_samples: int, mode: str = "center") -> np.ndarray:
    """Pad with zeros or crop ``wave [..., S]`` to ``[..., n_samples]``.

    Longer clips are cropped around their centre (deterministic). Shorter clips are
    padded: ``mode="center"`` splits the zeros between both ends (the extra one at the
    end), ``mode="end"`` appends them after the clip.
    """
    if mode not in ("center", "end"):
        raise ValueError(f"fit_length: mode must be 'center' or 'end', got {mode!r}")
    n = wave.shape[-1]
    if n == n_samples:
        return wave
    if n > n_samples:
        start = (n - n_samples) // 2
        return wave[..., start : start + n_samples]
    missing = n_samples - n
    before = missing // 2 if mode == "center" else 0
    pad = [(0, 0)] * (wave.ndim - 1) + [(before, missing - before)]
    return np.pad(wave, pad)


class BadFileLog:
    """Counts skipped files with their reasons and stops runs where too many are bad.

    ``ok()`` and ``bad(path, reason)`` record one try each; ``repaired(path, what)`` notes a
    used file that needed repair (it is not a bad file). ``bad`` raises
    :class:`TooManyBadFiles` once at least ``min(min_files, total)`` files have been tried
    and more than ``max_bad_fraction`` of them were skipped. Each bad file is counted once
    even when it is met again in a later epoch.

    Thread-safe (a lock) and shared across processes (DataLoader workers hold copies):
    every bad or repaired file is appended as one ``bad|repaired<TAB>reason<TAB>path`` line
    to ``log_path`` (by default a temporary file removed with the log), ``O_APPEND`` writes
    of one short line do not interleave, and :attr:`n_bad`, :meth:`reasons`,
    :meth:`repairs` and :meth:`summary` read that file, so the main process sees what every
    worker skipped or repaired. The stop threshold is checked per
    process, on the files that process tried.
    """

    def __init__(
        self,
        max_bad_fraction: float = 0.5,
        min_files: int = 20,
        total: int | None = None,
        log_path: str | os.PathLike | None = None,
    ) -> None:
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must lie in [0, 1], got {max_bad_fraction}")
        self.max_bad_fraction = float(max_bad_fraction)
        self.min_files = int(min_files)
        self.total = total
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="stec-badfiles-", suffix=".tsv")
            os.close(fd)
            log_path = name
            weakref.finalize(self, _remove_owned, name, os.getpid())
        self.log_path = Path(log_path)
        self.n_ok = 0
        self._bad: dict[str, str] = {}
        self._repaired: dict[str, str] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def n_bad(self) -> int:
        """Bad files recorded by every process sharing the log."""
        return len(self.reasons())

    @property
    def n_repaired(self) -> int:
        """Repaired files recorded by every process sharing the log."""
        return len(self.repairs())

    def ok(self) -> None:
        """Record a file that was used."""
        with self._lock:
            self.n_ok += 1

    def bad(self, path: str | os.PathLike, reason: str) -> None:
        """Record a skipped file; raise :class:`TooManyBadFiles` past the threshold."""
        path = str(path)
        with self._lock:
            if path in self._bad:
                return
            self._bad[path] = reason
            self._append("bad", reason, path)
            self._check()

    def repaired(self, path: str | os.PathLike, what: str) -> None:
        """Record a file that is used after a repair (``what`` says which)."""
        path = str(path)
        with self._lock:
            if path in self._repaired:
                return
            self._repaired[path] = what
            self._append("repaired", what, path)

    def _append(self, kind: str, reason: str, path: str) -> None:
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(f"{kind}\t{reason.replace(chr(9), ' ')}\t{path}\n")

    def _check(self) -> None:
        n_bad = len(self._bad)
        tried = self.n_ok + n_bad
        needed = self.min_files if self.total is None else min(self.min_files, self.total)
        if tried >= max(needed, 1) and n_bad / tried > self.max_bad_fraction:
            raise TooManyBadFiles(
                f"{n_bad} of the first {tried} audio files could not be used (more than "
                f"{self.max_bad_fraction:.0%}); check the dataset path, file format and "
                f"codecs.\n{self.summary()}"
            )

    def reasons(self) -> dict[str, str]:
        """``{path: reason}`` for every skipped file, from every process."""
        return self._read("bad", self._bad)

    def repairs(self) -> dict[str, str]:
        """``{path: what was repaired}`` for every repaired file, from every process."""
        return self._read("repaired", self._repaired)

    def _read(self, kind: str, own: dict[str, str]) -> dict[str, str]:
        merged = dict(own)
        if self.log_path.exists():
            for line in self.log_path.read_text(encoding="utf-8").splitlines():
                fields = line.split("\t", 2)
                if len(fields) == 3 and fields[0] == kind:
                    merged.setdefault(fields[2], fields[1])
        return merged

    def summary(self, max_names: int = 5) -> str:
        """One line per reason: ``count x reason: first file names``; then the repaired
        files."""
        bad, repaired = self.reasons(), self.repairs()
        if not bad and not repaired:
            return "no bad audio files"
        lines = []
        if bad:
            by_reason: dict[str, list[str]] = {}
            for path, reason in bad.items():
                # Group by the reason's kind, not its details (e.g. the decoder's message).
                by_reason.setdefault(_reason_kind(reason), []).append(path)
            counts = Counter({k: len(v) for k, v in by_reason.items()})
            lines.append(f"{len(bad)} bad audio file(s) skipped:")
            for kind, n in counts.most_common():
                lines.append(f"  {n} x {kind}: {file_names(by_reason[kind], max_names)}")
        if repaired:
            lines.append(
                f"{len(repaired)} audio file(s) repaired (NaN/inf samples set to 0): "
                f"{file_names(list(repaired), max_names)}"
            )
        return "\n".join(lines)

    def write(self, path: str | os.PathLike) -> None:
        """Write every skipped file as ``reason<TAB>path`` lines (atomically)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        lines = "".join(f"{r.replace(chr(9), ' ')}\t{p}\n" for p, r in self.reasons().items())
        tmp.write_text(lines, encoding="utf-8")
        os.replace(tmp, path)


def _remove_owned(path: str, owner_pid: int) -> None:
    # Forked workers drop their copies too; only the creating process removes the file.
    if os.getpid() == owner_pid:
        with contextlib.suppress(OSError):
            os.remove(path)


def file_names(paths: list[str], max_names: int) -> str:
    """The first ``max_names`` file names, and how many more there are."""
    return name_some([Path(p).name for p in paths], max_names)


def _reason_kind(reason: str) -> str:
    return reason.split(" (", 1)[0]
