"""`vigil models finetune --search`: hyperparameter search with optuna, then the best trial exported.

Each trial trains on the training folder's own split (``--val-fraction`` of each class held out for
validation; nothing else is looked at) with sampled learning rate, weight decay, augmentation copies and
strength, and unfreeze depth; its validation loss per epoch is reported to optuna, which prunes trials
that fall behind (median pruner) besides each trial's own early stopping. The first trial of a new study
is the defaults, so the best is at least as good as them on validation. The study lives in SQLite
(``<model>.study.db`` by default): the same command with the same ``--study`` resumes it, adding
``--trials`` more. Seeded sampler: the same data and seed give the same trials.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from models.finetune import FinetuneOptions, FinetuneResult, export, fit
from models.training_report import report_dir
from pipeline.core.errors import DatasetError

try:
    import optuna
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise DatasetError("--search needs optuna: pip install -e '.[lab]'") from exc

UNFREEZE_CHOICES = (0, 1, 2, 4)


@dataclass(frozen=True)
class SearchOptions:
    trials: int = 20
    timeout_s: float | None = None
    study: Path | None = None  # default: <model>.study.db
    unfreeze_choices: tuple[int, ...] = UNFREEZE_CHOICES


@dataclass(frozen=True)
class SearchResult:
    best: FinetuneResult
    best_params: dict[str, Any]
    trials: list[dict[str, Any]]  # every trial of the study: number, state, params, val loss and accuracy
    study: Path
    seconds: float


def _sampled(trial: optuna.Trial, base: FinetuneOptions, choices: tuple[int, ...]) -> FinetuneOptions:
    return replace(base,
                   learning_rate=trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
                   weight_decay=trial.suggest_float("weight_decay", 1e-5, 1e-1, log=True),
                   augment_copies=trial.suggest_int("augment_copies", 0, 3),
                   augment_strength=trial.suggest_float("augment_strength", 0.0, 1.0),
                   unfreeze=trial.suggest_categorical("unfreeze", list(choices)), progress=False)


def _params(opts: FinetuneOptions) -> dict[str, Any]:
    return {"learning_rate": opts.learning_rate, "weight_decay": opts.weight_decay,
            "augment_copies": opts.augment_copies, "augment_strength": opts.augment_strength,
            "unfreeze": opts.unfreeze}


def _table(study: optuna.Study) -> list[dict[str, Any]]:
    return [{"number": t.number, "state": t.state.name.lower(), "params": t.params, "val_loss": t.value,
             "val_accuracy": t.user_attrs.get("val_accuracy"), "seconds": t.user_attrs.get("seconds")}
            for t in study.trials]


def search(base: Path, data_dir: Path, out: Path, opts: FinetuneOptions, sopts: SearchOptions) -> SearchResult:
    """Run (or resume) the study, then fit the best trial's hyperparameters again and export it to ``out``."""
    t0 = time.perf_counter()
    path = sopts.study or out.with_name(out.name + ".study.db")
    path.parent.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=f"vigil-finetune-{out.stem}", storage=f"sqlite:///{path}",
                                direction="minimize", load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=opts.seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=3))
    defaults = replace(opts, unfreeze=opts.unfreeze if opts.unfreeze in sopts.unfreeze_choices else 0)
    if not study.trials:
        study.enqueue_trial(_params(defaults))

    def objective(trial: optuna.Trial) -> float:
        started = time.perf_counter()
        trial_opts = _sampled(trial, opts, sopts.unfreeze_choices)

        def report(epoch: int, val_loss: float, val_acc: float) -> None:
            trial.report(val_loss, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: validation loss {val_loss:.4f} behind the median")

        head = fit(base, data_dir, trial_opts, on_epoch=report).trained.head
        trial.set_user_attr("val_accuracy", head.val_accuracy)
        trial.set_user_attr("seconds", time.perf_counter() - started)
        return head.val_loss

    study.optimize(objective, n_trials=sopts.trials, timeout=sopts.timeout_s, catch=())
    best = replace(opts, **study.best_params, progress=opts.progress)
    result = export(fit(base, data_dir, best), base, out, best)
    found = SearchResult(result, dict(study.best_params), _table(study), path, time.perf_counter() - t0)
    report = report_dir(out) / "report.json"  # the search goes into the model's training report too
    doc = json.loads(report.read_text())
    doc["search"] = {"study": str(path), "best_params": found.best_params, "trials": found.trials,
                     "seconds": found.seconds}
    report.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return found
