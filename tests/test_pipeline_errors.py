"""Every class of pipeline error is found before audio is touched, located by file, line, stage and key."""

from __future__ import annotations

import textwrap

import pytest
from core_fakes import Split, registry_with

from restorekit.errors import PipelineError, UsageError
from restorekit.pipeline import find_pipeline, load_pipeline, parse_overrides, pipeline_from_text
from restorekit.plugins import PluginInfo

REGISTRY = registry_with(Split)


def problems(tmp_path, text, overrides=None, registry=REGISTRY) -> tuple[list[str], str]:
    """Write `text` to p.yaml, load it, and return (the problem lines, the file name)."""
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    with pytest.raises(PipelineError) as info:
        load_pipeline(path, overrides, registry=registry)
    lines = [str(p) for p in info.value.problems]
    assert str(info.value) == "\n".join(lines)
    return lines, str(path)


def only(tmp_path, text, overrides=None, registry=REGISTRY) -> str:
    found, f = problems(tmp_path, text, overrides, registry)
    assert len(found) == 1, found
    return found[0].replace(f, "FILE")


def test_pipeline_errors_are_usage_errors_with_exit_code_2():
    assert issubclass(PipelineError, UsageError) and PipelineError.exit_code == 2


# -- YAML -------------------------------------------------------------------------------

def test_yaml_syntax_error_names_file_and_line(tmp_path):
    msg = only(tmp_path, """
        name: x
        stages:
          - use: util.gain
            with: {gain_db: 1
          - use: util.pad
        """)
    assert msg.startswith("FILE:5: invalid YAML: expected ',' or '}'")


def test_duplicate_yaml_key_is_an_error(tmp_path):
    msg = only(tmp_path, """
        name: x
        stages:
          - use: util.gain
            with: {gain_db: 1, gain_db: 2}
        """)
    assert msg == "FILE:4: invalid YAML: duplicate key 'gain_db' (first on line 4)"


def test_only_safe_yaml_is_loaded(tmp_path):
    marker = tmp_path / "pwned"
    msg = only(tmp_path, f"""
        stages:
          - use: util.gain
            with: !!python/object/apply:os.system ["touch {marker}"]
        """)
    assert msg.startswith("FILE:3: invalid YAML: could not determine a constructor for the tag")
    assert not marker.exists()


@pytest.mark.parametrize("text,expected", [
    ("", "FILE:1: a pipeline is a YAML mapping with a `stages` list"),
    ("- use: util.gain\n", "FILE:1: a pipeline is a YAML mapping with a `stages` list"),
    ("name: x\nstages: []\n", "FILE:2: stages: `stages` must be a non-empty list of stages (each with `use`)"),
    ("name: x\n", "FILE:1: stages: `stages` must be a non-empty list of stages (each with `use`)"),
    ("stages:\n  - use: util.gain\n  - 5\n", "FILE:3: each stage is a mapping with `use` (and `id`, `with`, `input`)"),
])
def test_shape_errors(tmp_path, text, expected):
    assert only(tmp_path, text) == expected


# -- keys ---------------------------------------------------------------------------------

def test_unknown_top_level_key(tmp_path):
    msg = only(tmp_path, """
        name: x
        sample_rte: 44100
        stages:
          - use: util.gain
        """)
    assert msg == ("FILE:2: sample_rte: unknown key; did you mean 'sample_rate'? valid keys: name, description, "
                   "device, sample_rate, channels, bit_depth, seed, stages, outputs")


def test_unknown_stage_key(tmp_path):
    msg = only(tmp_path, """
        stages:
          - id: first
            use: util.gain
          - id: second
            use: util.gain
            inptu: first
        """)
    assert msg == ("FILE:6: stage 'second' (util.gain): inptu: unknown key; did you mean 'input'? "
                   "a stage has id, use, with and input")


def test_stage_without_use(tmp_path):
    msg = only(tmp_path, """
        stages:
          - id: lonely
            with: {gain_db: 1}
        """)
    assert msg.startswith("FILE:2: stage 'lonely': use: every stage needs `use: <stage id>`")


@pytest.mark.parametrize("key,value,expected", [
    ("device", "gpu", "device: device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    ("device", "cuda:x", "device: device must be auto, cpu, cuda or cuda:N, got 'cuda:x'"),
    ("sample_rate", 500, "sample_rate: must be between 1000 and 768000 Hz, got 500"),
    ("sample_rate", "44k", "sample_rate: must be a positive integer, got '44k'"),
    ("channels", 0, "channels: must be a positive integer, got 0"),
    ("bit_depth", 8, "bit_depth: must be one of 16, 24, 32, got 8"),
    ("seed", -1, "seed: must be a positive integer, got -1"),
    ("name", 5, "name: must be a string, got 5"),
])
def test_bad_top_level_values(tmp_path, key, value, expected):
    msg = only(tmp_path, f"""
        {key}: {value!r}
        stages:
          - use: util.gain
        """)
    assert msg == f"FILE:1: {expected}"


# -- stages and parameters -----------------------------------------------------------------

def test_unknown_stage_id_suggests_a_close_match(tmp_path):
    msg = only(tmp_path, """
        name: x
        stages:
          - id: level
            use: util.gian
        """)
    assert msg.startswith("FILE:4: stage 'level' (util.gian): use: unknown stage 'util.gian'. "
                          "Did you mean 'util.gain'")
    assert msg.endswith("(`restorekit stages` lists them all)")


def test_unknown_stage_id_names_plugins_that_failed_to_load(tmp_path):
    registry = registry_with(Split)
    registry.plugins.append(PluginInfo("neural", "restorekit_neural:plugin",
                                       error="failed to import restorekit_neural: ModuleNotFoundError: no onnx"))
    msg = only(tmp_path, "stages:\n  - use: sr.flow\n", registry=registry)
    assert msg.startswith("FILE:2: stage 'flow' (sr.flow): use: unknown stage 'sr.flow'.")
    assert ("These plugins failed to load and may provide it: 'neural' (failed to import restorekit_neural: "
            "ModuleNotFoundError: no onnx).") in msg


def test_bad_param_value_gives_pydantics_message_and_the_value(tmp_path):
    msg = only(tmp_path, """
        name: x
        description: level only
        stages:
          - id: level
            use: util.gain
            with:
              gain_db: 100
        """)
    assert msg == "FILE:7: stage 'level' (util.gain): with.gain_db: Input should be less than or equal to 60 (got 100)"


def test_bad_param_type_and_choice_are_both_reported(tmp_path):
    found, f = problems(tmp_path, """
        stages:
          - id: rs
            use: util.resample
            with: {sample_rate_hz: fast, quality: best}
        """)
    assert found == [
        f"{f}:4: stage 'rs' (util.resample): with.sample_rate_hz: Input should be a valid integer, "
        "unable to parse string as an integer (got 'fast')",
        f"{f}:4: stage 'rs' (util.resample): with.quality: Input should be 'QQ', 'LQ', 'MQ', 'HQ' or 'VHQ' "
        "(got 'best')",
    ]


def test_unknown_param_lists_the_valid_ones(tmp_path):
    msg = only(tmp_path, """
        stages:
          - id: pad
            use: util.pad
            with:
              before_s: 1
              afetr_s: 2
        """)
    assert msg == ("FILE:6: stage 'pad' (util.pad): with.afetr_s: unknown parameter; did you mean 'after_s'? "
                   "util.pad takes: before_s, after_s, to_duration_s (`restorekit stages util.pad` describes them)")


def test_cross_parameter_rule(tmp_path):
    msg = only(tmp_path, """
        stages:
          - id: pad
            use: util.pad
            with: {after_s: 1, to_duration_s: 5}
        """)
    assert msg.startswith("FILE:4: stage 'pad' (util.pad): with: Value error, give after_s or to_duration_s, not both")


@pytest.mark.parametrize("value", ["0", "[]", "[1, 2]", "fast"])
def test_with_must_be_a_mapping(tmp_path, value):
    msg = only(tmp_path, f"""
        stages:
          - id: g
            use: util.gain
            with: {value}
        """)
    assert msg.startswith("FILE:4: stage 'g' (util.gain): with: `with` must be a mapping of parameters, got")


def test_duplicate_stage_ids(tmp_path):
    msg = only(tmp_path, """
        stages:
          - id: level
            use: util.gain
          - id: level
            use: util.gain
        """)
    assert msg == ("FILE:4: stage 'level' (util.gain): id: duplicate stage id 'level' (also used by stage 1); "
                   "give each stage its own id")


def test_stage_ids_default_to_the_name_and_are_numbered(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("stages:\n  - use: util.gain\n  - use: util.gain\n  - use: util.pad\n")
    p = load_pipeline(path, registry=REGISTRY)
    assert [n.id for n in p.nodes] == ["gain", "gain_2", "pad"]


@pytest.mark.parametrize("node_id", ["input", "9lives", "a.b", "with space"])
def test_invalid_stage_ids(tmp_path, node_id):
    msg = only(tmp_path, f"""
        stages:
          - id: "{node_id}"
            use: util.gain
        """)
    assert msg.startswith(f"FILE:2: stage '{node_id}' (util.gain): id: '{node_id}' is not a valid stage id")


# -- the graph -----------------------------------------------------------------------------

def test_dangling_input_suggests_a_close_match(tmp_path):
    msg = only(tmp_path, """
        stages:
          - id: level
            use: util.gain
          - id: pad
            use: util.pad
            input: levle
        """)
    assert msg == ("FILE:6: stage 'pad' (util.pad): input: 'levle' names no stage of this pipeline. "
                   "Did you mean 'level'? Stages: level, pad; the pipeline's own input is 'input'")


def test_dangling_named_output(tmp_path):
    msg = only(tmp_path, """
        stages:
          - id: stems
            use: test.split
          - id: a
            use: util.gain
            input: stems.vocals
          - id: mix
            use: mix.sum
            input: [a, stems.quarter, stems.half]
        """)
    assert msg == ("FILE:6: stage 'a' (util.gain): input: 'stems.vocals': stage 'stems' has no output 'vocals'; "
                   "its outputs are half, quarter")


def test_named_output_of_a_single_output_stage(tmp_path):
    msg = only(tmp_path, """
        stages:
          - id: level
            use: util.gain
          - id: pad
            use: util.pad
            input: level.left
        """)
    assert msg == ("FILE:6: stage 'pad' (util.pad): input: 'level.left': stage 'level' has a single output, "
                   "not named outputs; use 'level'")


def test_cycle(tmp_path):
    msg = only(tmp_path, """
        stages:
          - id: a
            use: util.gain
            input: c
          - id: b
            use: util.gain
            input: a
          - id: c
            use: util.gain
            input: b
          - id: out
            use: mix.sum
            input: [c, input]
        """)
    assert msg == ("FILE:4: stage 'a' (util.gain): input: the stages form a cycle: a -> c -> b -> a; "
                   "a stage's input must not depend on its own output")


def test_self_reference(tmp_path):
    msg = only(tmp_path, """
        stages:
          - id: a
            use: util.gain
            input: a
        """)
    assert msg == "FILE:4: stage 'a' (util.gain): input: 'a': a stage cannot take its own output"


def test_unused_output(tmp_path):
    msg = only(tmp_path, """
        stages:
          - id: side
            use: util.gain
            input: input
          - id: main
            use: util.pad
            input: input
        """)
    assert msg.startswith("FILE:2: stage 'side' (util.gain): its output is never used: no later stage takes it")
    assert "give a stage `input: side` or remove it" in msg


def test_unused_named_outputs(tmp_path):
    msg = only(tmp_path, """
        stages:
          - id: stems
            use: test.split
          - id: keep
            use: util.gain
            input: stems.half
        """)
    assert msg.startswith("FILE:2: stage 'stems' (test.split): outputs never used: stems.quarter;")


def test_splitter_followed_by_a_stage_without_input(tmp_path):
    msg = only(tmp_path, """
        stages:
          - id: stems
            use: test.split
          - id: level
            use: util.gain
        """)
    assert msg == ("FILE:4: stage 'level' (util.gain): input: no `input` given, and the previous stage 'stems' has "
                   "several outputs (stems.half, stems.quarter); name the one this stage takes")


def test_splitter_referenced_without_an_output_name(tmp_path):
    msg = only(tmp_path, """
        stages:
          - id: stems
            use: test.split
          - id: mix
            use: mix.sum
            input: [stems, stems.quarter]
        """)
    assert msg == ("FILE:6: stage 'mix' (mix.sum): input: 'stems': stage 'stems' has several outputs; "
                   "name one of stems.half, stems.quarter")


def test_merge_with_the_wrong_number_of_gains(tmp_path):
    msg = only(tmp_path, """
        stages:
          - id: stems
            use: test.split
          - id: mix
            use: mix.sum
            input: [stems.half, stems.quarter]
            with: {gains_db: [0, -3, -6]}
        """)
    assert msg == ("FILE:6: stage 'mix' (mix.sum): input: with.gains_db has 3 value(s) for 2 input(s); "
                   "give one gain per input")


def test_several_inputs_to_a_stage_that_does_not_merge(tmp_path):
    msg = only(tmp_path, """
        stages:
          - id: stems
            use: test.split
          - id: level
            use: util.gain
            input: [stems.half, stems.quarter]
        """)
    assert msg.startswith("FILE:6: stage 'level' (util.gain): input: this stage takes one input, got 2 "
                          "(stems.half, stems.quarter); merge them first with a merging stage such as mix.sum")


@pytest.mark.parametrize("use", ["util.gain", "mix.sum"])
def test_empty_input_list(tmp_path, use):
    msg = only(tmp_path, f"""
        stages:
          - id: x
            use: {use}
            input: []
        """)
    assert msg.startswith(f"FILE:4: stage 'x' ({use}): input: ")
    assert ("a merging stage needs at least one input" in msg) if use == "mix.sum" else \
        ("this stage takes one input, got an empty list" in msg)


def test_bad_input_type(tmp_path):
    msg = only(tmp_path, """
        stages:
          - id: x
            use: util.gain
            input: {a: 1}
        """)
    assert msg == "FILE:4: stage 'x' (util.gain): input: `input` must be a stage id, 'stage.output', or a list of " \
                  "them; got {'a': 1}"


# -- several problems at once ---------------------------------------------------------------

def test_all_problems_of_the_file_are_reported_together(tmp_path):
    found, f = problems(tmp_path, """
        name: everything wrong
        device: gpu
        colour: blue
        stages:
          - id: level
            use: util.gian
          - id: pad
            use: util.pad
            with:
              before_s: -1
              extra: 2
            inptu: level
        """)
    assert [line.split(": ")[0] for line in found] == [f"{f}:3", f"{f}:2", f"{f}:12", f"{f}:6", f"{f}:10",
                                                        f"{f}:11"]
    text = "\n".join(found)
    for fragment in ("colour: unknown key", "device: device must be", "inptu: unknown key",
                     "unknown stage 'util.gian'", "with.before_s: Input should be greater than or equal to 0",
                     "with.extra: unknown parameter"):
        assert fragment in text


# -- --set overrides --------------------------------------------------------------------------

CHAIN = """
    stages:
      - id: level
        use: util.gain
        with: {gain_db: -3}
      - id: pad
        use: util.pad
    """


def test_overrides_apply_and_are_parsed_as_yaml(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(CHAIN))
    p = load_pipeline(path, ["level.gain_db=6.5", "pad.to_duration_s=2"], registry=REGISTRY)
    assert p.stage("level").params.gain_db == 6.5
    assert p.stage("pad").params.to_duration_s == 2.0
    assert p.spec["stages"][0]["with"] == {"gain_db": 6.5}
    p = load_pipeline(path, {"level.gain_db": 1}, registry=REGISTRY)
    assert p.stage("level").params.gain_db == 1


def test_override_of_an_unknown_stage(tmp_path):
    msg = only(tmp_path, CHAIN, ["levle.gain_db=1"])
    assert msg == "FILE: --set levle.gain_db=1: no stage 'levle' in this pipeline. Did you mean 'level'? " \
                  "Stage ids: level, pad"


def test_override_of_an_unknown_param(tmp_path):
    msg = only(tmp_path, CHAIN, ["level.gian_db=1"])
    assert msg.startswith("FILE:4: stage 'level' (util.gain): with.gian_db: unknown parameter; did you mean "
                          "'gain_db'?")
    assert msg.endswith("(from --set level.gian_db=1)")


def test_override_out_of_range(tmp_path):
    msg = only(tmp_path, CHAIN, ["level.gain_db=100"])
    assert msg == ("FILE:4: stage 'level' (util.gain): with.gain_db: Input should be less than or equal to 60 "
                   "(got 100) (from --set level.gain_db=100)")


def test_override_below_a_value_that_is_not_a_mapping(tmp_path):
    msg = only(tmp_path, CHAIN, ["level.gain_db.x=1"])
    assert msg == "FILE: --set level.gain_db.x=1: with.gain_db is -3, not a mapping, so it has no parameters to set"


def test_override_of_a_stage_with_its_own_problem_is_not_called_unknown(tmp_path):
    msg = only(tmp_path, "stages:\n  - id: level\n    use: util.gian\n", ["level.gain_db=1"])
    assert msg.startswith("FILE:3: stage 'level' (util.gian): use: unknown stage 'util.gian'.")


@pytest.mark.parametrize("item", ["nodot=1", "level.gain_db", "=1", ".x=1"])
def test_malformed_overrides(item):
    with pytest.raises(PipelineError, match=r"expected stage_id.param=value, e.g. --set gate.prop_decrease=0.6"):
        parse_overrides([item])


def test_override_value_that_is_not_yaml():
    with pytest.raises(PipelineError, match=r"--set a.b=\[1: the value is not valid YAML"):
        parse_overrides(["a.b=[1"])


# -- finding pipelines ------------------------------------------------------------------------

def test_unknown_pipeline_name_suggests_a_shipped_one():
    with pytest.raises(PipelineError, match=r"zero_shto: no such pipeline file or named pipeline. "
                                            r"Did you mean 'zero_shot'\?"):
        find_pipeline("zero_shto")


def test_shipped_pipeline_by_name_and_a_directory_is_not_a_pipeline(tmp_path):
    assert find_pipeline("zero_shot").name == "zero_shot.yaml"
    with pytest.raises(PipelineError, match="is not a file"):
        find_pipeline(tmp_path)


def test_device_argument_overrides_the_file(tmp_path):
    p = pipeline_from_text("device: cuda\nstages:\n  - use: util.gain\n", "p.yaml", device="cpu",
                           registry=REGISTRY)
    assert p.device_spec == "cpu" and p.spec["device"] == "cpu"
