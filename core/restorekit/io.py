"""Reading and writing audio files (soundfile): clear errors, atomic writes, any file name.

Paths reach libsndfile as bytes (`os.fsencode`), so a name the file system accepts
works even when it is not valid UTF-8. torch is imported only when audio is read.
"""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

from restorekit.errors import AudioFileError

if TYPE_CHECKING:  # pragma: no cover
    from restorekit.audio import Audio

READ_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff", ".opus")
WRITE_FORMATS = {"wav": "WAV", "flac": "FLAC"}
SUBTYPES = {16: "PCM_16", 24: "PCM_24", 32: "FLOAT"}
FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})
MIN_FRAMES = 16
MAX_CHANNELS = 32
WRITE_BLOCK_FRAMES = 1 << 18


def find_audio_files(directory: Path, exclude: Path | None = None) -> list[Path]:
    """Audio files below `directory` (recursive, by extension, sorted); none from below `exclude`."""
    root = Path(directory).resolve()
    skip = Path(exclude).resolve() if exclude is not None else None
    if skip is not None and (skip == root or not skip.is_relative_to(root)):
        skip = None
    return sorted(p for p in Path(directory).rglob("*") if p.is_file() and p.suffix.lower() in READ_EXTENSIONS
                  and not (skip is not None and p.resolve().is_relative_to(skip)))


def open_audio(path: str | Path) -> sf.SoundFile:
    """An open SoundFile after the checks every read makes; raises AudioFileError saying what is wrong."""
    path = Path(path)
    if not path.exists():
        raise AudioFileError(f"{path}: no such file")
    if path.is_dir():
        raise AudioFileError(f"{path}: is a directory, not an audio file")
    size = path.stat().st_size
    if size == 0:
        raise AudioFileError(f"{path}: the file is empty (0 bytes)")
    _check_wav_truncation(path, size)
    try:
        f = sf.SoundFile(os.fsencode(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioFileError(f"{path}: not a readable audio file ({_sf_reason(exc)}); "
                             f"restorekit reads {', '.join(READ_EXTENSIONS)}") from exc
    if f.channels > MAX_CHANNELS:
        f.close()
        raise AudioFileError(f"{path}: {f.channels} channels; restorekit reads at most {MAX_CHANNELS}")
    return f


def check_frames(path, frames: int) -> None:
    if frames == 0:
        raise AudioFileError(f"{path}: holds no audio (0 frames)")
    if frames < MIN_FRAMES:
        raise AudioFileError(f"{path}: only {frames} frame(s) of audio; restorekit needs at least "
                             f"{MIN_FRAMES} frames to restore anything")


def check_finite(path, bad_count: int, first_frame: int, rate: int) -> None:
    if bad_count:
        raise AudioFileError(f"{path}: {bad_count} samples are NaN or Inf (first at {first_frame / rate:.3f} s); "
                             "fix or re-export the source file")


def read_audio(path: str | Path) -> Audio:
    """Read a file into float32 (channels, frames) Audio; raises AudioFileError saying what is wrong."""
    from restorekit.audio import Audio

    path = Path(path)
    with open_audio(path) as f:
        try:
            data = f.read(dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
            raise AudioFileError(f"{path}: not a readable audio file ({_sf_reason(exc)}); "
                                 f"restorekit reads {', '.join(READ_EXTENSIONS)}") from exc
        rate = f.samplerate
    check_frames(path, data.shape[0])
    samples = np.ascontiguousarray(data.T)
    bad = ~np.isfinite(samples)
    if bad.any():
        check_finite(path, int(bad.sum()), int(np.argmax(bad.any(axis=0))), rate)
    return Audio.from_numpy(samples, rate)


def is_float_file(path: str | Path) -> bool:
    """True when the file stores floating-point samples (WAV/AIFF FLOAT or DOUBLE), which may exceed full scale."""
    try:
        return sf.info(os.fsencode(path)).subtype in FLOAT_SUBTYPES
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        return False


def _sf_reason(exc: Exception) -> str:
    text = str(exc).strip()
    return text.split(": ", 1)[-1] if "Error opening" in text else text


def _check_wav_truncation(path: Path, size: int) -> None:
    """A RIFF/WAVE file whose data chunk claims more bytes than the file holds is truncated."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            if len(chunk) < 8:
                break
            cid, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                have = size - pos - 8
                if length != 0xFFFFFFFF and length > have:
                    raise AudioFileError(
                        f"{path}: truncated WAV: the header declares {length} bytes of audio, the file "
                        f"holds {have}; the file was cut short (copy it again or re-export it)"
                    )
                return
            pos += 8 + length + (length & 1)
        raise AudioFileError(f"{path}: broken WAV: no data chunk found")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def subtype_for(bit_depth: int) -> str:
    if bit_depth not in SUBTYPES:
        raise ValueError(f"bit depth must be one of {', '.join(map(str, SUBTYPES))}, got {bit_depth}")
    return SUBTYPES[bit_depth]


def quantize(block: np.ndarray, bit_depth: int) -> np.ndarray:
    """Float samples to integers on the 2**(bits-1) grid soundfile reads back exactly.

    24-bit values are returned as int32 shifted left by 8, the way libsndfile takes them.
    Values outside [-1, 1) are clipped.
    """
    scale = float(1 << (bit_depth - 1))
    q = np.clip(np.rint(block * scale), -scale, scale - 1)
    if bit_depth == 16:
        return q.astype(np.int16)
    return q.astype(np.int32) << 8


class AudioWriter:
    """Writes blocks to a temporary file in the target directory; `commit()` renames it into place.

    wav or flac at 16/24-bit PCM (clipped to [-1, 1), quantized with `quantize`) or 32-bit
    float; `peak` is the largest |sample| written. A writer left without `commit` (`abort`)
    removes its temporary, so a crash never leaves a half-written output.
    """

    def __init__(self, path: str | Path, sample_rate: int, channels: int, *, bit_depth: int = 24,
                 format: str | None = None) -> None:
        path = Path(path)
        fmt = (format or path.suffix.lstrip(".") or "wav").lower()
        if fmt not in WRITE_FORMATS:
            raise AudioFileError(f"{path}: cannot write '{fmt}'; choose one of {', '.join(WRITE_FORMATS)}")
        subtype = subtype_for(bit_depth)
        if fmt == "flac" and bit_depth == 32:
            raise AudioFileError(f"{path}: FLAC stores integers only; use --bit-depth 16 or 24, or --format wav")
        self.path, self.bit_depth, self.sample_rate, self.channels, self.peak = path, bit_depth, sample_rate, channels, 0.0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, self.tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        except OSError as exc:
            raise AudioFileError(f"{path}: cannot write to {path.parent}: {exc.strerror or exc}") from exc
        try:
            os.close(fd)
            self._file = sf.SoundFile(os.fsencode(self.tmp), "w", sample_rate, channels, subtype=subtype,
                                      format=WRITE_FORMATS[fmt])
        except BaseException as exc:
            self._failed(exc)

    def write(self, samples) -> None:
        """Write (channels, frames) float samples (numpy or a CPU tensor)."""
        samples = samples.numpy() if hasattr(samples, "numpy") else samples
        try:
            for start in range(0, samples.shape[1], WRITE_BLOCK_FRAMES):
                block = samples[:, start:start + WRITE_BLOCK_FRAMES].T
                if block.size:
                    self.peak = max(self.peak, float(block.max()), float(-block.min()))
                self._file.write(block.astype(np.float32) if self.bit_depth == 32 else quantize(block, self.bit_depth))
        except BaseException as exc:
            self._failed(exc)

    def commit(self) -> Path:
        try:
            self._file.close()
            os.chmod(self.tmp, 0o666 & ~_umask())
            os.replace(self.tmp, self.path)
        except BaseException as exc:
            self._failed(exc)
        return self.path

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._file.close()
        Path(self.tmp).unlink(missing_ok=True)

    def _failed(self, exc: BaseException):
        self.abort()
        if isinstance(exc, (OSError, sf.LibsndfileError)):
            raise AudioFileError(f"{self.path}: cannot write: {write_failure(exc, self.path.parent)}") from exc
        raise exc


def write_audio(path: str | Path, audio: Audio, *, bit_depth: int = 24, format: str | None = None) -> Path:
    """Write atomically (temporary file, then rename) as wav or flac at 16/24-bit PCM or 32-bit float.

    PCM output is clipped to [-1, 1); the number of clipped samples is not hidden: the
    caller can compare peaks. Returns the path written.
    """
    writer = AudioWriter(path, audio.sample_rate, audio.channels, bit_depth=bit_depth, format=format)
    writer.write(audio.numpy() if audio.device.type == "cpu" else audio.samples.cpu().numpy())
    return writer.commit()


def write_failure(exc: BaseException, where: Path) -> str:
    """Why a write failed, naming a full disk (libsndfile says only "System error")."""
    import errno
    import shutil

    try:
        free = shutil.disk_usage(where).free
    except OSError:
        free = None
    if getattr(exc, "errno", None) == errno.ENOSPC or (free is not None and free < (1 << 20)):
        return f"the disk is full ({free} bytes free in {where})"
    return getattr(exc, "strerror", None) or str(exc)


def audio_info(path: str | Path):
    """soundfile's header information of a file, or None when it cannot be read."""
    try:
        return sf.info(os.fsencode(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError):
        return None


def audio_seconds(path: str | Path) -> float:
    """The duration of an audio file from its header (0 when it cannot be read)."""
    try:
        return float(sf.info(os.fsencode(path)).duration)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError):
        return 0.0
