"""The per-cell search: every cell gets its samples from its own seeded study, and the state survives a restore."""

from __future__ import annotations

import copy

import pytest
from ray.tune.search import Searcher

from itt_sweep.config import parse_sweep
from itt_sweep.sweep.search import CellSearcher


@pytest.fixture()
def searched(smoke_raw):
    raw = copy.deepcopy(smoke_raw)
    raw["matrix"]["seeds"] = [0, 1]
    raw["search"] = {"num_samples": 3, "scheduler": "asha",
                     "space": {"target.learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
                               "target.warmup_steps": {"type": "choice", "values": [1, 2]}}}
    return parse_sweep(raw)


def drain(searcher: CellSearcher, start: int = 0) -> list[dict]:
    configs, i = [], start
    while (config := searcher.suggest(f"t{i}")) is not Searcher.FINISHED:
        configs.append(config)
        searcher.on_trial_complete(f"t{i}", {"target_val_loss": 1.0 + i / 100, "target_step": 30})
        i += 1
    return configs


def test_every_cell_gets_its_samples_with_stable_keys(searched):
    configs = drain(CellSearcher(searched))
    assert len(configs) == 8 * 3
    keys = [c["trial_key"] for c in configs]
    assert len(set(keys)) == len(keys)
    assert keys[:3] == ["none__python__s0__n0", "none__python__s0__n1", "none__python__s0__n2"]
    for c in configs:
        assert 1e-4 <= c["hp"]["target.learning_rate"] <= 1e-2 and c["hp"]["target.warmup_steps"] in (1, 2)


def test_studies_are_seeded_per_cell(searched):
    first, second = drain(CellSearcher(searched)), drain(CellSearcher(searched))
    assert [c["hp"] for c in first] == [c["hp"] for c in second]
    by_cell = {c["trial_key"].rsplit("__", 1)[0]: c["hp"] for c in first if c["sample"] == 0}
    assert len({round(hp["target.learning_rate"], 12) for hp in by_cell.values()}) > 1


def test_restored_searcher_continues_where_it_stopped(searched, tmp_path):
    searcher = CellSearcher(searched)
    head = [searcher.suggest(f"t{i}") for i in range(5)]
    for i in range(4):
        searcher.on_trial_complete(f"t{i}", {"target_val_loss": 2.0, "target_step": 30})
    searcher.save(str(tmp_path / "searcher.pkl"))
    restored = CellSearcher(searched)
    restored.restore(str(tmp_path / "searcher.pkl"))
    rest = drain(restored, start=5)
    assert len(head) + len(rest) == 24
    assert len({c["trial_key"] for c in head + rest}) == 24


def test_asha_stopped_trial_is_pruned_in_its_study(searched):
    searcher = CellSearcher(searched)
    searcher.suggest("t0")
    searcher.on_trial_complete("t0", {"target_val_loss": 5.0, "target_step": 10})
    study = searcher.studies["none__python__s0"]
    assert study.trials[0].state.name == "PRUNED"


def test_restore_refuses_a_changed_matrix(searched, smoke_raw, tmp_path):
    searcher = CellSearcher(searched)
    searcher.save(str(tmp_path / "s.pkl"))
    other = CellSearcher(parse_sweep(smoke_raw))
    with pytest.raises(ValueError, match="matrix changed"):
        other.restore(str(tmp_path / "s.pkl"))
