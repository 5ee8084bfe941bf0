"""`python -m paraphina.run` as a user runs it: summaries, multirun, and one-line errors on bad input.

Every command runs in this process through the same `main` as `python -m paraphina.run` (Hydra's app runner
on the command line given), in its own empty working folder and a clean environment, once per module; the
tests read the results. One command runs as a real interpreter start, to check the module runs as a program.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import re
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from paraphina import bench, calibrate
from paraphina import run as run_module
from paraphina.config import loading
from paraphina.config.loading import compose_config, files_state
from paraphina.core.cli import port_number
from paraphina.core.errors import ParaphinaError
from paraphina.run import main as run_main

NO_TRACKING = "tracking.enabled=false"  # these runs test the CLI, not MLflow records (tests/test_run_tracking.py)
TIMEOUT_S = 180


@dataclass
class Done:
    args: list[str]
    cwd: Path
    returncode: int
    stdout: str
    stderr: str


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARAPHINA_") and k != "MLFLOW_TRACKING_URI"}
    env.update(extra)
    return env


# name -> (arguments, extra environment, files to create in the working folder first)
COMMANDS: dict[str, tuple[list[str], dict[str, str], list[str]]] = {
    "aggressive": (["+profile=aggressive", "ticks=200", "seed=7", NO_TRACKING], {}, []),
    "batch": (["runs=8", "ticks=100", NO_TRACKING], {}, []),
    "unknown_profile": (["+profile=reckless", "ticks=5", NO_TRACKING], {}, []),
    "ticks_zero": (["ticks=0", NO_TRACKING], {}, []),
    "ticks_negative": (["ticks=-5", NO_TRACKING], {}, []),
    "runs_zero": (["runs=0", "ticks=5", NO_TRACKING], {}, []),
    "typo_key": (["tiks=5", NO_TRACKING], {}, []),
    "bad_band": (["engine.hedge.band_base=wide", "ticks=5", NO_TRACKING], {}, []),
    "bad_band_env": (["ticks=5", NO_TRACKING], {"PARAPHINA_HEDGE_BAND_BASE": "wide"}, []),
    "bad_profile_env": (["ticks=5", NO_TRACKING], {"PARAPHINA_RISK_PROFILE": "reckless"}, []),
    "bad_mode_env": (["ticks=5", NO_TRACKING], {"PARAPHINA_TELEMETRY_MODE": "xml"}, []),
    "negative_loss_env": (["ticks=5", NO_TRACKING], {"PARAPHINA_DAILY_LOSS_LIMIT": "-5"}, []),
    "unwritable_telemetry": (["ticks=5", "telemetry.mode=jsonl", "telemetry.path=blocker/run.jsonl", NO_TRACKING],
                             {}, ["blocker"]),
    "env_profile": (["ticks=20", NO_TRACKING], {"PARAPHINA_RISK_PROFILE": "conservative"}, []),
    "env_profile_overridden": (["+profile=aggressive", "ticks=20", NO_TRACKING],
                               {"PARAPHINA_RISK_PROFILE": "conservative"}, []),
    "env_telemetry": (["ticks=30", NO_TRACKING],
                      {"PARAPHINA_TELEMETRY_MODE": "jsonl", "PARAPHINA_TELEMETRY_PATH": "tel/run.jsonl"}, []),
    "help": (["--help"], {}, []),
    "cfg_job": (["--cfg", "job", NO_TRACKING], {}, []),
    "cfg_job_env": (["--cfg", "job", NO_TRACKING], {"PARAPHINA_HEDGE_BAND_BASE": "7",
                                                     "PARAPHINA_RISK_PROFILE": "aggressive"}, []),
    "multirun": (["-m", "+profile=conservative,aggressive", "seed=1,2", "ticks=50", NO_TRACKING], {}, []),
    "sweep_without_m": (["seed=1,2", "ticks=5", NO_TRACKING], {}, []),
    "hydra_folders_asked": (["ticks=5", NO_TRACKING, "hydra.run.dir=out", "hydra.output_subdir=.hydra"], {}, []),
    "hydra_resolver": (["ticks=5", NO_TRACKING, "label=${hydra:job.name}"], {}, []),
    "bad_interpolation": (["ticks=5", NO_TRACKING, "label=${nope}"], {}, []),
    "bad_parse": (["ticks=5", NO_TRACKING, "telemetry.path=t_{seed}.jsonl"], {}, []),
    "negative_loss_limit": (["ticks=5", "engine.risk.daily_loss_limit=-100"], {}, []),
    "unknown_placeholder": (["ticks=5", "runs=2", "telemetry.mode=jsonl", "telemetry.path='tel/{sed}.jsonl'"], {}, []),
    "unsearchable_dataset": (["ticks=5", "dataset=\"it's\""], {}, []),
    "too_many_runs": (["ticks=5", f"runs={2**40}"], {}, []),
    "nan_knob": (["ticks=5", "engine.venues.gamma=[0.1,0.1,nan,0.1,0.1]"], {}, []),
    "removed_group": (["ticks=5", "~market", NO_TRACKING], {}, []),
    "multirun_with_cfg": (["-m", "--cfg", "job", "ticks=5,6", NO_TRACKING], {}, []),
}

BAD_INPUT = ["unknown_profile", "ticks_zero", "ticks_negative", "runs_zero", "typo_key", "bad_band", "bad_band_env",
             "bad_profile_env", "bad_mode_env", "negative_loss_env", "unwritable_telemetry", "sweep_without_m",
             "bad_interpolation", "bad_parse", "negative_loss_limit", "unknown_placeholder", "unsearchable_dataset",
             "too_many_runs", "nan_knob", "removed_group", "multirun_with_cfg"]


def run_in_process(args: list[str], cwd: Path, extra_env: dict[str, str]) -> Done:
    """`python -m paraphina.run ARGS` in this process: exit code, stdout and stderr (a traceback if it raised)."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        patch.chdir(cwd)
        for key in [k for k in os.environ if k.startswith("PARAPHINA_") or k == "MLFLOW_TRACKING_URI"]:
            patch.delenv(key)
        for key, value in extra_env.items():
            patch.setenv(key, value)
        try:
            run_main(args)
        except SystemExit as stop:
            code = 0 if stop.code is None else stop.code
        except Exception:  # a bug: the test shows it
            traceback.print_exc(file=err)
            code = 1
    return Done(args, cwd, code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> dict[str, Done]:
    """Every command, one after another."""
    results = {}
    for name, (args, extra_env, files) in COMMANDS.items():
        cwd = tmp_path_factory.mktemp(f"cli_{name}")
        for f in files:
            (cwd / f).write_text("a file, not a folder\n")
        results[name] = run_in_process(args, cwd, extra_env)
    return results


@pytest.mark.parametrize("refusal, line", [
    (MemoryError("Unable to allocate 9.00 TiB"), "error: out of memory: Unable to allocate 9.00 TiB; run fewer runs"),
    (OSError(28, "No space left on device", "sweeps/t.jsonl"), "error: sweeps/t.jsonl: No space left on device; free"),
])
def test_what_the_machine_refuses_a_job_is_its_one_line(tmp_path, monkeypatch, refusal, line):
    """Inside Hydra's job runner too, which would otherwise log the job's overrides as an error first."""
    def refused(*_: object, **__: object) -> None:
        raise refusal

    monkeypatch.setattr(run_module, "execute", refused)
    d = run_in_process(["ticks=5", NO_TRACKING], tmp_path, {})
    assert d.returncode == 2 and d.stderr.count("\n") == 1 and d.stderr.startswith(line), d.stderr


def test_the_module_runs_as_a_program(tmp_path):
    # a cold kernel compile (a fresh clone, another worker compiling too) can outlast progress_after_s: no bar here
    done = subprocess.run([sys.executable, "-m", "paraphina.run", "ticks=10", NO_TRACKING, "execution.progress_after_s=600"],
                          capture_output=True, text=True, cwd=tmp_path, env=_env({}), timeout=TIMEOUT_S)
    assert done.returncode == 0 and "final PnL" in done.stdout and not done.stderr


def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path):
    """`python -m paraphina.run ... | head -1`: the header is read, the pipe closed while the engine runs; the
    summary's write then fails, which is no error of the command's."""
    command = [sys.executable, "-m", "paraphina.run", "ticks=200000", NO_TRACKING, "execution.progress_after_s=600"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, env=_env({})) as run:
        assert run.stdout.readline().startswith(b"paraphina  profile=")
        run.stdout.close()
        assert (run.wait(timeout=TIMEOUT_S), run.stderr.read()) == (0, b"")


def _ok(d: Done) -> None:
    assert d.returncode == 0, f"{d.args}: rc {d.returncode}\n{d.stdout}\n{d.stderr}"
    assert "Traceback" not in d.stderr


def test_single_run_summary(done):
    d = done["aggressive"]
    _ok(d)
    header = d.stdout.splitlines()[0]
    assert "profile=aggressive" in header and "ticks=200" in header and "seed=7" in header and "runs=1" in header
    for label in ("final PnL", "max drawdown", "regimes", "max |delta|", "kill switch"):
        assert label in d.stdout, label
    assert re.search(r"kill switch\s+(not fired|FIRED at tick \d+)", d.stdout)
    assert re.search(r"\(\d+ ticks run\)", d.stdout)


def test_plain_run_leaves_no_hydra_folders(done):
    d = done["aggressive"]
    _ok(d)
    for folder in ("outputs", "multirun", ".hydra"):
        assert not (d.cwd / folder).exists(), folder
    assert not list(d.cwd.rglob(".hydra"))
    assert not list(d.cwd.rglob("*.log"))


def test_hydra_settings_go_through_hydra(done):
    """A plain run is composed without Hydra's app runner, unless hydra.* settings or values need it."""
    d = done["hydra_folders_asked"]
    _ok(d)
    assert (d.cwd / "out" / ".hydra" / "config.yaml").is_file()
    assert "ticks=5" in d.stdout.splitlines()[0]
    _ok(done["hydra_resolver"])
    assert "ticks=5" in done["hydra_resolver"].stdout.splitlines()[0]


def test_batch_distribution_lines(done):
    d = done["batch"]
    _ok(d)
    assert "runs=8" in d.stdout.splitlines()[0]
    assert re.search(r"final PnL\s+mean -?[\d,]+\.\d\d\s+std [\d,]+\.\d\d", d.stdout)
    for q in ("p5", "p25", "p50", "p75", "p95"):
        assert re.search(rf"\b{q} -?[\d,]+\.\d\d", d.stdout), q
    assert re.search(r"kill prob\s+\d\.\d{3}\s+\(\d+ of 8; 95% interval \d\.\d{3}-\d\.\d{3}\)", d.stdout)
    assert "max drawdown" in d.stdout and "mean" in d.stdout


@pytest.mark.parametrize("name", BAD_INPUT)
def test_bad_input_is_one_line_error(done, name):
    d = done[name]
    assert d.returncode == 2, f"{d.args}: rc {d.returncode}\n{d.stdout}\n{d.stderr}"
    lines = d.stderr.strip().splitlines()
    assert len(lines) == 1, d.stderr
    assert lines[0].startswith("error:"), d.stderr
    assert "Traceback" not in d.stderr and "Traceback" not in d.stdout


@pytest.mark.parametrize("name,fragments", [
    ("unknown_profile", ["reckless", "aggressive", "balanced", "conservative"]),
    ("bad_profile_env", ["reckless", "aggressive", "balanced", "conservative", "(set by PARAPHINA_RISK_PROFILE)"]),
    ("bad_mode_env", ["error: telemetry.mode='xml' is not one of off, jsonl (set by PARAPHINA_TELEMETRY_MODE)"]),
    ("negative_loss_env", ["engine.risk.daily_loss_limit=-5.0 must be positive",
                           "(set by PARAPHINA_DAILY_LOSS_LIMIT)"]),
    ("ticks_zero", ["ticks"]),
    ("ticks_negative", ["ticks"]),
    ("runs_zero", ["runs"]),
    ("typo_key", ["tiks"]),
    ("bad_band", ["engine.hedge.band_base", "wide"]),
    ("bad_band_env", ["PARAPHINA_HEDGE_BAND_BASE", "wide"]),
    ("unwritable_telemetry", ["blocker/run.jsonl"]),
    ("sweep_without_m", ["seed=1,2", "--multirun"]),
    ("bad_interpolation", ["label", "nope"]),
    ("bad_parse", ["cannot parse", "telemetry.path=t_{seed}.jsonl"]),
    ("negative_loss_limit", ["engine.risk.daily_loss_limit=-100.0 must be positive"]),
    ("unknown_placeholder", ["error: telemetry.path 'tel/{sed}.jsonl' has the unknown placeholder {sed}; a path may "
                             "hold {seed}, {profile}, {job}"]),
    ("unsearchable_dataset", ["error: dataset name \"it's\" cannot be searched for in MLflow; use only letters, "
                              "digits, '_', '-' and '.'"]),
    ("too_many_runs", ["error: 1,099,511,627,776 runs of 5 ticks keep about", "GiB of results, more than the",
                       "runs per command"]),
    ("nan_knob", ["error: engine.venues.gamma[2]=nan must be a finite number"]),
    ("removed_group", ["error: market.", "has no value (a ~ override removed its group"]),
    ("multirun_with_cfg", ["error: Only one of --run, --multirun, --cfg", "see --help"]),
])
def test_error_messages_name_the_problem(done, name, fragments):
    message = done[name].stderr
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize("name", ["negative_loss_limit", "unknown_placeholder", "unsearchable_dataset",
                                  "too_many_runs", "nan_knob"])
def test_bad_knobs_and_names_stop_before_anything_is_written(done, name):
    d = done[name]
    assert d.stdout == "" and list(d.cwd.iterdir()) == []  # no engine run, no store, no telemetry


def test_unwritable_telemetry_reported_before_the_engine_runs(done):
    d = done["unwritable_telemetry"]
    assert d.stdout == ""   # not even the header: the error is the command's one line
    assert (d.cwd / "blocker").is_file()
    assert not list(d.cwd.rglob("*.part"))


def test_env_profile_used_without_profile_override(done):
    d = done["env_profile"]
    _ok(d)
    assert "profile=conservative" in d.stdout.splitlines()[0]


def test_profile_override_wins_over_env(done):
    d = done["env_profile_overridden"]
    _ok(d)
    assert "profile=aggressive" in d.stdout.splitlines()[0]


def test_env_telemetry_switch_writes_jsonl(done):
    d = done["env_telemetry"]
    _ok(d)
    path = d.cwd / "tel" / "run.jsonl"
    assert path.is_file()
    lines = path.read_text().splitlines()
    assert len(lines) == 30
    assert lines[0].startswith('{"t": 0,')


def test_help(done):
    d = done["help"]
    _ok(d)
    assert "paraphina.run" in d.stdout
    groups = d.stdout.split("== Configuration groups", 1)[1].split("== Config ==", 1)[0]
    scenarios = sorted(p.stem for p in (loading.CONF_DIR / "market").glob("*.yaml"))
    assert f"market: {', '.join(scenarios)}" in groups and "profile: aggressive, balanced, conservative" in groups
    # the groups a command composes itself are not offered: run refuses experiment=, schema= and decisive=
    assert not any(f"\n{group}:" in groups for group in ("experiment", "schema", "decisive", "paths", "engine"))


def test_cfg_job_prints_the_config(done):
    d = done["cfg_job"]
    _ok(d)
    centre = compose_config([], environ={}).engine
    for fragment in ("ticks: 2000", "seed: 0", "engine:", f"band_base: {centre.hedge.band_base}",
                     f"daily_loss_limit: {centre.risk.daily_loss_limit}", "market:"):
        assert fragment in d.stdout, fragment
    assert "final PnL" not in d.stdout  # printing the config does not run the engine


def test_cfg_job_shows_what_the_environment_sets(done):
    d = done["cfg_job_env"]
    _ok(d)
    assert "band_base: 7.0" in d.stdout and "profile_name: aggressive" in d.stdout


def test_multirun_runs_four_jobs(done):
    d = done["multirun"]
    _ok(d)
    headers = [line for line in d.stdout.splitlines() if line.startswith("paraphina  profile=")]
    jobs = sorted(re.search(r"profile=(\w+) .* seed=(\d+)", h).groups() for h in headers)
    assert jobs == [("aggressive", "1"), ("aggressive", "2"), ("conservative", "1"), ("conservative", "2")]
    assert d.stdout.count("final PnL") == 4
    assert all("ticks=50" in h for h in headers)


# In process (no subprocess needed): each original environment variable is used, and Hydra overrides win.

@pytest.mark.parametrize("var,key,value", [
    ("PARAPHINA_INIT_Q_TAO", "engine.initial_q_tao", 12.5),
    ("PARAPHINA_HEDGE_BAND_BASE", "engine.hedge.band_base", 3.25),
    ("PARAPHINA_HEDGE_MAX_STEP", "engine.hedge.hedge_max_step", 7.0),
    ("PARAPHINA_MM_SIZE_ETA", "engine.mm.size_eta", 0.25),
    ("PARAPHINA_VOL_REF", "engine.volatility.vol_ref", 0.03),
    ("PARAPHINA_DAILY_LOSS_LIMIT", "engine.risk.daily_loss_limit", 1234.0),
])
def test_env_overrides_and_hydra_wins(var, key, value):
    cfg = compose_config(["ticks=5"], environ={var: str(value)})
    assert OmegaConf.select(cfg, key) == value
    cfg = compose_config(["ticks=5", f"{key}=99.0"], environ={var: str(value)})
    assert OmegaConf.select(cfg, key) == 99.0
    # and the env value is applied on top of a profile
    cfg = compose_config(["ticks=5", "+profile=aggressive"], environ={var: str(value)})
    assert OmegaConf.select(cfg, key) == value


@pytest.mark.parametrize("module, settings", [
    ("paraphina.experiments.exp04", "conf/experiment/exp04.yaml"),
    ("paraphina.experiments.exp13", "conf/experiment/exp13.yaml"),
    ("paraphina.calibrate", "conf/calibrate.yaml"), ("paraphina.bench", "conf/bench.yaml"),
    ("paraphina.tracking.bench", "conf/tracking_bench.yaml"), ("paraphina.tracking.screenshots", "conf/screenshots.yaml")])
def test_commands_are_hydra_apps(module, settings, capsys):
    """--help, --cfg job and -m as for paraphina.run; an unknown flag is Hydra's usage error (exit 2). In this
    process, through the same `main` (test_bench_refuses_an_empty_batch_in_one_line runs python -m itself)."""
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0 and settings in capsys.readouterr().out
    main(["--cfg", "job", "ticks=7"])
    assert "ticks: 7" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        main(["--bogus"])
    assert stop.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err


@pytest.mark.parametrize("override, message", [
    ("experiment.scenarios=[default,nope]", "error: unknown market 'nope'"),
    ("experiment.profiles=[balanced,nope]", "error: unknown profile 'nope'"),
    ("experiment.scenarios=[]", "error: experiment.profiles and experiment.scenarios must each name at least one"),
    ("experiment.targets.fill_rate=[0.5,0.1]", "error: experiment.targets.fill_rate=[0.5, 0.1] must be [low, high]"),
    ("experiment.targets.fill_rate=[a,b]", "error: experiment.targets.fill_rate=['a', 'b'] must be [low, high]"),
    ("experiment.probe_every=0", "error: experiment.probe_every=0 must be at least 1"),
])
def test_calibrate_checks_every_profile_and_scenario_before_it_measures(override, message, capsys):
    """A bad name last in the list used to stop only after every profile and scenario before it had run."""
    with pytest.raises(SystemExit) as stop:
        calibrate.main([override, "ticks=10", "experiment.seeds=2", "experiment.scenario_seeds=2"])
    captured = capsys.readouterr()
    assert stop.value.code == 2 and captured.out == "" and captured.err.startswith(message), captured


def test_a_long_batch_shows_progress(tmp_path):
    quiet = run_in_process(["runs=4", "ticks=20", NO_TRACKING], tmp_path, {})
    shown = run_in_process(["runs=4", "ticks=20", NO_TRACKING, "execution.chunk_runs=1",
                            "execution.progress_after_s=0"], tmp_path, {})
    assert quiet.stderr == "" and quiet.stdout.count("final PnL") == shown.stdout.count("final PnL") == 1
    assert shown.stderr.startswith("\rengine 4 runs:") and "/80.0 [" in shown.stderr  # run-ticks to do


def test_bench_refuses_an_empty_batch_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "paraphina.bench", "experiment.batch_sizes=[64,0]"],
                          capture_output=True, text=True, cwd=tmp_path, env=_env({}), timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", "error: experiment.batch_sizes=[64, 0] must be "
                                                                  "at least 1\n")


def test_bench_reports_an_error_in_its_measuring_process():
    with pytest.raises(ParaphinaError, match="^ticks=0 must be a positive number of ticks"):
        bench.measure(["ticks=0"], 1)


@pytest.mark.parametrize("override, fragment", [
    ("seed=-1", "seed=-1 must be at least 0"),
    ("seeds=0", "seeds=0 must be at least 1"),
    ("engine.tick_ms=0", "engine.tick_ms=0.0 must be positive"),
    ("market.outage.mean_ticks=0", "market.outage.mean_ticks=0.0 must be positive"),
    ("tracking.series_points=0", "tracking.series_points=0 must be at least 1"),
    ("tracking.child_config=some", "tracking.child_config='some' is not one of parent, full"),
    ("tracking.child_params=[engine.hedge.band_bse]", "tracking.child_params names unknown config keys: "
                                                      "engine.hedge.band_bse"),
    ("execution.threads=-1", "execution.threads=-1 must be at least 0"),
    ("telemetry.every=0", "telemetry.every=0 must be at least 1"),
    ("engine.venues.tick_size=[0,0.01,0.01,0.01,0.01]", "tick_size"),
    ("world_model.confidence=2", "world_model.confidence=2.0 must be between 0 and 1"),
    ("world_model.power=1", "world_model.power=1.0 must lie strictly between 0 and 1"),
    ("world_model.planned_fraction=0.99", "world_model.planned_fraction=0.99 must lie in (0, 0.9]"),
    ("world_model.regime_envelope.frac_hard=[0.5,0.1]", "world_model.regime_envelope.frac_hard=[0.5, 0.1] must be "
                                                        "[low, high] with 0 <= low <= high <= 1"),
    ("engine.risk.daily_loss_limit=-500", "engine.risk.daily_loss_limit=-500.0 must be positive (it is the session "
                                          "loss in USD that fires the kill switch)"),
    ("engine.risk.daily_loss_limit=0", "engine.risk.daily_loss_limit=0.0 must be positive"),
    ("market.vol_scale=-1", "market.vol_scale=-1.0 must not be negative (it is the factor on both regimes' "
                            "volatility; 0 gives a still market)"),
    # each of these divides in the engine: 0 crashed the run, a negative value ran on nonsense
    ("engine.volatility.vol_ref=0", "engine.volatility.vol_ref=0.0 must be positive"),
    ("engine.risk.delta_hard_limit_usd_base=0", "engine.risk.delta_hard_limit_usd_base=0.0 must be positive"),
    ("engine.toxicity.vol_tox_scale=0", "engine.toxicity.vol_tox_scale=0.0 must be positive"),
    ("engine.toxicity.markout_tox_scale_bps=-8", "engine.toxicity.markout_tox_scale_bps=-8.0 must be positive"),
    ("engine.mm.size_eta=-1", "engine.mm.size_eta=-1.0 must not be negative"),
    ("engine.hedge.band_base=-5", "engine.hedge.band_base=-5.0 must not be negative"),
    ("engine.hedge.hedge_max_step=-1", "engine.hedge.hedge_max_step=-1.0 must not be negative"),
    # past int64 the engine's arrays overflowed in a traceback
    ("ticks=99999999999999999999", "ticks=99999999999999999999 must be at most 2**53"),
    ("seed=99999999999999999999", "seed=99999999999999999999 must be at most 2**53"),
])
def test_out_of_range_numbers_stop_before_the_run(override, fragment):
    with pytest.raises(ParaphinaError) as error:
        compose_config([override], environ={})
    assert fragment in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("config, override, message", [
    ("bench", "experiment.batch_sizes=[a]", "experiment.batch_sizes=['a'] must be a non-empty list of whole numbers"),
    ("bench", "experiment.thread_counts=[]", "experiment.thread_counts=[] must be a non-empty list of whole numbers"),
    ("bench", "experiment.repeats=0", "experiment.repeats=0 must be at least 1"),
    # these named runs=0, the key each is turned into
    ("calibrate", "experiment.seeds=0", "experiment.seeds=0 must be at least 1"),
    ("tracking_bench", "experiment.batch_runs=0", "experiment.batch_runs=0 must be at least 1"),
    ("exp08", "experiment.seed_offset=-5", "experiment.seed_offset=-5 must be at least 0"),
    ("tracking_bench", "experiment.single_repeats=0", "experiment.single_repeats=0 must be at least 1"),
    ("screenshots", "experiment.port=99999", "experiment.port=99999 must be a port number, at most 65535"),
    ("screenshots", "experiment.port=abc", "experiment.port=abc must be a whole number"),
    ("config", "tracking.reachability_timeout_s=-1", "tracking.reachability_timeout_s=-1.0 must be a positive number "
                                                     "of seconds"),
    ("config", "tracking.end_attempts=0", "tracking.end_attempts=0 must be at least 1"),
    ("config", "tracking.end_wait_s=-1", "tracking.end_wait_s=-1.0 must not be negative (seconds between tries to end "
                                         "a run)"),
    ("config", "tracking.seed_children_below=-1", "tracking.seed_children_below=-1 must be at least 0"),
])
def test_bad_tool_settings_stop_before_it_runs_naming_the_setting(config, override, message):
    with pytest.raises(ParaphinaError) as error:
        compose_config([override], config, environ={})
    assert str(error.value) == message


def test_a_still_market_and_no_hedge_band_are_allowed():
    cfg = compose_config(["market.vol_scale=0", "engine.hedge.band_base=0", "engine.mm.size_eta=0"], environ={})
    assert (cfg.market.vol_scale, cfg.engine.hedge.band_base, cfg.engine.mm.size_eta) == (0.0, 0.0, 0.0)


def test_a_composition_again_is_an_equal_independent_copy():
    first = compose_config(["+profile=aggressive", "ticks=9"], environ={})
    expected = OmegaConf.to_container(first)
    first.ticks, first.engine.hedge.band_base = 1, -1.0   # a caller changing its copy changes no later one
    again = compose_config(["+profile=aggressive", "ticks=9"], environ={})
    assert again is not first and OmegaConf.to_container(again) == expected
    env_set = compose_config(["+profile=aggressive", "ticks=9"], environ={"PARAPHINA_HEDGE_BAND_BASE": "7"})
    assert env_set.engine.hedge.band_base == 7.0   # the environment's overrides are part of what is reused


@pytest.mark.parametrize("config_name, overrides, expected", [
    ("config", ["profile_name=aggressive"], {"risk_tier": "aggressive"}),   # interpolates it: set before resolving
    ("config", ["+profile=conservative", "engine.mm.size_eta=0.3", "seed=4", "market=volatile"],
     {"engine.mm.size_eta": 0.3, "market.scenario": "volatile", "profile_name": "conservative"}),
    ("config", ["execution.threads=1", "world_model.tiers.aggressive.max_kill_prob=0.2",
                "tracking.uri=sqlite:///x.db"], {"world_model.tiers.aggressive.max_kill_prob": 0.2}),
    ("exp11", ["profile=aggressive", "label_contains=w1"],   # filter.profile reads Hydra's choice of the group
     {"filter.profile": "aggressive", "filter.label_contains": "w1"}),
    ("exp03", ["experiment.space.eta={low: 0.01}", "experiment.n_trials=3"],   # a dict merges into the space
     {"experiment.space.eta.low": 0.01, "experiment.n_trials": 3}),
])
def test_values_set_on_a_kept_composition_equal_hydra_composing_the_whole_list(config_name, overrides, expected):
    compose_config([], config_name, environ={})   # the groups' composition kept before the values come
    fast = compose_config(overrides, config_name, environ={})
    whole = loading._finished(*loading._compose(overrides, config_name))
    assert OmegaConf.to_container(fast) == OmegaConf.to_container(whole)
    assert {key: OmegaConf.select(fast, key) for key in expected} == expected


def test_an_interpolating_override_is_composed_afresh():
    """`${now:...}` reads the clock: the same command line composed twice gives two times."""
    stamp = ["label=${now:%H%M%S%f}"]
    first = compose_config(stamp, environ={}).label
    time.sleep(0.002)
    assert compose_config(stamp, environ={}).label != first


def test_the_state_of_a_config_folder_follows_every_change_of_its_yaml_files(tmp_path):
    (tmp_path / "group").mkdir()
    preset = tmp_path / "group" / "preset.yaml"
    preset.write_text("band: 150\n")
    states = [files_state(tmp_path)]
    (tmp_path / "notes.txt").write_text("not a config")     # not YAML: no change
    assert files_state(tmp_path) == states[0]
    preset.write_text("band: 1500\n")                      # edited in place
    states.append(files_state(tmp_path))
    staged = tmp_path / "group" / "preset.yaml.new"
    staged.write_text("band: 1501\n")                      # the same size, moved into place (as an install does)
    os.utime(staged, ns=(preset.stat().st_atime_ns, preset.stat().st_mtime_ns))
    staged.replace(preset)
    states.append(files_state(tmp_path))
    (tmp_path / "group" / "other.yaml").write_text("band: 1\n")   # a new option
    states.append(files_state(tmp_path))
    assert len(set(states)) == len(states)


def test_telemetry_folder_path_is_refused_and_leaves_nothing(tmp_path):
    folder = tmp_path / "teldir"
    folder.mkdir()
    done = run_in_process(["ticks=10", NO_TRACKING, "telemetry.mode=jsonl", f"telemetry.path={folder}"], tmp_path, {})
    assert done.returncode == 2 and "is a folder" in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["teldir"] and not list(folder.iterdir())


def test_multirun_jobs_write_separate_telemetry(tmp_path):
    done = run_in_process(["-m", "+profile=conservative,aggressive", "seed=3", "ticks=10", NO_TRACKING,
                           "telemetry.mode=jsonl", f"telemetry.path={tmp_path / 'tel' / 'run.jsonl'}"], tmp_path, {})
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "tel").iterdir()) == ["run-j0.jsonl", "run-j1.jsonl"]


@pytest.mark.parametrize("text", ["0", "65536", "99999", "-1", "5000.5", "http"])
def test_a_port_outside_1_to_65535_is_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match=f"'{re.escape(text)}' is not a"):
        port_number(text)
    assert port_number("65535") == 65535 and port_number("1") == 1
