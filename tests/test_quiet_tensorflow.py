"""TensorFlow's start-up lines (oneDNN, CUDA probing) are silenced in the project's processes."""

from __future__ import annotations

import os
import subprocess
import sys

NOISE = ("oneDNN custom operations", "Could not find cuda drivers", "failed call to cuInit")
SCRIPT = "{}import tensorflow as tf; print(int(tf.reduce_sum(tf.constant([1, 2]))))"


def _stderr(prelude: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(prelude)],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=300,
        check=True,
    )
    assert done.stdout.strip() == "3"  # TensorFlow works either way
    return done.stderr


def test_tensorflow_start_up_lines_are_silenced_once_the_project_is_imported():
    plain = _stderr("")
    assert any(line in plain for line in NOISE), plain  # without the project they are there to see
    quiet = _stderr("import landuse_kedro; ")
    assert not any(line in quiet for line in NOISE), quiet
