"""Text features (docs/text.md): the template sentences, the cached hidden states, the probes, slr-probe and task=text,
on a tiny random BERT built here (fast), and one slow check with the MiniLM wheel of the extra slr[text]."""
from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from slr.app.config import ConfigError
from slr.text import sentences as S
from slr.text.encoder import TextInputError, hidden_states, load, model_folder, tokenize
from slr.text.sentences import SPLITS, build

transformers = pytest.importorskip("transformers")  # the extra slr[text]; CI installs it (make setup)


def _vocab() -> list[str]:
    words = set()
    for templates in S.TEMPLATES.values():
        for template in templates:
            for _, ws in template:
                for w, _ in ws:
                    words.update(w.lower().replace(".", " ").replace(",", " ").replace("?", " ").split())
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "?", *sorted(words)]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> str:
    """A random 2-layer BERT (hidden size 16) and a word-level fast tokenizer over the word lists, saved to a folder."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    (folder / "vocab.txt").write_text("\n".join(_vocab()) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(_vocab()), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny_states(tiny_bert):
    """Every sentence through the tiny BERT, cached where the apps look (the session's SLR_CACHE_DIR)."""
    sentences = build()
    return sentences, hidden_states(tiny_bert, sentences, batch_size=1024)


# ----- sentences -----------------------------------------------------------------------------------------------------
def test_each_split_is_the_cartesian_product_of_its_word_lists_and_the_label_is_the_adjectives_sign():
    s = build()
    for split in SPLITS:
        expected = sum(math.prod(len(ws) for _, ws in t) for t in S.TEMPLATES[split])
        assert s.index(split).size == expected, split
    sign = dict(S.ADJECTIVES + S.OOD_ADJECTIVES)
    adjectives = [t[a:b] for t, (a, b) in zip(s.text, s.adjective_span)]
    assert s.y.tolist() == [sign[a] for a in adjectives]
    is_ood = np.isin(adjectives, [w for w, _ in S.OOD_ADJECTIVES])
    assert np.array_equal(is_ood, np.isin(s.split, ["ood_tokens", "ood_both"]))
    assert (s.y == 1).mean() == pytest.approx(0.5)  # balanced in every split
    assert not set(s.text[i] for i in s.index("train")) & set(s.text[i] for i in s.index("test"))
    assert all("  " not in t and t == t.strip() for t in s.text)
    assert all(t.startswith("Hello, how are you? Good evening,") for t in np.array(s.text)[s.index("ood_structure")])


def test_the_adjective_moves_between_the_two_word_orders():
    s = build(("train",))
    words = [t[:a].count(" ") for t, (a, b) in zip(s.text, s.adjective_span)]  # its word index
    assert len(set(words)) >= 4  # the position of J0 varies (colour and adverb optional, two orders)


# ----- hidden states and their cache --------------------------------------------------------------------------------
def test_j0_from_word_ids_is_the_tokens_inside_the_adjectives_characters(tiny_bert):
    tokenizer, _ = load(model_folder(tiny_bert))
    s = build(("train", "ood_both"))
    tok = tokenize(tokenizer, s)
    enc = tokenizer(s.text, padding="longest", return_offsets_mapping=True, return_tensors="np")
    off = enc["offset_mapping"]  # (N, T, 2): an independent route, by characters
    a, b = s.adjective_span[:, :1], s.adjective_span[:, 1:]
    inside = (off[..., 0] >= a) & (off[..., 1] <= b) & (off[..., 1] > off[..., 0])
    assert np.array_equal(tok["j0"], inside)
    assert (tok["j0"].sum(1) >= 1).all()


def test_hidden_states_are_the_models_and_come_back_from_the_cache(tiny_bert, tiny_states, monkeypatch):
    sentences, states = tiny_states
    assert states.n_states == 3 and states.layer(0).dtype == np.float16
    tokenizer, model = load(model_folder(tiny_bert))
    rows = [0, 7000, 16000, len(sentences) - 1]
    enc = tokenizer([sentences.text[i] for i in rows], padding="max_length", max_length=states.mask.shape[1],
                    return_tensors="pt")
    with torch.no_grad():
        ref = model(**enc, output_hidden_states=True).hidden_states
    for i in range(states.n_states):
        m = enc["attention_mask"].bool().numpy()
        np.testing.assert_allclose(states.layer(i)[rows][m], ref[i].numpy()[m], atol=2e-2, rtol=2e-3)
    assert np.array_equal(states.mask[rows], enc["attention_mask"].bool().numpy())
    monkeypatch.setattr("slr.text.encoder.load", lambda *a, **k: pytest.fail("the cache was not used"))
    again = hidden_states(tiny_bert, sentences)
    assert again.folder == states.folder


def test_a_cache_that_does_not_match_its_key_is_refused_and_left_alone(tiny_bert, tmp_path):
    sentences = build(("ood_both",))
    states = hidden_states(tiny_bert, sentences, root=tmp_path)
    meta = json.loads((states.folder / "key.json").read_text())
    (states.folder / "key.json").write_text(json.dumps({**meta, "key": "0" * 64}))
    before = (states.folder / "layer01.npy").read_bytes()
    with pytest.raises(TextInputError, match="text.cache"):
        hidden_states(tiny_bert, sentences, root=tmp_path)
    (states.folder / "key.json").write_text(json.dumps(meta))
    from slr.text.encoder import write_npy

    write_npy(states.folder / "layer01.npy", np.zeros((3, 3, 3), np.float16))
    with pytest.raises(TextInputError, match="layer01.npy has shape"):
        hidden_states(tiny_bert, sentences, root=tmp_path)
    assert (states.folder / "key.json").read_text() == json.dumps(meta) and before  # nothing rewritten by slr


# ----- probes and the attention task ----------------------------------------------------------------------------------
def _planted(n_per_split=40, T=6, d=5, seed=0):
    """Synthetic states where the label adjective's token has coordinate 0 shifted by 5 and coordinate 1 = 2 y (others noise)."""
    from slr.text.sentences import Sentences

    rng = np.random.default_rng(seed)
    N = n_per_split * len(SPLITS)
    y = rng.choice([-1, 1], N).astype(np.int8)
    X = rng.normal(size=(N, T, d)).astype(np.float32)
    mask = np.ones((N, T), bool)
    mask[::3, -1] = False
    pos = rng.integers(0, T - 1, N)
    j0 = np.zeros((N, T), bool)
    j0[np.arange(N), pos] = True
    X[np.arange(N), pos, 0] += 5.0
    X[np.arange(N), pos, 1] = 2.0 * y
    s = Sentences([f"s{i}" for i in range(N)], y, np.zeros((N, 2), np.int64), np.repeat(SPLITS, n_per_split))
    return s, X, mask, j0


def test_the_k_star_and_v_star_probes_find_a_planted_adjective():
    from slr.text.probes import probe_layer

    s, X, mask, j0 = _planted()
    rows = pd.DataFrame(probe_layer(X, s, mask, j0, token_sentences=40))
    acc = rows.set_index(["features", "split"])["accuracy"]
    assert (acc["k_star"] > 0.9).all() and (acc["v_star"] == 1.0).all()
    X[np.arange(len(s)), j0.argmax(1), 0] -= 5.0  # no key any more: the top token is the adjective by chance only
    rows = pd.DataFrame(probe_layer(X, s, mask, j0, token_sentences=40))
    assert rows[rows.features == "k_star"]["accuracy"].mean() < 0.5


@pytest.mark.parametrize("kind", ["erf", "softmax"])
def test_masked_attention_is_the_sum_over_real_tokens_and_ignores_padding(kind):
    from slr.text.task import Tokens, attention_on_j0, predict

    s, X, mask, j0 = _planted()
    X[~mask] = 1e3  # garbage in the padding: it must not count
    g = torch.Generator().manual_seed(1)
    k, v, lam = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g), 0.7
    tok = Tokens(torch.from_numpy(X), torch.from_numpy(mask), torch.from_numpy(j0), torch.from_numpy(s.y.astype(np.float32)))
    got = predict(kind, lam, k, v, tok).numpy()
    att = attention_on_j0(kind, lam, k, tok).numpy()
    kn, vn = k.double().numpy(), v.double().numpy()
    for r, i in itertools.product(range(3), [0, 1, 5]):
        x = X[i][mask[i]].astype(np.float64)  # the real tokens only
        s_ = lam * x @ kn[r]
        a = np.array([math.erf(t) for t in s_]) if kind == "erf" else np.exp(s_ - s_.max()) / np.exp(s_ - s_.max()).sum()
        assert got[r, i] == pytest.approx(float(a @ (x @ vn[r])), rel=1e-4, abs=1e-4)
    share = np.abs(att)
    assert ((share >= 0) & (share <= 1)).all()


def test_erm_on_planted_states_puts_the_attention_on_the_adjective():
    from slr.text.task import Tokens, attention_on_j0, train_erm

    s, X, mask, j0 = _planted(n_per_split=200)
    tok = Tokens(torch.from_numpy(X), torch.from_numpy(mask), torch.from_numpy(j0), torch.from_numpy(s.y.astype(np.float32)))
    tr = train_erm("softmax", 0.5, tok, repeats=4, steps=300, lr=0.05, optimizer="adam", projected=True, log_every=100,
                   seed=0)
    h = pd.DataFrame(tr.history)
    end = h[h.step == 300].train_loss.to_numpy()
    solved = end < 0.1  # at large lam some starts stall where k points away from the key (a spurious critical point)
    assert solved.sum() >= 3 and (end <= h[h.step == 0].train_loss.to_numpy()).all()
    assert (attention_on_j0("softmax", 0.5, tr.k, tok)[torch.from_numpy(solved)] > 0.6).all()  # uniform: ~1/6


# ----- the apps -----------------------------------------------------------------------------------------------------
@pytest.fixture
def probe_cfg(tiny_bert):
    from hydra import compose, initialize_config_dir

    from slr.app.schema import CONF_DIR

    def make(*overrides):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="slr_probe", overrides=[f"text.model={tiny_bert}", *overrides])
    return make


def test_slr_probe_writes_the_table_and_the_figure(probe_cfg, tiny_states, tmp_path):
    from slr.app.probe import run

    summary = run(probe_cfg("probe.token_sentences=200", "probe.max_iter=200"), out_dir=tmp_path)
    table = pd.read_csv(tmp_path / "probes.csv")
    assert list(table.columns) == ["layer", "features", "split", "accuracy"]
    assert len(table) == 3 * 4 * len(SPLITS) and table["accuracy"].between(0, 1).all()
    assert (table[(table.layer == 0) & (table.features == "cls")]["accuracy"] == 0.5).all()  # one [CLS] state for all
    assert summary["status"] == "ok" and set(summary["cls_layer_average"]) == set(SPLITS)
    assert (tmp_path / "figures" / "probes.png").stat().st_size > 20000


def test_task_text_trains_attention_and_reports_every_split(make_cfg, tiny_bert, tiny_states, tmp_path):
    from slr.app.run import run

    cfg = make_cfg("experiment=text_probe", f"text.model={tiny_bert}", "text.layer=1", "train.steps=20",
                   "train.repeats=2", "train.n_train=300")
    summary = run(cfg, out_dir=tmp_path)
    assert summary["status"] == "ok" and set(summary["accuracy"]) == set(SPLITS)
    assert all(0 <= summary["attention_on_J0"][s] <= 1 for s in SPLITS)
    assert summary["task"]["n_train"] == 300 and summary["task"]["layer"] == 1
    m = pd.read_csv(tmp_path / "metrics.csv")
    assert sorted(m.step.unique()) == [0, 10, 20] and set(m.repeat) == {0, 1}
    assert (tmp_path / "figures" / "text_training.png").is_file()
    from slr.results.tables import text_table

    assert "No Bayes row" in text_table(summary)


# ----- bad input ----------------------------------------------------------------------------------------------------
def test_a_layer_out_of_range_is_refused(make_cfg, tiny_bert, tmp_path):
    from slr.app.run import run

    with pytest.raises(ConfigError, match=r"text.layer=3 .*from 0 \(the embeddings\) to 2"):
        run(make_cfg("experiment=text_probe", f"text.model={tiny_bert}", "text.layer=3"), out_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_a_folder_that_is_not_a_transformer_is_refused(make_cfg, tmp_path):
    from slr.app.config import check

    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="text.model=.*config.json is missing"):
        check(make_cfg("experiment=text_probe", f"text.model={tmp_path / 'empty'}"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "bert", "num_hidden_layers": 2}))
    (broken / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    with pytest.raises(TextInputError, match="loading it failed"):
        load(broken)


def test_without_the_extra_every_text_feature_is_refused_with_the_install_command(make_cfg, probe_cfg, monkeypatch):
    import importlib.util

    from slr.app.config import check, check_probe

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name, *a))
    for cfg, checker in ((make_cfg("experiment=text_probe"), check), (probe_cfg(), check_probe)):
        with pytest.raises(ConfigError, match=r"pip install 'slr\[text\]'"):
            checker(cfg)


def test_task_text_refuses_what_it_cannot_train(make_cfg):
    from slr.app.config import check

    with pytest.raises(ConfigError, match="train='sgd'"):
        check(make_cfg("task=text", "train=sgd"))


def test_the_cli_exits_2_on_a_bad_layer(tmp_path):
    env_out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "slr", "experiment=text_probe", "text.layer=99",
                           f"hydra.run.dir={env_out}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "text.layer=99" in proc.stderr and not env_out.exists()


def test_the_base_modules_do_not_import_transformers():
    code = ("import sys, slr.app.run, slr.app.config, slr.core.evaluate, slr.training.algorithms; "
            "assert 'transformers' not in sys.modules and 'sklearn' not in sys.modules, 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.slow
def test_minilm_from_the_wheel_offline(tmp_path, monkeypatch):
    """The MiniLM of the extra: unzipped once, loaded with HF_HUB_OFFLINE=1; one [CLS] state at layer 0 for every
    sentence; the label adjective's tokens spell the adjective."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    s = build(("ood_structure",))
    states = hidden_states("minilm", s, root=tmp_path)
    assert states.n_layers == 6 and states.layer(6).shape[2] == 384
    cls0 = np.asarray(states.layer(0)[:, 0], np.float32)
    assert np.ptp(cls0, axis=0).max() == 0
    tokenizer, _ = load(model_folder("minilm"))
    ids = tokenizer(s.text, padding="longest")["input_ids"]
    for i in (0, 50, 143):
        adj = tokenizer.decode(np.asarray(ids[i])[states.j0[i]])
        a, b = s.adjective_span[i]
        assert adj.replace(" ", "") == s.text[i][a:b].lower()


def test_the_transformers_padding_mask_is_the_same_as_dropping_the_padding():
    from slr.models.transformer import Transformer

    torch.manual_seed(0)
    X = torch.randn(4, 6, 5)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[1, 4:], mask[2, 5] = False, False
    for pool, n_layers, n_heads in (("query", 1, 1), ("query", 2, 2), ("mean", 2, 2)):
        m = Transformer(5, 6, d_model=8, n_heads=n_heads, n_layers=n_layers, pool=pool, mlp=1.0, norm="pre")
        truncated = torch.stack([m(X[i:i + 1, :int(mask[i].sum())])[0] for i in range(4)])
        garbage = X.masked_fill(~mask[..., None], 1e3)
        torch.testing.assert_close(m(garbage, mask=mask), truncated)
        torch.testing.assert_close(m.attention(garbage, mask=mask).sum(-1), torch.ones(4))
        assert (m.attention(garbage, mask=mask)[~mask] == 0).all()


class MaskedMean(torch.nn.Module):
    """A user module for task=text: a linear readout of the mean of the real tokens."""

    def __init__(self, d, L):
        super().__init__()
        self.w = torch.nn.Linear(d, 1)

    def forward(self, X, mask=None):
        m = torch.ones(X.shape[:2], dtype=torch.bool) if mask is None else mask
        return self.w((X * m[..., None]).sum(1) / m.sum(1, keepdim=True)).squeeze(-1)


class NoMask(MaskedMean):
    def forward(self, X):
        return self.w(X.mean(1)).squeeze(-1)


@pytest.mark.parametrize("predictor", ["transformer", "module"])
def test_task_text_trains_torch_modules_with_masks(make_cfg, tiny_bert, tiny_states, tmp_path, predictor):
    from slr.app.run import run

    extra = ["predictor.model._target_=test_text.MaskedMean"] if predictor == "module" else []
    cfg = make_cfg("task=text", "train=erm", f"predictor={predictor}", *extra, f"text.model={tiny_bert}",
                   "text.layer=2", "train.steps=10", "train.repeats=2", "train.n_train=200", "train.optimizer=adam",
                   "train.log_every=5", "figures=false")
    summary = run(cfg, out_dir=tmp_path)
    assert summary["status"] == "ok" and all(0 <= summary["accuracy"][s] <= 1 for s in SPLITS)
    if predictor == "transformer":
        assert all(0 <= summary["attention_on_J0"][s] <= 1 for s in SPLITS)
    else:
        assert summary["attention_on_J0"]["test"] is None


def test_a_user_module_without_a_mask_argument_is_refused(make_cfg, tiny_bert):
    from slr.app.config import check

    with pytest.raises(ConfigError, match="forward takes the padding mask"):
        check(make_cfg("task=text", "train=erm", "predictor=module", "predictor.model._target_=test_text.NoMask",
                       f"text.model={tiny_bert}"))
