"""Bad input is refused before any work starts (issue 6): one paragraph naming the field, the value and what is
allowed; a non-zero exit code; no traceback; nothing already written lost.

Every case is checked in-process (``check(make_cfg(...))`` for the ranges, choices and combinations that
:func:`slr.app.config.check` owns; ``make_cfg`` itself for what Hydra refuses while composing: wrong types, unknown
keys, unknown group options); a representative handful also through ``python -m slr`` in subprocesses, launched
together to share their ~3 s of imports.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hydra.errors import HydraException

from slr.app.config import ConfigError, check
from slr.results import read_metrics
from slr.app.run import run

TINY = ["task.d=12", "task.L=4", "train.steps=20", "train.log_every=10", "train.repeats=2", "eval.n_test=200",
        "eval.bayes_is=0", "figures=false"]


def _tiny(*overrides: str) -> list[str]:
    """TINY with ``overrides`` replacing its entries for the same keys or their parents (one value per key on a
    command line; ``figures.pdf=...`` replaces ``figures=false``)."""
    keys = {o.lstrip("+").split("=", 1)[0] for o in overrides}
    parents = {k.rsplit(".", 1)[0] for k in keys if "." in k}
    return [o for o in TINY if o.split("=", 1)[0] not in keys | parents] + list(overrides)


# (overrides, the field the message must name); each is refused by slr.app.config.check
REFUSED_BY_CHECK = [
    (["task.d=1"], "task.d"),
    (["task.d=0"], "task.d"),
    (["task.L=0"], "task.L"),
    (["task.gamma=0"], "task.gamma"),
    (["task.gamma=-0.5"], "task.gamma"),
    (["task.eps=-0.1"], "task.eps"),
    (["task.signal=0"], "task.signal"),
    (["task.signal=-1"], "task.signal"),
    (["predictor.lam=0"], "predictor.lam"),
    (["predictor.lam=-1"], "predictor.lam"),
    (["train.lr=0"], "train.lr"),
    (["train.lr=-0.01"], "train.lr"),
    (["train.steps=-1"], "train.steps"),
    (["train.batch_size=0"], "train.batch_size"),
    (["train.repeats=0"], "train.repeats"),
    (["train.log_every=0"], "train.log_every"),
    (["eval.n_test=0"], "eval.n_test"),
    (["train=erm", "train.n_train=0"], "train.n_train"),
    (["train=erm", "train.simulator=ode"], "train.simulator"),
    (["train=pgd", "train.simulator=ode"], "train.simulator"),
    (["predictor=softmax", "train.simulator=ode"], "train.simulator"),
    (["train.simulator=ode", "train.projected=false"], "train.projected"),
    (["train.simulator=ode", "task.tokens=student_t"], "task.tokens"),
    (["train.simulator=ode", "task.n_informative=2"], "task.n_informative"),
    # non-finite numbers
    (["task.gamma=nan"], "task.gamma"),
    (["task.gamma=inf"], "task.gamma"),
    (["task.eps=inf"], "task.eps"),
    (["task.signal=inf"], "task.signal"),
    (["predictor.lam=inf"], "predictor.lam"),
    (["predictor.lam=nan"], "predictor.lam"),
    (["train.lr=nan"], "train.lr"),
    (["train.lr=-inf"], "train.lr"),
    (["train.schedule_rate=nan"], "train.schedule_rate"),
    # unknown keys slipped past the schema with +key=value
    (["+task.foo=1"], "task.foo"),
    (["+train.foo=1"], "train.foo"),
    (["+eval.foo=1"], "eval.foo"),
    (["+foo=1"], "foo"),
    # choices that are plain strings in the schema
    (["predictor.name=relu"], "predictor.name"),
    (["task.axes=diagonal"], "task.axes"),
    (["train.init=ball"], "train.init"),
    (["train.lam_schedule=cosine"], "train.lam_schedule"),
    (["train.simulator=exact"], "train.simulator"),
    (["eval.simulator=exact"], "eval.simulator"),
    (["train=erm", "train.optimizer=sgd"], "train.optimizer"),
    (["train.dtype=float16"], "train.dtype"),
    (["train.algo=pgd"], "train.algo"),  # the algorithm is chosen by the train group, not by train.algo
    (["device=cuda:7"], "device"),
    # other ranges
    (["seed=-1"], "seed"),
    (["threads=0"], "threads"),
    (["eval.bayes_is=-1"], "eval.bayes_is"),
    (["train.log_test_size=-1"], "train.log_test_size"),
    (["train.schedule_rate=-1"], "train.schedule_rate"),
    # figures: true, false, or figures.pdf=true|false
    (["figures=maybe"], "figures"),
    (["figures=3"], "figures"),
    (["figures.pdf=maybe"], "figures.pdf"),
    (["+figures.foo=1"], "figures.foo"),
    # combinations
    (["train=pgd", "predictor=softmax"], "predictor"),  # no closed-form population risk for softmax attention
    (["train=pgd", "task.d=4"], "task.d"),  # pgd runs on the reduced simulator by default
    (["train.simulator=reduced", "task.d=4"], "task.d"),
    (["eval.simulator=reduced", "task.d=3"], "task.d"),
    (["train=erm", "train.simulator=reduced"], "train.simulator"),
    (["train=none", "train.steps=5"], "train.steps"),
    # PGD precision and noise, lam=auto, lr_scale (issue 14)
    (["train=pgd", "train.noise=-0.1"], "train.noise"),
    (["train=pgd", "train.noise=inf"], "train.noise"),
    (["train=pgd", "train.dtype=float16"], "train.dtype"),
    (["predictor=softmax", "predictor.lam=auto"], "predictor.lam"),  # best_oracle_lam is the erf oracle's
    (["predictor.lam=abc"], "predictor.lam"),
    (["train.lr_scale=sqrt"], "train.lr_scale"),
    # the gradient flow (docs/dynamics.md)
    (["train=flow", "predictor=softmax"], "predictor"),  # no overlap ODE for softmax attention
    (["train=flow", "predictor=transformer"], "train"),  # nor for a torch module
    (["train=flow", "train.until_converged=true"], "train.grad_tol"),  # converged by which measure?
    (["train=flow", "train.grad_tol=0"], "train.grad_tol"),
    (["train=flow", "train.method=RK45"], "train.method"),
    (["train=flow", "train.simulator=full"], "train.simulator"),
    (["train=flow", "train.rtol=0"], "train.rtol"),
    (["train=flow", "train.atol=-1"], "train.atol"),
]


@pytest.mark.parametrize("overrides,field", REFUSED_BY_CHECK, ids=[" ".join(o) for o, _ in REFUSED_BY_CHECK])
def test_check_refuses_with_one_paragraph_naming_the_field(make_cfg, overrides, field):
    cfg = make_cfg(*_tiny(*overrides))
    with pytest.raises(ConfigError) as info:
        check(cfg)
    err = info.value
    assert err.key == field
    message = str(err)
    assert message.startswith(f"Invalid configuration: {field}=")
    assert "must be" in message and "\n" not in message
    given = overrides[-1].split("=", 1)[1]
    if given not in ("nan", "inf", "-inf") and not field.endswith("foo") and field != "predictor":
        assert given in message  # the value given, as given (non-finite ones print as nan/inf, checked below)


SMALLEST_ALLOWED = [["task.d=2"], ["task.d=3"], ["task.d=2", "train=erm"],
                    ["task.d=2", "train=pgd", "train.simulator=full"], ["task.d=5", "train.simulator=reduced"],
                    ["task.d=5", "train=pgd"], ["task.L=1"], ["task.eps=0"], ["train.steps=0"], ["train.repeats=1"],
                    ["train.log_every=1"], ["train=erm", "train.n_train=1"], ["eval.n_test=2"],
                    ["train=sgd", "train.batch_size=1"], ["train=none", "train.steps=0"], ["train=pgd", "train.noise=0"],
                    ["predictor.lam=auto"]]


@pytest.mark.parametrize("overrides", SMALLEST_ALLOWED, ids=[" ".join(o) for o in SMALLEST_ALLOWED])
def test_the_smallest_allowed_values_run(make_cfg, tmp_path, overrides):
    """The refusals above sit exactly at the boundary: one step inside it, a run completes."""
    cfg = make_cfg(*_tiny("train.steps=4", "train.log_every=2", *overrides))
    assert run(cfg, out_dir=tmp_path)["status"] == "ok"


@pytest.mark.parametrize("overrides,shown", [(["task.gamma=nan"], "task.gamma=nan"),
                                             (["predictor.lam=inf"], "predictor.lam=inf"),
                                             (["train.lr=-inf"], "train.lr=-inf")])
def test_non_finite_values_are_shown_as_given(make_cfg, overrides, shown):
    with pytest.raises(ConfigError, match=shown.replace("+", r"\+")):
        check(make_cfg(*overrides))


def test_run_refuses_before_writing_anything(make_cfg, tmp_path):
    """``run`` (the Python API) validates first: an invalid config leaves an existing run folder as it was."""
    good = tmp_path / "run"
    run(make_cfg(*TINY), out_dir=good)
    before = {p.name: p.read_bytes() for p in good.iterdir() if p.is_file()}
    with pytest.raises(ConfigError):
        run(make_cfg(*TINY, "task.gamma=nan"), out_dir=good)
    assert {p.name: p.read_bytes() for p in good.iterdir() if p.is_file()} == before
    with pytest.raises(ConfigError):
        run(make_cfg(*TINY, "task.L=0"), out_dir=tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_config_error_pickles_by_its_fields():
    """The joblib launcher sends a job's exception back to the parent process by pickle (in memory)."""
    import pickle

    err = ConfigError("task.d", 1, "an integer >= 2")
    back = pickle.loads(pickle.dumps(err))
    assert (back.key, back.value, back.allowed, str(back)) == (err.key, err.value, err.allowed, str(err))


# (overrides, texts the message must contain); each is refused by Hydra while composing the config
REFUSED_BY_HYDRA = [
    (["task.d=abc"], ["task.d", "abc", "Integer"]),  # wrong types
    (["task.d=2.5"], ["task.d", "2.5", "Integer"]),
    (["task.d=true"], ["task.d", "Integer"]),
    (["task.gamma=abc"], ["task.gamma", "abc", "Float"]),
    (["train.projected=maybe"], ["train.projected", "maybe", "bool"]),
    (["task.d=null"], ["task.d", "not Optional"]),
    (["task.foo=1"], ["task.foo", "TaskConfig"]),  # unknown keys
    (["foo=1"], ["foo", "Config"]),
    (["train=erm", "train.batch_size=5"], ["train.batch_size", "ERMConfig"]),
    (["predictor=bogus"], ["predictor/bogus", "erf", "softmax"]),  # unknown group options, with the choices
    (["train=bogus"], ["train/bogus", "sgd", "pgd", "erm", "none"]),
    (["hydra/launcher=bogus"], ["hydra/launcher/bogus", "basic", "joblib", "submitit_local", "submitit_slurm"]),
    (["experiment=nope"], ["experiment/nope", "paper_gd_manifold"]),  # a preset that does not exist
]


@pytest.mark.parametrize("overrides,texts", REFUSED_BY_HYDRA, ids=[" ".join(o) for o, _ in REFUSED_BY_HYDRA])
def test_hydra_refuses_while_composing(make_cfg, overrides, texts):
    with pytest.raises(HydraException) as info:
        make_cfg(*overrides)
    message = f"{info.value}\n{info.value.__cause__ or ''}"
    for text in texts:
        assert text in message


# ----- through the command line ---------------------------------------------------------------------------------
def _launch(args: list[str], outputs, **kw) -> subprocess.Popen:
    env = dict(os.environ, CI="true", SLR_OUTPUTS=str(outputs))
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.Popen([sys.executable, "-m", "slr", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


CLI_CASES = {  # name: (overrides, the field the message must name)
    "check": (["task.d=1"], "task.d"),
    "check_combination": (["train=pgd", "predictor=softmax"], "predictor"),
    "plus_unknown_key": (["+task.foo=1"], "task.foo"),
    "wrong_type": (["task.d=abc"], "task.d"),
    "float_for_int": (["task.d=1e3"], "task.d"),  # Hydra's compose errors, refused as check() refuses
    "unknown_key": (["figures.png=true"], "figures.png"),
    "unknown_field": (["train.stepz=10"], "train.stepz"),
    "bad_grammar": (["task.d=["], "task.d"),
    "unknown_preset": (["experiment=nope"], "experiment"),
    "unknown_launcher": (["hydra/launcher=bogus"], "hydra/launcher"),
    "lam_auto_softmax": (["predictor=softmax", "predictor.lam=auto"], "predictor.lam"),
    "pgd_noise": (["train=pgd", "train.noise=-1"], "train.noise"),
    "ode_erm": (["train=erm", "train.simulator=ode"], "train.simulator"),
    "ode_softmax": (["predictor=softmax", "train.simulator=ode"], "train.simulator"),
    "flow_no_tolerance": (["train=flow", "train.until_converged=true"], "train.grad_tol"),
}


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """Launch every command-line case at once (plus one multirun with a bad job) and collect their results.

    The ``check`` case runs into the folder of an earlier, finished run (``hydra.run.dir``): nothing there may change.
    """
    root = tmp_path_factory.mktemp("cli")
    existing = root / "existing_run"  # a finished run folder, written before any refused run is launched
    from hydra import compose, initialize_config_dir

    from slr.app.schema import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        run(compose(config_name="config", overrides=TINY), out_dir=existing)
    (existing / ".hydra").mkdir()
    (existing / ".hydra" / "config.yaml").write_text("# the earlier run's record\n")
    snapshot = {str(p.relative_to(existing)): p.read_bytes() for p in existing.rglob("*") if p.is_file()}
    procs = {}
    for name, (overrides, _) in CLI_CASES.items():
        args = _tiny(*overrides)
        if name == "check":
            args.append(f"hydra.run.dir={existing}")
        procs[name] = (_launch(args, root / name), root / name)
    sweep = root / "sweep"
    procs["multirun"] = (_launch(["-m", *_tiny("task.d=1,12"), f"hydra.sweep.dir={sweep}"], root / "multirun"), sweep)
    results = {}
    for name, (proc, folder) in procs.items():
        out, err = proc.communicate(timeout=300)
        results[name] = dict(rc=proc.returncode, out=out, err=err, folder=folder)
    results["existing"] = dict(folder=existing, snapshot=snapshot)
    return results


@pytest.mark.parametrize("name", CLI_CASES)
def test_cli_refuses_with_a_paragraph_and_no_traceback(cli, name):
    r, field = cli[name], CLI_CASES[name][1]
    assert r["rc"] != 0
    assert field in r["err"]
    assert "Traceback" not in r["err"] + r["out"] and "HYDRA_FULL_ERROR" not in r["err"]
    assert r["rc"] == 2  # by check(), or Hydra's compose errors turned into the same paragraph
    assert r["err"].strip().startswith("Invalid configuration:") and r["err"].strip().count("\n") == 0
    assert f"{field}=" in r["err"]  # the field and the value given


def test_help_lists_only_the_groups_of_slr():
    """``slr --help`` lists slr's config groups; slr-landscape's options are fields of its own config, not a group."""
    out = subprocess.run([sys.executable, "-m", "slr", "--help"], capture_output=True, text=True, timeout=120).stdout
    groups = out.split("== Configuration groups ==")[1].split("== Config ==")[0]
    assert {line.split(":")[0] for line in groups.splitlines() if ": " in line} == {"experiment", "predictor", "task",
                                                                                       "train"}


@pytest.mark.parametrize("name", CLI_CASES)
def test_cli_refusal_creates_no_run_folder(cli, name):
    """Refused before Hydra makes the run folder (the ``slr.app.config.Validate`` callback): nothing under SLR_OUTPUTS."""
    if name != "check":
        assert not any(p.is_file() for p in cli[name]["folder"].rglob("*"))


def test_cli_refusal_leaves_an_existing_run_folder_as_it_was(cli):
    existing, snapshot = cli["existing"]["folder"], cli["existing"]["snapshot"]
    now = {str(p.relative_to(existing)): p.read_bytes() for p in existing.rglob("*") if p.is_file()}
    assert now == snapshot
    assert json.loads((existing / "summary.json").read_text())["status"] == "ok"
    assert len(read_metrics(existing / "metrics.csv")) == 2 * 3


def test_multirun_refuses_the_bad_job_and_runs_the_others(cli):
    r, sweep = cli["multirun"], cli["multirun"]["folder"]
    assert r["rc"] != 0
    assert "Traceback" not in r["err"] + r["out"]
    assert "task.d=1 is not allowed" in r["err"]
    bad, good = (next(p for p in sweep.iterdir() if p.is_dir() and f"task.d={d}," in p.name + ",") for d in (1, 12))
    assert json.loads((good / "summary.json").read_text())["status"] == "ok"
    refused = json.loads((bad / "summary.json").read_text())  # the job's folder says why it holds no results
    assert refused["status"] == "failed" and "task.d=1 is not allowed" in refused["error"]
    assert "metrics" not in refused and not (bad / "metrics.csv").exists()
    assert "task.d=1 is not allowed" in (bad / "slr.log").read_text()


def test_cli_refusal_happens_before_training(cli):
    for name in CLI_CASES:
        assert "repeats x" not in cli[name]["out"]  # the line a run logs when its training starts
