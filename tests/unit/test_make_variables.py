"""The Makefile's sweep variables, bin/sweep's flags (sweeper/cli.py) and contract/config.py say
the same: every sweep variable is passed as a flag of bin/sweep and every flag has a variable
(its sweep-file key, in upper case); each default and list of choices `make help` states is
the one bin/sweep and the config use; the defaults of project, advise and plan are contract's."""

from __future__ import annotations

import os
import re

import pytest

from analysis import plan
from contract import defaults
from contract.config import ExperimentConfig
from slurm import render
from sweeper import cli, sweepfile
from tests.helpers import ROOT

# Variables whose parenthesis in `make help` says what the default does rather than a value.
NOT_A_VALUE = {"CONFIG": "no sweep file", "LAYOUTS": "instead of NODES x PROCS", "MEMORY_FRACTION": "even split",
               "SWEEP": "a timestamp"}


def _makefile() -> str:
    with open(os.path.join(ROOT, "Makefile")) as f:
        return f.read()


def sweep_variables(text: str) -> list[str]:
    """The `VAR ?=` lines of the Makefile's sweep section."""
    section = text[text.index("# ---- sweep variables"):text.index("# ---- other targets")]
    return re.findall(r"^([A-Z_]+) \?=", section, re.M)


def sweep_flags(text: str) -> dict[str, str]:
    """SWEEP_FLAGS: variable -> the bin/sweep flag it is passed as."""
    block = text[text.index("SWEEP_FLAGS ="):text.index(".PHONY")]
    pairs = {v: f for f, v in re.findall(r"\$\(call opt,(--[a-z-]+),\$\(([A-Z_]+)\)\)", block)}
    pairs.update(re.findall(r"\$\(if \$\(([A-Z_]+)\),(--[a-z-]+)\)", block))
    pairs.update(re.findall(r"\$\(if \$\(filter 0,\$\(([A-Z_]+)\)\),(--[a-z-]+)\)", block))  # WARM=0: --cold
    return pairs


def help_lines(text: str) -> list[str]:
    return re.findall(r'^\t@echo "(.*)"$', text, re.M)


def help_segments(lines: list[str], known: set[str]) -> dict[str, str]:
    """The sweep section of `make help`: variable -> its description. A segment starts with one or
    more variable names (`STEPS / EPOCHS`, `PARTITION ACCOUNT TIME`, `DRY_RUN=1`, `WARM=0`) after two spaces."""
    out: dict[str, str] = {}
    current: list[str] = []
    for line in lines:
        for part in re.split(r"\s{2,}", line.strip()):
            names, rest = [], part.split()
            while rest and (re.sub("=[01]$", "", rest[0]) in known or (rest[0] == "/" and names)):
                word = rest.pop(0)
                if word != "/":
                    names.append(re.sub("=[01]$", "", word))
            if names:
                current = names
                for n in names:
                    out[n] = ""
                part = " ".join(rest)
            if current and part:
                out[current[0]] = f"{out[current[0]]} {part}".strip()
    return out


def stated_default(description: str) -> str | None:
    """The first word of the last parenthesis: '(20 steps)' -> '20', '(0 = all)' -> '0'."""
    found = re.findall(r"\(([^()]*)\)", description)
    return found[-1].split()[0] if found else None


def stated_choices(description: str) -> tuple[str, ...]:
    m = re.search(r"(?<![\w@])([\w.-]+(?:\|[\w.-]+)+)", description)
    return tuple(m.group(1).split("|")) if m else ()


def _sweep_help() -> dict[str, str]:
    text = _makefile()
    lines = help_lines(text)
    start = next(i for i, ln in enumerate(lines) if ln.startswith("Sweep variables"))
    end = next(i for i, ln in enumerate(lines) if ln.startswith("TARGET_ACC"))
    return help_segments(lines[start + 1:end], set(sweep_variables(text)))


def _dests() -> dict[str, str]:
    """bin/sweep's visible flags -> destination."""
    return {o: a.dest for a in cli.build_parser()._actions for o in a.option_strings
            if o.startswith("--") and o != "--help" and a.help != "==SUPPRESS=="}


def test_every_sweep_variable_is_a_flag_and_every_flag_a_variable():
    text = _makefile()
    variables, flags, dests = sweep_variables(text), sweep_flags(text), _dests()
    assert len(variables) > 30 and "NODES" in variables and "SERIAL" in variables
    assert set(variables) == set(flags), "a sweep variable not passed in SWEEP_FLAGS, or passed but not declared"
    assert set(flags.values()) == set(dests), f"bin/sweep flags without a variable: {set(dests) - set(flags.values())}"
    for var, flag in flags.items():
        if flag != "--config":  # the one flag that is no setting of a sweep file
            assert sweepfile.key(dests[flag]).upper() == var, (var, flag)
    assert set(cli.converters()) == {dests[f] for f in flags.values()} - {"config"}


def test_make_help_names_every_sweep_variable():
    assert set(_sweep_help()) == set(sweep_variables(_makefile()))


def test_make_help_states_the_defaults_and_choices_of_bin_sweep_and_the_config():
    segments, flags, dests = _sweep_help(), sweep_flags(_makefile()), _dests()
    checked = 0
    for var, description in segments.items():
        dest = dests[flags[var]]
        value = stated_default(description)
        if value is not None and var not in NOT_A_VALUE and not isinstance(cli.default_of(dest), bool):  # VAR=1
            want = cli.default_text(dest)
            assert value == want, f"make help: {var} ({value}), bin/sweep: {want}"
            checked += 1
        listed = stated_choices(description)
        if listed:
            assert listed == cli.choices_of(dest), f"make help: {var} {'|'.join(listed)}"
            checked += 1
    assert checked >= 25
    # The flag table states the config's choices where the config has them.
    assert cli.choices_of("precision") == cli.FIELDS["precision"].metadata["choices"]
    assert "fp32|bf16|fp16" in cli.build_parser().format_help().replace("\n", "")


@pytest.mark.parametrize("description,default,choices", [
    ("training length (20 steps)", "20", ()), ("auto|simulate|slurm (auto)", "auto", ("auto", "simulate", "slurm")),
    ("raise@R:S or kill@R:S", None, ())])
def test_the_help_parser(description, default, choices):
    assert stated_default(description) == default and stated_choices(description) == choices
    segments = help_segments(["  STEPS / EPOCHS   length (20 steps)    SEED (0)  DRY_RUN=1  run nothing"],
                             {"STEPS", "EPOCHS", "SEED", "DRY_RUN"})
    assert segments == {"STEPS": "length (20 steps)", "EPOCHS": "", "SEED": "(0)", "DRY_RUN": "run nothing"}


def test_other_targets_take_contract_defaults():
    text = _makefile()
    for var in ("NODES_MAX", "GPU_MEM"):  # empty: the command's default, which is contract's
        assert re.search(rf"^{var} \?=$", text, re.M), f"{var} must be left empty"
    line = next(ln for ln in help_lines(text) if "defaults of project, advise, plan" in ln)
    stated = dict(re.findall(r"([A-Z_]+)=(\S+)", line))
    assert stated == {"NODES_MAX": str(defaults.MAX_NODES), "LINK": defaults.PROJECTED_LINK,
                      "GPU_MEM": defaults.GPU_MEM}
    plan_line = next(ln for ln in help_lines(text) if ln.strip().startswith("plan:"))
    assert f"OPTIMIZER ({plan.build_parser().get_default('optimizer')})" in plan_line


def test_committed_sbatch_scripts_read_the_make_variables():
    """`STEPS=50 sbatch slurm/ddp.sbatch`: each trainer setting the scripts read is a sweep variable's name."""
    envs = {s["env"] for s in render.settings(ExperimentConfig())}
    assert {"BATCH", "STEPS", "GPIPE_CHECKPOINT"} <= envs
    per_run = {"SAVE_PARAMS", "REPEAT"}  # one run's, not a sweep's (a sweep has REPEATS)
    assert envs <= set(sweep_variables(_makefile())) | per_run
