"""Reading and writing files: formats, exact PCM quantization, clipping, atomic writes, clear errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf
import torch
from core_fakes import files_under, tone

from restorekit import io
from restorekit.audio import Audio
from restorekit.errors import AudioFileError
from restorekit.io import read_audio, write_audio


def noise_audio(channels=2, frames=4000, rate=44100, peak=0.9, seed=0) -> Audio:
    rng = np.random.default_rng(seed)
    return Audio.from_numpy(rng.uniform(-peak, peak, (channels, frames)).astype(np.float32), rate)


@pytest.mark.parametrize("suffix,kwargs", [(".wav", {"subtype": "PCM_16"}), (".wav", {"subtype": "PCM_24"}),
                                           (".wav", {"subtype": "FLOAT"}), (".flac", {}), (".ogg", {}),
                                           (".mp3", {})])
def test_reads_supported_formats_as_channels_by_frames(tmp_path, suffix, kwargs):
    data = tone(8000, 44100, channels=2)
    path = tmp_path / f"x{suffix}"
    sf.write(str(path), data, 44100, **kwargs)
    a = read_audio(path)
    assert (a.channels, a.sample_rate) == (2, 44100)
    assert a.samples.dtype == torch.float32 and a.samples.is_contiguous()
    if suffix in (".wav", ".flac"):  # lossless: the layout is (channels, frames), not transposed
        assert a.frames == 8000
        assert np.abs(a.numpy() - data.T).max() < 1e-4
    else:  # lossy codecs add priming/padding frames; each channel still holds its own tone
        assert abs(a.frames - 8000) < 3000
        for channel, freq_hz in ((0, 440.0), (1, 880.0)):
            x = a.numpy()[channel]
            peak_hz = np.argmax(np.abs(np.fft.rfft(x * np.hanning(len(x))))) * 44100 / len(x)
            assert abs(peak_hz - freq_hz) < 10
        assert 0.4 < float(np.abs(a.numpy()).max()) < 0.6


@pytest.mark.parametrize("bits,fmt", [(16, "wav"), (24, "wav"), (16, "flac"), (24, "flac")])
def test_pcm_write_quantizes_to_the_grid_exactly(tmp_path, bits, fmt):
    a = noise_audio()
    path = write_audio(tmp_path / f"out.{fmt}", a, bit_depth=bits)
    info = sf.info(str(path))
    assert info.subtype == f"PCM_{bits}" and info.format == fmt.upper()
    b = read_audio(path)
    scale = 2.0 ** (bits - 1)
    expected = np.rint(a.numpy() * scale) / scale  # round to nearest on the 2**(bits-1) grid
    assert np.array_equal(b.numpy(), expected.astype(np.float32))
    assert np.abs(b.numpy() - a.numpy()).max() <= 0.5 / scale + 1e-9


def test_float_write_is_lossless(tmp_path):
    a = noise_audio(peak=1.5)  # float keeps values beyond full scale
    b = read_audio(write_audio(tmp_path / "f.wav", a, bit_depth=32))
    assert sf.info(str(tmp_path / "f.wav")).subtype == "FLOAT"
    assert np.array_equal(a.numpy(), b.numpy())


def test_pcm_write_clips_to_full_scale(tmp_path):
    a = Audio(torch.tensor([[2.0, -2.0, 1.0, -1.0, 0.5]] * 16).reshape(1, -1), 8000)
    b = read_audio(write_audio(tmp_path / "c.wav", a, bit_depth=16))
    assert b.numpy()[0, :5].tolist() == [32767 / 32768, -1.0, 32767 / 32768, -1.0, 0.5]


def test_quantize_24_bit_is_shifted_for_libsndfile():
    q = io.quantize(np.array([0.5, -1.0, 1.0]), 24)
    assert q.dtype == np.int32
    assert (q >> 8).tolist() == [1 << 22, -(1 << 23), (1 << 23) - 1]


def test_long_writes_go_in_blocks_with_the_same_result(tmp_path, monkeypatch):
    a = noise_audio(frames=10_007)
    whole = read_audio(write_audio(tmp_path / "whole.wav", a, bit_depth=24))
    monkeypatch.setattr(io, "WRITE_BLOCK_FRAMES", 1000)
    blocks = read_audio(write_audio(tmp_path / "blocks.wav", a, bit_depth=24))
    assert np.array_equal(whole.numpy(), blocks.numpy())


def test_write_creates_parent_directories_and_leaves_no_temp_file(tmp_path):
    path = write_audio(tmp_path / "a" / "b" / "out.flac", noise_audio(), bit_depth=16)
    assert path.is_file()
    assert files_under(tmp_path) == ["a/b/out.flac"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # like any new file, not mkstemp's 0600


def test_a_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "out.wav"
    target.write_bytes(b"previous contents")
    monkeypatch.setattr(io, "WRITE_BLOCK_FRAMES", 1000)
    calls = []

    def failing_quantize(block, bits):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return np.zeros(block.shape, np.int16)

    monkeypatch.setattr(io, "quantize", failing_quantize)
    with pytest.raises(AudioFileError, match=r"out.wav: cannot write: the disk is full \(\d+ bytes free in "):
        write_audio(target, noise_audio(frames=5000), bit_depth=16)
    assert files_under(tmp_path) == ["out.wav"]  # no .part file left behind
    assert target.read_bytes() == b"previous contents"


def test_an_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    def interrupted(block, bits):
        raise KeyboardInterrupt

    monkeypatch.setattr(io, "quantize", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_audio(tmp_path / "out.wav", noise_audio(), bit_depth=16)
    assert files_under(tmp_path) == []


def test_write_refusals(tmp_path):
    a = noise_audio()
    with pytest.raises(AudioFileError, match="cannot write 'mp3'; choose one of wav, flac"):
        write_audio(tmp_path / "x.mp3", a)
    with pytest.raises(AudioFileError, match="FLAC stores integers only"):
        write_audio(tmp_path / "x.flac", a, bit_depth=32)
    with pytest.raises(ValueError, match="bit depth must be one of 16, 24, 32"):
        write_audio(tmp_path / "x.wav", a, bit_depth=8)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(AudioFileError, match="cannot write to"):
        write_audio(blocker / "x.wav", a)
    (tmp_path / "dir.wav").mkdir()
    with pytest.raises(AudioFileError, match="cannot write"):
        write_audio(tmp_path / "dir.wav", a)
    assert files_under(tmp_path) == ["file"]


def test_format_argument_overrides_the_suffix(tmp_path):
    path = write_audio(tmp_path / "noext", noise_audio(), bit_depth=16, format="flac")
    assert sf.info(str(path)).format == "FLAC"


def test_eight_channels_and_extreme_rates_are_read(tmp_path, make_wav):
    a = read_audio(make_wav(tmp_path / "8ch.wav", channels=8, rate=48000, seconds=0.05))
    assert (a.channels, a.sample_rate) == (8, 48000)
    assert read_audio(make_wav(tmp_path / "8k.wav", rate=8000)).sample_rate == 8000
    assert read_audio(make_wav(tmp_path / "192k.wav", rate=192000)).sample_rate == 192000


def test_sixteen_frames_are_enough(tmp_path, make_wav):
    a = read_audio(make_wav(tmp_path / "short.wav", data=tone(16, 44100)))
    assert a.frames == 16


# -- unreadable input: every case names the file and says what is wrong -----------------

def _truncated(tmp_path, make_wav):
    good = make_wav(tmp_path / "good.wav", seconds=0.1).read_bytes()
    path = tmp_path / "trunc.wav"
    path.write_bytes(good[: len(good) // 2])
    return path


def _nan(tmp_path, make_wav):
    data = tone(1000, 44100)
    data[500, 0] = np.nan
    return make_wav(tmp_path / "nan.wav", data=data, subtype="FLOAT")


def _inf(tmp_path, make_wav):
    data = tone(1000, 44100, channels=2)
    data[250, 1] = -np.inf
    return make_wav(tmp_path / "inf.wav", data=data, subtype="FLOAT")


def _text(tmp_path, make_wav):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n" * 20)
    return path


def _empty(tmp_path, make_wav):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    return path


def _zero_frames(tmp_path, make_wav):
    return make_wav(tmp_path / "zero.wav", data=np.zeros((0, 1), np.float32))


def _one_frame(tmp_path, make_wav):
    return make_wav(tmp_path / "one.wav", data=np.full((1, 1), 0.5, np.float32))


def _header_only(tmp_path, make_wav):
    good = make_wav(tmp_path / "good.wav", seconds=0.1).read_bytes()
    path = tmp_path / "header.wav"
    path.write_bytes(good[:20])
    return path


BAD_FILES = {
    "missing": (lambda tmp_path, make_wav: tmp_path / "nope.wav", "no such file"),
    "directory": (lambda tmp_path, make_wav: tmp_path, "is a directory"),
    "empty": (_empty, r"the file is empty \(0 bytes\)"),
    "text named .wav": (_text, r"not a readable audio file \(.+\); restorekit reads .wav, .flac"),
    "truncated wav": (_truncated, r"truncated WAV: the header declares \d+ bytes of audio, the file holds \d+"),
    "wav header cut inside": (_header_only, "broken WAV: no data chunk found"),
    "zero frames": (_zero_frames, r"holds no audio \(0 frames\)"),
    "one frame": (_one_frame, r"only 1 frame\(s\) of audio; restorekit needs at least 16 frames"),
    "NaN": (_nan, r"1 samples are NaN or Inf \(first at 0.011 s\)"),
    "Inf": (_inf, r"1 samples are NaN or Inf \(first at 0.006 s\)"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_are_refused_with_a_clear_message(tmp_path, make_wav, case):
    make, pattern = BAD_FILES[case]
    path = make(tmp_path, make_wav)
    with pytest.raises(AudioFileError, match=pattern) as info:
        read_audio(path)
    assert str(info.value).startswith(str(path))


def test_too_many_channels_are_refused(tmp_path, make_wav):
    path = make_wav(tmp_path / "33.wav", channels=33, seconds=0.01)
    with pytest.raises(AudioFileError, match="33 channels; restorekit reads at most 32"):
        read_audio(path)


def test_read_and_write_are_public_api(tmp_path):
    import restorekit

    a = noise_audio()
    assert np.array_equal(restorekit.read_audio(restorekit.write_audio(tmp_path / "x.wav", a, bit_depth=32)).numpy(),
                          a.numpy())
