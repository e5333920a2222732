"""Tuning speed-up from one to two parallel trial workers on the same study.

Builds the demo's training set (50,000 rows), draws one list of configurations, and runs it
twice through the platform's own worker (`maestro.pipeline.tune_worker`, the body of the mapped
`tune` task): once with one worker process, once with two processes sharing the study. Both
runs evaluate the same enqueued configurations, so the ratio measures the parallel machinery,
not luck in sampling. "whole step" includes each worker process's start-up (imports, loading
the splits); "trials only" runs from the first trial's start to the last trial's end, the
tuning throughput. Goal: at least 1.7x.

    .venv/bin/python bench/tuning_speedup.py [--rows 50000] [--trials 20] [--smoke]
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml
from _setup import scratch_platform


def _work(args) -> int:
    import os

    from maestro.config import get_settings
    from maestro.training import stages

    handle, worker, specs_dir = args
    os.environ["MAESTRO_SPECS_DIR"] = specs_dir
    get_settings.cache_clear()
    return stages.tune_worker(handle, worker, get_settings())


def configurations(spec, count: int) -> list[dict]:
    """`count` configurations drawn at random from the spec's search space (seeded)."""
    import optuna

    from maestro.training.families import suggest

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    drawn = []
    for _ in range(count):
        trial = study.ask()
        family = trial.suggest_categorical("family", sorted(spec.search_space))
        suggest(trial, family, spec.search_space[family])
        drawn.append(trial.params)
        study.tell(trial, 0.0)
    return drawn


def timed_study(
    handle, settings, spec, specs_dir: Path, drawn: list[dict], workers: int, tag: str
) -> tuple:
    """(seconds for the whole step, seconds from the first trial's start to the last one's end,
    boosting rounds run, trials pruned)."""
    from maestro.training import tune

    run = handle.updated(study=f"{handle.study}-{tag}", workers=workers)
    study = tune.open_study(spec, settings, run.study)
    for params in drawn:
        study.enqueue_trial(params)
    started = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        ran = list(pool.map(_work, [(run, w, str(specs_dir)) for w in range(workers)]))
    elapsed = time.perf_counter() - started
    assert sum(ran) == len(drawn), ran
    trials = tune.open_study(spec, settings, run.study).trials
    phase = max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)
    rounds = sum(_boosting_rounds(t) for t in trials)
    pruned = sum(t.state.name == "PRUNED" for t in trials)
    return elapsed, phase.total_seconds(), rounds, pruned


def _boosting_rounds(trial) -> int:
    """LightGBM rounds a trial ran: up to its last report if pruned, else all it asked for."""
    if trial.state.name == "PRUNED":
        return max(trial.intermediate_values, default=0)
    return trial.params.get("lightgbm.n_estimators", 0)


def without_pruning(specs_dir: Path) -> Path:
    """A copy of the specs whose demo turns pruning off."""
    folder = specs_dir.with_name("specs-no-pruning")
    folder.mkdir(exist_ok=True)
    for path in specs_dir.glob("*.yaml"):
        raw = yaml.safe_load(path.read_text())
        if raw["name"] == "demo":
            raw["pruning"] = False
        (folder / path.name).write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="3,000 rows, 4 trials: a check")
    args = parser.parse_args()
    if args.smoke:
        args.rows, args.trials = 3_000, 4
    scratch_platform(demo_rows=args.rows, trials=args.trials)

    from maestro.config import get_settings
    from maestro.spec import get_spec
    from maestro.training import stages

    settings = get_settings()
    spec = get_spec("demo", settings)
    handle = stages.ingest("demo", stages.RunInfo("bench", "tuning_speedup"), settings)
    handle = stages.build_training_set(stages.materialize_features(handle, settings), settings)
    handle = stages.start_tuning(handle, settings, trials=args.trials, workers=1)
    drawn = configurations(spec, args.trials)
    plain_specs = without_pruning(settings.specs_dir)
    plain = spec.model_copy(update={"pruning": False})
    results = {
        "pruning (the spec's default)": [
            timed_study(handle, settings, spec, settings.specs_dir, drawn, n, f"p{n}")
            for n in (1, 2)
        ],
        "no pruning (the same work)": [
            timed_study(handle, settings, plain, plain_specs, drawn, n, f"n{n}") for n in (1, 2)
        ],
    }
    print(f"\n{args.trials} trials on {args.rows} rows (same configurations in every run)")
    for title, (one, two) in results.items():
        print(f"\n{title}")
        print(f"{'':<14}{'whole step':>12}{'trials only':>13}{'boosting rounds':>17}{'pruned':>8}")
        for name, (whole, trials, rounds, pruned) in (("one worker", one), ("two workers", two)):
            print(f"{name:<14}{whole:>11.2f}s{trials:>12.2f}s{rounds:>17}{pruned:>8}")
        print(f"{'speed-up':<14}{one[0] / two[0]:>11.2f}x{one[1] / two[1]:>12.2f}x")
        # Parallel trials see fewer finished trials when the pruner judges them, so they may
        # prune less and do more work: throughput (rounds per second) separates that effect.
        rate = (two[2] / two[1]) / (one[2] / one[1])
        print(f"throughput speed-up (boosting rounds per second): {rate:.2f}x")


if __name__ == "__main__":
    main()
