"""Campaigns on a real Dask cluster (a `dask scheduler` and two `dask worker` processes on 127.0.0.1):
the same rows as the local fork-servers, a resume with the build shipped as bytes, and a worker
killed mid-campaign whose batches are re-run, never lost or counted twice."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import tiny_cnn
from distributed import Client

from lltfi_mlir.campaign import Campaign, CampaignConfig, dask_runner
from lltfi_mlir.campaign.plan import uniform_trial
from lltfi_mlir.cli import main
from lltfi_mlir.errors import RunError, UsageError

TRIALS = 100
SEED = 23
DASK = [sys.executable, "-m", "distributed.cli.dask_scheduler"], [sys.executable, "-m", "distributed.cli.dask_worker"]


def rows(db: Path) -> list[tuple]:
    connection = sqlite3.connect(db)
    try:
        return connection.execute("SELECT * FROM trials ORDER BY id").fetchall()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    """A tiny CNN with two input sets, and the rows of a 100-trial campaign on the local fork-servers."""
    root = tmp_path_factory.mktemp("dask_cnn")
    onnx.save(tiny_cnn(), root / "cnn.onnx")
    (root / "inputs").mkdir()
    rng = np.random.default_rng(2)
    for i in range(2):
        np.save(root / "inputs" / f"{i}.npy", rng.standard_normal((1, 1, 8, 8)).astype(np.float32))
    campaign = Campaign.from_onnx(root / "cnn.onnx", CampaignConfig(seed=SEED), root / "inputs", out_dir=root / "out",
                                  db=root / "local.db", jobs=2)
    campaign.run(TRIALS, progress=False)
    return root, rows(root / "local.db")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler on a free port of 127.0.0.1 and two one-thread workers, each in a session of its own."""
    root = tmp_path_factory.mktemp("dask_cluster")
    scheduler_file = root / "scheduler.json"
    common = ["--no-dashboard", "--host", "127.0.0.1"]
    procs = [subprocess.Popen([*DASK[0], "--port", "0", "--scheduler-file", str(scheduler_file), *common],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.2)  # the file is written whole, but give the writer a moment
        workers = {}
        for name in ("w0", "w1"):
            workers[name] = subprocess.Popen(
                [*DASK[1], "--scheduler-file", str(scheduler_file), "--nworkers", "1", "--nthreads", "1",
                 "--no-nanny", "--name", name, "--local-directory", str(root / name), *common],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            procs.append(workers[name])
        address = json.loads(scheduler_file.read_text())["address"]
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address, workers, root
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_dask_campaign_gives_the_fork_servers_rows_and_resumes_with_the_build_shipped(cnn, cluster, tmp_path,
                                                                                       monkeypatch):
    root, expected = cnn
    address, _, cluster_dir = cluster
    db = tmp_path / "dask.db"
    first = Campaign.from_onnx(root / "cnn.onnx", CampaignConfig(seed=SEED), root / "inputs", out_dir=root / "out",
                               db=db, dask=address, dask_batch=10)
    first.run(TRIALS // 2, progress=False)
    assert rows(db) == expected[:TRIALS // 2]
    assert not list(cluster_dir.glob("w*/**/lltfi-builds/*/0-model"))  # same filesystem: used in place

    # The resume, through the CLI, with every worker made to say it does not see the build: it is shipped.
    monkeypatch.setattr(dask_runner, "sees_build", lambda ref: False)
    code = main(["inject", str(root / "cnn.onnx"), "--inputs", str(root / "inputs"), "-o", str(root / "out"),
                 "--db", str(db), "--seed", str(SEED), "--runs", str(TRIALS), "--dask", address,
                 "--dask-batch", "10", "--quiet"])
    assert code == 0
    assert rows(db) == expected
    shipped = list(cluster_dir.glob("w*/**/lltfi-builds/*/0-model"))
    assert shipped and all(os.access(p, os.X_OK) for p in shipped)


def test_a_worker_killed_mid_campaign_loses_and_duplicates_no_trial(cnn, cluster, tmp_path, monkeypatch):
    root, expected = cnn
    address, workers, _ = cluster
    killed = {}
    run = dask_runner.DaskExecutor.run

    def run_and_kill(self, trials):
        """After 30 results, SIGKILL a worker that holds batches of this campaign (running or done but
        not yet fetched)."""
        for count, result in enumerate(run(self, trials)):
            if count == 30:
                with Client(address, timeout=30) as monitor:
                    info = monitor.scheduler_info()["workers"]
                    held = {a: monitor.processing().get(a, ()) + tuple(monitor.has_what().get(a, ()))
                            for a in info}
                    victim = next(a for a, keys in held.items() if any("run_batch" in str(k) for k in keys))
                    name = info[victim]["name"]
                    os.killpg(workers[name].pid, signal.SIGKILL)
                    workers[name].wait()
                    killed["batches"] = sum("run_batch" in str(k) for k in held[victim])
            yield result

    monkeypatch.setattr(dask_runner.DaskExecutor, "run", run_and_kill)
    campaign = Campaign.from_onnx(root / "cnn.onnx", CampaignConfig(seed=SEED), root / "inputs",
                                  out_dir=root / "out", db=tmp_path / "killed.db", dask=address, dask_batch=10)
    summary = campaign.run(TRIALS, progress=False)
    assert killed["batches"] >= 1
    assert campaign.last_trials == TRIALS and summary["trials"] == TRIALS  # each trial counted once
    assert rows(tmp_path / "killed.db") == expected


def test_a_worker_without_the_files_refuses_in_place_and_runs_the_shipped_bytes(cnn, tmp_path, monkeypatch):
    """No cluster: what a worker does with a build it cannot see (BuildMissing, then the shipped bytes
    give the same results as the files in place)."""
    root, expected = cnn
    monkeypatch.setattr(dask_runner, "_cache_root", lambda: tmp_path / "cache")
    build = next((root / "out").glob("**/fi-*/model")).parent
    copy = tmp_path / "copy"
    shutil.copytree(build, copy)
    inputs = copy / "inputs.txt"
    inputs.write_text("".join(f"{root / 'inputs' / f'{i}.npy'}\n" for i in range(2)))
    ref = dask_runner.build_ref(copy / "model", inputs, "walk", 2_000_000)
    bundle = dask_runner.read_bundle(ref)
    config = CampaignConfig(seed=SEED)
    summary = sqlite3.connect(root / "local.db").execute("SELECT value FROM meta WHERE key = 'profile_summary'")
    counts = json.loads(summary.fetchone()[0])["dynamic_instances"]
    trials = [uniform_trial(config, counts, i) for i in range(20)]
    in_place = dask_runner.run_batch(ref, trials, None)
    shutil.rmtree(copy)
    dask_runner._PREPARED.clear()
    with pytest.raises(dask_runner.BuildMissing):
        dask_runner.run_batch(ref, trials, None)
    shipped = dask_runner.run_batch(ref, trials, bundle)
    assert sorted(shipped, key=lambda r: r.trial.id) == sorted(in_place, key=lambda r: r.trial.id)
    assert [r.trial.id for r in shipped if r.faults] and (tmp_path / "cache" / ref.digest).is_dir()
    bad = dict(bundle, **{ref.executable: b"not the model"})
    dask_runner._PREPARED.clear()
    shutil.rmtree(tmp_path / "cache")
    with pytest.raises(RunError, match="does not match its hash"):
        dask_runner.run_batch(ref, trials, bad)


@pytest.mark.slow
def test_a_local_cluster_gives_the_same_rows(cnn, tmp_path):
    """`--dask local`: a LocalCluster of --jobs one-thread workers started and ended by the campaign."""
    root, expected = cnn
    db = tmp_path / "local-cluster.db"
    assert main(["inject", str(root / "cnn.onnx"), "--inputs", str(root / "inputs"), "-o", str(root / "out"),
                 "--db", str(db), "--seed", str(SEED), "--runs", str(TRIALS), "--dask", "local", "-j", "2",
                 "--dask-batch", "25", "--quiet"]) == 0
    assert rows(db) == expected


@pytest.mark.parametrize("address, expected", [("local", "local"), ("tcp://head-node:8786", "tcp://head-node:8786"),
                                               ("node7:8786", "tcp://node7:8786")])
def test_dask_addresses(address, expected):
    assert dask_runner.check_address(address) == expected


@pytest.mark.parametrize("address", ["nowhere", "http://host:8786", "tcp://host:port", "tcp://:8786"])
def test_bad_dask_addresses_are_usage_errors(address, capsys):
    with pytest.raises(UsageError, match="scheduler address"):
        dask_runner.check_address(address)
    assert main(["inject", "missing.onnx", "--dask", address]) == 2
    err = capsys.readouterr().err
    assert "--dask" in err and "Traceback" not in err
