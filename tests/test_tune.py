"""`rcnn tune` (issue 19): an Optuna search where every trial is an ordinary run in its own folder and
weak trials are pruned after a validation."""

from __future__ import annotations

import json

import optuna
from helpers import TINY_TRAIN

from rcnn_cli.commands import tune

QUICK = [*TINY_TRAIN, "trainer.max_epochs=2", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
         "tune.trials=3", "tune.space=[{key: optim.lr, low: 1.0e-4, high: 1.0e-2, log: true}]"]


def test_three_trials_are_pruned_after_their_first_validation_and_ranked(tmp_path):
    study = tune.run(tune.TuneOptions([*QUICK, "tune.pruner=threshold", "tune.prune_below=2.0",
                                       f"run_dir={tmp_path / 'tune'}"]))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 3
    assert all(len(t.intermediate_values) == 1 for t in study.trials)           # stopped after epoch 1 of 2
    assert all(1e-4 <= t.params["optim.lr"] <= 1e-2 for t in study.trials)
    assert len({t.params["optim.lr"] for t in study.trials}) == 3
    for number in range(3):
        folder = tmp_path / "tune" / f"trial-{number:03d}"
        assert (folder / "config.yaml").is_file() and (folder / "metrics.csv").is_file()
        assert f"lr: {study.trials[number].params['optim.lr']}" in (folder / "config.yaml").read_text()
    board = json.loads((tmp_path / "tune" / "leaderboard.json").read_text())
    assert [row["trial"] for row in board] == [0, 1, 2] and {row["state"] for row in board} == {"pruned"}


def test_completed_trials_come_first_best_first_then_pruned(tmp_path):
    study = optuna.create_study(direction="maximize")
    for number, (state, value) in enumerate([("COMPLETE", 0.2), ("PRUNED", None), ("COMPLETE", 0.5)]):
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState[state], value=value, params={"optim.lr": 0.001 * (number + 1)},
            distributions={"optim.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)},
            intermediate_values={0: 0.1}, user_attrs={"run_dir": f"trial-{number:03d}"}))
    tune.leaderboard(study, "val/map", tmp_path)
    board = json.loads((tmp_path / "leaderboard.json").read_text())
    assert [(row["trial"], row["state"], row["val/map"]) for row in board] == [
        (2, "complete", 0.5), (0, "complete", 0.2), (1, "pruned", 0.1)]
