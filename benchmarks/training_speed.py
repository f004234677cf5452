"""Training time and 6-class validation accuracy, in one run on the same tiles:

1. the whole `train_classifier` node with the parameters from before issue 13 (head on the top
   features only, trained on images, the backbone re-run every epoch, then 4 fine-tuning epochs)
   against the current defaults (head on mid-level and top features, trained on cached features);
2. head training alone at equal epochs: on images against on cached features (their extraction included);
3. where the feature cache lives: in memory against a round trip through a file (a `05_model_input`
   catalog dataset would be a pickle like this one).

    .venv/bin/python benchmarks/training_speed.py [--project .] [--env local] \
        [--seeds 42 1 2 3 4 5 [--compare features|head_input]]

The tiles are the project's prepared ones (`kedro run --pipelines data_preparation` first), read
through the Data Catalog; without them, random tiles give the times but meaningless accuracies.
The machine may be shared: CPU seconds of this process are printed beside wall-clock seconds, and
only ratios from this one run should be compared.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")

from _project import project_catalog  # noqa: E402  (benchmarks/_project.py)

ROOT = Path(__file__).resolve().parents[1]

BEFORE_ISSUE_13 = {
    "mid_level_features": False,
    "batch_size": 32,
    "cache_features": False,
    "epochs": 12,
    "patience": 3,
    "learning_rate": 0.001,
    "fine_tune_epochs": 4,
    "fine_tune_blocks": 2,
    "fine_tune_learning_rate": 0.0001,
    "augmentation": {"flip": True, "rotate90": True, "brightness": 0.08, "contrast": 0.1, "saturation": 0.1},
}
"""parameters_training.yml as it was before issue 13 (the rest is unchanged)."""


def load_tiles(project: Path, env: str):
    """(tile_set, land_cover, training, scoring, real) from the project's catalog, or random tiles."""
    from landuse_kedro.pipelines.training.inputs import TileArrays
    from landuse_kedro.pipelines.training.nodes import assemble_tile_set

    with project_catalog(project, env) as catalog:
        params = catalog.load("parameters")
        land_cover, training, scoring = params["land_cover"], params["training"], params["scoring"]
        try:
            tiles = assemble_tile_set(
                catalog.load("model_input_tiles"),
                catalog.load("tile_manifest"),
                land_cover,
                training,
                scoring,
            )
            return tiles, land_cover, training, scoring, True
        except Exception as error:  # noqa: BLE001 - no prepared tiles: time random ones
            print(
                f"No prepared tiles ({type(error).__name__}: {error}): timing random tiles; "
                "their accuracies mean nothing."
            )
    rng = np.random.default_rng(0)
    size, n_classes = scoring["image_size"], len(land_cover["classes"])

    def tiles(n: int) -> TileArrays:
        return TileArrays(
            rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
            (np.arange(n) % n_classes).astype(np.int32),
            tuple(map(str, range(n))),
        )

    return {"train": tiles(576), "validation": tiles(156)}, land_cover, training, scoring, False


def train(tile_set, land_cover, training, scoring) -> dict:
    from landuse_kedro.pipelines.training.nodes import train_classifier

    start, cpu = time.perf_counter(), time.process_time()
    model, history = train_classifier(tile_set, land_cover, training, scoring)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    validation = tile_set["validation"]
    predicted = model.predict(validation.images, batch_size=64, verbose=0).argmax(axis=1)
    head_epochs = sum(e["phase"] == "head" for e in history["epochs"])
    return {
        "wall": wall,
        "cpu": cpu,
        "accuracy": float(np.mean(predicted == validation.labels)),
        "history": history,
        "head_epochs": head_epochs,
    }


def describe(name: str, run: dict) -> str:
    history = run["history"]
    phases = ", ".join(
        f"{p} {sum(e['phase'] == p for e in history['epochs'])} epochs"
        for p in ("head", "fine_tune")
        if any(e["phase"] == p for e in history["epochs"])
    )
    cache = history["feature_cache"]
    features = f"; feature cache {cache['seconds']:.1f} s ({cache['views']} views)" if cache else ""
    return (
        f"  {name}: {run['wall']:6.1f} s wall, {run['cpu']:6.1f} CPU s; "
        f"head {history['head_seconds']:.1f} s"
        f"{features}; {phases}; kept {history['kept_phase']}; 6-class validation accuracy "
        f"{100 * run['accuracy']:.1f}%"
    )


def cache_round_trip(history: dict, validation_tiles: int) -> tuple[float, float, float]:
    """(seconds to save, seconds to load, MB) of a feature cache of the run's shape through a
    pickle file: I/O time depends on the size only, so random features stand in."""
    from kedro_datasets.pickle import PickleDataset

    from landuse_kedro.pipelines.training.features import FeatureCache

    shape = history["feature_cache"]
    rng = np.random.default_rng(0)
    cache = FeatureCache(
        train=rng.random((shape["views"], history["train_tiles"], shape["features"]), dtype=np.float32),
        train_labels=np.zeros(history["train_tiles"], np.int32),
        validation=rng.random((validation_tiles, shape["features"]), dtype=np.float32),
        validation_labels=np.zeros(validation_tiles, np.int32),
        views=tuple(range(shape["views"])),
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "training_features.pkl"
        dataset = PickleDataset(filepath=str(path))
        start = time.perf_counter()
        dataset.save(cache)
        saved = time.perf_counter() - start
        start = time.perf_counter()
        loaded = dataset.load()
        load = time.perf_counter() - start
        assert np.array_equal(loaded.train, cache.train)
        return saved, load, path.stat().st_size / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path.cwd())
    parser.add_argument("--env", default="local")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="*",
        default=[],
        help="also train twice at each of these seeds, the two settings of --compare (current "
        "parameters otherwise): the accuracy spread across seeds, paired",
    )
    parser.add_argument(
        "--compare",
        choices=list(COMPARISONS),
        default="features",
        help="features: top only against mid-level + top (both on cached features by default); "
        "head_input: the head trained on images against on cached features",
    )
    args = parser.parse_args()

    from landuse_kedro.models.quantize import describe_cpu

    print(
        f"{os.cpu_count()} CPUs ({describe_cpu()}); load average at start {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    tile_set, land_cover, after, scoring, real = load_tiles(args.project.resolve(), args.env)
    before = {**after, **BEFORE_ISSUE_13}
    print(
        f"{len(tile_set['train'])} training and {len(tile_set['validation'])} validation tiles "
        f"({'prepared' if real else 'random'}); backbone {after['backbone']} ({after['weights']})",
        flush=True,
    )

    runs = {"before (head on images + fine-tuning)": train(tile_set, land_cover, before, scoring)}
    print(describe(*next(iter(runs.items()))), flush=True)
    runs["after (current parameters)"] = train(tile_set, land_cover, after, scoring)
    print(describe(*list(runs.items())[-1]), flush=True)
    old, new = runs.values()

    # Head only, equal epochs and no early stopping: on images vs on cached features, the same model
    # and batches (the before run's top features only, batch 32).
    epochs = old["head_epochs"]
    equal = {
        "epochs": epochs,
        "patience": epochs,
        "fine_tune_epochs": 0,
        **{key: BEFORE_ISSUE_13[key] for key in ("mid_level_features", "batch_size")},
    }
    head_images = old["history"]["head_seconds"]  # the before run's head phase is exactly this
    cached = train(tile_set, land_cover, {**after, **equal, "cache_features": True}, scoring)
    head_cached = cached["history"]["head_seconds"]

    saved, loaded, megabytes = cache_round_trip(cached["history"], len(tile_set["validation"]))
    print(yaml.safe_dump({"settings before issue 13": BEFORE_ISSUE_13}, sort_keys=False).rstrip())
    print(
        f"Whole training node: before {old['wall']:.1f} s, after {new['wall']:.1f} s: "
        f"{old['wall'] / new['wall']:.2f}x faster wall-clock, "
        f"{old['cpu'] / new['cpu']:.2f}x fewer CPU seconds; "
        f"6-class validation accuracy {100 * old['accuracy']:.1f}% -> {100 * new['accuracy']:.1f}%"
    )
    print(
        f"Head training at equal epochs ({epochs}): on images {head_images:.1f} s, on cached features "
        f"{head_cached:.1f} s (extraction {cached['history']['feature_cache']['seconds']:.1f} s of it): "
        f"{head_images / head_cached:.2f}x; accuracy {100 * cached['accuracy']:.1f}%"
    )
    print(
        f"Feature cache ({megabytes:.0f} MB): in memory adds nothing; "
        "through a file (PickleDataset) it adds "
        f"{saved:.2f} s to save and {loaded:.2f} s to load per run, and no run could reuse it (the head "
        "and backbone come from the same run): kept in memory."
    )
    if args.seeds:
        compare_seeds(tile_set, land_cover, after, scoring, args.seeds, args.compare)
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)


COMPARISONS = {
    "features": ("mid_level_features", {"top features only": False, "mid-level + top features": True}),
    "head_input": ("cache_features", {"head on images": False, "head on cached features": True}),
}
"""--compare: the parameter that differs between the two trainings at each seed."""


def compare_seeds(tile_set, land_cover, training, scoring, seeds: list[int], comparison: str) -> None:
    """One validation tile is 0.6 points: the seed alone moves accuracy by more than that, so two
    settings are compared seed by seed (same tiles, every other parameter as given)."""
    key, settings = COMPARISONS[comparison]
    n = len(tile_set["validation"])
    correct: dict[str, list[int]] = {name: [] for name in settings}
    for seed in seeds:
        for name, value in settings.items():
            run = train(tile_set, land_cover, {**training, "seed": seed, key: value}, scoring)
            correct[name].append(round(run["accuracy"] * n))
        print(
            f"  seed {seed}: " + ", ".join(f"{name} {c[-1]}/{n}" for name, c in correct.items()), flush=True
        )
    (first, a), (second, b) = correct.items()
    differences = np.subtract(b, a)
    print(
        f"Over seeds {seeds}, 6-class validation accuracy (tiles right per seed, mean): "
        f"{first} {a} {100 * np.mean(a) / n:.1f}%, {second} {b} {100 * np.mean(b) / n:.1f}%; "
        f"{second} better at {int((differences > 0).sum())}, equal at {int((differences == 0).sum())}, "
        f"worse at {int((differences < 0).sum())} of {len(seeds)} seeds",
        flush=True,
    )


if __name__ == "__main__":
    main()
