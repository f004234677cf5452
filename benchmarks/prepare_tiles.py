"""Tiles prepared per second by the data_preparation pipeline on the sample scene.

    .venv/bin/python benchmarks/prepare_tiles.py [--scene-size 3136] [--env local]

Generates the sample scene (``kedro run --pipeline sample_scene``, in a child process) in a
throw-away project copy, then runs data_preparation through a KedroSession in two timed parts:
labelling (reprojecting NLCD, counting classes: every tile of every scene) and writing (the kept
tiles as PNG, the manifest, the report). Peak memory of the preparation process is printed too, to
show it follows the block size, not the scene size (compare two --scene-size values).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import make_project_copy, run_pipeline  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene-size", type=int, default=None, help="px per scene side (default: the env's)")
    parser.add_argument("--env", default="local", help="Kedro environment (default local = base sizes)")
    args = parser.parse_args()
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")

    with tempfile.TemporaryDirectory(prefix="prepare_tiles_") as folder:
        project = make_project_copy(Path(folder) / "project")
        generate = [sys.executable, "-m", "kedro", "run", "--pipeline", "sample_scene", "--env", args.env]
        if args.scene_size:
            generate += ["--params", f"sample_scene.scene_size={args.scene_size}"]
        started = time.perf_counter()
        subprocess.run(generate, cwd=project, check=True, capture_output=True)
        print(f"sample scene generated in {time.perf_counter() - started:.1f} s")
        naip = sorted((project / "data" / "01_raw" / "naip").glob("*.tif"))
        with_sizes = sum(p.stat().st_size for p in naip) / 1e6
        print(f"{len(naip)} NAIP scenes, {with_sizes:.0f} MB on disk")

        timings = {}
        for part, selection in (("label", {"node_names": ["label_tiles"]}),
                                ("write", {"from_nodes": ["select_tiles"]})):
            started = time.perf_counter()
            run_pipeline(project, "data_preparation", env=args.env, **selection)
            timings[part] = time.perf_counter() - started
        report = json.loads((project / "data" / "08_reporting" / "preparation_report.json").read_text())

    seen, kept = report["tiles_seen"], report["kept_total"]
    total = sum(timings.values())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"tiles seen {seen}, usable {report['usable']}, kept (balanced) {kept}; rejected {report['rejected']}")
    print(f"labelling: {timings['label']:.1f} s = {seen / timings['label']:.0f} tiles labelled/s")
    print(f"writing:   {timings['write']:.1f} s = {kept / timings['write']:.1f} tiles written/s (PNG)")
    print(f"data_preparation: {total:.1f} s; {kept / total:.1f} tiles prepared/s "
          f"({seen / total:.0f} tiles seen/s)")
    print(f"peak memory of this process: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
