"""Analysis, compression, adaptive depth and export applied to a graph run (karate club)."""

import pytest

from contdepth import data
from contdepth.analysis import analyze_manifestations, compress_run
from contdepth.cli import main
from contdepth.train import TrainConfig, evaluate_adaptive, train

pytest.importorskip("networkx")


@pytest.fixture(scope="module")
def gcde_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("graph") / "gcde"
    config = TrainConfig(model="gcde", model_options={"hidden": 8, "n_basis": 3, "basis": "piecewise_linear"},
                         data="karate", epochs=15, optimizer="adam", lr=0.01, schedule="constant", threads=1,
                         quiet=True, out=str(out))
    return train(config)


def test_convergence_analysis_runs_on_a_graph_ode(gcde_run):
    graph = data.load("karate")
    report = analyze_manifestations(gcde_run.model, graph, schemes=("euler", "rk4"), steps=(2, 4, 8))
    assert report.examples == int(graph.test_mask.sum())  # the test nodes, in one full-graph pass
    rk4 = report.order("rk4").block_orders[0]
    euler = report.order("euler").block_orders[0]
    assert rk4 > 3.0 and 0.7 < euler < 1.5  # a tanh GCN rate with linear theta: the schemes' own orders


def test_compression_and_adaptive_depth_on_a_graph_run(gcde_run, tmp_path):
    report = compress_run(gcde_run.run_dir, 2, out=tmp_path / "small", latency_repeats=3, threads=1)
    assert report.n_basis_after == [2] and report.latency_label == "full graph of"
    assert list(report.latency_before) == [34] and "full graph of 34 nodes" in report.format()
    result = evaluate_adaptive(gcde_run.model, data.load("karate"), 1e-4, 1e-6)
    assert result.evaluations[0] > 0 and 0.0 <= result.accuracy <= 1.0


def test_export_refuses_a_graph_model_with_a_reason(gcde_run, tmp_path, capsys):
    assert main(["export", str(gcde_run.run_dir), "--format", "onnx", "--out", str(tmp_path / "g.onnx")]) == 2
    assert "takes 2 inputs" in capsys.readouterr().err
    assert not (tmp_path / "g.onnx").exists()
