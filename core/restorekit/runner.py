"""The graph runner: adapts audio to each stage, runs stages in order, times them."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from restorekit import graph
from restorekit.device import resolve_device, stage_device
from restorekit.errors import PipelineError, Problem, StageError, describe_failure
from restorekit.stage import Stage

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from restorekit.audio import Audio

log = logging.getLogger("restorekit")
SEED_MODULUS = 1 << 63  # stage seeds stay non-negative and fit numpy and torch.manual_seed


def _all_finite(samples: torch.Tensor) -> bool:
    """True when no sample is NaN or Inf.

    On the CPU a float64 sum decides (NaN and Inf propagate; float32 values cannot
    overflow it): no temporary, and ~10x faster than torch.isfinite on long audio.
    """
    if samples.device.type != "cpu":
        import torch

        return bool(torch.isfinite(samples).all())
    import numpy as np

    with np.errstate(invalid="ignore", over="ignore"):
        return bool(np.isfinite(np.sum(samples.detach().numpy(), dtype=np.float64)))


def seed_for_stage(seed: int, node_id: str) -> int:
    """A stage's seed: from the run's seed and the stage's id, not its position, so adding a stage that
    passes audio through (a repair that finds nothing) leaves the others' random draws (dither) as they were."""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{seed}:{node_id}".encode()).digest()[:8], "little") % SEED_MODULUS


def release_freed_memory() -> None:
    """Return freed heap memory to the OS (glibc's malloc_trim; a no-op elsewhere).

    glibc keeps freed blocks below its (self-raising) mmap threshold in the heap, so a
    stage's temporaries would otherwise stay in the RSS while the next stage allocates.
    """
    trim = _malloc_trim()
    if trim:
        trim(0)


@functools.cache
def fix_mmap_threshold(size: int = 1 << 20) -> None:
    """Allocations of `size` bytes and more get their own pages, returned when freed (glibc's mallopt).

    glibc raises its mmap threshold to the size of each large block freed (up to 32 MB), so a
    long stream of large temporaries comes from the heap, where the small arrays that live on
    between them fragment it and the RSS creeps up with the number of blocks (measured: +150 MB
    over a 30-minute file in the gate). A fixed threshold keeps streamed runs flat.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, size)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc
        pass


@functools.cache
def _malloc_trim():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def _dsp():
    from restorekit import dsp  # imports torch and soxr: only once audio runs

    return dsp


@dataclass
class Node:
    """A stage in a graph: its id, the stage, and its input references (None: previous stage)."""

    id: str
    stage: Stage
    input: str | list[str] | None = None
    plugin: str | None = None  #: the plugin that registered the stage (None: look it up when needed)

    def owner(self) -> str | None:
        """The plugin that registered the stage's class (looked up for pipelines built in code)."""
        if self.plugin is None:
            from restorekit.plugins import get_registry

            try:
                stages = get_registry().stages
                found = stages.owner(self.stage.id) if stages.get(self.stage.id) is type(self.stage) else None
            except Exception:  # noqa: BLE001 - a message must never fail (e.g. strict mode)
                found = None
            self.plugin = found or ""  # looked up once, found or not
        return self.plugin or None

    def label(self) -> str:
        """`stage 'gate' (denoise.spectral_gate, plugin 'denoise')`, for messages."""
        return str(Problem("", stage=self.id, use=self.stage.id, plugin=self.owner())).rstrip(": ")

    def input_list(self) -> list[str] | None:
        if self.input is None:
            return None
        return [self.input] if isinstance(self.input, str) else list(self.input)


@dataclass
class RunResult:
    """Outputs of one run (key None for a single output), per-stage seconds, and notes."""

    outputs: dict[str | None, Audio]
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def audio(self) -> Audio:
        if None not in self.outputs:
            raise ValueError("this pipeline ends in a splitting stage; read .outputs by name")
        return self.outputs[None]


class Pipeline:
    """A validated graph of stages.

    Build one in code from stage instances (a chain) or `Node`s (a graph), or load one
    from YAML with `restorekit.load_pipeline`. Call it on `Audio` to run it.
    """

    def __init__(
        self,
        stages: Sequence[Stage | Node],
        *,
        name: str = "pipeline",
        description: str = "",
        device: str = "auto",
        sample_rate: int | None = None,
        channels: int | None = None,
        bit_depth: int | None = None,
        seed: int = 0,
        spec: dict[str, Any] | None = None,
        locate: graph.Locator | None = None,
        outputs: dict[str, str] | None = None,
    ) -> None:
        counts: dict[str, int] = {}
        nodes = [item if isinstance(item, Node) else Node(graph.default_id(item.id, counts), item) for item in stages]
        self.nodes = nodes
        self.name = name
        self.description = description
        self.device_spec = device
        self.sample_rate = sample_rate
        self.channels = channels
        self.bit_depth = bit_depth
        self.seed = seed
        self.spec = spec
        self.graph = graph.resolve(
            [n.id for n in nodes],
            [n.stage for n in nodes],
            [n.input_list() for n in nodes],
            locate or graph._no_location,
            outputs,
        )
        self.device: str | None = None  #: the resolved device, once `prepare` ran
        self._device_spec_resolved: str | None = None
        self._placed = False

    # -- setup -----------------------------------------------------------------------
    def stage(self, node_id: str) -> Stage:
        for node in self.nodes:
            if node.id == node_id:
                return node.stage
        raise KeyError(node_id)

    def output_names(self) -> tuple[str, ...] | None:
        """The names of the pipeline's outputs (its own `outputs`, else its last stage's); None: one output."""
        if self.graph.named:
            return tuple(name for name, _ in self.graph.named)
        return self.nodes[self.graph.output].stage.output_names()

    def output_bit_depth(self) -> int | None:
        """The pipeline's `bit_depth`, else the last stage that sets one (a dither stage)."""
        if self.bit_depth is not None:
            return self.bit_depth
        for node in reversed(self.nodes):
            bits = node.stage.output_bit_depth()
            if bits is not None:
                return bits
        return None

    def check_available(self) -> None:
        """Raise PipelineError when a stage cannot run on this machine (its `unavailable()` says why)."""
        for node in self.nodes:
            reason = node.stage.unavailable()
            if reason:
                raise PipelineError(Problem(f"cannot run here: {reason}", stage=node.id, use=node.stage.id,
                                            plugin=node.owner()))

    def resolve(self, device: str | None = None) -> str:
        """The concrete device for `device` (default: the pipeline's spec), resolved once per spec,
        after checking every stage can run here; no model is loaded."""
        spec = device or self.device_spec
        if self.device is None or spec != self._device_spec_resolved:
            resolved = resolve_device(spec)
            self.check_available()
            self.device, self._device_spec_resolved = resolved, spec
        return self.device

    def prepare(self, device: str | None = None) -> str:
        """Resolve the device (once), check every stage can run here, place each stage (loading its models).

        `device` overrides the pipeline's own spec; a stage that does not support the
        device's type runs on the CPU.
        """
        self.resolve(device)
        for node in self.nodes:
            try:
                node.stage.place(stage_device(self.device, node.stage.accepts.devices))
            except Exception as exc:  # noqa: BLE001 - a stage that cannot load makes the pipeline unusable
                raise PipelineError(Problem(f"cannot load: {describe_failure(exc)}", stage=node.id,
                                            use=node.stage.id, plugin=node.owner())) from exc
        self._placed = True
        return self.device

    def whole_file_reason(self, sample_rate: int | None = None, channels: int | None = None) -> str | None:
        """Which stage needs the whole file in memory and why; None when the pipeline streams in blocks.

        It streams when it is a plain chain (no stems, no merges), every stage streams, and
        (given the input's rate and channels) no stage needs the runner to convert its input.
        """
        previous = graph.Ref(graph.PIPELINE_INPUT)
        for i in self.graph.order:
            node = self.nodes[i]
            reason = node.stage.whole_file_reason()
            if reason:
                return f"{node.label()}: {reason}"
            if list(self.graph.inputs[i]) != [previous] or node.stage.output_names() is not None:
                return f"{node.label()}: the pipeline is a graph, not a plain chain of stages"
            if sample_rate is not None:
                accepts = node.stage.accepts
                if accepts.pick_sample_rate(sample_rate) != sample_rate or (
                        accepts.channels is not None and channels not in accepts.channels):
                    return f"{node.label()}: its input must be converted first ({sample_rate} Hz, {channels} ch)"
                sample_rate, channels = node.stage.output_spec(sample_rate, channels)
            previous = graph.Ref(node.id)
        if self.sample_rate is not None or self.channels is not None:
            return "the pipeline converts its output (sample_rate or channels)"
        if self.graph.named:
            return "the pipeline names its outputs (`outputs:`)"
        return None

    # -- running ---------------------------------------------------------------------
    def __call__(self, audio: Audio) -> Audio | dict[str, Audio]:
        result = self.run(audio)
        return result.outputs[None] if None in result.outputs else result.outputs  # type: ignore[return-value]

    def run(self, audio: Audio | list[Audio] | None, *, seed: int | None = None,
            on_stage: Callable[[str], None] | None = None) -> RunResult:
        """Run the graph on `audio` (None for a pipeline that starts from a source stage); outputs come back
        on the CPU.

        Pass `[audio]` (a one-item list, which is emptied) to hand the input over: the
        runner then frees it as soon as its last consumer has it, instead of the caller
        keeping the whole decoded input alive for the whole run.
        """
        import torch

        if isinstance(audio, list):
            audio = audio.pop()
        first = self.nodes[0]
        if (audio is None) != first.stage.source:
            raise StageError(f"this pipeline starts from the source stage '{first.id}' ({first.stage.id}) and takes "
                             "no input audio" if first.stage.source else "this pipeline needs input audio")
        if not self._placed:
            self.prepare()
        if audio is not None and not _all_finite(audio.samples):
            raise StageError("the input contains NaN or Inf samples")
        seed = self.seed if seed is None else seed
        values: dict[graph.Ref, Audio] = {} if audio is None else {graph.Ref(graph.PIPELINE_INPUT): audio}
        del audio
        remaining = dict(self.graph.consumers)
        result = RunResult({})
        for i in self.graph.order:
            node = self.nodes[i]
            refs = self.graph.inputs[i]
            inputs = [values[r] for r in refs]
            for r in refs:  # free intermediate audio as soon as its last consumer has it
                remaining[r] -= 1
                if remaining[r] == 0:
                    values.pop(r)
            if on_stage:
                on_stage(node.id)
            stage_seed = seed_for_stage(seed, node.id)
            torch.manual_seed(stage_seed)
            start = time.perf_counter()
            out = self._run_stage(node, inputs, stage_seed, result.notes)
            if node.stage.device.startswith("cuda"):
                torch.cuda.synchronize()
            result.timings[node.id] = time.perf_counter() - start
            release_freed_memory()  # a stage's freed temporaries must not add to the next stage's peak
            names = node.stage.output_names()
            if names is None:
                values[graph.Ref(node.id)] = out
            else:
                for name in names:
                    values[graph.Ref(node.id, name)] = out[name]
        last = self.nodes[self.graph.output]
        names = last.stage.output_names()
        if self.graph.named:
            for name, ref in self.graph.named:
                result.outputs[name] = self._finish(values[ref], result.notes)
        elif names is None:
            result.outputs[None] = self._finish(values[graph.Ref(last.id)], result.notes)
        else:
            for name in names:
                result.outputs[name] = self._finish(values[graph.Ref(last.id, name)], result.notes)
        return result

    def _run_stage(self, node: Node, inputs: list[Audio], seed: int, notes: list[str]) -> Any:
        """The stage's output(s), on the CPU; any failure becomes a StageError naming the stage and plugin."""
        from restorekit.audio import Audio

        stage = node.stage
        try:
            adapted = [self._adapt(node, a, notes) for a in inputs]
            if stage.merges:
                adapted = self._align(node, adapted, notes)
            out, stage_notes = stage.run(None if stage.source else adapted if stage.merges else adapted[0], seed)
        except Exception as exc:  # noqa: BLE001 - expected or not, the message names the stage
            raise StageError(f"{node.label()}: {describe_failure(exc)}") from exc
        notes.extend(f"{node.id}: {message}" for message in stage_notes)
        names = stage.output_names()
        if names is not None and (not isinstance(out, dict) or set(out) != set(names)):
            got = sorted(out) if isinstance(out, dict) else type(out).__name__
            raise StageError(f"{node.label()} returned {got}, expected outputs {list(names)}")
        outs = {None: out} if names is None else out
        for key, a in outs.items():
            if not isinstance(a, Audio):
                raise StageError(f"{node.label()} returned {type(a).__name__}, expected Audio")
            if not _all_finite(a.samples):
                raise StageError(f"{node.label()} produced NaN or Inf samples")
            outs[key] = a.to("cpu")  # whole tracks live on the CPU between stages
        return outs[None] if names is None else outs

    def _adapt(self, node: Node, audio: Audio, notes: list[str]) -> Audio:
        accepts = node.stage.accepts
        rate = accepts.pick_sample_rate(audio.sample_rate)
        if rate != audio.sample_rate:
            notes.append(f"{node.id}: resampled {audio.sample_rate} -> {rate} Hz")
            audio = _dsp().resample(audio, rate)
        if accepts.channels is not None and audio.channels not in accepts.channels:
            target = self._pick_channels(node, audio.channels, accepts.channels)
            notes.append(f"{node.id}: converted {audio.channels} -> {target} channels")
            audio = _dsp().convert_channels(audio, target)
        return audio

    @staticmethod
    def _pick_channels(node: Node, have: int, accepted: frozenset[int]) -> int:
        if have == 1:
            return min(accepted)
        if 1 in accepted and have == 2:
            log.warning("stage '%s' (%s) takes mono only: downmixing stereo", node.id, node.stage.id)
            return 1
        allowed = ", ".join(str(c) for c in sorted(accepted))
        raise StageError(
            f"accepts {allowed} channel(s), the audio has {have}; "
            "add a `util.channels` stage with `to: mono` or `to: stereo` before it"
        )

    def _align(self, node: Node, inputs: list[Audio], notes: list[str]) -> list[Audio]:
        rate = max(a.sample_rate for a in inputs)
        channels = max(a.channels for a in inputs)
        aligned = []
        for a in inputs:
            if a.sample_rate != rate:
                notes.append(f"{node.id}: resampled an input {a.sample_rate} -> {rate} Hz to merge")
                a = _dsp().resample(a, rate)
            if a.channels != channels:
                a = _dsp().convert_channels(a, channels)
            aligned.append(a)
        return aligned

    def _finish(self, audio: Audio, notes: list[str]) -> Audio:
        audio = audio.to("cpu")
        if self.sample_rate is not None and audio.sample_rate != self.sample_rate:
            notes.append(f"output: resampled {audio.sample_rate} -> {self.sample_rate} Hz")
            audio = _dsp().resample(audio, self.sample_rate)
        if self.channels is not None and audio.channels != self.channels:
            notes.append(f"output: converted {audio.channels} -> {self.channels} channels")
            audio = _dsp().convert_channels(audio, self.channels)
        return audio

    def describe(self) -> str:
        lines = [f"{self.name}: {self.description}".rstrip(": ")]
        for i in self.graph.order:
            node = self.nodes[i]
            src = ", ".join(str(r) for r in self.graph.inputs[i])
            lines.append(f"  {node.id} = {node.stage.id}({src})")
        if self.graph.named:
            lines.append("  outputs: " + ", ".join(f"{name} = {ref}" for name, ref in self.graph.named))
        return "\n".join(lines)
