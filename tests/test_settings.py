"""Every setting is checked before anything is read: one line, exit status 2, no run folder."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.settings import SettingsError, default_config, describe_config, load_config

ROOT = Path(__file__).resolve().parents[1]


def refused(argv: list[str]) -> str:
    with pytest.raises(SettingsError) as error:
        load_config(argv)
    message = str(error.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--batch_size", "-5"], "'batch_size' = -5 should be >= 1; e.g. --batch_size 512"),
        (["--batch_size", "0"], "should be >= 1"),
        (["--epochs", "2.5"], "'epochs' = 2.5 should be of type int"),
        (["--epochs", "0"], "'epochs' = 0 should be >= 1"),
        (["--epochs", "True"], "should be of type int"),
        (["--max_workers", "0"], "'max_workers' = 0 should be >= 1"),
        (["--learning_rate", "-1e-3"], "should be > 0"),
        (["--learning_rate", "inf"], "'learning_rate' = 'inf'"),
        (["--dropout", "1.0"], "'dropout' = 1.0 should be < 1"),
        (["--hidden_layers", "[64, 0]"], "should be >= 1 (at [1])"),
        (["--hidden_layers", "[]"], "should not be empty"),
        (["--activation", "rellu"], "should be one of"),
        (["--lr_schedule", "cosin"], "e.g. --lr_schedule cosine"),
        (["--split_fractions", "[0.8, 0.1, 0.2]"], "should sum to 1"),
        (["--split_fractions", "[0.9, 0.1]"], "should have 3 values"),
        (["--train_samples", "['qcdd']"], "names 'qcdd', which is not in `samples` (did you mean"),
        (["--test_samples", "['qcd']"], "a test sample must be held out whole"),
        (["--iterations", "['initalStep']"], "(did you mean 'initialStep'?)"),
        (["--features", "['trk_pt', 'trk_pt']"], "more than once"),
        (["--features", "['trk_pt', 'trk_isTrue']"], "columns of their own"),
        (["--feature_transforms", "{'trk_ptt': 'log'}"], "(did you mean 'trk_pt'?)"),
        (["--feature_transforms", "{'trk_pt': 'log2'}"], "should be one of"),
        (["--synthetic_samples", "{'qcd': ('qcdd', 10, 1, 'trk_isTrue')}"], "unknown process"),
        (["--monitor_samples", "['qcd_test', 'nowhere']"], "names 'nowhere'"),
        (["--cpu_replicas", "0"], "should be >= 1"),
        (["--gpus", "-2"], "should be >= -1"),
        (["--target_efficiencies", "[0.9, 0.95, 0.99]"], "from high to low"),
        (["--reference_cuts", "{'MuonSeededStepInOut': [0, 0.1, 0.2]}"], "does not hold"),
        (["--run_name", "a/b"], "only letters, digits"),
        (["--label", "isTrue"], "should be one of"),
        (["--epoch", "2"], "unknown setting 'epoch'. Did you mean '--epochs'?"),
        (["--stage", "trian"], "invalid choice: 'trian'"),
        (["stray"], "unexpected value 'stray'"),
    ],
)
def test_bad_settings_are_refused_in_one_line(argv, expected):
    message = refused(argv)
    assert expected in message, message
    if argv[0].startswith("--") and argv[0] not in ("--epoch", "--stage"):
        assert message.startswith("the command line: setting '"), message


def test_a_settings_file_is_checked_like_the_command_line(tmp_path):
    config_file = tmp_path / "mine.py"
    config_file.write_text("epochs = 7.0\n")
    assert f"{config_file}: setting 'epochs' = 7.0 should be of type int" in refused(
        ["--config", str(config_file)]
    )
    config_file.write_text("epoch = 3\n")
    assert "unknown setting 'epoch'. Did you mean 'epochs'?" in refused(
        ["--config", str(config_file)]
    )
    assert "no such file" in refused(["--config", str(tmp_path / "missing.py")])


def test_good_settings_pass_and_keep_their_origin(tmp_path):
    config_file = tmp_path / "mine.py"
    config_file.write_text("epochs = 7\nhidden_layers = (64, 32)\n")
    cfg, args = load_config(["--config", str(config_file), "--batch_size", "128"])
    assert cfg["epochs"] == 7 and cfg["batch_size"] == 128
    assert args.origins["epochs"] == str(config_file)
    assert args.origins["batch_size"] == "the command line"
    assert args.overrides == {"epochs", "hidden_layers", "batch_size"}


def test_every_setting_has_a_section_and_the_defaults_pass():
    settings = describe_config()
    assert settings and all(s.section for s in settings.values())
    assert load_config([])[0] == default_config()


def test_help_lists_every_setting_with_default_and_comment():
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for setting in describe_config().values():
        assert f"--{setting.name} " in text, setting.name
        if setting.comment:
            assert " ".join(setting.comment.split())[:40] in text, setting.name
    assert "[default: 512]" in text  # batch_size


def test_a_bad_setting_stops_main_at_once_without_a_folder(tmp_path):
    """The whole command: exit 2, one line on stderr, nothing written, TensorFlow not imported."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--batch_size", "-5"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONPROFILEIMPORTTIME": "1"},
    )
    seconds = time.perf_counter() - start
    assert result.returncode == 2
    messages = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert messages == [
        "error: the command line: setting 'batch_size' = -5 should be >= 1; e.g. --batch_size 512"
    ]
    assert result.stdout == ""
    assert "tensorflow" not in result.stderr  # the import-time profile: never imported
    assert list(tmp_path.iterdir()) == []  # no results/, no data/
    assert seconds < 10
