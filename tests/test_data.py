"""MBXP loading and splits, the intermediate-task registry, the `all` mixture, and `make data`."""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
from collections import Counter
from pathlib import Path

import pytest

from itt_sweep.data import fetch, mbxp, tasks
from itt_sweep.data.mbxp import LANGUAGES, load_problems, load_sample_completions, split_of
from itt_sweep.data.paths import DataNotFoundError, data_dir
from itt_sweep.data.tasks import ALL, INTERMEDIATE_TASKS, NONE, load_task_examples, task_names, task_version

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = Path(os.environ.get("ITT_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")
    if not (path / "mbxp" / "metadata.json").is_file():
        pytest.skip(f"no data at {path}: run `make data` or set ITT_DATA_DIR")
    return path.resolve()


# --- MBXP ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_language_loads_sorted_problems_of_that_language(shared_data, language):
    problems = load_problems(language, data_dir=shared_data)
    assert len(problems) > 800
    assert {p.language for p in problems} == {language}
    assert [p.number for p in problems] == sorted({p.number for p in problems})
    assert all(p.task_id.endswith(f"/{p.number}") and p.prompt and p.test and p.entry_point for p in problems)


def test_python_splits_have_mbpp_sizes(shared_data):
    sizes = {split: len(load_problems("python", split, shared_data)) for split in mbxp.SPLITS}
    assert sizes == {"prompt": 10, "test": 500, "validation": 90, "train": 374}


def test_train_split_never_contains_test_problems(shared_data):
    for language in LANGUAGES:
        train = {p.number for p in load_problems(language, "train", shared_data)}
        test = {p.number for p in load_problems(language, "test", shared_data)}
        validation = {p.number for p in load_problems(language, "validation", shared_data)}
        assert train and test and validation, language
        assert not train & test and not train & validation and not test & validation, language
        assert min(train) >= 601 and max(test) <= 510 and min(test) >= 11, language


def test_split_of_follows_mbpp_task_numbers():
    cases = {1: "prompt", 10: "prompt", 11: "test", 510: "test", 511: "validation", 600: "validation"}
    cases |= {601: "train", 974: "train"}
    assert {number: split_of(number) for number in cases} == cases
    for outside in (0, 975):
        with pytest.raises(ValueError, match="1..974"):
            split_of(outside)


def test_limit_takes_the_first_problems_of_the_split(shared_data):
    first = load_problems("java", "train", shared_data, limit=5)
    assert [p.number for p in first] == [p.number for p in load_problems("java", "train", shared_data)[:5]]
    assert first[0].number >= 601
    assert load_problems("java", "test", shared_data, limit=0) == []


def test_unknown_language_names_the_allowed_languages(shared_data):
    with pytest.raises(ValueError, match="allowed: python, java, javascript") as error:
        load_problems("rust", data_dir=shared_data)
    assert "swift" in str(error.value)
    with pytest.raises(ValueError, match="swift"):
        load_sample_completions("cobol", shared_data)


def test_unknown_split_names_the_allowed_splits(shared_data):
    with pytest.raises(ValueError, match="prompt, test, validation, train"):
        load_problems("python", "dev", shared_data)


def test_canonical_solutions_are_none_where_the_dataset_has_none(shared_data):
    for language in ("go", "perl", "scala", "swift"):
        assert all(p.canonical_solution is None for p in load_problems(language, data_dir=shared_data))
    python = load_problems("python", data_dir=shared_data)
    assert all(p.canonical_solution and p.canonical_solution.strip() for p in python)
    java = load_problems("java", data_dir=shared_data)
    assert 0 < sum(p.canonical_solution is None for p in java) < len(java)


def test_sample_completions_are_keyed_by_the_languages_task_ids(shared_data):
    samples = load_sample_completions("go", shared_data)
    ids = {p.task_id for p in load_problems("go", data_dir=shared_data)}
    assert samples and set(samples) <= ids
    assert all(isinstance(c, str) for completions in samples.values() for c in completions)


def test_changing_a_returned_list_does_not_change_the_next_load(shared_data):
    problems = load_problems("ruby", data_dir=shared_data)
    count = len(problems)
    problems.clear()
    samples = load_sample_completions("ruby", shared_data)
    next(iter(samples.values())).append("junk")
    assert len(load_problems("ruby", data_dir=shared_data)) == count
    assert "junk" not in next(iter(load_sample_completions("ruby", shared_data).values()))


def test_repeated_loads_reuse_the_parsed_file(shared_data):
    load_problems("php", data_dir=shared_data)
    hits = mbxp._parse_problems.cache_info().hits
    load_problems("php", "train", shared_data)
    assert mbxp._parse_problems.cache_info().hits == hits + 1


# --- intermediate tasks -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(INTERMEDIATE_TASKS))
def test_every_task_loads_train_and_validation_of_its_kind(shared_data, name):
    task = INTERMEDIATE_TASKS[name]
    for split in ("train", "validation"):
        examples = load_task_examples(name, split, shared_data)
        assert len(examples) > 100, (name, split)
        assert {ex.kind for ex in examples} == {task.kind}
        assert all(ex.source and ex.target and ex.source_lang and ex.target_lang for ex in examples)
        assert len({ex.id for ex in examples}) == len(examples)


def test_task_names_are_none_then_the_seven_tasks_then_the_control_then_all():
    names = task_names()
    assert names[0] == NONE and names[-1] == ALL and names[-2] == tasks.CONTROL
    assert names[1:-2] == sorted(INTERMEDIATE_TASKS) and len(names) == 10
    assert all(task.folder == task.name for task in INTERMEDIATE_TASKS.values())


def test_task_limit_takes_a_fixed_sample_spread_over_the_file(shared_data):
    """CODE-NN's file holds all its C# first: the first 300 lines would be C# only."""
    everything = load_task_examples("codenn_code2title", "train", shared_data)
    examples = load_task_examples("codenn_code2title", "train", shared_data, limit=300)
    assert len(examples) == 300 and len({ex.id for ex in examples}) == 300
    assert {ex.source_lang for ex in everything[:300]} == {"csharp"}
    assert {ex.source_lang for ex in examples} == {"csharp", "sql", "python"}
    position = {ex.id: index for index, ex in enumerate(everything)}
    assert [position[ex.id] for ex in examples] == sorted(position[ex.id] for ex in examples)  # file order
    assert examples == load_task_examples("codenn_code2title", "train", shared_data, limit=300, seed=7)  # any seed
    assert load_task_examples("codenn_code2title", "train", shared_data, limit=10**9) == everything


def test_stage_keys_change_with_the_data_files_not_only_the_task_version(shared_data, tmp_path):
    from itt_sweep.config import Cell
    from itt_sweep.sweep.trial import data_fingerprint

    copy = tmp_path / "data"
    for folder in ("conala_nl2python", "mbxp"):
        shutil.copytree(shared_data / folder, copy / folder)
    cell = Cell("conala_nl2python", "python", 0)
    before = (data_fingerprint(cell, True, copy), data_fingerprint(cell, False, copy))
    assert before == (data_fingerprint(cell, True, shared_data), data_fingerprint(cell, False, shared_data))
    with (copy / "conala_nl2python" / "train.jsonl").open("a") as f:
        f.write("\n")
    assert data_fingerprint(cell, True, copy) != before[0]
    assert data_fingerprint(cell, False, copy) == before[1]


def test_the_control_trains_stage_1_on_the_source_languages_stage_2_pairs(shared_data, tmp_path):
    """Compute-matched: the same pairs stage 2 trains on, for stage 1's steps; keyed by the source language."""
    from itt_sweep.config import Cell, TrainingSpec
    from itt_sweep.train.job import StageData, StageJob
    from itt_sweep.train.stage_data import stage_pairs, target_pairs

    def job(kind: str, language: str) -> StageJob:
        data = StageData(kind=kind, task=tasks.CONTROL if kind == "intermediate" else None, source_language=language,
                         train_limit=20, val_limit=5, data_dir=str(shared_data))
        return StageJob.model_validate({"key": "k", "stage_name": kind, "init_model": {"name": "m"}, "seed": 0,
                                        "bf16": False, "stage": {"steps": 20}, "training": TrainingSpec(),
                                        "data": data})

    control, target = stage_pairs(job("intermediate", "java")), stage_pairs(job("target", "java"))
    assert control == target and control[0] == target_pairs("java", "train", shared_data, 20)
    assert tasks.task_files(tasks.CONTROL, shared_data, "java") == [mbxp.problems_file("java", shared_data)]
    with pytest.raises(ValueError, match="MBPP train problems"):
        load_task_examples(tasks.CONTROL, "train", shared_data)
    from itt_sweep.sweep.trial import data_fingerprint

    keys = {lang: data_fingerprint(Cell(tasks.CONTROL, lang, 0), True, shared_data) for lang in ("python", "java")}
    assert keys["python"] != keys["java"]  # one control stage 1 per source language, never shared


def test_none_has_no_examples(shared_data):
    assert load_task_examples(NONE, "train", shared_data, limit=10) == []


def test_unknown_task_lists_the_allowed_names(shared_data):
    with pytest.raises(ValueError, match="allowed: none, codenn_code2title, .*, all"):
        load_task_examples("squad", "train", shared_data)
    with pytest.raises(ValueError, match="allowed: none"):
        task_version("squad")


def test_a_split_the_task_lacks_names_the_splits_it_has(shared_data):
    with pytest.raises(ValueError, match="has train, validation"):
        load_task_examples("codenn_code2title", "test", shared_data)


def test_all_mixture_draws_from_every_task_and_is_deterministic_per_seed(shared_data):
    mixture = load_task_examples(ALL, "train", shared_data, limit=700, seed=3)
    assert len(mixture) == 700
    per_kind = Counter(ex.kind for ex in mixture)
    assert set(per_kind) == set(tasks.KINDS)
    first_ids = {
        name: {ex.id for ex in INTERMEDIATE_TASKS[name].load("train", shared_data, 100)}
        for name in INTERMEDIATE_TASKS
    }
    assert all(first_ids[name] <= {ex.id for ex in mixture} for name in INTERMEDIATE_TASKS)
    assert load_task_examples(ALL, "train", shared_data, limit=700, seed=3) == mixture
    other = load_task_examples(ALL, "train", shared_data, limit=700, seed=4)
    assert other != mixture and sorted(ex.id for ex in other) == sorted(ex.id for ex in mixture)


def test_all_without_limit_holds_every_example_of_every_task(shared_data):
    mixture = load_task_examples(ALL, "validation", shared_data)
    expected = sum(len(task.load("validation", shared_data)) for task in INTERMEDIATE_TASKS.values())
    assert len(mixture) == expected


def test_all_on_test_uses_only_the_tasks_with_a_test_split(shared_data):
    ids = {ex.id.split("-")[0] for ex in load_task_examples(ALL, "test", shared_data, limit=40)}
    assert ids == {"codexglue_java_cs", "conala", "rosetta", "transcoder_gfg"}


def test_mixture_quotas_give_small_tasks_everything_and_share_the_rest():
    sizes = {"small": 10, "medium": 100, "large": 1000}
    assert tasks.mixture_quotas(sizes, 500) == {"small": 10, "medium": 100, "large": 390}
    assert tasks.mixture_quotas(sizes, 90) == {"small": 10, "medium": 40, "large": 40}
    assert tasks.mixture_quotas(sizes, 7) == {"small": 2, "medium": 2, "large": 3}
    assert tasks.mixture_quotas(sizes, 10**6) == sizes
    assert tasks.mixture_quotas(sizes, None) == sizes


def test_task_versions_are_distinct_and_all_names_every_part():
    versions = [task_version(name) for name in task_names()]
    assert len(set(versions)) == len(versions)
    assert all(INTERMEDIATE_TASKS[name].version in task_version(ALL) for name in INTERMEDIATE_TASKS)


# --- data directory and fetch -------------------------------------------------------------------


def test_missing_data_dir_says_to_run_make_data(tmp_path, monkeypatch):
    with pytest.raises(DataNotFoundError, match="make data"):
        data_dir(tmp_path / "nowhere")
    monkeypatch.setenv("ITT_DATA_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(DataNotFoundError, match="ITT_DATA_DIR"):
        load_problems("python")
    monkeypatch.delenv("ITT_DATA_DIR")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataNotFoundError, match="make data"):
        load_task_examples("conala_nl2python", "train")


def test_missing_file_in_data_dir_says_to_run_make_data(tmp_path):
    (tmp_path / "mbxp").mkdir()
    (tmp_path / "mbxp" / "metadata.json").write_text('{"python": "mbpp_release_v1.jsonl"}')
    with pytest.raises(DataNotFoundError, match="make data"):
        load_problems("python", data_dir=tmp_path)
    with pytest.raises(DataNotFoundError, match="make data"):
        load_task_examples("concode_nl2java", "train", tmp_path)


def test_data_dir_comes_from_the_environment(shared_data, monkeypatch):
    monkeypatch.setenv("ITT_DATA_DIR", str(shared_data))
    assert data_dir() == shared_data
    assert len(load_problems("kotlin", "prompt")) == 10


@pytest.fixture(scope="module")
def fetched(shared_data, tmp_path_factory):
    dest = tmp_path_factory.mktemp("fetched") / "data"
    code = fetch.main(["--mirror", str(shared_data), "--dest", str(dest)])
    assert code == 0
    return dest


def test_fetch_from_mirror_produces_a_loadable_data_dir(shared_data, fetched, capsys):
    for language in LANGUAGES:
        assert load_problems(language, data_dir=fetched) == load_problems(language, data_dir=shared_data)
        assert load_sample_completions(language, fetched) == load_sample_completions(language, shared_data)
    for name in INTERMEDIATE_TASKS:
        assert load_task_examples(name, "validation", fetched) == load_task_examples(
            name, "validation", shared_data
        )


def test_fetch_again_copies_nothing_and_prints_a_line_per_folder(shared_data, fetched, capsys):
    assert fetch.main(["--mirror", str(shared_data), "--dest", str(fetched)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == fetch.folders()
    assert all("up to date" in line for line in lines)


def test_fetch_into_the_mirror_itself_leaves_it_alone(shared_data, capsys):
    assert fetch.main(["--mirror", str(shared_data), "--dest", str(shared_data)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(fetch.folders()) and all("already in place" in line for line in lines)


def test_fetched_files_are_writable_even_from_a_read_only_mirror(fetched):
    files = [path for path in fetched.rglob("*.jsonl")]
    assert files and all(path.stat().st_mode & stat.S_IWUSR for path in files)


def test_fetch_from_a_mirror_without_the_folders_fails_naming_them(tmp_path, capsys):
    (tmp_path / "mirror" / "mbxp").mkdir(parents=True)
    assert fetch.main(["--mirror", str(tmp_path / "mirror"), "--dest", str(tmp_path / "dest")]) == 1
    assert "conala_nl2python" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("datasets") is not None, reason="would reach the hub")
def test_fetch_from_the_hub_without_datasets_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.delenv("ITT_DATA_MIRROR", raising=False)
    with pytest.raises(SystemExit, match=r"itt-sweep\[hub\]"):
        fetch.main(["--dest", str(tmp_path)])


def test_hub_rows_map_onto_the_local_record_schema():
    conala = INTERMEDIATE_TASKS["conala_nl2python"]
    rows = [{"question_id": q, "intent": f"intent {q}", "rewritten_intent": None if q % 2 else f"re {q}",
             "snippet": f"x = {q}"} for q in range(200)]  # fmt: skip
    local = fetch.convert_task(conala, {"train": rows, "test": rows[:5]})
    assert len(local["train"]) + len(local["validation"]) == 200 and len(local["test"]) == 5
    assert 5 <= len(local["validation"]) <= 40
    by_target = {record["target"]: record for split in local.values() for record in split}
    assert by_target["x = 2"]["source"] == "re 2" and by_target["x = 3"]["source"] == "intent 3"
    assert by_target["x = 3"]["source_lang"] == "en" and by_target["x = 3"]["kind"] == "nl_to_code"
    assert fetch.convert_task(conala, {"train": rows, "test": []}) == {**local, "test": []}


def test_hub_rows_outside_the_mbxp_languages_are_dropped():
    rosetta = INTERMEDIATE_TASKS["rosetta_code_nl2code"]
    rows = [{"task_name": "Sum", "task_description": "Sum it.", "language_name": name, "code": "code"}
            for name in ("C#", "C++", "Python", "Haskell", "COBOL")]  # fmt: skip
    local = fetch.convert_task(rosetta, {"train": rows})
    records = [record for split in local.values() for record in split]
    assert sorted(record["target_lang"] for record in records) == ["cpp", "csharp", "python"]
    assert len([split for split, items in local.items() if items]) == 1  # one task stays in one split
