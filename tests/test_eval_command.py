"""`itt-sweep eval`: a model or a samples file scored through stage 3's own code, as a user runs it."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from itt_sweep.cli import main
from itt_sweep.data.mbxp import load_problems
from itt_sweep.evaluate.passk import pass_at_k
from tests.procs import kill_tree

WRONG = {  # compiles, runs, returns the wrong answer
    "python": "    return None\n",
    "javascript": "  return null;\n}\n",
    "cpp": "    return string(\"?\");\n}\n",
    "java": "        return \"?\";\n    }\n}\n",
}
BROKEN = {"python": "    return s[\n", "javascript": "  return ((;\n}\n", "cpp": "    return 0\n}\n",
          "java": "        return 1;\n    }\n}\n"}
LOOP = {"python": "    while True:\n        pass\n", "javascript": "  while (true) {}\n}\n",
        "cpp": "    while (true) {}\n}\n", "java": "        while (true) {}\n    }\n}\n"}
FORK = {"python": "    import os\n    while True:\n        os.fork()\n"}  # a fork bomb: the sandbox caps it
EXPECTED = {"correct": "passed", "wrong": "failed", "broken": "compile_error", "loop": "timeout",
            "fork": {"runtime_error", "timeout"}}  # the sandbox caps processes: fork fails


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def first_problem(language: str, data_dir: Path):
    return next(p for p in load_problems(language, split="test", data_dir=data_dir) if p.canonical_solution)


def run_cli(*args: str) -> int:
    return main(["eval", *args])


@pytest.mark.slow
def test_a_samples_file_gets_the_right_verdict_for_correct_wrong_broken_and_hostile_code(tmp_path, data_dir,
                                                                                         capsys):
    """~1 min: 4 languages, real compilers in the sandbox; every line comes back with mxeval's fields."""
    rows, kinds = [], []
    for language in ("python", "javascript", "cpp", "java"):
        problem = first_problem(language, data_dir)
        for kind, table in (("correct", None), ("wrong", WRONG), ("broken", BROKEN), ("loop", LOOP),
                            ("fork", FORK)):
            if table is not None and language not in table:
                continue
            completion = problem.canonical_solution if table is None else table[language]
            rows.append({"task_id": problem.task_id, "completion": completion, "my_field": kind})
            kinds.append(kind)
    samples = write_jsonl(tmp_path / "samples.jsonl", rows)
    assert run_cli("--completions", str(samples), "--out", str(tmp_path / "out"), "--data-dir", str(data_dir),
                   "--timeout-s", "3") == 0
    results = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl_results.jsonl").read_text()
               .splitlines()]
    assert [r["my_field"] for r in results] == kinds  # every input line, in order, with its own fields
    for row, kind in zip(results, kinds, strict=True):
        expected = EXPECTED[kind]
        status = row["result"].removeprefix("failed: ") if row["result"] != "timed out" else "timeout"
        assert status in expected if isinstance(expected, set) else status == expected, (row["language"], kind, row)
        assert row["passed"] == (kind == "correct")
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())["languages"]
    assert metrics["python"]["pass_at_1"] == pytest.approx(1 / 5) and metrics["cpp"]["pass_at_1"] == 0.25
    assert "pass_at_10" not in metrics["python"]  # k above the samples a task has: not reported
    assert "python" in capsys.readouterr().out


def test_a_completion_that_exits_before_the_tests_is_not_a_pass(tmp_path, data_dir):
    problem = first_problem("python", data_dir)
    samples = write_jsonl(tmp_path / "s.jsonl", [{"task_id": problem.task_id,
                                                  "completion": "    import sys\n    sys.exit(0)\n"}])
    assert run_cli("--completions", str(samples), "--out", str(tmp_path / "out"), "--data-dir", str(data_dir)) == 0
    [row] = [json.loads(line) for line in (tmp_path / "out" / "s.jsonl_results.jsonl").read_text().splitlines()]
    assert not row["passed"]


def test_pass_at_k_of_a_samples_file_is_chen_et_al_s_estimator(tmp_path, data_dir):
    """Two tasks x 5 samples, 2 and 0 correct: pass@1 = (2/5 + 0) / 2; pass@2 = (1 - C(3,2)/C(5,2)) / 2."""
    first, second = load_problems("python", split="test", data_dir=data_dir)[:2]
    rows = [{"task_id": first.task_id, "completion": first.canonical_solution if i < 2 else WRONG["python"]}
            for i in range(5)] + [{"task_id": second.task_id, "completion": WRONG["python"]} for _ in range(5)]
    samples = write_jsonl(tmp_path / "samples.jsonl", rows)
    assert run_cli("--completions", str(samples), "--out", str(tmp_path / "out"), "--data-dir", str(data_dir),
                   "--k", "1,2,5,10") == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())["languages"]["python"]
    assert metrics["pass_at_1"] == pytest.approx(0.2)
    assert metrics["pass_at_2"] == pytest.approx((1 - 3 / 10) / 2) == pytest.approx(pass_at_k(5, 2, 2) / 2)
    assert metrics["pass_at_5"] == pytest.approx(0.5)
    assert "pass_at_10" not in metrics and metrics["n_samples"] == 5


def test_a_samples_file_with_bad_lines_is_refused_whole_and_nothing_is_written(tmp_path, data_dir, capsys):
    good = {"task_id": first_problem("python", data_dir).task_id, "completion": "    return 1\n"}
    samples = write_jsonl(tmp_path / "bad.jsonl", [
        good, "{not json", {"task_id": "MBPP/11"}, {"task_id": "MBPP/99999", "completion": ""},
        {"task_id": "MBPP/11", "completion": "", "language": "cobol"},
        {"task_id": "MBPP/11", "completion": "", "language": "java"}, good])
    out = tmp_path / "out"
    assert run_cli("--completions", str(samples), "--out", str(out), "--data-dir", str(data_dir)) == 2
    err = capsys.readouterr().err
    assert "nothing was scored or written" in err
    for expected in ("malformed: 2 line(s): line 2 (not JSON", "line 3 (no string completion)",
                     "unknown task id: 1 line(s): line 4 ('MBPP/99999')", "unknown language: 1 line(s): line 5",
                     "language does not match the task: 1 line(s): line 6"):
        assert expected in err, err
    assert not out.exists()


def test_a_samples_file_against_a_problems_file_with_its_own_task_ids(tmp_path, data_dir):
    """Any dataset in MBXP's format: ids with no MBPP number, and nothing read from MBXP."""
    problem = first_problem("python", data_dir)
    mine = {"task_id": "MyEval/remove-occurrences", "prompt": problem.prompt, "test": problem.test,
            "entry_point": problem.entry_point, "language": "python"}
    problems = write_jsonl(tmp_path / "problems.jsonl", [mine])
    samples = write_jsonl(tmp_path / "samples.jsonl", [{"task_id": mine["task_id"],
                                                        "completion": problem.canonical_solution}])
    assert run_cli("--completions", str(samples), "--problems", str(problems), "--out", str(tmp_path / "out")) == 0
    [row] = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl_results.jsonl").read_text()
             .splitlines()]
    assert row["passed"] and row["result"] == "passed"


def test_a_broken_problems_file_is_refused_naming_its_lines(tmp_path, capsys):
    problems = write_jsonl(tmp_path / "problems.jsonl", [{"task_id": "a", "prompt": "x"}, "[]"])
    assert run_cli("--model", "unused", "--problems", str(problems), "--out", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "line 1: no string field test, entry_point, language" in err and "line 2: not a JSON object" in err


def test_sampling_flags_are_checked_like_a_sweep_file(tmp_path, capsys):
    assert run_cli("--model", "unused", "--num-samples", "4", "--out", str(tmp_path / "o")) == 2
    assert "needs evaluation.temperature > 0" in capsys.readouterr().err
    assert run_cli("--model", "unused", "--num-samples", "4", "--temperature", "0.8", "--k", "1,10",
                   "--out", str(tmp_path / "o")) == 2
    assert "k=10 needs evaluation.num_samples >= 10" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, data_dir) -> Path:
    """A random 2-layer Llama with a byte-level BPE trained on MBXP prompts, saved as a user's model dir."""
    corpus = [p.prompt + (p.canonical_solution or "") for lang in ("python", "javascript", "java")
              for p in load_problems(lang, split="train", data_dir=data_dir)[:40]]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=2000, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=2048, eos_token_id=tokenizer.eos_token_id)
    directory = tmp_path_factory.mktemp("tiny-model")
    transformers.LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.mark.slow
def test_eval_of_a_model_with_sampling_writes_samples_pass_at_k_and_one_mlflow_run(tiny_model_dir, tmp_path,
                                                                                   data_dir):
    from mlflow.tracking import MlflowClient

    out, uri = tmp_path / "out", f"sqlite:///{tmp_path}/mlflow.db"
    assert run_cli("--model", str(tiny_model_dir), "--languages", "python,javascript", "--problems", "3",
                   "--num-samples", "3", "--temperature", "0.8", "--k", "1,2", "--max-new-tokens", "12",
                   "--out", str(out), "--data-dir", str(data_dir), "--reference-cache", str(tmp_path / "refs"),
                   "--tracking-uri", uri) == 0
    summary = json.loads((out / "metrics.json").read_text())  # strict JSON: NaN would not load here
    json.loads((out / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in metrics.json"))
    for language in ("python", "javascript"):
        rows = [json.loads(line) for line in (out / f"{language}.jsonl").read_text().splitlines()]
        assert len(rows) == 9 and sorted({r["sample"] for r in rows}) == [0, 1, 2]
        assert {"task_id", "completion", "status", "compile_s", "run_s", "stderr"} <= set(rows[0])
        assert len({r["completion"] for r in rows}) > 1  # sampled, not one greedy answer repeated
        metrics = summary["languages"][language]
        assert {"pass_at_1", "pass_at_2", "compile_rate", "ref_nll"} <= set(metrics) and metrics["n_samples"] == 3
    [run] = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("itt-sweep/eval")
                                           .experiment_id])
    assert "eval/python/pass_at_2" in run.data.metrics and run.data.params["num_samples"] == "3"
    assert math.isfinite(run.data.metrics["eval/javascript/ref_nll"])


@pytest.mark.slow
def test_an_interrupted_eval_continues_where_it_stopped_and_says_so(tiny_model_dir, tmp_path, data_dir):
    """SIGKILL once python is scored (kotlinc is slow, so kotlin is still executing), rerun: the finished
    language is kept as it is, no saved generation is made again."""
    out = tmp_path / "out"
    args = [sys.executable, "-m", "itt_sweep.cli", "eval", "--model", str(tiny_model_dir), "--languages",
            "python,java,kotlin", "--problems", "3", "--max-new-tokens", "12", "--out", str(out), "--data-dir",
            str(data_dir), "--reference-cache", str(tmp_path / "refs")]
    log = (tmp_path / "eval.log").open("ab")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    deadline = time.monotonic() + 300
    while not (out / "stage3" / "python.json").exists():
        assert proc.poll() is None, (tmp_path / "eval.log").read_text()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    kill_tree(proc.pid)
    proc.wait()
    assert not (out / "metrics.json").exists(), "finished before the kill: nothing to resume"
    python_mtime = (out / "stage3" / "python.json").stat().st_mtime_ns
    again = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming in {out}: finished languages kept: python" in again.stderr
    ledger = [json.loads(line)["language"] for line in (out / "stage3" / "generation_ledger.jsonl")
              .read_text().splitlines()]
    assert sorted(ledger) == ["java", "kotlin", "python"]  # each generated once, across both runs
    assert (out / "stage3" / "python.json").stat().st_mtime_ns == python_mtime
    assert set(json.loads((out / "metrics.json").read_text())["languages"]) == {"python", "java", "kotlin"}


def test_max_new_tokens_flag_takes_a_number_or_a_per_language_mapping():
    from itt_sweep.cli import _per_language

    assert _per_language("128") == 128
    assert _per_language("default=128,java=160") == {"default": 128, "java": 160}
    assert _per_language(None) is None


def test_ref_nll_is_the_same_whether_references_are_scored_on_prefill_or_after(tiny_model_dir, tmp_path, data_dir):
    """Cold reference cache: ref_nll by `per_pair_nll` after generation; warm: on each prompt's prefill."""
    from itt_sweep.config import EvaluationSpec
    from itt_sweep.evaluate.stage3 import eval_problems, evaluate_model

    spec = EvaluationSpec(max_new_tokens=8, batch_size=4)
    problems = eval_problems(["python", "javascript"], 3, data_dir)
    cold, _ = evaluate_model(tiny_model_dir, problems, spec, data_dir, tmp_path / "refs", tmp_path / "cold")
    warm, _ = evaluate_model(tiny_model_dir, problems, spec, data_dir, tmp_path / "refs", tmp_path / "warm")
    for language in problems:
        saved = json.loads((tmp_path / "warm" / f"{language}.generations.json").read_text())
        assert all(row["reference_nll"] is not None for row in saved)  # scored during generation
        assert all(row["reference_nll"] is None
                   for row in json.loads((tmp_path / "cold" / f"{language}.generations.json").read_text()))
        assert warm[language]["ref_nll"] == pytest.approx(cold[language]["ref_nll"], rel=1e-5)
        assert warm[language]["pass_at_1"] == cold[language]["pass_at_1"]
