"""``rcnn tune``: an Optuna search over ``tune.space``; each trial is an ``rcnn train`` run with the
sampled values typed last (so the settings rule applies as for any run), in its own folder; weak
trials are pruned after a validation (optuna-integration's Lightning callback); a leaderboard last."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from ..errors import UsageError
from ..files import numbered_folder, write_json
from ..settings.resolve import resolve
from . import console, say, stdout
from .options import TuneOptions
from .train import train


def run(options: TuneOptions):
    import optuna

    cfg = resolve("train", options.overrides, config_dir=options.config_dir).cfg
    tune = cfg.tune
    folder = Path(cfg.run_dir) if cfg.run_dir else numbered_folder(
        Path(cfg.runs_root) / f"tune-{cfg.dataset.name}-{cfg.model.name}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=tune.direction, sampler=optuna.samplers.TPESampler(seed=int(tune.seed)),
                                pruner=make_pruner(tune))

    def objective(trial) -> float:
        from optuna_integration import PyTorchLightningPruningCallback

        values = {item.key: suggest(trial, item) for item in tune.space}
        trial_dir = folder / f"trial-{trial.number:03d}"
        trial.set_user_attr("run_dir", str(trial_dir))
        console.rule(f"trial {trial.number}: " + escape(", ".join(f"{k}={_short(v)}" for k, v in values.items())))
        settings = resolve("train", [*options.overrides, f"run_dir={trial_dir}"], values,
                           config_dir=options.config_dir)
        pruning = PyTorchLightningPruningCallback(trial, monitor=tune.metric)
        result = train(settings, callbacks=[pruning])
        pruning.check_pruned()
        if tune.metric not in result.metrics:
            raise UsageError(f"tune.metric={tune.metric} was not logged; validation metrics are "
                             + ", ".join(sorted(k for k in result.metrics if k.startswith("val/"))))
        return result.metrics[tune.metric]

    study.optimize(objective, n_trials=int(tune.trials), catch=())
    leaderboard(study, tune.metric, folder)
    return study


def make_pruner(tune):
    import optuna

    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=int(tune.warmup_epochs))
    if tune.pruner == "threshold":
        if tune.prune_below is None and tune.direction == "maximize":
            raise UsageError("tune.pruner=threshold needs tune.prune_below=<value of tune.metric>")
        return optuna.pruners.ThresholdPruner(lower=tune.prune_below)
    return optuna.pruners.NopPruner()


def suggest(trial, item) -> Any:
    """One value for one ``tune.space`` entry."""
    if "choices" in item:
        return trial.suggest_categorical(item.key, list(item.choices))
    if item.get("int"):
        return trial.suggest_int(item.key, int(item.low), int(item.high), log=bool(item.get("log")))
    return trial.suggest_float(item.key, float(item.low), float(item.high), log=bool(item.get("log")))


def leaderboard(study, metric: str, folder: Path) -> None:
    """Completed trials best first, then pruned ones; also written as leaderboard.json."""
    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    done.sort(key=lambda t: t.value, reverse=study.direction == optuna.study.StudyDirection.MAXIMIZE)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    table = Table(title=f"rcnn tune: {len(done)} completed, {len(pruned)} pruned ({metric})", title_justify="left")
    for column in ("trial", "state", metric, "epochs", "values", "run folder"):
        table.add_column(column)
    rows = []
    for t in done + pruned:
        value = t.value if t.value is not None else (max(t.intermediate_values.values())
                                                     if t.intermediate_values else None)
        row = {"trial": t.number, "state": t.state.name.lower(), metric: value, "epochs": len(t.intermediate_values),
               "params": t.params, "run_dir": t.user_attrs.get("run_dir")}
        rows.append(row)
        table.add_row(str(t.number), row["state"], "-" if value is None else f"{value:.4f}", str(row["epochs"]),
                      escape(", ".join(f"{k}={_short(v)}" for k, v in t.params.items())), escape(str(row["run_dir"])))
    stdout.print(table)
    write_json(folder / "leaderboard.json", rows)
    say(f"leaderboard: {folder / 'leaderboard.json'}")


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
