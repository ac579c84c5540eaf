"""Which engine runs a crawl: in process for a small one, the Prefect flow on Ray otherwise."""

from curate.config import Resources
from curate.steps import IN_PROCESS_MAX, engine_for


def test_auto_runs_small_crawls_in_process_unless_a_cluster_or_gpus_are_named(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    res = Resources()
    assert engine_for("auto", 20, res)[0] == "local"
    assert engine_for("auto", IN_PROCESS_MAX, res)[0] == "local"
    assert engine_for("auto", IN_PROCESS_MAX + 1, res)[0] == "flow"
    assert engine_for("flow", 20, res) == ("flow", "--engine flow")
    assert engine_for("local", 10**6, res)[0] == "local"  # asked for: a big crawl in one process
    assert engine_for("auto", 20, Resources(gpus_per_worker=1.0))[0] == "flow"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    engine, why = engine_for("auto", 20, res)
    assert engine == "flow" and "RAY_ADDRESS" in why
