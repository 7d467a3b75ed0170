import json

import pytest

from rftbench.cli import main


def test_schedules_list_json(capsys):
    assert main(["schedules", "list", "--json"]) == 0
    names = {s["name"] for s in json.loads(capsys.readouterr().out)}
    assert {"none", "constant", "linear", "epsilon_scheduling"} <= names


def test_bad_config_gives_message_and_exit_2(tmp_path, capsys):
    p = tmp_path / "c.yaml"
    p.write_text("schedule: {name: linear}\nmodel: {nmae: x}\n")
    assert main(["train", str(p)]) == 2
    err = capsys.readouterr().err
    assert "model.nmae: unknown key" in err and "Traceback" not in err


def test_unknown_schedule_in_config(tmp_path, capsys, workdir):
    p = tmp_path / "c.yaml"
    p.write_text("schedule: {name: cosinus}\n")
    assert main(["train", str(p)]) == 2
    assert "unknown schedule 'cosinus'" in capsys.readouterr().err


def test_train_then_leaderboard_json(tmp_path, capsys, workdir):
    import yaml

    from conftest import tiny_config

    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(tiny_config(train__epochs=1).model_dump()))
    assert main(["train", str(p), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert 0.0 <= out["expected_robustness"] <= 1.0
    assert main(["leaderboard", "--experiment", "tests", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["run_ids"] == out["run_id"]
    assert rows[0]["er_mean"] == pytest.approx(out["expected_robustness"], abs=1e-4)


def test_plugin_option_before_or_after_the_subcommand(tmp_path, capsys):
    plugin = tmp_path / "my_sched.py"
    plugin.write_text(
        "from rftbench.scheduling import Schedule, register_schedule\n\n"
        "@register_schedule('half_cli_test')\n"
        "class Half(Schedule):\n"
        "    reference = 'test'\n\n"
        "    def alpha(self, progress):\n"
        "        return 0.5\n")
    for argv in (["--plugin", str(plugin), "schedules", "list", "--json"],
                 ["schedules", "list", "--json", f"--plugin={plugin}"]):
        assert main(argv) == 0
        assert "half_cli_test" in {s["name"] for s in json.loads(capsys.readouterr().out)}


def test_evaluate_refuses_a_checkpoint_whose_head_does_not_fit_the_dataset(tmp_path, capsys, workdir):
    import yaml

    from conftest import tiny_config
    from rftbench.models import create_model, save_checkpoint

    ckpt = save_checkpoint(create_model("small_cnn", 3, pretrained=False), tmp_path / "m3.safetensors")
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(tiny_config().model_dump()))
    assert main(["evaluate", str(p), "--model", f"file:{ckpt}", "--no-log"]) == 2
    err = capsys.readouterr().err
    assert "has 3 outputs but dataset 'digits' has 5 classes" in err
