"""Plugin loading through real entry points: the example package, broken plugins, strict
mode, duplicate ids, invalid registrations, and meta-tests of the hookspecs.

Plugins are exposed the way an installed package is, without touching site-packages: a
`<name>-<version>.dist-info/` folder with METADATA and entry_points.txt on the path, which
importlib.metadata discovers. Subprocess tests put it on PYTHONPATH of `python -m
restorekit`; in-process tests put it on sys.path and call `load_registry()`.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from restorekit import hookspecs
from restorekit.errors import PipelineError, PluginError
from restorekit.plugins import ENTRY_POINT_GROUP, STRICT_ENV, load_registry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "restorekit-plugin-example"
EXAMPLE_SRC = EXAMPLE / "src"
EXAMPLE_PIPELINE = EXAMPLE_SRC / "restorekit_example" / "pipelines" / "trim_and_fade.yaml"
WRITING_PLUGINS = ROOT / "docs" / "writing-plugins.md"
PREFIX = "rktest_"  # every fake plugin module is named rktest_*, and dropped from sys.modules after each test

STAGE_HEADER = """\
from pydantic import Field
from restorekit.hookspecs import hookimpl
from restorekit.stage import Accepts, Stage, StageParams
"""


def make_dist(site: Path, name: str, entry_points: dict[str, str], modules: dict[str, str] | None = None,
              version: str = "1.0") -> Path:
    """Write a fake installed distribution into `site`: dist-info plus its plugin modules."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{ep} = {target}\n" for ep, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")
    for module, text in (modules or {}).items():
        (site / f"{module}.py").write_text(textwrap.dedent(text))
    return site


def expose_example(site: Path) -> list[Path]:
    """The example package as `pip install -e` would expose it: its dist-info and src/ on the path."""
    make_dist(site, "restorekit-plugin-example", {"example": "restorekit_example"}, version="0.1.0")
    return [site, EXAMPLE_SRC]


def run_cli(*args: str, path: list[Path], cwd: Path, env: dict[str, str] | None = None,
            module: str | None = "restorekit") -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` (`python ARGS` for None) in a subprocess with `path` first on PYTHONPATH."""
    full_env = {k: v for k, v in os.environ.items() if k != STRICT_ENV}
    full_env["PYTHONPATH"] = os.pathsep.join([*map(str, path), *filter(None, [os.environ.get("PYTHONPATH")])])
    full_env.update(env or {})
    command = [sys.executable, *(["-m", module] if module else []), *args]
    return subprocess.run(command, cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=300)


def plugin_line(output: str, name: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(f"{name}  "))


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A fresh folder on sys.path for fake distributions; their modules are forgotten afterwards."""
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    monkeypatch.delenv(STRICT_ENV, raising=False)
    yield path
    for name in [m for m in sys.modules if m.startswith(PREFIX)]:
        del sys.modules[name]


def write_tone(path: Path, seconds: float = 2.0, rate: int = 44100) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.4 * np.sin(2 * np.pi * 660 * t)]).astype(np.float32)
    sf.write(str(path), x.T, rate, subtype="FLOAT")
    return x


# -- the example package through a real entry point, in real subprocesses -----------------------

@pytest.mark.slow  # starts restorekit subprocesses
def test_register_stages_and_register_commands_of_the_example_through_the_cli(tmp_path):
    path = expose_example(tmp_path / "site")
    listed = run_cli("plugins", path=path, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    line = plugin_line(listed.stdout, "example")
    assert "[restorekit-plugin-example 0.1.0]" in line and "restorekit_example" in line and "1 stage(s)" in line
    assert "util.gain" in listed.stdout, "built-in plugins load beside the example"

    stages = run_cli("stages", path=path, cwd=tmp_path)
    assert re.search(r"^example\.fade\s+Fade the start in", stages.stdout, re.M), stages.stdout

    described = run_cli("stages", "example.fade", path=path, cwd=tmp_path)
    assert described.returncode == 0, described.stderr
    for text in ("plugin: example", "fade_in_ms: float = 10.0  [>= 0, <= 60000]", "fade_out_ms", "shape"):
        assert text in described.stdout

    info = run_cli("example-info", path=path, cwd=tmp_path)  # added through register_commands
    assert info.returncode == 0, info.stderr
    assert "restorekit-plugin-example 0.1.0" in info.stdout and "example.fade" in info.stdout

    no_torch = run_cli("-c", "import sys; from restorekit.plugins import get_registry; "
                             "r = get_registry(); assert 'example.fade' in r.stages; "
                             "assert 'torch' not in sys.modules, 'a plugin imported torch'",
                       path=path, cwd=tmp_path, module=None)
    assert no_torch.returncode == 0, no_torch.stderr


@pytest.mark.slow  # starts restorekit subprocesses
def test_example_stage_runs_in_a_pipeline_through_restorekit_run(tmp_path):
    path = expose_example(tmp_path / "site")
    x = write_tone(tmp_path / "clip.wav")
    result = run_cli("-q", "run", str(EXAMPLE_PIPELINE), "clip.wav", "-o", "out", "--bit-depth", "32",
                     path=path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    y, rate = sf.read(str(tmp_path / "out" / "clip.wav"), dtype="float32", always_2d=True)
    y = y.T
    assert rate == 44100 and y.shape == x.shape
    g = 10 ** (-1 / 20)  # util.gain -1 dB after the fade
    n_in, n_out = round(0.005 * rate), round(1.5 * rate)
    body = slice(n_in, x.shape[1] - n_out)
    assert np.allclose(y[:, body], g * x[:, body], atol=1e-6), "between the fades only the gain applies"
    assert np.all(y[:, 0] == 0) and np.all(y[:, -1] == 0), "a fade starts and ends in silence"
    # the fade-out follows the cosine curve: measured gain where the tone is not near a zero crossing
    k = np.arange(n_out)
    want = g * (0.5 - 0.5 * np.cos(np.pi * k / n_out))[::-1]
    tail_x, tail_y = x[:, -n_out:], y[:, -n_out:]
    ok = np.abs(tail_x) > 0.1
    assert np.max(np.abs(tail_y[ok] / tail_x[ok] - np.broadcast_to(want, tail_x.shape)[ok])) < 1e-4
    last_10ms = y[:, -441:]
    ratio_db = 20 * np.log10(np.sqrt(np.mean(last_10ms ** 2)) / np.sqrt(np.mean(y[:, body] ** 2)))
    assert ratio_db < -60, f"the last 10 ms are only {ratio_db:.1f} dB below the body"


@pytest.mark.slow  # starts restorekit subprocesses
def test_example_package_tests_pass_against_the_entry_point(tmp_path):
    path = expose_example(tmp_path / "site")
    result = run_cli(str(EXAMPLE / "tests"), "-q", "-p", "no:cacheprovider", path=path, cwd=tmp_path,
                     module="pytest")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert re.search(r"\b(\d+) passed\b", result.stdout) and " failed" not in result.stdout


# -- broken plugins, strict mode -------------------------------------------------------------------

BROKEN = """\
raise ImportError("rktest_broken needs libfoo; install it with `pip install libfoo`")
"""
BAD_COMMANDS = """\
from restorekit.hookspecs import hookimpl

@hookimpl
def register_commands(cli):
    raise RuntimeError("rktest_badcmd cannot build its command")
"""
BUILTIN_PIPELINE = """\
name: builtin_only
stages:
  - use: util.gain
    with: {gain_db: -6}
"""
NEEDS_BROKEN = """\
name: needs_broken
stages:
  - use: util.gain
  - use: broken.declick
"""


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory):
    site = tmp_path_factory.mktemp("broken") / "site"
    site.mkdir()
    make_dist(site, "rktest-broken", {"broken": "rktest_broken"}, {"rktest_broken": BROKEN})
    make_dist(site, "rktest-badcmd", {"badcmd": "rktest_badcmd"}, {"rktest_badcmd": BAD_COMMANDS})
    return site


@pytest.mark.slow  # starts restorekit subprocesses
def test_broken_plugin_is_listed_with_its_error_and_builtins_still_work(broken_site, tmp_path):
    path = [broken_site]
    listed = run_cli("plugins", path=path, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "FAILED" in plugin_line(listed.stdout, "broken")
    assert ("error: failed to import rktest_broken: ImportError: rktest_broken needs libfoo; "
            "install it with `pip install libfoo`") in listed.stdout
    assert "util.resample, util.channels, util.gain" in listed.stdout
    assert "Traceback" not in listed.stdout + listed.stderr

    stages = run_cli("stages", path=path, cwd=tmp_path)
    assert stages.returncode == 0 and re.search(r"^util\.gain\s", stages.stdout, re.M)

    (tmp_path / "builtin.yaml").write_text(BUILTIN_PIPELINE)
    x = write_tone(tmp_path / "clip.wav", seconds=0.5)
    ok = run_cli("-q", "run", "builtin.yaml", "clip.wav", "-o", "out", "--bit-depth", "32", path=path, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    y, _ = sf.read(str(tmp_path / "out" / "clip.wav"), dtype="float32", always_2d=True)
    assert np.allclose(y.T, x * 10 ** (-6 / 20), atol=1e-6)


@pytest.mark.slow  # starts restorekit subprocesses
def test_pipeline_needing_a_stage_of_the_broken_plugin_fails_naming_it(broken_site, tmp_path):
    (tmp_path / "needs.yaml").write_text(NEEDS_BROKEN)
    write_tone(tmp_path / "clip.wav", seconds=0.5)
    result = run_cli("run", "needs.yaml", "clip.wav", "-o", "out", path=[broken_site], cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "needs.yaml:4: stage 'declick' (broken.declick): use: unknown stage 'broken.declick'" in result.stderr
    assert "'broken' (failed to import rktest_broken: ImportError: rktest_broken needs libfoo" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "clip.wav").exists()


@pytest.mark.slow  # starts restorekit subprocesses
def test_register_commands_that_raises_does_not_break_the_cli(broken_site, tmp_path):
    result = run_cli("--help", path=[broken_site], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\s+run\s", result.stdout, re.M) and re.search(r"^\s+plugins\s", result.stdout, re.M)
    assert "plugin 'badcmd' failed to add its commands: rktest_badcmd cannot build its command" in result.stderr


@pytest.mark.slow  # starts restorekit subprocesses
@pytest.mark.parametrize("args", [["plugins"], ["stages"], ["--help"]])
def test_strict_mode_makes_import_failures_fatal(broken_site, tmp_path, args):
    result = run_cli(*args, path=[broken_site], cwd=tmp_path, env={STRICT_ENV: "1"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "error: plugin 'broken' failed to import rktest_broken: ImportError" in result.stderr
    assert STRICT_ENV in result.stderr
    assert "Traceback" not in result.stderr


def test_strict_mode_in_process(site, monkeypatch):
    make_dist(site, "rktest-broken2", {"broken2": "rktest_broken2"}, {"rktest_broken2": BROKEN})
    registry = load_registry()
    assert "rktest_broken needs libfoo" in next(p for p in registry.plugins if p.name == "broken2").error
    assert "util.gain" in registry.stages
    for value in ("1", "yes", "true"):
        monkeypatch.setenv(STRICT_ENV, value)
        with pytest.raises(PluginError, match="plugin 'broken2' failed to import rktest_broken2"):
            load_registry()
    for value in ("0", "", "false"):
        monkeypatch.setenv(STRICT_ENV, value)
        assert load_registry().stages["util.gain"]


# -- duplicate ids, invalid registrations, misspelled hooks ----------------------------------------

def stage_module(stage_id: str, cls: str = "Thing") -> str:
    return STAGE_HEADER + textwrap.dedent(f"""
        class {cls}(Stage):
            id = "{stage_id}"
            summary = "A stage used by restorekit's plugin tests."

        @hookimpl
        def register_stages(register):
            register({cls})
    """)


@pytest.mark.slow  # starts restorekit subprocesses
def test_register_stages_duplicate_id_keeps_the_first_and_refuses_the_newcomer_naming_both(site, tmp_path):
    make_dist(site, "rktest-dup-a", {"dup_a": "rktest_dup_a"}, {"rktest_dup_a": stage_module("dup.stage", "First")})
    make_dist(site, "rktest-dup-b", {"dup_b": "rktest_dup_b"}, {"rktest_dup_b": stage_module("dup.stage", "Second")})
    registry = load_registry()
    refused = ("stage 'dup.stage' is already registered by plugin 'dup_a' (distribution 'rktest-dup-a'); "
               "this registration was refused (rename it)")
    assert registry.stages["dup.stage"].__name__ == "First" and registry.stages.owner("dup.stage") == "dup_a"
    b = next(p for p in registry.plugins if p.name == "dup_b")
    assert b.refused == [refused] and not b.error and not b.stages
    assert registry.conflicts() == [f"dup_b: {refused}"]
    from restorekit.pipeline import pipeline_from_text

    pipeline = pipeline_from_text("stages:\n  - use: dup.stage\n", "x.yaml", registry=registry)
    assert type(pipeline.nodes[0].stage).__name__ == "First"
    with pytest.raises(PluginError, match=re.escape(refused)):
        load_registry(strict=True)

    listed = run_cli("plugins", path=[site], cwd=tmp_path)
    lines = listed.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("dup_b  "))
    assert lines[at + 1] == f"    conflict: {refused}", "the conflict is shown next to the plugin"


IMPOSTOR = STAGE_HEADER + textwrap.dedent("""
    class Impostor(Stage):
        id = "denoise.spectral_gate"
        summary = "Claims a built-in id."

    class Own(Stage):
        id = "impostor.own"
        summary = "A stage of its own, which still registers."

    @hookimpl
    def register_stages(register):
        register(Impostor)
        register(Own)

    @hookimpl
    def register_metrics(register):
        from restorekit.metrics import Metric

        class Snr(Metric):
            id = "snr"
            summary = "Claims the built-in metric id."

        register(Snr)

    @hookimpl
    def register_pipelines(register):
        from pathlib import Path

        register(Path(__file__).with_name("zero_shot.yaml"))
        register(Path(__file__).with_name("lowres-8k.yaml"))  # the name of a built-in preset
""")


@pytest.mark.parametrize("marker", ["@hookimpl", "@hookimpl(trylast=True)", "@hookimpl(tryfirst=True)"])
def test_register_stages_an_installed_package_cannot_take_over_a_builtin_id(site, tmp_path, marker, caplog):
    # entry point name "aaa" sorts before every built-in one, and tryfirst/trylast change pluggy's
    # own order: neither may let it win
    make_dist(site, "rktest-impostor", {"aaa": "rktest_impostor"},
              {"rktest_impostor": IMPOSTOR.replace("@hookimpl\n", marker + "\n")})
    (site / "zero_shot.yaml").write_text("stages:\n  - use: util.gain\n")
    (site / "lowres-8k.yaml").write_text("stages:\n  - use: util.gain\n")
    registry = load_registry()
    assert registry.stages["denoise.spectral_gate"].__module__ == "restorekit_plugins.denoise"
    assert registry.stages.owner("denoise.spectral_gate") == "denoise"
    assert registry.metrics["snr"].__module__.startswith("restorekit_plugins")
    assert registry.pipelines["zero_shot"].parent.name == "pipelines"
    info = next(p for p in registry.plugins if p.name == "aaa")
    assert info.stages == ["impostor.own"]
    assert ("stage 'denoise.spectral_gate' is already registered by plugin 'denoise' (distribution 'restorekit'); "
            "this registration was refused (rename it)") in info.refused
    assert any(m.startswith("metric 'snr' is already registered by plugin 'metrics'") for m in info.refused)
    assert any(m.startswith("pipeline 'zero_shot' is already registered by plugin 'pipelines'") for m in info.refused)
    assert any(m.startswith("pipeline 'lowres-8k' is already registered by plugin 'pipelines'")
               for m in info.refused), "pipelines and presets share one namespace"
    assert "plugin 'aaa' (distribution 'rktest-impostor'" in caplog.text, "a refusal is logged, not silent"
    from restorekit.pipeline import load_pipeline

    assert load_pipeline("dsp_chain", registry=registry).nodes  # every shipped pipeline still builds


def test_register_stages_misspelled_hook_is_reported(site):
    make_dist(site, "rktest-typo", {"typo": "rktest_typo"}, {"rktest_typo": stage_module("typo.stage").replace(
        "def register_stages(register)", "def register_stage(register)")})
    registry = load_registry()
    info = next(p for p in registry.plugins if p.name == "typo")
    assert info.error and "unknown hook 'register_stage': did you mean 'register_stages'?" in info.error
    assert "typo.stage" not in registry.stages
    assert "util.gain" in registry.stages
    with pytest.raises(PluginError, match="plugin 'typo': unknown hook 'register_stage'"):
        load_registry(strict=True)


def test_register_stages_with_arguments_not_in_the_spec_is_reported(site):
    make_dist(site, "rktest-args", {"args": "rktest_args"}, {"rktest_args": stage_module("args.stage").replace(
        "def register_stages(register):\n    register(", "def register_stages(registry):\n    registry(")})
    info = next(p for p in load_registry().plugins if p.name == "args")
    assert info.error.startswith("invalid hook implementation:")
    assert "'registry'" in info.error and "can not be found in the hookspec" in info.error


INVALID_STAGES = STAGE_HEADER + """
from pydantic import ConfigDict

class BadId(Stage):
    id = "BadId"
    summary = "An id without a family."

class NoSummary(Stage):
    id = "invalid.no_summary"

class LooseParams(Stage):
    id = "invalid.loose"
    summary = "Params that accept unknown keys."

    class Params(StageParams):
        model_config = ConfigDict(extra="ignore")
        gain_db: float = Field(0.0, description="Gain in dB.")

class NotAStage:
    id = "invalid.not_a_stage"
    summary = "Not a Stage subclass."

class Good(Stage):
    id = "invalid.good"
    summary = "The one valid stage of this plugin."

class Twin(Stage):
    id = "invalid.good"
    summary = "A second class for the same id in the same plugin."

@hookimpl
def register_stages(register):
    for cls in (BadId, NoSummary, LooseParams, NotAStage, Good, Twin):
        register(cls)
"""


def test_register_stages_invalid_stage_classes_are_reported(site):
    make_dist(site, "rktest-invalid", {"invalid": "rktest_invalid"}, {"rktest_invalid": INVALID_STAGES})
    registry = load_registry()
    info = next(p for p in registry.plugins if p.name == "invalid")
    for reason in ("BadId.id 'BadId' must look like 'family.name'",
                   "NoSummary.summary must be one non-empty line",
                   "LooseParams.Params must reject unknown keys (extra='forbid')",
                   "is not a subclass of restorekit.Stage",
                   "registers two stages named 'invalid.good' (Good and Twin)"):
        assert reason in info.error
    assert info.stages == ["invalid.good"], "the valid stage of a partly broken plugin still works"
    assert not {"invalid.no_summary", "invalid.loose", "invalid.not_a_stage"} & set(registry.stages)
    with pytest.raises(PluginError, match="plugin 'invalid': BadId.id"):
        load_registry(strict=True)


def test_register_stages_that_raises_is_reported(site):
    make_dist(site, "rktest-raises", {"raises": "rktest_raises"}, {"rktest_raises": STAGE_HEADER + textwrap.dedent("""
        @hookimpl
        def register_stages(register):
            raise KeyError("no config")
    """)})
    info = next(p for p in load_registry().plugins if p.name == "raises")
    assert info.error == "register_stages raised KeyError: 'no config'"


def test_one_entry_point_name_in_two_distributions_is_reported(site):
    make_dist(site, "rktest-one", {"same": "rktest_one"}, {"rktest_one": stage_module("one.stage")})
    make_dist(site, "rktest-two", {"same": "rktest_two"}, {"rktest_two": stage_module("two.stage")})
    registry = load_registry()
    infos = [p for p in registry.plugins if p.name == "same"]
    assert len(infos) == 2, "neither plugin may vanish silently"
    loaded, refused = sorted(infos, key=lambda p: bool(p.error))
    assert len(loaded.stages) == 1 and not refused.stages
    assert f"entry point name 'same' is also used by distribution '{loaded.distribution}'" in refused.error


METRICS = """\
from restorekit.hookspecs import hookimpl
from restorekit.metrics import Metric

class Peak(Metric):
    id = "rktest.peak"
    summary = "Largest absolute sample value."

class NoSummary(Metric):
    id = "rktest.no_summary"

@hookimpl
def register_metrics(register):
    register(Peak)
    register(NoSummary)
"""


def test_register_metrics_through_an_entry_point(site):
    make_dist(site, "rktest-metrics", {"rkmetrics": "rktest_metrics"}, {"rktest_metrics": METRICS})
    registry = load_registry()
    info = next(p for p in registry.plugins if p.name == "rkmetrics")
    assert registry.metrics["rktest.peak"].__name__ == "Peak"
    assert registry.metrics.owner("rktest.peak") == "rkmetrics" and info.metrics == ["rktest.peak"]
    assert "rktest.no_summary" not in registry.metrics
    assert "NoSummary.summary must be one non-empty line" in info.error


MODELS = """\
from restorekit.hookspecs import hookimpl
from restorekit.training.spec import ModelSpec

class Tiny(ModelSpec):
    name = "rktest_tiny"
    architecture = "rktest_net"
    summary = "A model family used by restorekit's plugin tests."

class Nameless(ModelSpec):
    summary = "No name and no architecture: reported, not registered."

@hookimpl
def register_models(register):
    register(Tiny)
    register(Nameless)
"""


def test_register_models_through_an_entry_point(site):
    from restorekit.plugins import get_registry, reset_registry
    from restorekit_tools.training import get_model_spec

    make_dist(site, "rktest-models", {"rkmodels": "rktest_models"}, {"rktest_models": MODELS})
    reset_registry()
    try:
        registry = get_registry()
        spec = get_model_spec("rktest_tiny")
    finally:
        reset_registry()  # the global registry must not keep this test's plugin
    assert type(spec).__name__ == "Tiny" and registry.models.owner("rktest_tiny") == "rkmodels"
    info = next(p for p in registry.plugins if p.name == "rkmodels")
    assert info.models == ["rktest_tiny"] and "Nameless.name" in info.error


SHIPS_PIPELINES = """\
from pathlib import Path
from restorekit.hookspecs import hookimpl

HERE = Path(__file__).resolve().parent

@hookimpl
def register_pipelines(register):
    register(HERE / "rk_quiet.yaml")

@hookimpl
def register_degradations(register):
    register(HERE / "rk_hum.yaml")
    register(HERE / "not-yaml.txt")
"""


def ship_pipelines(site: Path) -> None:
    make_dist(site, "rktest-ships", {"ships": "rktest_ships"}, {"rktest_ships": SHIPS_PIPELINES})
    (site / "rk_quiet.yaml").write_text("description: Six dB quieter.\nstages:\n  - use: util.gain\n"
                                        "    with: {gain_db: -6}\n")
    (site / "rk_hum.yaml").write_text("description: Adds nothing but a gain.\nstages:\n  - use: util.gain\n"
                                      "    with: {gain_db: -1}\n")
    (site / "not-yaml.txt").write_text("x")


def test_register_pipelines_and_register_degradations_in_process(site):
    ship_pipelines(site)
    registry = load_registry()
    assert registry.pipelines["rk_quiet"] == site / "rk_quiet.yaml"
    assert registry.degradations["rk_hum"] == site / "rk_hum.yaml"
    assert "zero_shot" in registry.pipelines and "lowres-8k" in registry.degradations
    info = next(p for p in registry.plugins if p.name == "ships")
    assert info.provided["pipeline"] == ["rk_quiet"] and info.provided["degradation"] == ["rk_hum"]
    assert "not-yaml.txt is not a .yaml file" in info.error
    from restorekit.pipeline import find_degradation, load_pipeline

    assert load_pipeline("rk_quiet", registry=registry).nodes[0].stage.params.gain_db == -6
    assert find_degradation("rk_hum", registry=registry) == site / "rk_hum.yaml"


@pytest.mark.slow  # starts restorekit subprocesses
def test_register_pipelines_and_register_degradations_by_name_on_the_command_line(site, tmp_path):
    ship_pipelines(site)
    clip = tmp_path / "clip.wav"
    x = write_tone(clip)
    listed = run_cli("pipelines", path=[site], cwd=tmp_path)
    assert re.search(r"^rk_quiet +Six dB quieter\.$", listed.stdout, re.M), listed.stdout
    ran = run_cli("run", "rk_quiet", str(clip), "-o", str(tmp_path / "out"), "--bit-depth", "32",
                  path=[site], cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    y, _ = sf.read(str(tmp_path / "out" / "clip.wav"), dtype="float32", always_2d=True)
    assert np.allclose(y.T, x * 10 ** (-6 / 20), atol=1e-6)
    presets = run_cli("degrade", "--list", path=[site], cwd=tmp_path)
    assert re.search(r"^rk_hum +Adds nothing but a gain\.$", presets.stdout, re.M), presets.stdout
    degraded = run_cli("degrade", str(clip), "--preset", "rk_hum", "-o", str(tmp_path / "deg"),
                       path=[site], cwd=tmp_path)
    assert degraded.returncode == 0 and (tmp_path / "deg" / "clip.wav").is_file(), degraded.stderr


# -- hook meta-tests (after datasette) --------------------------------------------------------------

def hookspec_functions() -> dict[str, inspect.Signature]:
    marker = f"{hookspecs.PROJECT}_spec"
    return {name: inspect.signature(fn) for name, fn in vars(hookspecs).items()
            if inspect.isfunction(fn) and hasattr(fn, marker)}


def test_hookspecs_exist_and_have_one_line_docstrings():
    specs = hookspec_functions()
    assert {"register_stages", "register_commands"} <= set(specs)
    for name in specs:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert doc and "\n" not in doc and doc.endswith("."), f"hookspec {name}: give it a one-line docstring"


def test_hookspecs_are_documented_with_their_signatures():
    text = WRITING_PLUGINS.read_text(encoding="utf-8")
    for name, sig in hookspec_functions().items():
        call = f"{name}({', '.join(sig.parameters)})"
        assert re.search(rf"^#+ .*`{re.escape(call)}`", text, re.M), \
            f"docs/writing-plugins.md needs a heading with `{call}`"


def hookimpl_modules(monkeypatch) -> dict[str, object]:
    """Every built-in plugin module (from restorekit's own entry points) and the example's."""
    from importlib import metadata

    monkeypatch.syspath_prepend(str(EXAMPLE_SRC))
    modules = {ep.value: ep.load() for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)
               if ep.dist is not None and ep.dist.metadata["Name"] == "restorekit"}
    assert "restorekit_plugins.util" in modules, "restorekit's own entry points are missing: pip install -e ."
    import restorekit_example

    modules["restorekit_example"] = restorekit_example
    return modules


def test_hookimpl_signatures_match_the_hookspecs(monkeypatch):
    specs = hookspec_functions()
    marker = f"{hookspecs.PROJECT}_impl"
    seen = set()
    for module_name, module in hookimpl_modules(monkeypatch).items():
        for name, fn in vars(module).items():
            if not (inspect.isfunction(fn) and hasattr(fn, marker)):
                continue
            assert name in specs, f"{module_name}.{name} is marked @hookimpl but no hookspec has that name"
            extra = set(inspect.signature(fn).parameters) - set(specs[name].parameters)
            assert not extra, f"{module_name}.{name}: argument(s) {extra} are not in the hookspec {specs[name]}"
            seen.add(name)
    import restorekit_example

    example_hooks = {n for n, f in vars(restorekit_example).items() if hasattr(f, marker)}
    assert example_hooks == {"register_stages", "register_pipelines", "register_commands"}, \
        "the example demonstrates a stage, a named pipeline and a command"
    assert "register_stages" in seen


def test_every_hookspec_has_a_test():
    names = set()
    for path in (ROOT / "tests").glob("test_*.py"):
        names |= set(re.findall(r"^\s*def (test_\w+)", path.read_text(encoding="utf-8"), re.M))
    for hook in hookspec_functions():
        assert any(hook in n for n in names), f"no test function in tests/ is named after hook {hook}"


SHADOWS_COMMANDS = STAGE_HEADER + textwrap.dedent("""
    @hookimpl(tryfirst=True)
    def register_commands(cli):
        import click

        @cli.command(name="compare")
        def compare():
            click.echo("IMPOSTOR")

        @cli.command(name="run")
        def run():
            click.echo("IMPOSTOR")

        @cli.command(name="rk-own")
        def own():
            click.echo("own command")
""")


@pytest.mark.slow  # starts restorekit subprocesses
def test_register_commands_cannot_replace_a_builtin_command(site, tmp_path):
    make_dist(site, "rktest-shadow", {"aaa": "rktest_shadow"}, {"rktest_shadow": SHADOWS_COMMANDS})
    compared = run_cli("compare", "--help", path=[site], cwd=tmp_path)
    assert compared.returncode == 0 and "IMPOSTOR" not in compared.stdout and "PIPELINES" in compared.stdout
    assert run_cli("rk-own", path=[site], cwd=tmp_path).stdout == "own command\n"
    listed = run_cli("plugins", path=[site], cwd=tmp_path)
    lines = listed.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("aaa  "))
    assert "    conflict: command 'compare' is already provided by plugin 'tools'; this one was refused " \
           "(rename it)" in lines[at + 1:at + 4]
    assert "    conflict: command 'run' is already provided by restorekit itself; this one was refused " \
           "(rename it)" in lines[at + 1:at + 4]


EXECUTORS = """\
from restorekit.executor import Executor
from restorekit.hookspecs import hookimpl

class Inline(Executor):
    name = "rktest_inline"
    summary = "Runs every file here, in reverse order (order must not matter)."

    def run(self, pipeline, tasks, record, on_stage):
        from restorekit.batch import process_file

        pipeline.prepare()
        for task in reversed(tasks):
            record(process_file(pipeline, task, on_stage=on_stage))

class Nameless(Executor):
    summary = "No name: reported, not registered."

@hookimpl
def register_executors(register):
    register(Inline)
    register(Nameless)
"""


@pytest.mark.slow  # starts restorekit subprocesses
def test_register_executors_through_an_entry_point(site, tmp_path):
    make_dist(site, "rktest-exec", {"rkexec": "rktest_exec"}, {"rktest_exec": EXECUTORS})
    registry = load_registry()
    assert registry.tables["executor"]["rktest_inline"].__name__ == "Inline"
    info = next(p for p in registry.plugins if p.name == "rkexec")
    assert info.provided["executor"] == ["rktest_inline"] and "Nameless.name '' must be" in info.error
    clips = [tmp_path / "in" / f"{i}.wav" for i in range(3)]
    clips[0].parent.mkdir()
    for i, clip in enumerate(clips):
        write_tone(clip, seconds=0.2 + 0.1 * i)
    pipe = tmp_path / "gain.yaml"
    pipe.write_text("stages:\n  - use: util.gain\n    with: {gain_db: -6}\n")
    ran = run_cli("run", str(pipe), str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--executor", "rktest_inline",
                  path=[site], cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    here = run_cli("run", str(pipe), str(tmp_path / "in"), "-o", str(tmp_path / "here"), path=[site], cwd=tmp_path)
    assert here.returncode == 0
    for clip in clips:
        assert (tmp_path / "out" / clip.name).read_bytes() == (tmp_path / "here" / clip.name).read_bytes()
    unknown = run_cli("run", str(pipe), str(clips[0]), "--executor", "nosuch", path=[site], cwd=tmp_path)
    assert unknown.returncode == 2 and "unknown executor 'nosuch'; known: " in unknown.stderr
