"""Demucs for `separate.demucs`: the backend package, where weights are, safe loading, separation.

Backend: the upstream `demucs` package (>= 4.1, which imports no torchaudio: torchaudio is
only in its `train` extra, and the Wiener filter it took from openunmix is vendored). Only
`pretrained.demucs_unittest`, `apply.apply_model`, `apply.BagOfModels`, `states.load_model`,
the model classes and the packaged `remote/` model list are used.

Weights: restorekit resolves and loads checkpoints itself rather than through
`pretrained.get_model`, so that

- a missing checkpoint is found before anything is downloaded (cache, repo, or offline);
- checkpoints load with `torch.load(weights_only=True)`, allowing only the Demucs model
  classes and `fractions.Fraction` as globals: a checkpoint cannot run code when unpickled
  (demucs's own loader calls `torch.load` with `weights_only=False`).

Downloaded checkpoints go where upstream demucs's legacy loader puts them (`<torch hub
dir>/checkpoints`, `$TORCH_HOME/hub/checkpoints`), verified against the sha256 prefix in their
file name. A download is tried at most once per process and file, only after a reachability
probe of the host (an HTTPS HEAD request, at most 3 s), so an offline machine loses 3 s at most, once;
`RESTOREKIT_OFFLINE=1` (or `HF_HUB_OFFLINE=1`) forbids it outright.
`~/.cache/demucs-infer` (the cache of the `demucs-infer` fork, the backend before) is searched too.

Nothing heavy is imported at module import time.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from restorekit.errors import StageError

from restorekit_plugins import _network
from restorekit_plugins._network import (  # noqa: F401 - re-exported: separate.auto and tests use them here
    DOWNLOAD_TIMEOUT_S,
    OFFLINE_ENV,
    OFFLINE_ENVS,
    PROBE_TIMEOUT_S,
    WeightsUnavailable,
    offline_setting,
    reset_probes,
    show_progress,
)

log = logging.getLogger("restorekit")

BACKENDS = ("demucs",)
CHECKPOINT_PACKAGES = ("demucs", "demucs_infer")  # module paths model classes are pickled under
INSTALL_HINT = "pip install 'demucs>=4.1,<5'"
ROOT_URL = "https://dl.fbaipublicfiles.com/demucs/"
DOWNLOAD_HOST = "dl.fbaipublicfiles.com"
UNITTEST_MODEL = "demucs_unittest"
FETCH_COMMAND = "restorekit fetch-demucs"
ALTERNATIVES = ("or use `separate.hpss` (no weights needed) or `separate.auto` (Demucs when its weights "
                "are here, else hpss) in the pipeline")


class BackendMissing(StageError):
    """The `demucs` package cannot be imported."""

    short = "demucs not installed"
    fix = INSTALL_HINT


# -- backend -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Backend:
    """The imported Demucs package: its modules, model classes and packaged model list."""

    name: str
    apply: ModuleType
    pretrained: ModuleType
    states: ModuleType
    classes: tuple[tuple[str, type], ...]  # (submodule, class)

    @property
    def remote_root(self) -> Path:
        return Path(self.pretrained.__file__).parent / "remote"


def backend_installed() -> str | None:
    """Name of an installed backend package (found without importing it), or None."""
    for name in BACKENDS:
        if importlib.util.find_spec(name) is not None:
            return name
    return None


@functools.lru_cache(maxsize=1)
def get_backend() -> Backend:
    """Import the first backend that works (once per process); BackendMissing says how to install one."""
    errors = []
    for name in BACKENDS:
        if importlib.util.find_spec(name) is None:
            errors.append(f"{name}: not installed")
            continue
        try:
            modules = {sub: importlib.import_module(f"{name}.{sub}")
                       for sub in ("apply", "pretrained", "states", "demucs", "hdemucs", "htdemucs")}
        except Exception as exc:  # noqa: BLE001 - e.g. demucs < 4.1 without a working torchaudio
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        classes = (("demucs", modules["demucs"].Demucs), ("hdemucs", modules["hdemucs"].HDemucs),
                   ("htdemucs", modules["htdemucs"].HTDemucs))
        real = modules["apply"].__name__.split(".")[0]  # `demucs` is demucs_infer once that fork is imported
        return Backend(real, modules["apply"], modules["pretrained"], modules["states"], classes)
    raise BackendMissing(f"separate.demucs needs the Demucs package, and none could be imported "
                         f"({'; '.join(errors)}). Install it with: {INSTALL_HINT}; {ALTERNATIVES}.")


# -- where the weights are -------------------------------------------------------------------

@dataclass
class WeightFile:
    """One checkpoint of a model: its signature, file name, and where it is (or comes from)."""

    sig: str
    filename: str
    url: str | None = None
    path: Path | None = None
    checksum: str | None = None  # sha256 prefix from the file name (`<sig>-<sha8>.th`)


@dataclass
class ModelPlan:
    """How to build a model: one checkpoint, a bag of checkpoints, or the unittest model."""

    name: str
    kind: str  # "unittest" | "single" | "bag"
    files: list[WeightFile] = field(default_factory=list)
    weights: list[list[float]] | None = None
    segment: float | None = None
    repo: Path | None = None

    @property
    def missing(self) -> list[WeightFile]:
        return [f for f in self.files if f.path is None]


def hub_checkpoint_dir() -> Path:
    """Where upstream demucs (torch.hub) caches checkpoints and where restorekit downloads them."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def cache_dirs() -> list[Path]:
    return [hub_checkpoint_dir(), Path.home() / ".cache" / "demucs-infer"]


def _split_name(filename: str) -> tuple[str, str | None]:
    stem = Path(filename).stem
    sig, _, checksum = stem.partition("-")
    return sig, checksum or None


def _remote_files(remote_root: Path) -> dict[str, WeightFile]:
    """The `files.txt` of the packaged model list: signature -> file and URL."""
    files: dict[str, WeightFile] = {}
    root = ""
    for line in (remote_root / "files.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("root:"):
            root = line.split(":", 1)[1].strip()
            continue
        sig, checksum = _split_name(line)
        files[sig] = WeightFile(sig, line, ROOT_URL + root + line, None, checksum)
    return files


def _read_bag(path: Path) -> dict[str, Any]:
    import yaml

    try:
        bag = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise StageError(f"separate.demucs: cannot read the model file {path}: {exc}") from exc
    if not isinstance(bag, dict) or not isinstance(bag.get("models"), list) or not bag["models"]:
        raise StageError(f"separate.demucs: {path} is not a Demucs bag of models (a YAML mapping with a "
                         "`models:` list of signatures)")
    return bag


def known_models(remote_root: Path) -> list[str]:
    return sorted(p.stem for p in remote_root.glob("*.yaml"))


def plan_model(backend: Backend, model: str, repo: str | Path | None) -> ModelPlan:
    """Find the checkpoints `model` needs, in `repo` or in the download caches; nothing is loaded."""
    if model == UNITTEST_MODEL:
        return ModelPlan(model, "unittest")
    if repo is not None:
        return _plan_local(model, Path(repo).expanduser())
    remote = _remote_files(backend.remote_root)
    bag_file = backend.remote_root / f"{model}.yaml"
    if bag_file.is_file():
        bag = _read_bag(bag_file)
        sigs = [str(s) for s in bag["models"]]
        unknown = [s for s in sigs if s not in remote]
        if unknown:
            raise StageError(f"separate.demucs: model '{model}' lists signatures {unknown} that the "
                             f"{backend.name} package does not know; reinstall it")
        plan = ModelPlan(model, "bag", [_copy(remote[s]) for s in sigs], bag.get("weights"), bag.get("segment"))
    elif model in remote:
        plan = ModelPlan(model, "single", [_copy(remote[model])])
    else:
        import difflib

        names = known_models(backend.remote_root)
        close = difflib.get_close_matches(model, names, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise StageError(f"separate.demucs: unknown Demucs model '{model}'.{hint} Pretrained models: "
                         f"{', '.join(names)}, {UNITTEST_MODEL} (tiny, random weights, for tests), or a "
                         "signature; for your own checkpoints set `repo` to their directory")
    dirs = cache_dirs()
    for f in plan.files:
        for d in dirs:
            if (d / f.filename).is_file():
                f.path = d / f.filename
                break
    return plan


def _copy(f: WeightFile) -> WeightFile:
    return WeightFile(f.sig, f.filename, f.url, f.path, f.checksum)


def _plan_local(model: str, repo: Path) -> ModelPlan:
    """A local repo as demucs's LocalRepo reads it: `<sig>.th` / `<sig>-<sha8>.th` files, `<name>.yaml` bags."""
    if not repo.is_dir():
        raise WeightsUnavailable(f"separate.demucs: repo {repo} is not a directory; give `repo` the folder "
                                 f"holding the model's .th checkpoints (and its .yaml for a bag), or leave "
                                 f"it empty to use the download cache; {ALTERNATIVES}",
                                 short="`repo` is not a directory", fix="set `repo` right (docs/stages/separate.md)")
    checkpoints: dict[str, WeightFile] = {}
    for path in sorted(repo.glob("*.th")):
        sig, checksum = _split_name(path.name)
        if sig in checkpoints:
            raise StageError(f"separate.demucs: repo {repo} holds two checkpoints for signature '{sig}' "
                             f"({checkpoints[sig].filename}, {path.name}); delete all but one")
        checkpoints[sig] = WeightFile(sig, path.name, None, path, checksum)
    bag_file = repo / f"{model}.yaml"
    if bag_file.is_file():
        bag = _read_bag(bag_file)
        files = [_copy(checkpoints[str(s)]) if str(s) in checkpoints else WeightFile(str(s), f"{s}.th")
                 for s in bag["models"]]
        plan = ModelPlan(model, "bag", files, bag.get("weights"), bag.get("segment"), repo)
    elif model in checkpoints:
        plan = ModelPlan(model, "single", [checkpoints[model]], repo=repo)
    else:
        have = sorted({*checkpoints, *(p.stem for p in repo.glob("*.yaml"))})
        raise WeightsUnavailable(
            f"separate.demucs: repo {repo} has no model '{model}' (looked for {model}.th, {model}-<sha>.th "
            f"and {model}.yaml; it holds: {', '.join(have) or 'nothing'}); copy the model's checkpoints "
            f"there, or set `model` to one of those; {ALTERNATIVES}",
            short=f"`repo` has no {model}", fix="copy its checkpoints into `repo` (docs/stages/separate.md)")
    if plan.missing:
        raise WeightsUnavailable(
            f"separate.demucs: repo {repo} lacks checkpoint(s) {', '.join(f.sig for f in plan.missing)} "
            f"listed in {model}.yaml; copy them there (as <sig>.th or <sig>-<sha8>.th); {ALTERNATIVES}",
            short=f"`repo` lacks checkpoints of {model}", fix="copy them into `repo` (docs/stages/separate.md)")
    return plan


def missing_message(plan: ModelPlan, reason: str) -> str:
    """One message: what is missing, where it was looked for, and every way out."""
    names = ", ".join(f.filename for f in plan.missing)
    dirs = cache_dirs()
    return (f"separate.demucs: the weights of Demucs model '{plan.name}' are not on this machine and cannot "
            f"be downloaded ({reason}). Missing: {names}; looked in {dirs[0]} (the torch hub cache that "
            f"demucs uses; TORCH_HOME moves it) and {dirs[1]}. To fix: run `{FETCH_COMMAND} {plan.name}` "
            f"once with internet access (or any pipeline with `download: true`, the default; the files go "
            f"to {dirs[0]}), or copy those files there from a machine that has them, or set `repo` to a "
            f"directory holding them; {ALTERNATIVES}.")


_failed_downloads: dict[str, str] = {}  # url -> why its download failed; tried once per process


def reset_network_state() -> None:
    """Forget the probe and failed downloads of this process (for tests; a new process starts clean)."""
    reset_probes()
    _failed_downloads.clear()


def probe(url: str = ROOT_URL, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why `url` cannot be fetched now, or None when its host answers (`restorekit_plugins._network.probe`)."""
    return _network.probe(url, timeout)


def offline_reason(url: str = ROOT_URL) -> tuple[str, str] | None:
    """(long, short) reason why downloading `url` is impossible now, or None when its host answers."""
    return _network.offline_reason(url, probe)


def fetch(url: str, dst: Path, checksum: str | None, progress: bool) -> None:
    """Download `url` to `dst` (atomically, checked against the sha256 prefix), as torch.hub does."""
    import torch.hub

    torch.hub.download_url_to_file(url, str(dst), hash_prefix=checksum, progress=progress)


def ensure_weights(plan: ModelPlan, download: bool) -> None:
    """Download what `plan` is missing (or raise WeightsUnavailable saying why it cannot be had).

    Fails fast: with a download setting forbidding it, after a failed reachability probe
    (at most PROBE_TIMEOUT_S, once per process), or at once for a file whose download
    already failed in this process.
    """
    if not plan.missing:
        return
    fix = f"run `{FETCH_COMMAND} {plan.name}` online"
    if not download:
        raise WeightsUnavailable(missing_message(plan, "not cached, and `download` is false"),
                                 short="not cached, download: false", fix=fix)
    offline = offline_reason(plan.missing[0].url or ROOT_URL)
    if offline:
        raise WeightsUnavailable(missing_message(plan, offline[0]), short=offline[1], fix=fix)
    for f in plan.missing:
        if f.url in _failed_downloads:
            raise WeightsUnavailable(missing_message(plan, _failed_downloads[f.url]), short="download failed",
                                     fix=fix)
    import socket

    target = hub_checkpoint_dir()
    target.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # a stalled transfer fails instead of hanging
    try:
        for f in plan.missing:
            log.warning("separate.demucs: downloading the weights of Demucs model '%s' once, to %s (%s)",
                        plan.name, target, f.url)
            try:
                fetch(f.url, target / f.filename, f.checksum, show_progress())
            except Exception as exc:  # network errors, hash mismatch, full disk
                _failed_downloads[f.url] = f"download of {f.url} failed: {type(exc).__name__}: {exc}"
                raise WeightsUnavailable(missing_message(plan, _failed_downloads[f.url]),
                                         short="download failed", fix=fix) from exc
            f.path = target / f.filename
    finally:
        socket.setdefaulttimeout(previous)


def fetch_model(backend: Backend, model: str) -> list[Path]:
    """Make sure every checkpoint of `model` is in the cache, downloading what is missing; their paths."""
    plan = plan_model(backend, model, None)
    if plan.kind == "unittest":
        return []
    ensure_weights(plan, download=True)
    return [f.path for f in plan.files if f.path is not None]


# -- loading ----------------------------------------------------------------------------------

def _sha256_prefix(path: Path, n: int) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


def safe_globals(backend: Backend) -> list:
    """The only globals a Demucs checkpoint may reference: the model classes and Fraction."""
    from fractions import Fraction

    allowed: list = [Fraction]
    for sub, cls in backend.classes:
        for package in CHECKPOINT_PACKAGES:  # Meta's checkpoints say `demucs.htdemucs.HTDemucs`
            allowed.append((cls, f"{package}.{sub}.{cls.__qualname__}"))
    return allowed


def load_checkpoint(backend: Backend, f: WeightFile):
    """One checkpoint as a model, unpickled with weights_only=True."""
    import pickle

    import torch

    assert f.path is not None
    if f.checksum and _sha256_prefix(f.path, len(f.checksum)) != f.checksum:
        raise StageError(f"separate.demucs: {f.path} is corrupt (its sha256 does not start with {f.checksum}, "
                         "as its name says); delete it and download or copy it again")
    try:
        with torch.serialization.safe_globals(safe_globals(backend)):
            package = torch.load(f.path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = str(exc).split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
        raise StageError(f"separate.demucs: refusing to load {f.path}: it references Python objects other "
                         f"than a Demucs model and tensors ({detail}); restorekit loads checkpoints with "
                         "torch.load(weights_only=True) so that a checkpoint cannot run code") from exc
    except (OSError, RuntimeError, EOFError) as exc:
        raise StageError(f"separate.demucs: cannot read checkpoint {f.path}: {exc}; delete it and download "
                         "or copy it again") from exc
    if not isinstance(package, dict) or not {"klass", "args", "kwargs", "state"} <= set(package):
        raise StageError(f"separate.demucs: {f.path} is not a Demucs model package (expected keys klass, "
                         "args, kwargs, state)")
    quantized = isinstance(package["state"], dict) and package["state"].get("__quantized")
    if quantized and importlib.util.find_spec("diffq") is None:
        raise StageError(f"separate.demucs: {f.path} is a quantized model (diffq); install diffq "
                         "(pip install diffq) or use the non-quantized model (mdx_extra instead of "
                         "mdx_extra_q)")
    try:
        model = backend.states.load_model(package)
    except Exception as exc:  # state/architecture mismatch, bad kwargs
        raise StageError(f"separate.demucs: {f.path} does not build a model: {type(exc).__name__}: {exc}") from exc
    model.eval()
    return model


def build_model(backend: Backend, plan: ModelPlan):
    """The model (or bag of models) of a plan whose weights are all on disk, on the CPU, in eval mode."""
    if plan.kind == "unittest":  # random weights, the same in every process
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = backend.pretrained.demucs_unittest()
        model.eval()
        return model
    models = [load_checkpoint(backend, f) for f in plan.files]
    if plan.kind == "single":
        return models[0]
    try:
        bag = backend.apply.BagOfModels(models, plan.weights, plan.segment)
    except AssertionError as exc:
        raise StageError(f"separate.demucs: the bag '{plan.name}' mixes models with different sources, "
                         "rates or channels, or its weights do not match them") from exc
    bag.eval()
    return bag


def max_segment_s(model) -> float:
    """The longest segment the model accepts (HTDemucs cannot go past its training length)."""
    from_bag = getattr(model, "max_allowed_segment", None)
    if from_bag is not None:
        return float(from_bag)
    if type(model).__name__ == "HTDemucs":
        return float(model.segment)
    return float("inf")


# -- separation -----------------------------------------------------------------------------------

def separate(backend: Backend, model, samples, sample_rate: int, *, segment_s: float | None, overlap: float, shifts: int,
             device: str, seed: int):
    """Stems of `samples` (channels, frames; any rate, mono or stereo) as (sources, channels, frames).

    The mix stays on the CPU; apply_model sends segments to `device` (split mode). Input is
    normalised as demucs's own CLI does (zero mean, unit std of the mono reference), converted
    to the model's rate and channels, and the stems are converted back to the input's.
    """
    import random

    import torch
    from restorekit.audio import Audio
    from restorekit.dsp import resample

    channels, frames = samples.shape
    mix = samples.detach().to("cpu", torch.float32)
    if sample_rate != model.samplerate:
        mix = resample(Audio(mix, sample_rate), model.samplerate).samples
    if model.audio_channels == 2 and channels == 1:
        mix = mix.expand(2, -1)
    elif model.audio_channels == 1 and channels != 1:
        mix = mix.mean(0, keepdim=True)
    ref = mix.mean(0)
    mean = float(ref.mean())
    std = float(ref.std()) if ref.numel() > 1 else 0.0
    scale = std if std > 1e-8 else 1.0
    norm = (mix - mean) / scale
    pad = tail_padding(model, norm.shape[-1], segment_s, overlap)
    if pad:
        norm = torch.nn.functional.pad(norm, (0, pad))
    sources = len(model.sources)
    state = random.getstate()  # apply_model draws its shifts from the global `random`
    random.seed(seed)
    try:
        with torch.no_grad():
            out = backend.apply.apply_model(model, norm[None], shifts=shifts, split=True, overlap=overlap,
                                            device=device, segment=segment_s, progress=False)[0]
    finally:
        random.setstate(state)
    if pad:
        out = out[..., :-pad]
    out.mul_(scale).add_(mean / sources)  # (sources, model channels, model frames), on the CPU
    if out.shape[1] != channels:
        out = out.mean(1, keepdim=True) if channels == 1 else out.expand(-1, channels, -1)
    if sample_rate != model.samplerate:
        flat = resample(Audio(out.reshape(sources * channels, -1).contiguous(), model.samplerate), sample_rate)
        out = flat.samples.reshape(sources, channels, -1)
    if out.shape[-1] != frames:
        out = out[..., :frames] if out.shape[-1] > frames else torch.nn.functional.pad(
            out, (0, frames - out.shape[-1]))
    return out.contiguous()


MIN_TAIL_FRAMES = 4096


def tail_padding(model, frames: int, segment_s: float | None, overlap: float) -> int:
    """Zeros to add at the end so apply_model's last segment is not a sliver.

    apply_model cuts segments at multiples of its stride and runs the last one as it is;
    HDemucs/Demucs models (unlike HTDemucs, which pads to its training length) fail on a
    few samples (demucs_unittest on 4 or fewer). A last segment shorter than
    MIN_TAIL_FRAMES is lengthened with zeros, which are cut from the output again.
    """
    models = list(getattr(model, "models", [model]))
    strides = []
    for m in models:
        seconds = segment_s if segment_s is not None else float(m.segment)
        length = int(model.samplerate * seconds)
        strides.append(max(1, int((1 - overlap) * length)))
    want = min(MIN_TAIL_FRAMES, *strides)
    pad = 0
    for _ in range(16):  # a few rounds settle it for a bag's different strides; one for a single model
        short = min((frames + pad) - ((frames + pad - 1) // s) * s for s in strides)
        if short >= want:
            break
        pad += want - short
    return pad
