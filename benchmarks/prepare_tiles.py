"""Tiles prepared per second by the data_preparation pipeline on the sample scene.

    .venv/bin/python benchmarks/prepare_tiles.py [--scene-size 3136] [--env local] [--raw data/01_raw]

Generates the sample scene (``kedro run --pipelines sample_scene``, in a child process) in a
throw-away project copy, then runs data_preparation through a KedroSession and times its nodes from
Kedro's own log lines: labelling (plan_scenes + label_tiles: reprojecting NLCD, counting classes for
every tile of every scene, in Spark tasks) and writing (the kept tiles as PNG by Spark tasks, the
manifest, the report). The whole run includes starting Spark (local[*]). Peak memory of the driver
process is printed too, to show it follows the block size, not the scene size (compare two
--scene-size values); benchmarks/county_scale.py measures county sizes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kedro.framework.session import KedroSession  # noqa: E402
from kedro.framework.startup import bootstrap_project  # noqa: E402

from tests.helpers import make_project_copy  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene-size", type=int, default=None, help="px per scene side (default: the env's)")
    parser.add_argument("--env", default="local", help="Kedro environment (default local = base sizes)")
    parser.add_argument(
        "--raw", type=Path, help="reuse this 01_raw folder (naip/, nlcd/) instead of generating one"
    )
    args = parser.parse_args()
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")

    with tempfile.TemporaryDirectory(prefix="prepare_tiles_") as folder:
        project = make_project_copy(Path(folder) / "project")
        if args.raw:
            shutil.copytree(args.raw, project / "data" / "01_raw", dirs_exist_ok=True)
        else:
            generate = [
                sys.executable,
                "-m",
                "kedro",
                "run",
                "--pipelines",
                "sample_scene",
                "--env",
                args.env,
            ]
            if args.scene_size:
                generate += ["--params", f"sample_scene.scene_size={args.scene_size}"]
            started = time.perf_counter()
            subprocess.run(generate, cwd=project, check=True, capture_output=True)
            print(f"sample scene generated in {time.perf_counter() - started:.1f} s")
        naip = sorted((project / "data" / "01_raw" / "naip").glob("*.tif"))
        with_sizes = sum(p.stat().st_size for p in naip) / 1e6
        print(f"{len(naip)} NAIP scenes, {with_sizes:.0f} MB on disk")

        timings = NodeTimes()
        started = time.perf_counter()
        os.chdir(project)
        bootstrap_project(project)
        with KedroSession.create(project_path=project, env=args.env) as session:
            logging.getLogger("kedro").addHandler(timings)  # after the session configured logging
            session.run(pipeline_names=["data_preparation"])
        total = time.perf_counter() - started
        labelling = timings.seconds("plan_scenes", "label_tiles")
        writing = timings.seconds("export_tiles", "write_manifest")
        report = json.loads((project / "data" / "08_reporting" / "preparation_report.json").read_text())

    seen, kept = report["tiles_seen"], report["kept_total"]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"tiles seen {seen}, usable {report['usable']}, kept (balanced) {kept}; rejected {report['rejected']}"
    )
    print(f"labelling: {labelling:.1f} s = {seen / labelling:.0f} tiles labelled/s")
    print(f"writing:   {writing:.1f} s = {kept / writing:.1f} tiles written/s (PNG)")
    print(
        f"data_preparation: {total:.1f} s including Spark start; {kept / total:.1f} tiles prepared/s "
        f"({seen / total:.0f} tiles seen/s)"
    )
    print(f"peak memory of the driver process: {peak_mb:.0f} MB")


class NodeTimes(logging.Handler):
    """Seconds between Kedro's "Running node: X" and "Completed node: X" log lines."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.started: dict[str, float] = {}
        self.took: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Running node: "):
            self.started[message.split(": ")[1].split("(")[0].strip()] = record.created
        elif message.startswith("Completed node: "):
            name = message.split(": ", 1)[1].strip()
            self.took[name] = record.created - self.started[name]

    def seconds(self, *names: str) -> float:
        missing = set(names) - set(self.took)
        if missing:
            raise KeyError(
                f"no timing for {missing}; seen {sorted(self.took)}, started {sorted(self.started)}"
            )
        return sum(self.took[name] for name in names)


if __name__ == "__main__":
    main()
