"""The cache of the importance-sampling Bayes excess (slr/bayes_cache.py): the cached value is the computed one,
it is shared by every seed of a task, two jobs computing it at once end with the same value and a valid entry, and
a damaged entry is recomputed and rewritten."""
import json
import subprocess
import sys
import textwrap

import pytest

from slr.core import bayes_cache
from slr.core import evaluate
from slr.app.run import run
from slr.core.task import Task


def test_the_cached_value_is_the_computed_value_and_serves_every_seed(tmp_path):
    task = Task(40, 10, 0.5**0.5, seed=0)
    first = bayes_cache.bayes_excess_is_log10(task, 3000, tmp_path)
    assert first[2] is False
    direct = evaluate.bayes_excess_is_log10(task, 3000, bayes_cache.SEED, bayes_cache.CHUNK)
    assert first[:2] == direct  # bitwise: JSON keeps every digit of a float
    for seed in (0, 7):  # k*, v* differ, the estimate does not (the task is rotation invariant)
        assert bayes_cache.bayes_excess_is_log10(Task(40, 10, 0.5**0.5, seed=seed), 3000, tmp_path) == (*direct, True)
    other = bayes_cache.bayes_excess_is_log10(task, 3001, tmp_path)  # another number of draws: another entry
    assert other[2] is False and other[0] != direct[0]
    assert len(list((tmp_path / "bayes_is").glob("*.json"))) == 2
    assert not list((tmp_path / "bayes_is").glob(".*"))  # no temporary file left


@pytest.mark.parametrize("damage", ["", "{\"key\": ", "[1, 2]", "not json", "other key", "log10 is text"])
def test_a_damaged_entry_is_ignored_and_rewritten(tmp_path, damage):
    task = Task(20, 5, 0.8, seed=0)
    key = bayes_cache.key_of(task, 2000)
    path = bayes_cache.path_of(key, tmp_path)
    good = bayes_cache.bayes_excess_is_log10(task, 2000, tmp_path)[:2]
    entry = json.loads(path.read_text())
    if damage == "other key":
        text = json.dumps(dict(entry, key=dict(key, d=21)))
    elif damage == "log10 is text":
        text = json.dumps(dict(entry, log10_mean="-3.2"))
    else:
        text = damage
    path.write_text(text)
    assert bayes_cache.bayes_excess_is_log10(task, 2000, tmp_path) == (*good, False)  # recomputed
    assert json.loads(path.read_text()) == entry  # and rewritten
    assert bayes_cache.bayes_excess_is_log10(task, 2000, tmp_path) == (*good, True)


WORKER = textwrap.dedent("""
    import sys
    from slr.core import bayes_cache
    from slr.core.task import Task
    task = Task(400, 10, 0.5 ** 0.5, seed=int(sys.argv[2]))
    print("ready", flush=True)
    sys.stdin.readline()  # start together
    log10, rel_se, cached = bayes_cache.bayes_excess_is_log10(task, 100_000, sys.argv[1])
    print(repr(log10), repr(rel_se), cached, flush=True)
""")


@pytest.mark.slow
def test_two_jobs_computing_the_same_key_at_once(tmp_path):
    """Two processes (two seeds of a sweep) look the key up together, both compute it, both write the same entry:
    both end with the same value, and the cache holds one valid entry."""
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), str(seed)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for seed in (0, 1)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    out = [p.communicate(timeout=300)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert out[0] == out[1] and out[0][2] == "False"  # the same value, computed by both
    entries = list((tmp_path / "bayes_is").iterdir())
    assert len(entries) == 1 and not entries[0].name.startswith(".")
    entry = json.loads(entries[0].read_text())
    assert repr(entry["log10_mean"]) == out[0][0] and entry["key"]["d"] == 400
    assert bayes_cache.bayes_excess_is_log10(Task(400, 10, 0.5**0.5), 100_000, tmp_path)[2] is True


def test_a_run_records_whether_its_bayes_excess_came_from_the_cache(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("SLR_CACHE_DIR", str(tmp_path / "cache"))
    args = ["task.d=12", "task.L=4", "train.steps=10", "train.log_every=5", "train.repeats=2", "eval.n_test=200",
            "eval.bayes_is=2000", "figures=false"]
    a = run(make_cfg(*args, "seed=0"), out_dir=tmp_path / "a")
    b = run(make_cfg(*args, "seed=1"), out_dir=tmp_path / "b")
    assert a["timings"]["bayes_is_cached"] is False and b["timings"]["bayes_is_cached"] is True
    assert a["excess"]["bayes"]["importance_sampling"] == b["excess"]["bayes"]["importance_sampling"] > 0
    saved = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert saved["timings"]["bayes_is_cached"] is True and saved["timings"]["bayes_is_s"] >= 0
