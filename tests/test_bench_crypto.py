"""bench/bench_crypto.py runs and reports what bench_dataplane merges (no timing asserted:
benchmark figures are printed, never tested)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench import bench_crypto

ROOT = Path(__file__).resolve().parent.parent


def test_it_measures_every_implementation_and_the_two_ratios():
    result = bench_crypto.measure(runs=1, seconds=0.005, repeats=1)

    assert 0 < result["crypto_vs_raw"] < 10
    assert result["crypto_vs_esdk"] > 0
    for name in ("raw", "ours", "esdk", "wrapped", "one_shot"):
        assert result[f"crypto_{name}_ops_per_s"] > 0
        assert result[f"crypto_{name}_us_per_op"] > 0
    assert len(result["crypto_runs"]) == 1
    assert len(result["load_average"]) == 3
    json.dumps(result)  # JSON-ready


def test_it_prints_the_figures_and_writes_them_as_json(tmp_path):
    output = tmp_path / "crypto.json"

    finished = subprocess.run(
        [sys.executable, "bench/bench_crypto.py", "--runs", "1", "--repeats", "1", "--seconds", "0.005",
         "--output", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )

    written = json.loads(output.read_text())
    assert {"crypto_vs_raw", "crypto_vs_esdk", "crypto_raw_ops_per_s", "crypto_esdk_ops_per_s"} <= written.keys()
    assert "ours / raw" in finished.stdout and "ours / esdk" in finished.stdout
