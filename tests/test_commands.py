"""One front door: `scenimefy <workload>` and `python jobs/<workload>.py` are the same parser and code;
--help imports nothing heavy; every option documents itself; one --config default."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from scenimefy.commands import cli, jobs_runner
from scenimefy.commands.options import DEFAULT_CONFIG

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "ray", "mlflow", "transformers", "open_clip", "numpy")


@pytest.fixture
def inputs(tmp_path):
    """Folders every workload's dry run accepts: photos, anime, a pairs folder, a (fake) source checkpoint."""
    for folder in ("photos", "anime", "pairs/trainA", "pairs/trainB"):
        (tmp_path / folder).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (40, 40), (i * 60, 0, 0)).save(tmp_path / folder / f"{i}.png")
    (tmp_path / "source.pt").write_bytes(b"")  # stage 1's dry run checks that the file exists
    return tmp_path


def _dry_run_args(name: str, d: Path) -> list[str]:
    data = [f"data.photos={d / 'photos'}", f"data.anime={d / 'anime'}", f"run.output_dir={d / 'runs'}"]
    extra = {
        "finetune": [f"finetune.source_checkpoint={d / 'source.pt'}"],
        "pairs": ["--target-kept", "7"],
        "tune": [
            "--space",
            str(REPO / "tuning" / "loss_weights.yaml"),
            f"data.pairs={d / 'pairs'}",
            f"evaluate.photos={d / 'photos'}",
        ],
        "evaluate": ["--translations", str(d / "photos"), "--out", str(d / "eval"), f"evaluate.photos={d / 'photos'}"],
        "pipeline": ["--stages", "pretrain,finetune"],
        "demo": ["--out", str(d / "demo"), "--workers", "1"],
    }.get(name, [])
    config = [] if name == "demo" else ["--config", "tiny", *data]
    return [*config, *extra, "--dry-run"]


@pytest.mark.parametrize("name", list(jobs_runner.WORKLOADS))
def test_dry_run_is_the_same_from_the_cli_and_the_job_entry(name, inputs, capsys):
    argv = _dry_run_args(name, inputs)
    assert cli.main([name, *argv]) == 0
    from_cli = capsys.readouterr()
    assert jobs_runner.main(name, argv) == 0
    from_job = capsys.readouterr()
    assert from_cli.out == from_job.out and from_cli.err == from_job.err == ""
    assert f"# workload: {name}\n" in from_cli.out
    assert not (inputs / "runs").exists()  # a dry run writes nothing


def test_dry_run_of_the_job_script_matches_the_cli(inputs, capsys):
    argv = _dry_run_args("train", inputs)
    assert cli.main(["train", *argv]) == 0
    script = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "train.py"), *argv], capture_output=True, text=True, timeout=120
    )
    assert script.returncode == 0, script.stderr
    assert script.stdout == capsys.readouterr().out


def test_errors_name_the_command_they_came_from(capsys):
    assert cli.main(["train", "--config", "tiny", "--bogus"]) == 2
    err = capsys.readouterr().err
    assert err == "scenimefy train: error: unrecognized arguments: --bogus (see scenimefy train --help)\n"
    assert jobs_runner.main("train", ["--config", "tiny", "--bogus"]) == 2
    assert capsys.readouterr().err.startswith("jobs/train.py: error: unrecognized arguments: --bogus")
    assert cli.main(["trian"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "invalid choice: 'trian'" in err
    assert cli.main([]) == 2
    assert "commands:" in capsys.readouterr().err  # the overview


def test_options_that_stand_for_config_keys_win_over_positional_overrides():
    args = jobs_runner.parse_job_args("pipeline", ["pipeline.stages=train", "--stages", "pairs,train"])
    assert jobs_runner.resolve_config("pipeline", args).pipeline.stages == ("pairs", "train")
    args = jobs_runner.parse_job_args("pairs", ["--target-kept", "12", "pairs.target_kept=3", "--config", "tiny"])
    cfg = jobs_runner.resolve_config("pairs", args)
    assert cfg.pairs.target_kept == 12 and cfg.pairs.num_candidates == 0
    args = jobs_runner.parse_job_args("pairs", ["--config", "tiny", "pairs.num_candidates=5"])
    assert jobs_runner.resolve_config("pairs", args).pairs.num_candidates == 5  # not given: no override


def test_options_and_overrides_mix_in_any_order(capsys):
    argv = ["--config", "tiny", "translator.lambda_src=0.2", "--dry-run", "run.num_workers=3"]
    assert cli.main(["train", *argv]) == 0
    out = capsys.readouterr().out
    assert "lambda_src: 0.2" in out and "# world size: 3" in out


def _parsers() -> list[argparse.ArgumentParser]:
    """Every command's parser, subcommands included."""
    todo = [cli.build_parser(name) for name in cli.COMMANDS]
    found = []
    while todo:
        p = todo.pop()
        found.append(p)
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.values())
    return found


def _in_required_group(p: argparse.ArgumentParser, action: argparse.Action) -> bool:
    return any(g.required and action in g._group_actions for g in p._mutually_exclusive_groups)


def test_every_option_has_a_help_line_with_its_default():
    for p in _parsers():
        for action in p._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            what = f"{p.prog} {'/'.join(action.option_strings) or action.dest}"
            assert action.help, f"{what} has no help"
            flag = action.nargs == 0  # store_true: off unless given
            if action.option_strings and not flag and not action.required and not _in_required_group(p, action):
                assert "default" in action.help, f"{what}: the help does not give the default {action.default!r}"


def test_translate_options_name_their_default_value_and_unit():
    text = " ".join(cli.build_parser("translate").format_help().split())
    for expected in (
        "(default: translate.batch_size of --config; 4 images",
        "(default: translate.max_side of --config; 0 px",
        "(default: translate.tile of --config; 0 px",
        "(default: translate.memory_budget_gib of --config; 0 GiB",
        "(default: translate.device of --config; auto",
        "(in px) (default: none)",
    ):
        assert expected in text, expected


# the training stages' own sections, and which of them each command's examples may use
STAGE_SECTIONS = {"pretrain", "finetune", "pairs", "translator", "tune"}
EXAMPLE_SECTIONS = {"pretrain": {"pretrain"}, "finetune": {"finetune"}, "pairs": {"pairs"}, "train": {"translator"}}
EXAMPLE_SECTIONS |= {"tune": {"tune", "translator", "pairs"}, "pipeline": STAGE_SECTIONS, "demo": STAGE_SECTIONS}


def test_examples_fit_their_command():
    """Every `section.key=value` in a command's description and override examples is a real key, and a
    stage's examples use no other stage's section (pretrain showing a translator key, say)."""
    import re

    from scenimefy.config import load_config

    for p in _parsers():
        name = p.prog.split()[1]
        texts = [p.description or ""] + [a.help or "" for a in p._actions if a.dest == "overrides"]
        examples = re.findall(r"(?<![\w./$-])([a-z]+)\.([a-z_]+)=([^\s;]+)", " ".join(texts))
        examples = [(section, key, value) for section, key, value in examples if key != "key"]  # metavars
        for section, key, value in examples:
            load_config("paper", [f"{section}.{key}={value}"])  # a ConfigError names a wrong key
            foreign = STAGE_SECTIONS - EXAMPLE_SECTIONS.get(name, set())
            assert section not in foreign, f"{p.prog}: the example {section}.{key} belongs to another stage"


def test_one_config_default():
    for p in _parsers():
        config = [a for a in p._actions if "--config" in a.option_strings]
        if p.prog in ("scenimefy demo", "scenimefy weights", "scenimefy submit", "scenimefy select"):
            assert not config, p.prog
        elif config:
            assert config[0].default == DEFAULT_CONFIG, p.prog
    for name, w in jobs_runner.WORKLOADS.items():
        has_config = any("--config" in a.option_strings for a in jobs_runner.build_parser(name)._actions)
        assert has_config == w.uses_config, name


HELP_COMMANDS = [[], *([name] for name in cli.COMMANDS), ["weights", "download"], ["jobs", "list"], ["jobs", "logs"]]


@pytest.mark.parametrize(
    "code",
    [f"from scenimefy.commands.cli import main; main({[*argv, '--help']!r})" for argv in HELP_COMMANDS]
    + ["from scenimefy.commands.jobs_runner import main; main('evaluate', ['--help'])"],
)
def test_help_imports_nothing_heavy(code):
    check = f"import sys\ntry:\n    {code}\nexcept SystemExit as e:\n    assert e.code == 0, e\n"
    check += f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout
    assert json.loads(out.stdout.strip().splitlines()[-1].replace("'", '"')) == []


def test_every_workload_is_a_cli_command_and_a_job_script():
    for name in jobs_runner.WORKLOADS:
        assert name in cli.COMMANDS
        text = (REPO / "jobs" / f"{name}.py").read_text()
        assert f'main("{name}")' in text and len(text.splitlines()) <= 12


def _fake_checkpoint(storage: Path, stamp: str, step: int, sealed: bool = True) -> Path:
    import torch

    from scenimefy.stages.checkpoint import seal

    folder = storage / f"checkpoint_{stamp}"
    folder.mkdir(parents=True)
    torch.save({"format": "scenimefy.training_state", "progress": {"step": step}}, folder / "state.pt")
    if sealed:
        seal(folder)
    return folder


def test_the_checkpoint_named_on_interrupt_is_the_newest_complete_one(tmp_path):
    storage = tmp_path / "ray" / "r"
    complete = _fake_checkpoint(storage, "2026-12-02_10-00-00.000001", 25)
    _fake_checkpoint(storage, "2026-12-02_10-05-00.000001", 75, sealed=False)  # killed during the write
    assert jobs_runner.latest_checkpoint(storage) == (complete, 25)
    (complete / "state.pt").write_bytes(b"truncated")
    assert jobs_runner.latest_checkpoint(storage) is None


def test_ctrl_c_ends_with_what_was_saved_and_the_command_that_resumes(tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    _fake_checkpoint(runs / "ray" / "r", "2026-12-02_10-00-00.000001", 25)
    latest = _fake_checkpoint(runs / "ray" / "r", "2026-12-02_10-05-00.000001", 75)
    (runs / "ray" / "r" / "checkpoint_2026-12-02_10-09-00.000001").mkdir()  # being written: no state yet

    def interrupted(cfg, args):
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs_runner.WORKLOADS["train"].command, "run", interrupted)
    argv = ["--config", "tiny", f"run.output_dir={runs}", "run.name=r"]
    assert cli.main(["train", *argv]) == 130
    err = capsys.readouterr().err
    assert err == (
        f"scenimefy train: interrupted; saved: the checkpoint at step 75 ({latest}); "
        f"resume with: scenimefy train --config tiny run.output_dir={runs} run.name=r\n"
    )
    assert jobs_runner.main("train", argv) == 130  # the job script names itself
    assert capsys.readouterr().err.endswith(f"resume with: python jobs/train.py {' '.join(argv)}\n")


def test_what_an_interrupted_workload_saved(tmp_path):
    runs = tmp_path / "runs"
    argv = ["--config", "tiny", f"run.output_dir={runs}", "run.name=r"]

    def saved(name, *extra):
        args = jobs_runner.parse_job_args(name, [*argv, *extra])
        return jobs_runner.saved_summary(name, jobs_runner.resolve_config(name, args), args)

    assert saved("train") == "no checkpoint yet (a rerun starts from the beginning)"
    pre = _fake_checkpoint(runs / "ray" / "r-pretrain", "2026-12-02_10-00-00.000001", 100)
    (runs / "r" / "pipeline").mkdir(parents=True)
    assert saved("pipeline") == (
        f"the finished stages' records in {runs / 'r' / 'pipeline'}, the pretrain checkpoint at step 100 ({pre})"
    )
    assert saved("finetune") == "no checkpoint yet (a rerun starts from the beginning)"
    assert saved("evaluate", "--translations", "x", "--out", "y") == "nothing (an evaluation starts over)"
    args = jobs_runner.parse_job_args("demo", ["--out", str(tmp_path / "demo")])
    assert jobs_runner.saved_summary("demo", None, args) == f"the finished stages in {tmp_path / 'demo'}"


def test_a_resumed_run_says_from_which_step(tmp_path, capsys, monkeypatch):
    from scenimefy.distributed import translator

    def resumed(cfg):
        return translator.TrainOutcome("d", "d/generator.pt", "ckpt", 150, "id", "sqlite:///x", resumed_from_step=75)

    monkeypatch.setattr(translator, "train_translator_on_ray", resumed)
    assert cli.main(["train", "--config", "tiny", f"run.output_dir={tmp_path}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "resumed from step 75" and lines[1] == "generator: d/generator.pt"
