"""A short run of each coverage-guided fuzzer (fuzz/, atheris); the long runs
are the commands in their docstrings."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("harness", "runs"),
    [("normalize_fuzz.py", 30_000), ("email_fuzz.py", 4_000)],
)
def test_a_short_fuzzing_run_finds_nothing(tmp_path, harness, runs):
    corpus = tmp_path / "corpus"
    shutil.copytree(ROOT / "fuzz" / "corpus" / harness.removesuffix("_fuzz.py"), corpus)
    seeds = len(list(corpus.iterdir()))
    result = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / harness), f"-runs={runs}", "-seed=1",
         f"-artifact_prefix={tmp_path}/", str(corpus)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    crashes = list(tmp_path.glob("crash-*"))
    assert result.returncode == 0 and not crashes, result.stderr[-3000:]
    assert re.search(rf"Done {runs} runs", result.stderr), result.stderr[-2000:]
    # It explored: coverage-guided, it kept new inputs beside the seeds.
    assert len(list(corpus.iterdir())) > seeds
