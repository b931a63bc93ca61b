"""MusicGen for `generate.musicgen`: where the weights are, downloading them, the tiny test models,
melody chroma, and generation, through the `transformers` implementation.

Weights: Meta's checkpoints come from the Hugging Face hub into its cache (the layout
huggingface_hub uses: `<cache>/models--facebook--musicgen-small/snapshots/<commit>/`), found
by restorekit itself from the cache's files, so a missing or incomplete model is known before
anything is downloaded and without touching the network. Only what transformers loads is
fetched: the configs, the tokenizer and the weights (safetensors when the repository has them);
the audiocraft-format `state_dict.bin` files are not. Downloads follow the rules of
`restorekit_plugins._network` (RESTOREKIT_OFFLINE / HF_HUB_OFFLINE, a 3 s probe once per
process, a failed download is not retried in the same process).

Melody: transformers' melody feature extractor needs torchaudio; the chroma is computed here
the same way with torch.stft (the loudest of 12 pitch classes per frame, one-hot).

Nothing heavy is imported at module import time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from restorekit.errors import StageError

from restorekit_plugins import _network
from restorekit_plugins._network import WeightsUnavailable
from restorekit_plugins.generate import INSTALL_HINT, SAMPLE_RATE_HZ, ModelSpec

log = logging.getLogger("restorekit")

FETCH_COMMAND = "restorekit fetch-musicgen"
DEFAULT_ENDPOINT = "https://huggingface.co"
CONFIG_FILES = ("config.json", "generation_config.json", "preprocessor_config.json", "tokenizer.json",
                "tokenizer_config.json", "special_tokens_map.json", "spiece.model", "added_tokens.json")
WEIGHT_SETS = (("model.safetensors.index.json", "model.safetensors"),
               ("pytorch_model.bin.index.json", "pytorch_model.bin"))  # (index of shards, single file)
MELODY_DEFAULTS = {"n_fft": 16384, "hop_length": 4096, "chunk_length": 30}  # MusicgenMelodyFeatureExtractor's
DTYPES = {"float32", "float16", "bfloat16"}

_failed_downloads: dict[str, str] = {}  # repo -> why its download failed; tried once per process


def require_transformers() -> None:
    """Raise a StageError saying what to install when transformers cannot be imported."""
    try:
        import transformers  # noqa: F401
    except ImportError as exc:
        raise StageError(f"generate.musicgen needs the transformers package ({exc}); install it with: "
                         f"{INSTALL_HINT}") from exc


def resolve_precision(precision: str, device: str) -> str:
    """The dtype name to run in: auto is float16 on CUDA, float32 on the CPU; half precision needs CUDA."""
    on_cuda = device.startswith("cuda")
    if precision == "auto":
        return "float16" if on_cuda else "float32"
    if precision != "float32" and not on_cuda:
        raise StageError(f"generate.musicgen: precision {precision} needs a CUDA device and this stage runs on "
                         f"{device}; use precision auto or float32")
    return precision


# -- where the weights are ------------------------------------------------------------------------

def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, as huggingface_hub computes it (read now, so tests can move it)."""
    env = os.environ
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(name):
            return Path(env[name]).expanduser()
    if env.get("HF_HOME"):
        home = Path(env["HF_HOME"]).expanduser()
    else:
        xdg = env.get("XDG_CACHE_HOME")
        home = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface"
    return home / "hub"


def repo_dir(repo: str, cache: Path | None = None) -> Path:
    return (cache or hub_cache_dir()) / ("models--" + repo.replace("/", "--"))


def snapshot_dir(repo: str, cache: Path | None = None) -> Path | None:
    """The cached snapshot of `repo` (refs/main's commit, else the newest snapshot), or None."""
    folder = repo_dir(repo, cache)
    ref = folder / "refs" / "main"
    with contextlib.suppress(OSError):
        commit = ref.read_text(encoding="utf-8").strip()
        if commit and (folder / "snapshots" / commit).is_dir():
            return folder / "snapshots" / commit
    snapshots = [p for p in (folder / "snapshots").glob("*") if p.is_dir()] if folder.is_dir() else []
    return max(snapshots, key=lambda p: p.stat().st_mtime) if snapshots else None


def missing_files(folder: Path) -> list[str]:
    """What a model folder lacks for transformers to load it: config, tokenizer, weights (all shards)."""
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    if not any((folder / name).is_file() for name in ("tokenizer.json", "spiece.model")):
        missing.append("tokenizer.json or spiece.model")
    for index, single in WEIGHT_SETS:
        if (folder / index).is_file():
            try:
                shards = sorted(set(json.loads((folder / index).read_text(encoding="utf-8"))["weight_map"].values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                return [*missing, f"a readable {index}"]
            return missing + [s for s in shards if not (folder / s).is_file()]
        if (folder / single).is_file():
            return missing
    return [*missing, "model.safetensors (or pytorch_model.bin)"]


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def missing_message(repo: str, reason: str, detail: str) -> str:
    """One line: what is missing, where it was looked for, and every way out."""
    return (f"generate.musicgen: the weights of MusicGen model '{repo}' are not on this machine and cannot be "
            f"downloaded ({reason}). Looked in {repo_dir(repo)} (the Hugging Face hub cache; HF_HOME or "
            f"HF_HUB_CACHE move it): {detail}. To fix: run `{FETCH_COMMAND} {repo}` once with internet access "
            f"(or any pipeline with `download: true`, the default), or copy that folder there from a machine "
            f"that has it, or set `model` to a local directory holding the model (save_pretrained); "
            f"`model: tiny` runs without weights (random, for tests).")


def ensure_weights(spec: ModelSpec, download: bool) -> Path:
    """The folder to load `spec` from, downloading what the cache lacks (or WeightsUnavailable saying why not)."""
    if spec.kind == "local":
        assert spec.path is not None
        missing = missing_files(spec.path)
        if missing:
            raise StageError(f"generate.musicgen: model directory {spec.path} lacks {', '.join(missing)}; save the "
                             "model there with save_pretrained (and its tokenizer), or name a hub model")
        return spec.path
    repo = spec.name
    folder = snapshot_dir(repo)
    missing = missing_files(folder) if folder is not None else None
    if folder is not None and not missing:
        return folder
    detail = "nothing cached" if folder is None else f"the cached snapshot {folder.name[:12]} lacks {', '.join(missing)}"
    fix = f"run `{FETCH_COMMAND} {repo}` online"
    if not download:
        raise WeightsUnavailable(missing_message(repo, "not cached, and `download` is false", detail),
                                 short="not cached, download: false", fix=fix)
    offline = _network.offline_reason(f"{endpoint()}/api/models/{repo}")
    if offline:
        raise WeightsUnavailable(missing_message(repo, offline[0], detail), short=offline[1], fix=fix)
    if repo in _failed_downloads:
        raise WeightsUnavailable(missing_message(repo, _failed_downloads[repo], detail), short="download failed",
                                 fix=fix)
    try:
        folder = fetch(repo, hub_cache_dir(), _network.show_progress())
    except Exception as exc:  # network errors, a full disk, a repository that moved
        _failed_downloads[repo] = f"download failed: {type(exc).__name__}: {exc}".splitlines()[0]
        raise WeightsUnavailable(missing_message(repo, _failed_downloads[repo], detail), short="download failed",
                                 fix=fix) from exc
    missing = missing_files(folder)
    if missing:
        raise StageError(f"generate.musicgen: downloaded {repo} into {folder}, but it lacks {', '.join(missing)}; "
                         "the repository may have changed its layout")
    return folder


def wanted_files(files: list[str]) -> list[str]:
    """The files of a hub repository that transformers needs: configs, tokenizer, and one set of weights."""
    keep = [f for f in files if f in CONFIG_FILES]
    safetensors = [f for f in files if f.endswith(".safetensors") or f == "model.safetensors.index.json"]
    weights = safetensors or [f for f in files if f.startswith("pytorch_model") and
                              (f.endswith((".bin", ".bin.index.json")))]
    return keep + weights


def fetch(repo: str, cache: Path, progress: bool) -> Path:
    """Download what transformers needs of `repo` into the hub cache; the snapshot folder."""
    import socket

    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    log.warning("generate.musicgen: downloading the weights of MusicGen model '%s' once, to %s",
                repo, repo_dir(repo, cache))
    was_disabled = are_progress_bars_disabled()
    if not progress:
        disable_progress_bars()
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_network.DOWNLOAD_TIMEOUT_S)  # a stalled transfer fails instead of hanging
    try:
        files = HfApi(endpoint=endpoint()).list_repo_files(repo)
        return Path(snapshot_download(repo, cache_dir=cache, allow_patterns=wanted_files(files),
                                      endpoint=endpoint()))
    finally:
        socket.setdefaulttimeout(previous)
        if not progress and not was_disabled:
            enable_progress_bars()


def reset_network_state() -> None:
    """Forget the probes and failed downloads of this process (for tests)."""
    _network.reset_probes()
    _failed_downloads.clear()


# -- models ----------------------------------------------------------------------------------------

@dataclass
class Bundle:
    """A loaded model with what generation needs to know about it."""

    model: Any
    tokenizer: Any
    spec: ModelSpec
    dtype_name: str
    melody: dict[str, int]  # chroma settings of a melody model (n_fft, hop_length, chunk_length)

    @property
    def frame_rate(self) -> float:
        """Codec frames (tokens) per second."""
        codec = self.model.config.audio_encoder
        return codec.sampling_rate / math.prod(codec.upsampling_ratios)

    @property
    def channel_codebooks(self) -> int:
        decoder = self.model.config.decoder
        return decoder.num_codebooks // decoder.audio_channels


@contextlib.contextmanager
def quiet_transformers():
    """transformers' warnings lowered to errors while loading (config remarks that MusicGen's own
    checkpoints trigger, e.g. its pad token one past the codebook); restored afterwards."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def load_bundle(spec: ModelSpec, folder: Path | None, device: str, dtype_name: str) -> Bundle:
    """The model of `spec` on `device` in `dtype_name`, in eval mode, with its tokenizer."""
    import torch

    dtype = getattr(torch, dtype_name)
    melody = dict(MELODY_DEFAULTS)
    with quiet_transformers():
        if spec.kind == "tiny":
            model, tokenizer = build_tiny(spec.channels, spec.melody)
            model = model.to(dtype)
        else:
            from transformers import (
                AutoTokenizer,
                MusicgenForConditionalGeneration,
                MusicgenMelodyForConditionalGeneration,
            )

            cls = MusicgenMelodyForConditionalGeneration if spec.melody else MusicgenForConditionalGeneration
            try:
                model = cls.from_pretrained(folder, dtype=dtype, local_files_only=True)
                tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            except Exception as exc:
                raise StageError(f"generate.musicgen: cannot load MusicGen from {folder}: {type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''}; delete it and download it "
                                 f"again ({FETCH_COMMAND})") from exc
            with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
                extractor = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
                melody.update({k: int(extractor[k]) for k in MELODY_DEFAULTS if k in extractor})
    rate = model.config.audio_encoder.sampling_rate
    if rate != SAMPLE_RATE_HZ:
        raise StageError(f"generate.musicgen: model {spec.name} runs at {rate} Hz; this stage expects MusicGen's "
                         f"{SAMPLE_RATE_HZ} Hz")
    model.eval()
    return Bundle(model.to(device), tokenizer, spec, dtype_name, melody)


def byte_tokenizer():
    """A byte-level tokenizer built offline (every byte a token, then </s>), so any two prompts differ."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]  # ids 0, 1, 2 as in T5
    vocab = {s: i for i, s in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


TINY_CODEBOOK = 64  # codes per codebook of the tiny EnCodec (the real one has 2048)
TINY_OUTPUT_GAIN = 64.0  # on the last codec conv: from about -57 to about -20 dBFS RMS


def build_tiny(channels: int, melody: bool):
    """(model, tokenizer): a tiny random-weight MusicGen (T5 text encoder, decoder, EnCodec at 32 kHz with
    MusicGen's 640-sample hop), the same in every process. Weights are drawn at a scale where the prompt,
    the seed and the codes change the output (the library's initialisation leaves the codebooks zero)."""
    import torch
    from transformers import EncodecConfig, T5Config

    tokenizer = byte_tokenizer()
    text = T5Config(vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                    relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
                    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    codec = EncodecConfig(sampling_rate=SAMPLE_RATE_HZ, audio_channels=1, hidden_size=16, num_filters=4,
                          num_residual_layers=1, upsampling_ratios=[8, 5, 4, 4], num_lstm_layers=1,
                          codebook_size=TINY_CODEBOOK, target_bandwidths=[1.2 * channels])
    decoder = {"vocab_size": TINY_CODEBOOK, "max_position_embeddings": 2048, "num_hidden_layers": 1, "ffn_dim": 32,
                   "num_attention_heads": 2, "hidden_size": 16, "num_codebooks": 4 * channels, "audio_channels": channels,
                   "pad_token_id": TINY_CODEBOOK, "bos_token_id": TINY_CODEBOOK, "dropout": 0.0}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if melody:
            from transformers import (
                MusicgenMelodyConfig,
                MusicgenMelodyDecoderConfig,
                MusicgenMelodyForConditionalGeneration,
            )

            config = MusicgenMelodyConfig(text_encoder=text, audio_encoder=codec,
                                          decoder=MusicgenMelodyDecoderConfig(**decoder), num_chroma=12,
                                          chroma_length=235)
            model = MusicgenMelodyForConditionalGeneration(config)
        else:
            from transformers import (
                MusicgenConfig,
                MusicgenDecoderConfig,
                MusicgenForConditionalGeneration,
            )

            config = MusicgenConfig(text_encoder=text, audio_encoder=codec, decoder=MusicgenDecoderConfig(**decoder))
            model = MusicgenForConditionalGeneration(config)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if not name.startswith("audio_encoder") and p.dim() >= 2:
                    p.normal_(0.0, p.shape[-1] ** -0.5)  # unit-scale activations: logits that depend on the input
            for name, b in model.named_buffers():
                if name.endswith("codebook.embed"):
                    b.normal_()
            for name, p in model.audio_encoder.named_parameters():
                if name.endswith("bias"):  # else the codec's output is mostly its biases: a constant
                    p.zero_()
            last = model.audio_encoder.decoder.layers[-1]
            for name, p in last.named_parameters():  # the weight-norm gain of the last conv: output near -20 dBFS
                if name.endswith(("original0", "weight_g")):
                    p.mul_(TINY_OUTPUT_GAIN)
    generation = model.generation_config
    generation.decoder_start_token_id = generation.pad_token_id = generation.bos_token_id = TINY_CODEBOOK
    generation.max_length = 1500
    model.eval()
    return model, tokenizer


# -- generation ------------------------------------------------------------------------------------

def melody_chroma(path: str, settings: dict[str, int]):
    """(1, frames, 12) one-hot chroma of the file at `path` as MusicGen-melody's feature extractor
    computes it: mono, 32 kHz, the first chunk_length seconds, |STFT|^2 (Hann, centred) onto 12 pitch
    classes, the loudest class per frame set to 1."""
    import numpy as np
    import torch
    from restorekit.dsp import resample
    from restorekit.io import read_audio
    from transformers.audio_utils import chroma_filter_bank

    audio = read_audio(path)
    if audio.sample_rate != SAMPLE_RATE_HZ:
        audio = resample(audio, SAMPLE_RATE_HZ)
    wav = audio.samples.mean(0)[: settings["chunk_length"] * SAMPLE_RATE_HZ].to(torch.float32)
    n_fft, hop = settings["n_fft"], settings["hop_length"]
    if wav.shape[-1] < n_fft:
        pad = n_fft - wav.shape[-1]
        wav = torch.nn.functional.pad(wav, (pad // 2, pad - pad // 2))
    spec = torch.stft(wav, n_fft, hop_length=hop, window=torch.hann_window(n_fft), center=True,
                      pad_mode="reflect", return_complex=True).abs().pow(2)  # (freq, frames)
    filters = torch.from_numpy(np.asarray(chroma_filter_bank(num_frequency_bins=n_fft, num_chroma=12,
                                                             sampling_rate=SAMPLE_RATE_HZ, tuning=0),
                                          dtype=np.float32))
    chroma = filters @ spec  # (12, frames)
    onehot = torch.zeros(chroma.shape[1], 12)
    onehot[torch.arange(chroma.shape[1]), chroma.argmax(0)] = 1.0
    return onehot[None]


def generate(bundle: Bundle, *, prompt: str, duration_s: float, guidance_scale: float, top_k: int, top_p: float,
             temperature: float, seed: int, device: str, melody_path: str | None):
    """`duration_s` of audio for `prompt`, sampled with `seed`: an Audio at 32 kHz on the CPU, float32."""
    import torch
    from restorekit.audio import Audio

    model = bundle.model
    frames = round(duration_s * SAMPLE_RATE_HZ)
    tokens = math.ceil(duration_s * bundle.frame_rate)
    inputs = dict(bundle.tokenizer([prompt], padding=True, return_tensors="pt"))
    if melody_path is not None:
        inputs["input_features"] = melody_chroma(melody_path, bundle.melody).to(getattr(torch, bundle.dtype_name))
    inputs = {k: v.to(device) for k, v in inputs.items()}
    settings = {"do_sample": True, "guidance_scale": guidance_scale, "top_k": top_k, "top_p": top_p if top_p > 0 else 1.0,
                    "temperature": temperature, "max_new_tokens": tokens + bundle.channel_codebooks - 1, "max_length": None}
    devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=devices, device_type="cuda" if devices else "cpu"), torch.inference_mode():
        torch.manual_seed(seed)
        values = model.generate(**inputs, **settings)
    out = values[0].detach().to("cpu", torch.float32)
    if out.shape[-1] < frames:
        out = torch.nn.functional.pad(out, (0, frames - out.shape[-1]))
    out = out[:, :frames].contiguous()
    if not bool(torch.isfinite(out).all()):
        raise StageError(f"generate.musicgen: {bundle.spec.name} produced NaN or Inf samples in "
                         f"{bundle.dtype_name}; try precision float32")
    return Audio(out, SAMPLE_RATE_HZ)
