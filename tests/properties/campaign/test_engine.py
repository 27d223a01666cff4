"""The campaign behind ``backprop-oracle run``: records flushed per case, absent devices as
skipped records with their reason, a crashing oracle (a CUDA out-of-memory error included)
recorded as ``oracle_error`` while the run goes on, interruption keeping every finished
case, precision settings in the environment, and ``replay``."""

from __future__ import annotations

import json

import pytest

import backprop_oracle as bo
from backprop_oracle.oracles.base import Oracle
from backprop_oracle.oracles.finite_differences import FiniteDifferences
from backprop_oracle.properties.campaign import engine as campaign
from backprop_oracle.properties.campaign.output import finish
from backprop_oracle.properties.comparison.records import read_records

SMALL = {"max_width": 4, "max_batch": 3, "max_layers": 2, "max_image": 5}


def tiny(**kw) -> campaign.RunConfig:
    base = dict(families=("mlp", "softmax"), oracles=("fd",), cases=2, dtypes=("float64",),
                constraints=SMALL)
    return campaign.RunConfig(**{**base, **kw})


class OutOfMemoryOnce(Oracle):
    """Raises what PyTorch raises when CUDA memory runs out, on the first case only."""

    name, mode = "flaky", "reverse"

    def __init__(self) -> None:
        self.calls = 0

    def run(self, case: bo.Case, device: str = "cpu", dtype: str | None = None) -> bo.Result:
        self.calls += 1
        if self.calls == 1:
            torch = pytest.importorskip("torch")
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return bo.backprop(case)


def test_run_writes_records_report_and_environment(tmp_path) -> None:
    assert campaign.run(tiny(), tmp_path) == 4
    records = list(read_records(tmp_path / "records.jsonl"))
    assert {r["verdict"] for r in records} <= {"agree", "kink"}
    assert len({r["case_id"] for r in records}) == 4
    summary = finish(tmp_path)
    assert summary.exit_code == 0
    env = json.loads((tmp_path / "environment.json").read_text())
    assert env["seed"] == "0" and "numpy" in env
    for r in records:
        assert (tmp_path / "cases" / f"{r['case_id']}.npz").is_file()
        assert r["replay"].startswith(f"backprop-oracle replay {r['case_id']}")


def test_absent_devices_are_skipped_records_with_their_reason(tmp_path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    from backprop_oracle.oracles.jax_oracle import JaxOracle
    from backprop_oracle.oracles.torch_oracle import TorchOracle

    absent = [d for d, o in (("cuda", TorchOracle()), ("gpu", JaxOracle()))
              if o.available(d) is not None]
    if not absent:
        pytest.skip("both GPUs are present: nothing is skipped")
    config = tiny(oracles=("torch", "jax"), devices=("cpu", "cuda", "gpu"), cases=1,
                  modes=("reverse",), precisions=("strict", "default"))
    campaign.run(config, tmp_path)
    skips = [r for r in read_records(tmp_path / "records.jsonl") if r["quantity"] == "skip"]
    for device in absent:
        mine = [r for r in skips if r["device"] == device]
        # every framework that does not drive this device, and the one that does but cannot
        assert mine and all(r["verdict"] == "unsupported" and r["detail"] for r in mine)
        assert {r["precision"] for r in mine if r["oracle"] in ("torch", "jax")} == \
            {"strict", "default"}
    summary = finish(tmp_path)
    assert summary.skipped, "the report lists skipped cells with their reason"
    html = (tmp_path / "report.html").read_text()
    assert "skipped" in html and absent[0] in html


def test_precision_switches_are_recorded_per_oracle(tmp_path) -> None:
    pytest.importorskip("torch")
    config = tiny(oracles=("torch",), modes=("reverse",), precisions=("strict", "default"),
                  cases=1)
    campaign.run(config, tmp_path)
    env = json.loads((tmp_path / "environment.json").read_text())
    strict = json.loads(env["torch/reverse/strict on cpu"])
    default = json.loads(env["torch/reverse/default on cpu"])
    assert strict["precision"] == "strict" and default["precision"] == "default"
    assert strict["switches"]["deterministic_algorithms"] is True
    precisions = {r["precision"] for r in read_records(tmp_path / "records.jsonl")}
    assert precisions == {"strict", "default"}


def test_an_oracle_that_runs_out_of_memory_is_recorded_and_the_run_goes_on(
        tmp_path, monkeypatch) -> None:
    flaky = OutOfMemoryOnce()
    monkeypatch.setattr(campaign, "make_oracles", lambda config: [flaky, FiniteDifferences()])
    assert campaign.run(tiny(), tmp_path) == 4
    records = list(read_records(tmp_path / "records.jsonl"))
    errors = [r for r in records if r["verdict"] == "oracle_error"]
    assert len(errors) == 1 and errors[0]["oracle"] == "flaky"
    assert "OutOfMemoryError" in errors[0]["detail"]["type"]
    assert "Tried to allocate" in errors[0]["detail"]["message"]
    assert flaky.calls == 4, "every later case still ran"
    assert len({r["case_id"] for r in records if r["oracle"] == "fd"}) == 4


def test_interruption_keeps_finished_cases_and_marks_the_report(tmp_path) -> None:
    def stop_after_two(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        campaign.run(tiny(), tmp_path, progress=stop_after_two)
    summary = finish(tmp_path, interrupted=True)
    assert len(summary.cases) == 2
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["interrupted"] is True
    assert "interrupted" in (tmp_path / "report.html").read_text()


def test_replay_reruns_a_recorded_case_with_the_same_oracles(tmp_path) -> None:
    campaign.run(tiny(cases=1), tmp_path)
    first = next(read_records(tmp_path / "records.jsonl"))
    again = campaign.replay(first["case_id"], tmp_path)
    assert {r.case_id for r in again} == {first["case_id"]}
    assert {r.oracle for r in again} == {"fd"}
    with pytest.raises(FileNotFoundError, match="no saved case"):
        campaign.replay("0123456789abcdef", tmp_path)
    with pytest.raises(FileNotFoundError, match="holds no run.json"):
        campaign.replay(first["case_id"], tmp_path / "nowhere")


def test_the_worker_keeps_every_oracles_values_at_every_worst_element(tmp_path) -> None:
    """``run_case`` in a worker process gives the records ``run_case`` gives in this one,
    ``detail["values"]`` included (the worker keeps the case's results between oracles)."""
    from backprop_oracle.properties.campaign.worker import Worker

    case = bo.cases("mlp", 1, seed=2, dtypes=["float64"], **SMALL)[0]
    runnable = [(FiniteDifferences(), "cpu"), (FiniteDifferences(method="fd"), "cpu")]
    here = campaign.run_case(case, runnable, tmp_path)
    with Worker(timeout=120) as worker:
        there = campaign.run_case(case, runnable, tmp_path, worker)
    assert [r.detail.get("values") for r in here] == [r.detail.get("values") for r in there]
    tensors = [r for r in here if r.quantity in ("grad", "delta", "loss")]
    assert tensors and all(r.detail.get("values") for r in tensors)


def test_config_names_what_is_unknown() -> None:
    with pytest.raises(ValueError, match=r"--devices: unknown \['tpu'\]"):
        campaign.RunConfig(devices=("tpu",))
    with pytest.raises(ValueError, match="--cases must be >= 0"):
        campaign.RunConfig(cases=-1)
