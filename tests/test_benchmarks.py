"""Every script under benchmarks/ runs at toy size, as `make test` runs it: it exits 0 and prints
each figure it promises, a number on each promised line (issue 25). These are smoke tests, not
timing bars: no figure is compared with a value, so a slow machine passes and a broken script
(a model saved where the catalog does not read it, a size the script cannot handle) fails.

The inputs are the tiny chain's (the `test` environment's 672 px sample scenes, its tiles and its
trained exports): the smallest each script accepts.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import PROJECT_ROOT

BENCHMARKS = PROJECT_ROOT / "benchmarks"
NUMBER = r"[-+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?"
N = "{n}"

Args = Callable[[Path, Path], list[str]]
"""(tiny chain project, scratch folder) -> the script's command-line arguments."""

CASES: dict[str, tuple[Args, list[str]]] = {
    "area_estimation.py": (
        lambda chain, _: ["--project", str(chain), "--env", "test", "--draws", "5"],
        [
            rf"region middlesex: {N} tiles of {N} ha, sample {N} tiles \(5 draws\)",
            rf"true newly developed area: {N} ha of tiles \(>= 50% changed\), {N} ha of pixels; "
            rf"mapped \(candidates\): {N} ha",
            rf"estimate: mean {N} ha; 95% interval covers the true area in {N}% of draws; mean width {N} ha",
        ],
    ),
    "change_detection.py": (
        lambda chain, _: ["--project", str(chain), "--env", "test", "--sweep"],
        [
            rf"region middlesex: {N} tiles, {N} failed to score",
            rf"tiles that became developed: {N}; candidates: {N}; true positives: {N}",
            rf"precision (?:{N}|undefined \(no candidate\)) +recall {N}",  # the tiny chain may flag none
            rf"partly changed tiles \(0 < share < 50%\): {N}, of which flagged: {N}",
            rf"^smoothed +{N} +Undeveloped +{N} +{N} +{N}",  # a --sweep row
        ],
    ),
    "county_input.py": (
        lambda chain, scratch: [
            *("--raw", str(chain / "data" / "01_raw"), "--out", str(scratch / "county")),
            *("--rows", "1", "--cols", "2", "--check", "--measure"),
        ],
        [
            rf"built in {N} s, {N} MB on disk",
            rf"check passed: {N} VRTs, {N} NLCD rasters",
            rf"open county_2016\.vrt: {N} ms per open",
            rf"VRT \(distinct=True\), GDAL_CACHEMAX 64 MB: {N} ms/tile",
            rf"source \.tif direct, GDAL_CACHEMAX 64 MB: {N} ms/tile",
        ],
    ),
    "county_scale.py": (
        lambda chain, scratch: [
            *("--raw", str(chain / "data" / "01_raw"), "--sizes", "1x1", "--score-tiles", "32"),
            *("--work", str(scratch / "work")),
        ],
        [
            *(
                line.replace("<P>", precision)
                for precision in ("int8", "fp32")
                for line in (
                    rf"\[<P>\] scoring-only \(score_images.* <P> model\): {N} images/s \(first job {N}\)",
                    rf"\[<P>\] 1x1 \({N} tiles\): development_inference / scoring-only = {N} whole "
                    rf"pipeline, {N} score node",
                    rf"\[<P>\] largest size: DI / scoring-only {N} \(whole\), {N} \(score node\)",
                )
            ),
            rf"^ +Spark session start: {N}$",
            rf"^ +Python workers' start \+ imports \+ model load: {N}$",
            rf"^ +planning \(nodes before the score node\): {N}$",
            rf"^ +score_regions \(Spark job: read, label, score\): {N}$",
            rf"^ +outputs \(every node after score_regions\): {N}$",
            rf"^ +the rest: dataset loads, Kedro session, hooks: {N}$",
            rf"data_preparation fixed costs and nodes at 1x1 \(s\): Spark session start {N}, "
            rf"Python workers' start \+ imports {N}, plan_scenes {N}",
            rf"data_preparation at 1x1: {N} kept tiles/s \({N} seen/s\)",
            rf"driver peak RSS \(Python VmHWM \+ JVM VmHWM\): {N}-{N} MB",
            rf"int8 / fp32, same run: scoring-only {N}x, development_inference at 1x1 {N}x \(whole\)",
            rf"machine: .*, {N} cores, flags .*; load average {N} at start",
        ],
    ),
    "models_efficientnet_lite0.py": (
        lambda *_: ["--batch", "4", "--repeats", "1"],
        [
            rf"parse \.pth: {N} s \({N} tensors\)",
            rf"build_classifier\(\) \(6 classes\): {N} s, {N} parameters",
            rf"max \|Keras - PyTorch\| logit: {N} over {N} images",
            rf"model\.predict: +{N} images/s",
            rf"predict_on_batch: +{N} images/s",
            rf"ONNX, top features only {N} images/s, mid-level \+ top {N} images/s \({N}x\)",
        ],
    ),
    "prepare_tiles.py": (
        lambda chain, _: ["--env", "test", "--raw", str(chain / "data" / "01_raw")],
        [
            rf"labelling: {N} s = {N} tiles labelled/s",
            rf"writing: +{N} s = {N} tiles written/s",
            rf"peak memory of the driver process: {N} MB",
        ],
    ),
    "sample_scene.py": (
        lambda *_: ["--env", "test"],
        [
            rf"land cover \+ NLCD: {N} s; one {N} x {N} scene: {N} s",
            rf"all scenes: \{{'Developed': {N}",
            rf"middlesex: newly developed tiles: {N} fully, {N} at least half",
        ],
    ),
    "scoring_throughput.py": (
        lambda chain, _: ["--project", str(chain), "--env", "test", "--tiles", "32"],
        [
            *(
                line.replace("<P>", precision)
                for precision in ("fp32", "int8")
                for line in (
                    rf"in-process <P> \({N} threads\): +{N} images/s, +{N} images per CPU-second",
                    rf"spark_scoring <P> local\[2\], first job: +{N} images/s",
                    rf"spark_scoring <P> local\[2\], warm +: +{N} images/s, +{N} images per CPU-second",
                )
            ),
            rf"int8 / fp32: in-process {N}x images/s, {N}x per CPU-second; Spark warm {N}x images/s",
            rf"6-class accuracy on {N} labelled tiles: fp32 {N}%, int8 {N}% \(delta {N} points",
            rf"projected for 11,760 tiles with int8: Spark {N} s",
        ],
    ),
    "training_scale.py": (
        lambda chain, scratch: [
            *("--raw", str(chain / "data" / "01_raw"), "--county", "2x2", "--sizes", "24"),
            *("--score-tiles", "32", "--work", str(scratch / "work")),
        ],
        [
            rf"data_preparation on 2x2 copies: {N} tiles kept in {N} s",
            rf"^{N} training tiles: features {N} tile-views/s \({N}x scoring-only {N} images/s\), "
            rf"whole training {N} s",
            rf"^\| 24 \| {N} \| {N} \| {N} \| {N}x \| {N} \({N}\) \| {N} \| {N} \| {N} \| {N} % / {N} % \|",
            rf"Second run at 24 tiles, another head learning rate: 0 tiles' features computed, {N} reused; "
            rf"extract node {N} s \(first run {N} s\); whole training {N} s \(first {N} s\)",
        ],
    ),
}


def test_every_benchmark_script_has_a_smoke_test():
    scripts = {path.name for path in BENCHMARKS.glob("*.py") if not path.name.startswith("_")}
    assert len(scripts) >= 8, scripts  # the folder is seen
    assert scripts == set(CASES), f"benchmarks without a smoke test: {sorted(scripts - set(CASES))}"


def test_the_promised_lines_need_numbers():
    """The check itself: a promised line with its figure missing or not a number is caught."""
    assert (
        promised_missing(["parse .pth: 0.02 s (247 tensors)"], [rf"parse \.pth: {N} s \({N} tensors\)"]) == []
    )
    for broken in ("parse .pth: nan s (247 tensors)", "parse .pth:  s (247 tensors)", "parse .pth"):
        assert promised_missing([broken], [rf"parse \.pth: {N} s \({N} tensors\)"]), broken


def promised_missing(lines: list[str], patterns: list[str]) -> list[str]:
    text = "\n".join(lines)
    return [p for p in patterns if not re.search(p.replace(N, NUMBER), text, re.MULTILINE)]


@pytest.mark.parametrize("script", sorted(CASES))
def test_benchmark_runs_at_toy_size_and_prints_its_figures(script, tiny_chain_project, tmp_path):
    arguments, patterns = CASES[script]
    assert patterns, f"{script}: no promised figure listed"
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *arguments(tiny_chain_project, tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{output[-6000:]}"
    missing = promised_missing(done.stdout.splitlines(), patterns)
    assert not missing, f"{script} did not print these figures: {missing}\n--- stdout:\n{done.stdout[-6000:]}"
