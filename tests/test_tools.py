"""The benchmarks in tools/ run (at a tiny size) and print the table they document."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_fit_prints_paired_ratios_for_every_model():
    run = subprocess.run(
        [sys.executable, str(REPO / "tools" / "bench_fit.py"), "--records", "16", "--channel-multiplier", "0.125",
         "--batch-size", "4", "--steps", "1", "--blocks", "2", "--warmup", "1", "--rounds", "1"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    rows = re.findall(
        r"^(none|mixed_bfloat16) +(one-device|two-tower) +([\d.]+) +([\d.]+) +([\d.]+) \(", run.stdout, re.M
    )
    assert {(precision, strategy) for precision, strategy, *_ in rows} == {
        ("none", "one-device"),
        ("none", "two-tower"),
        ("mixed_bfloat16", "one-device"),
        ("mixed_bfloat16", "two-tower"),
    }
    for *_, pipeline, memory, ratio in rows:
        assert float(pipeline) > 0 and float(memory) > 0 and float(ratio) > 0
    assert len(re.findall(r"^two-tower / one-device, .*: [\d.]+$", run.stdout, re.M)) == 4
    assert len(re.findall(r"^bfloat16 / float32, .*: [\d.]+ \(rounds [\d.]+-[\d.]+\)$", run.stdout, re.M)) == 4
    assert re.match(r"host: this CPU .* (has|has no) avx512_bf16", run.stdout)  # the figures' host


@pytest.mark.slow
def test_bench_fit_loop_says_where_fits_wall_time_went():
    run = subprocess.run(
        [sys.executable, str(REPO / "tools" / "bench_fit.py"), "--loop", "2", "--photos", "8"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    # 5 classes of 10 photos, a fifth held out: 40 train (one batch of 32 an epoch), 10 validated after
    # the last epoch only (the demo recipe validates every 5th).
    assert "2 epochs of the demo recipe, 64 images trained, 10 validated (1 pass)" in run.stdout, run.stdout
    assert re.search(r"^wall time [\d.]+ s: training steps [\d.]+ s \(\d+%\); .*validation [\d.]+ s", run.stdout, re.M)
    rate, ratio = map(
        float, re.search(r"rate ([\d.]+) images/s; wall time / \(images / rate\) = ([\d.]+)", run.stdout).groups()
    )
    assert rate > 0 and ratio > 1, run.stdout
    val_rate, loop_ratio = map(
        float, re.search(r"^validation ([\d.]+) images/s .*steps = ([\d.]+)$", run.stdout, re.M).groups()
    )
    assert val_rate > 0 and 1.0 <= loop_ratio < ratio, run.stdout


@pytest.mark.slow
def test_bench_service_prints_each_way_against_local():
    run = subprocess.run(
        [sys.executable, str(REPO / "tools" / "bench_service.py"), "--records", "64", "--shards", "4",
         "--batch-size", "8", "--batches", "2", "--warmup", "1", "--rounds", "1"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    rows = re.findall(r"^  (local|service|service, uncompressed) +([\d,]+) \(.*\) +([\d.]+) \(", run.stdout, re.M)
    assert [way for way, *_ in rows] == ["local", "service", "service, uncompressed"]
    assert all(int(rate.replace(",", "")) > 0 and float(ratio) > 0 for _, rate, ratio in rows)
    assert rows[0][2] == "1.00"  # local against itself
    assert re.match(r"host: this CPU .* (has|has no) avx512_bf16", run.stdout)
