"""Generates the tutorial notebooks of ``colab/`` (run after editing, commit the .ipynb).

    python colab/build_notebooks.py            # writes colab/0*.ipynb (no outputs)

Every notebook opens with the same install cell (skipped when ``tfrec`` is already
importable, e.g. in CI or a local ``pip install -e .``) and the same settings cell:
``SMALL`` (env ``TFREC_SMALL``, default ``1``) selects the few-minute setting that CI
executes with ``colab/run_notebooks.py``; ``TFREC_SMALL=0`` runs the full setting.
"""

from __future__ import annotations

import hashlib
import os
import textwrap

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))

#: where the install cell gets tfrec from on Colab (one place to change).
REPO_URL = "https://github.com/tfrec/tfrec"
PIP_SPEC = f"tfrec @ git+{REPO_URL}"


def md(text: str):
    return new_markdown_cell(textwrap.dedent(text).strip())


def code(text: str):
    return new_code_cell(textwrap.dedent(text).strip())


def header(title: str, intro: str, colab_name: str) -> list:
    badge = (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
             f"({REPO_URL.replace('https://github.com/', 'https://colab.research.google.com/github/')}"
             f"/blob/main/colab/{colab_name})")
    return [
        md(f"# {title}\n\n{badge}\n\n{textwrap.dedent(intro).strip()}"),
        code(f'''
            # Install tfrec on Colab. Skipped when tfrec is already importable (CI, a local
            # checkout installed with `pip install -e ".[dev]"`).
            import importlib.util, subprocess, sys

            TFREC_PIP_SPEC = "{PIP_SPEC}"
            if importlib.util.find_spec("tfrec") is None:
                cmd = [sys.executable, "-m", "pip", "install", "-q", TFREC_PIP_SPEC]
                if sys.version_info[:2] != (3, 11):
                    # tfrec pins and declares Python 3.11; Colab may run a newer Python.
                    cmd.insert(4, "--ignore-requires-python")
                subprocess.check_call(cmd)
                print("tfrec installed. If an import below fails (Colab had another TensorFlow "
                      "loaded), use Runtime > Restart session and run the notebook again.")
            else:
                print("tfrec already importable from", importlib.util.find_spec("tfrec").origin)
        '''),
        code('''
            import os
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

            # SMALL: the few-minute CPU setting (few epochs, small models or data subsets),
            # which CI executes. Set TFREC_SMALL=0 in the environment, or SMALL = False
            # here, for the full setting.
            SMALL = os.environ.get("TFREC_SMALL", "1") != "0"
            SEED = 0

            %matplotlib inline
            import numpy as np
            import matplotlib.pyplot as plt
            import keras
            import tfrec
            from tfrec.cli import format_table

            import logging, warnings
            logging.getLogger("tensorflow").setLevel(logging.ERROR)  # no "Assets written to ..." lines
            warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets
            keras.utils.set_random_seed(SEED)
            print("SMALL =", SMALL)
        '''),
    ]


def data_dir_cell(folder: str, what: str, instructions: str) -> list:
    return [
        md(f"""
            ## Data: {what}

            Real datasets are read in place from `$TFREC_DATA_DIR` (default `../shared/data`
            next to a tfrec checkout). **On Colab**: {textwrap.dedent(instructions).strip()}
        """),
        code(f'''
            from tfrec.data.specs import data_dir

            DATA_DIR = os.environ.get("TFREC_DATA_DIR") or data_dir()
            DATASET = os.path.join(DATA_DIR, "{folder}")
            print("looking for", os.path.abspath(DATASET), "->", "found" if os.path.isdir(DATASET) else "MISSING")
        '''),
    ]


# --------------------------------------------------------------------------- 01
def nb_quickstart():
    cells = header(
        "tfrec quickstart: data → train → evaluate → export → serve → query",
        """
        The whole life of a sequential recommender in one notebook, on the built-in session
        simulator (no download needed):

        1. **data** — simulated users whose sessions revisit one item and move to the next item
           after a break of days (the HRNN-meta paper's simulation);
        2. **train** a registered model with Keras `fit` (full-ranking validation every epoch,
           best epoch restored) next to the POP baseline;
        3. **evaluate** with full ranking (every item is a candidate);
        4. **export** a SavedModel for TensorFlow Serving (raw string item ids in and out);
        5. **serve** it with tfrec's server, which speaks TF Serving's gRPC and REST APIs,
           and **query** it.
        """, "01_quickstart.ipynb")
    cells += [
        md("## 1. Data"),
        code('''
            from tfrec.data import load_spec

            SPEC = "sim:sessions?users=300" if SMALL else "sim:sessions?users=1000"
            data = load_spec(SPEC)
            rows = [{"split": k, **v} for k, v in data.summary().items()]
            print(format_table(rows, ["split", "sequences", "events", "targets", "distinct_items",
                                      "length_median", "length_max"]))
            print("items (classes incl. padding 0):", data.num_items)

            s = data.train
            seq0 = s.sequence(0)
            times0 = s.column("times", 0)
            print("\\nfirst training user: raw item ids", data.item_vocab.ids(seq0))
            print("gaps between events (s):", np.diff(times0).astype(int).tolist())
        '''),
        code('''
            fig, axes = plt.subplots(1, 2, figsize=(10, 3))
            axes[0].hist(data.train.lengths, bins=20)
            axes[0].set(title="events per user (train)", xlabel="events")
            counts = data.train.item_counts(data.num_items)[1:]
            axes[1].bar(np.arange(1, data.num_items), counts)
            axes[1].set(title="item popularity (train)", xlabel="item index")
            plt.tight_layout(); plt.show()
        '''),
        md("""
            ## 2. Train

            `tfrec.training.runs.train(name, data, ...)` builds a registered model
            (`tfrec models` lists them), trains it with Keras `fit` (validation with full
            ranking after every epoch; the best epoch's weights are restored) and evaluates the
            test split. With `out_dir` it writes a run directory (config, history, metrics,
            `model.keras`). Here: POP and **HRNN** (a GRU whose input carries the hierarchy
            level of the time gap, so it can tell a new session from a continuing one).
        """),
        code('''
            from tfrec.training.runs import train

            MODEL = "hrnn"
            model_config = {"embedding_dim": 16, "hidden": 32, "lanes": 8, "chunk": 20}
            fit_config = {"epochs": 4 if SMALL else 40, "patience": None if SMALL else 5, "seed": SEED}

            pop, pop_result = train("pop", data, verbose=0)
            model, result = train(MODEL, data, out_dir=f"runs/quickstart/{MODEL}",
                                  model_config=model_config, fit_config=fit_config, verbose=2)
            print("best epoch", result["best_epoch"], "| seconds per epoch", result["seconds_per_epoch"])
        '''),
        code('''
            hist = result["history"]
            ep = [r["epoch"] for r in hist]
            fig, axes = plt.subplots(1, 2, figsize=(10, 3))
            axes[0].plot(ep, [r["loss"] for r in hist], marker="o"); axes[0].set(title="training loss", xlabel="epoch")
            for k in ("val_recall@5", "val_recall@20", "val_mrr@20"):
                axes[1].plot(ep, [r.get(k) for r in hist], marker="o", label=k[4:])
            axes[1].set(title="validation (full ranking)", xlabel="epoch"); axes[1].legend()
            plt.tight_layout(); plt.show()
        '''),
        md("## 3. Evaluate (full ranking, conservative ties)"),
        code('''
            from tfrec.evaluation import evaluate

            rows = [{"model": "pop", **evaluate(pop, data.test)},
                    {"model": MODEL, **evaluate(model, data.test)}]
            cols = ["model", "recall@5", "recall@20", "mrr@5", "mrr@20", "ndcg@20", "targets"]
            print(format_table(rows, cols))

            ks = ["recall@5", "recall@20", "mrr@20"]
            x = np.arange(len(ks))
            for i, r in enumerate(rows):
                plt.bar(x + 0.4 * i, [r[k] for k in ks], 0.4, label=r["model"])
            plt.xticks(x + 0.2, ks); plt.title("test metrics"); plt.legend(); plt.show()
        '''),
        md("""
            ## 4. Export a SavedModel for TensorFlow Serving

            `export` writes `base_dir/<version>/` atomically. The graph takes raw string item
            ids (the vocabulary is inside it) and has the signatures `serving_default`
            (top-k), `recommend_ragged`, `score`, `initial_state` and `step`
            (see notebook 06), plus TF Serving warmup records.
        """),
        code('''
            import json
            from tfrec.savedmodels.export import export, export_features

            BASE = os.path.abspath(f"savedmodels/{MODEL}")
            path = export(model, BASE, data=data)
            info = json.load(open(os.path.join(path, "assets.extra", "tfrec.json")))
            print("exported", path)
            print("signatures:", info["signatures"], "| extra inputs:", export_features(model))
        '''),
        md("""
            ## 5. Serve and query

            `ModelServer` loads every version under the base path and serves TF Serving's
            `PredictionService` over gRPC and the `/v1/models/...` REST API (ports 0 = pick free
            ones). `Client` wraps the official gRPC stubs. The same SavedModel also runs in the
            official `tensorflow_model_server` (see `serving/` in the repository).
        """),
        code('''
            from tfrec.serving import Client, ModelServer

            server = ModelServer.from_base_path(MODEL, BASE, file_system_poll_wait_seconds=0)
            server.start(port=0, rest_api_port=0)
            print("gRPC on", server.port, "| REST on", server.rest_api_port)

            seqs = data.test
            history = data.item_vocab.ids(seqs.sequence(0))
            times = seqs.column("times", 0).tolist()
            print("history:", history)
            with Client(f"127.0.0.1:{server.port}", MODEL) as client:
                print("status:", client.status())
                # HRNN reads the time gaps, so the event timestamps travel with the request, and
                # the time of the request itself: the gap since the last event decides whether
                # the next item continues that session (here: one hour later, a new session)
                asked_at = times[-1] + 3600.0
                recs = client.recommend([history], k=3, timestamps=[times], query_times=[asked_at])[0]
                print("top-3 (gRPC):", recs)
        '''),
        code('''
            import urllib.request

            body = {"signature_name": "serving_default",
                    "inputs": {"items": [history], "lengths": [len(history)], "k": [3],
                               "exclude_seen": [False], "timestamps": [times],
                               "query_timestamp": [asked_at]}}
            req = urllib.request.Request(f"http://127.0.0.1:{server.rest_api_port}/v1/models/{MODEL}:predict",
                                         data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
            print("REST:", json.loads(urllib.request.urlopen(req, timeout=30).read()))
            server.stop()
        '''),
        md("""
            **Next:** `02_hcrnn_table3` (reproducing a paper table on real data),
            `03_hrnn_meta` (metadata, cold start, query-time control), `04_arnn_user_context`,
            `05_hnvm`, `06_serving_step` (serving in depth and the incremental `step` signature).
        """),
    ]
    return cells


# --------------------------------------------------------------------------- 02
def nb_hcrnn():
    cells = header(
        "Reproducing HCRNN Table 3 (CiteULike)",
        """
        HCRNN (Song et al., AAAI 2019) adds a *global context* (a variational mixture θ over
        K memory slots), a *local context* with its own gate and an *interest-drift* gate to a
        GRU. Table 3 of the paper compares it with GRU4REC, NARM, STAMP, ... on a CiteULike
        split that the authors published. This notebook trains on that exact split with the
        evaluation protocol of the authors' code (`protocol="hcrnn"`: every test prefix counts,
        all 1,981 classes ranked incl. index 0, optimistic ties, ×100, cut-offs 3 and 20).

        * `SMALL = True` (default, CI): a subset of users, small models, 4 epochs — this shows the
          workflow, **its numbers are not comparable to the paper**.
        * `SMALL = False`: the paper's settings (embedding/hidden 100, K = 50, Adam 1e-3, batch
          512, up to 200 epochs with patience 10 on validation Recall@20) on the full split.
          That takes hours on a CPU; use a GPU runtime. `benchmarks/hcrnn_table3.py` runs the
          five-seed version.
        """, "02_hcrnn_table3.ipynb")
    cells += data_dir_cell(
        "hcrnn_citeulike", "the authors' CiteULike split",
        """
        set `TFREC_DATA_DIR` to a folder holding `hcrnn_citeulike/` (`train.txt`, `valid.txt`,
        `test.txt`, `item2idx.txt`), e.g. on your Google Drive, **or** set `DOWNLOAD = True` in
        the next cell to clone the authors' public repository (`github.com/gtshs2/HCRNN`,
        folder `data/citeulike`; the repository states no licence, so treat the data as
        research-only and do not redistribute it).
        """)
    cells += [
        code('''
            DOWNLOAD = False  # Colab: True clones github.com/gtshs2/HCRNN (data/citeulike) into /content

            if not os.path.isdir(DATASET) and DOWNLOAD:
                subprocess.check_call(["git", "clone", "--depth", "1", "https://github.com/gtshs2/HCRNN",
                                       "/content/HCRNN"])
                DATASET = "/content/HCRNN/data/citeulike"
            if not os.path.isdir(DATASET):
                raise FileNotFoundError(
                    f"CiteULike split not found at {DATASET}. Set TFREC_DATA_DIR to the folder that "
                    "contains hcrnn_citeulike/, or set DOWNLOAD = True above (Colab).")
        '''),
        code('''
            import dataclasses
            from tfrec.data import load_hcrnn

            full = load_hcrnn(DATASET)
            rows = [{"split": k, **v} for k, v in full.summary().items()]
            print(format_table(rows, ["split", "sequences", "events", "targets", "length_median", "length_max"]))
            print("classes:", full.num_items, "(the paper's prefixes: 34,810 / 3,914 / 9,140 targets)")

            if SMALL:  # a user subset: shows the workflow in minutes; NOT comparable to the paper
                pick = lambda s, n: s.subset(np.arange(min(n, len(s))))
                data = dataclasses.replace(full, train=pick(full.train, 250), valid=pick(full.valid, 40),
                                           test=pick(full.test, 80))
            else:
                data = full
            print("using", {k: v["targets"] for k, v in data.summary().items()}, "targets")
        '''),
        md("""
            ## Train POP, GRU4REC and HCRNN-3 with bi-channel attention

            All through `tfrec.training.runs.train` with `protocol="hcrnn"`: validation after every
            epoch on Recall@20, best epoch restored, test evaluated at it.
        """),
        code('''
            from tfrec.training.runs import train

            if SMALL:
                small = {"embedding_dim": 32, "batch_size": 128}
                models = {
                    "POP": ("pop", {}),
                    "GRU4REC": ("gru4rec_ce", {**small, "units": 32}),
                    "HCRNN-3+bi": ("hcrnn", {**small, "hidden": 32, "variant": 3, "attention": "bi",
                                             "num_contexts": 10, "inference_units": 32}),
                }
                fit = {"epochs": 4, "patience": None, "learning_rate": 3e-3, "epsilon": 1e-8, "seed": SEED}
            else:  # the paper's settings (registry defaults: embedding/hidden 100, K = 50, batch 512)
                models = {"POP": ("pop", {}), "GRU4REC": ("gru4rec_ce", {}), "NARM": ("narm", {}),
                          "HCRNN-3": ("hcrnn", {"variant": 3, "attention": "narm"}),
                          "HCRNN-3+bi": ("hcrnn", {"variant": 3, "attention": "bi"})}
                fit = {"epochs": 200, "patience": 10, "epsilon": 1e-8, "seed": 10}

            results, trained = {}, {}
            for label, (name, cfg) in models.items():
                trained[label], results[label] = train(name, data, model_config=cfg, fit_config=fit,
                                                       protocol="hcrnn", verbose=2 if name != "pop" else 0)
                print(label, {k: round(v, 2) for k, v in results[label]["test"].items() if "@" in k})
        '''),
        code('''
            # Table 3 of the paper (CiteULike): R@3, R@20, M@3, M@20
            PAPER = {"GRU4REC": (8.37, 24.19, 5.98, 7.86), "NARM": (7.81, 24.82, 5.40, 7.41),
                     "HCRNN-3": (9.21, 25.42, 6.65, 8.61), "HCRNN-3+bi": (9.33, 25.81, 6.74, 8.70)}
            KEYS = ("recall@3", "recall@20", "mrr@3", "mrr@20")
            rows = []
            for label, r in results.items():
                row = {"model": label, "best_epoch": r["best_epoch"]}
                row.update({k: round(r["test"][k], 2) for k in KEYS})
                row.update({"paper " + k: v for k, v in zip(KEYS, PAPER.get(label, ("-",) * 4))})
                rows.append(row)
            print("setting:", "SMALL (user subset, 4 epochs: not comparable to the paper)" if SMALL else "full")
            print(format_table(rows, ["model", "best_epoch", *KEYS, *("paper " + k for k in KEYS)]))

            fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
            x = np.arange(len(KEYS))
            for i, (label, r) in enumerate(results.items()):
                axes[0].bar(x + i * 0.8 / len(results), [r["test"][k] for k in KEYS], 0.8 / len(results), label=label)
            axes[0].set_xticks(x + 0.3); axes[0].set_xticklabels(KEYS); axes[0].legend(fontsize=8)
            axes[0].set_title("test (hcrnn protocol, x100)")
            for label, r in results.items():
                if r["history"]:
                    axes[1].plot([h["epoch"] for h in r["history"]], [h["val_recall@20"] for h in r["history"]],
                                 marker="o", label=label)
            axes[1].set(title="validation Recall@20 per epoch", xlabel="epoch"); axes[1].legend(fontsize=8)
            plt.tight_layout(); plt.show()
        '''),
        md("""
            ## Looking inside HCRNN

            `HCRNN.explain(history)` returns, for one history, the global-context proportion θ,
            the attention β over the K global contexts at every step, the local/reset/**drift**
            gates, the change of the contexts and the readout attention;
            `tfrec.models.hcrnn.plot_explanation` draws the paper's Fig. 5-7 style panels.
        """),
        code('''
            from tfrec.models.hcrnn import plot_explanation

            hcrnn = trained["HCRNN-3+bi"]
            history = data.test.sequence(0)[:15]
            expl = hcrnn.explain(history)
            fig = plot_explanation(expl, labels=data.item_vocab.ids(expl["items"]), figsize=(10, 9))
            plt.show()

            plt.figure(figsize=(10, 2.8))
            plt.imshow(expl["global_attention"].T, aspect="auto", cmap="viridis")
            plt.colorbar(label="β"); plt.xlabel("step"); plt.ylabel("global context k")
            plt.title("attention over the global contexts at every step"); plt.show()
            print("top contexts:", expl["top_contexts"], "| recommended next:", data.item_vocab.ids(expl["recommended"][:5]))
        '''),
    ]
    return cells


# --------------------------------------------------------------------------- 03
def nb_hrnn_meta():
    cells = header(
        "HRNN-meta: hierarchy control, metadata, cold start and query-time control",
        """
        HRNN-meta (Ma & Narayanaswamy) keeps one RNN over a user's whole history and tells it
        *how much time passed* through a hierarchy-control input (gap levels: < 1 min, < 1 h,
        < 1 day, more), plus user features, item features (an FM-style decoder that can score
        items never seen in training) and interaction feedback. Two simulations from the paper:

        1. **Query-time control** (session simulation): the same history gets different
           recommendations depending on when the query is made.
        2. **Metadata and cold start** (gambler toy): the first bet is leaked as a user
           feature, outcomes are feedback, parity is an item feature. We hold a few items out of
           training entirely and compare HRNN-meta with a plain RNN.
        """, "03_hrnn_meta.ipynb")
    cells += [
        md("## 1. Query-time control on the session simulation"),
        code('''
            import dataclasses
            from tfrec.data import simulate_gambler, simulate_sessions
            from tfrec.data.schema import empty_sequence_set
            from tfrec.models.hrnn_meta import recommend_at, stream_evaluate, perplexity, recall_at
            from tfrec.training.runs import train

            sessions = simulate_sessions(num_users=300 if SMALL else 1000, seed=SEED)
            no_valid = lambda d: dataclasses.replace(d, valid=empty_sequence_set())  # fixed epochs, no selection
            small = {"embedding_dim": 16, "hidden": 32, "lanes": 8, "chunk": 20}
            hrnn, res = train("hrnn", no_valid(sessions), model_config=small, verbose=0,
                              fit_config={"epochs": 30, "learning_rate": 1e-2, "patience": None, "seed": SEED} if SMALL
                              else {"epochs": 80, "patience": None, "seed": SEED})
            print("trained HRNN:", len(res["history"]), "epochs, final loss", round(res["history"][-1]["loss"], 3))
        '''),
        md("""
            In the simulation a session repeats one item; after a break of days the next session
            moves to the next item. `recommend_at(model, history, gap_seconds)` asks for the
            top items *as if the query came `gap_seconds` after the last event*. A good model
            answers "the same item" for short gaps and "the next item" for long ones.
        """),
        code('''
            test = sessions.test
            gaps = [1, 10, 60, 600, 3600, 6 * 3600, 86400, 2 * 86400, 7 * 86400]
            same, nxt = [], []
            users = range(min(len(test), 40))
            for g in gaps:
                s_, n_ = 0, 0
                for u in users:
                    hist = test.sequence(u)
                    top = recommend_at(hrnn, hist, g, times=test.column("times", u), k=1)[0]
                    s_ += top == hist[-1]
                    n_ += top == hist[-1] + 1
                same.append(s_ / len(users)); nxt.append(n_ / len(users))
            plt.figure(figsize=(7, 3))
            plt.semilogx(gaps, same, marker="o", label="top-1 = last item (continue the session)")
            plt.semilogx(gaps, nxt, marker="s", label="top-1 = next item (new session)")
            plt.xlabel("seconds between the last event and the query"); plt.ylabel("share of users")
            plt.title("the query time controls the recommendation"); plt.legend(fontsize=8); plt.show()
            u = 0
            print("user 0 history:", sessions.item_vocab.ids(test.sequence(u)))
            for g in (10, 2 * 86400):
                top = recommend_at(hrnn, test.sequence(u), g, times=test.column("times", u), k=3)
                print(f"  query {g:>6} s later -> top-3", sessions.item_vocab.ids(top))
        '''),
        md("""
            ## 2. Metadata and cold start on the gambler toy

            Each sequence is a gambler's bets (items 0..100). The first bet is uniform and leaked
            as the user feature `first_item`; each bet wins (+1) or loses (−1) at random, that
            outcome is the event's *value* (feedback) and decides the next bet (±1); the bet's
            parity is an item feature. We remove 10 items from the training data completely
            (cold items) and train

            * `rnn` — the item sequence only;
            * `hrnn_meta` — sequence + user feature + feedback + item-feature decoder
              (`feature_inputs=True` also builds input embeddings of cold items from features).
        """),
        code('''
            gambler = simulate_gambler(num_sequences=600 if SMALL else 1000, seed=SEED)
            rng = np.random.default_rng(SEED)
            cold_items = rng.choice(np.arange(1, gambler.num_items), size=10, replace=False)
            is_cold = np.zeros(gambler.num_items, bool); is_cold[cold_items] = True

            def drop_items(seqs, drop):
                """The sequences without any event of the `drop` items (kept: sequences >= 2 events)."""
                keep = ~drop[seqs.items]
                seq_of = np.repeat(np.arange(len(seqs)), seqs.lengths)
                lens = np.bincount(seq_of[keep], minlength=len(seqs))
                sel = lambda a: None if a is None else a[keep]
                out = dataclasses.replace(seqs, items=seqs.items[keep], offsets=np.concatenate([[0], np.cumsum(lens)]),
                                          target_start=np.ones(len(seqs), np.int32), times=sel(seqs.times),
                                          values=sel(seqs.values))
                return out.subset(np.flatnonzero(out.lengths >= 2))

            cold_data = no_valid(dataclasses.replace(gambler, train=drop_items(gambler.train, is_cold)))
            assert not is_cold[cold_data.train.items].any()
            print("cold items:", sorted(gambler.item_vocab.ids(cold_items)),
                  "| training events left:", cold_data.train.num_events, "of", gambler.train.num_events)
        '''),
        code('''
            g_size = {"embedding_dim": 32, "hidden": 64, "lanes": 16, "chunk": 20}
            fit = {"epochs": 15 if SMALL else 120, "patience": None, "seed": SEED}
            variants = {"sequence only (rnn)": ("rnn", {}),
                        "all metadata (hrnn_meta)": ("hrnn_meta", {"feature_inputs": True})}
            rows, curves = [], {}
            for label, (name, extra) in variants.items():
                m, r = train(name, cold_data, model_config={**g_size, **extra}, fit_config=fit, verbose=0)
                curves[label] = [h["loss"] for h in r["history"]]
                ev = stream_evaluate(m, gambler.test, first_targets=True)  # every test target incl. first bets
                first, cold = ev["pos"] == 0, is_cold[ev["target"]]
                rows.append({"model": label, "ppl": perplexity(ev["logp"]),
                             "ppl first bet": perplexity(ev["logp"][first]),
                             "ppl later bets": perplexity(ev["logp"][~first]),
                             "recall@20 cold targets": recall_at(ev["rank"][cold]),
                             "median rank cold targets": float(np.median(ev["rank"][cold])),
                             "recall@20 warm targets": recall_at(ev["rank"][~cold]),
                             "cold targets": int(cold.sum())})
            print(format_table(rows, list(rows[0])))
            print("uniform-random reference: Recall@20", round(20 / (gambler.num_items - 1), 3),
                  "| median rank", (gambler.num_items - 1) // 2)
        '''),
        code('''
            fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
            for label, c in curves.items():
                axes[0].plot(np.arange(1, len(c) + 1), c, label=label)
            axes[0].set(title="training loss", xlabel="epoch"); axes[0].legend(fontsize=7)
            labels = [r["model"].split(" (")[0] for r in rows]
            for i, key in enumerate(["ppl first bet", "ppl later bets"]):
                axes[1].bar(np.arange(len(rows)) + 0.4 * i, [r[key] for r in rows], 0.4, label=key)
            axes[1].set_xticks(np.arange(len(rows)) + 0.2); axes[1].set_xticklabels(labels)
            axes[1].set_title("test perplexity (lower is better)"); axes[1].legend(fontsize=7)
            axes[2].bar(labels, [r["median rank cold targets"] for r in rows])
            axes[2].axhline((gambler.num_items - 1) // 2, color="grey", ls="--", lw=1, label="random")
            axes[2].set_title("median rank of cold (unseen) targets (lower is better)"); axes[2].legend(fontsize=7)
            plt.tight_layout(); plt.show()
        '''),
        md("""
            **Reading the results.** The user feature tells HRNN-meta the first bet, so its
            perplexity on first bets should fall far below the RNN's (which can only guess from
            popularity); feedback tells it which way the next bet moves. Cold items never appear
            in the RNN's training data, so it ranks them near the bottom; HRNN-meta scores them
            from their features. Parity is a weak feature (it splits the items in two halves), so
            it can lift a cold item from the bottom of the ranking but rarely into the top 20. The full benchmark (`benchmarks/hrnn_meta.py`) runs the paper's
            Tables 1-3 and the MovieLens cold-start experiment.
        """),
    ]
    return cells


# --------------------------------------------------------------------------- 04
def nb_arnn():
    cells = header(
        "ARNN: a session RNN augmented with user context (MovieLens 100K)",
        """
        ARNN (Song & Lee 2018) merges a session RNN's state `h_t` with a **user-context**
        vector `c_t` from a product-based neural network (PNN) over the user's attributes
        (here gender, age, occupation, zip prefix) and the previous item. Training is two-stage:
        the PNN and the session model (GRU4Rec) are pretrained, frozen, and a merge layer is
        trained on top — all inside `ARNN.fit` / `train_arnn`.

        Data: MovieLens 100K cut into sessions at one hour of inactivity, leak-free time split.
        `SMALL` uses a subset of the sessions, small layers and 2 epochs per stage.
        """, "04_arnn_user_context.ipynb")
    cells += data_dir_cell(
        "ml-100k", "MovieLens 100K",
        """
        set `TFREC_DATA_DIR` to a folder holding `ml-100k/`, **or** leave `DOWNLOAD = True`
        below: the public archive is fetched from GroupLens (`files.grouplens.org`; see its
        README for the terms of use — the data may not be redistributed).
        """)
    cells += [
        code('''
            DOWNLOAD = True  # fetch the public archive when the folder is missing

            if not os.path.isdir(DATASET) and DOWNLOAD:
                import io, urllib.request, zipfile
                url = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
                print("downloading", url)
                zipfile.ZipFile(io.BytesIO(urllib.request.urlopen(url, timeout=120).read())).extractall("data")
                DATASET = os.path.abspath("data/ml-100k")
            if not os.path.isdir(DATASET):
                raise FileNotFoundError(f"MovieLens 100K not found at {DATASET}; set TFREC_DATA_DIR or DOWNLOAD = True")
        '''),
        code('''
            import dataclasses
            from tfrec.data import load_spec

            full = load_spec(f"movielens:{DATASET}?session_gap=3600")
            if SMALL:  # the first sessions of every split: minutes instead of an hour
                pick = lambda s, n: s.subset(np.arange(min(n, len(s))))
                data = dataclasses.replace(full, train=pick(full.train, 400), valid=pick(full.valid, 60),
                                           test=pick(full.test, 80))
            else:
                data = full
            rows = [{"split": k, **v} for k, v in data.summary().items()]
            print(format_table(rows, ["split", "sequences", "events", "targets", "length_median"]))
            print("user features:", sorted(data.user_features))
        '''),
        md("""
            ## Train ARNN (both stages in one call)

            `train_arnn` pretrains the PNN and GRU4Rec (each with validation-based best-epoch
            restore), freezes them and trains the merge layer. `model.stage_results` keeps the
            pretraining stages' validation metrics.
        """),
        code('''
            from tfrec.models.arnn import train_arnn, PAPER_SESSION

            if SMALL:
                # Adam learns in 2 epochs on this subset; the paper's Adagrad needs many more
                stage = {"optimizer": "adam", "learning_rate": 3e-3, "epochs": 2, "patience": None}
                config = dict(pnn_config={"embedding_dim": 8, "hidden": 32},
                              session_config={**PAPER_SESSION, "units": 32}, merge_hidden=32,
                              pnn_fit=stage, session_fit=stage)
                arnn = train_arnn(data, epochs=2, fit_config=stage, verbose=0, **config)
            else:  # the paper's sizes (registry defaults), up to 10 epochs per stage, patience 3
                arnn = train_arnn(data, verbose=2)
            for stage_name, r in arnn.stage_results.items():
                print(stage_name, "best epoch", r["best_epoch"], {k: round(v, 4) for k, v in r["valid"].items() if "@20" in k})
        '''),
        code('''
            from tfrec.evaluation import evaluate
            from tfrec.training.runs import train

            pop, _ = train("pop", data, verbose=0, evaluate_test=False)
            rows = [{"model": "POP", **evaluate(pop, data.test)},
                    {"model": "GRU4Rec (stage 1)", **evaluate(arnn.session, data.test)},
                    {"model": "PNN context (stage 1)", **evaluate(arnn.pnn, data.test)},
                    {"model": "ARNN (merged)", **evaluate(arnn, data.test)}]
            print(format_table(rows, ["model", "recall@5", "recall@20", "mrr@20", "targets"]))

            ks = ["recall@5", "recall@20", "mrr@20"]
            for i, r in enumerate(rows):
                plt.bar(np.arange(3) + 0.2 * i, [r[k] for k in ks], 0.2, label=r["model"])
            plt.xticks(np.arange(3) + 0.3, ks); plt.legend(fontsize=8); plt.title("test, full ranking"); plt.show()
        '''),
        md("""
            ## The same session, two different users

            ARNN reads the user's context at every event (`x["user"]` selects the user's row of
            context codes). Scoring one session under the context of two users with different
            attributes changes the ranking — this is what the context adds to the session RNN.
        """),
        code('''
            seqs = data.test
            session = seqs.sequence(0)[:8]
            fields = list(arnn.context_fields)
            codes = np.asarray(arnn.context_codes)
            u_a = int(seqs.users[0])
            u_b = next(u for u in range(1, len(codes)) if codes[u][0] != codes[u_a][0] and codes[u][1] != codes[u_a][1])
            scores = {}
            for u in (u_a, u_b):
                x = {"items": session[None, :].astype(np.int32), "user": np.array([u], np.int32)}
                scores[u] = arnn.score_prefix_batch(x)[0]
                scores[u][0] = -np.inf
            top = {u: np.argsort(-s)[:10] for u, s in scores.items()}
            for u in (u_a, u_b):
                print(f"user {u}", dict(zip(fields, codes[u].tolist())), "-> top-10 item ids", data.item_vocab.ids(top[u]))
            print("overlap of the two top-10 lists:", len(set(top[u_a]) & set(top[u_b])), "/ 10")

            plt.figure(figsize=(6, 4))
            plt.scatter(scores[u_a][1:], scores[u_b][1:], s=4, alpha=0.5)
            plt.xlabel(f"score for user {u_a}"); plt.ylabel(f"score for user {u_b}")
            plt.title("same session, two user contexts: every item's score"); plt.show()
        '''),
        md("""
            In the small setting (a few hundred sessions, two epochs per stage) the numbers only
            show the workflow; whether the context helps needs the full data and budget.
            The full comparison (Item-KNN, GRU4REC, PNN, ARNN, and the shuffled-context ablation
            that gives every user another user's attributes) is `benchmarks/arnn.py`.
        """),
    ]
    return cells


# --------------------------------------------------------------------------- 05
def nb_hnvm():
    cells = header(
        "HNVM: hierarchical neural variational model",
        """
        HNVM (Xiao, Liang & Meng, WWW 2019) sees a user's history as a sequence of sessions:
        an encoder GRU summarises each session, a context GRU runs over the summaries and a
        decoder GRU generates the next session from the context and two Gaussian latents —
        a **general preference** `e^u` of the user and a **long-term preference** `z_n` per
        session. It trains on the session-level evidence lower bound (ELBO).

        Data: the session simulation (sessions are days apart, every session repeats one item,
        the next session moves to the next item). We train HNVM, compare it with POP and
        GRU4REC on the next-item and next-session tasks and look at its per-session ELBO terms.
        """, "05_hnvm.ipynb")
    cells += [
        code('''
            from tfrec.data import load_spec
            from tfrec.evaluation import evaluate
            from tfrec.training.runs import train

            data = load_spec("sim:sessions?users=300" if SMALL else "sim:sessions?users=1000")
            print(format_table([{"split": k, **v} for k, v in data.summary().items()],
                               ["split", "sequences", "events", "targets", "length_median"]))

            cfg = {"embedding_dim": 16, "hidden": 32, "latent_dim": 8, "user_latent_dim": 8, "mlp_units": 32,
                   "max_context_sessions": 5, "batch_size": 32, "kl_anneal_steps": 200} if SMALL else {}
            fit = {"epochs": 15, "patience": None, "learning_rate": 5e-3, "seed": SEED} if SMALL else \
                {"epochs": 30, "patience": 5, "seed": SEED}
            hnvm, res = train("hnvm", data, model_config=cfg, fit_config=fit, verbose=0)
            gru, res_gru = train("gru4rec_ce", data, verbose=0,
                                 model_config={"embedding_dim": 16, "units": 32, "batch_size": 64} if SMALL else {},
                                 fit_config={**fit, "epochs": 5} if SMALL else fit)
            pop, res_pop = train("pop", data, verbose=0)
        '''),
        code('''
            hist = res["history"]
            fig, axes = plt.subplots(1, 2, figsize=(10, 3))
            axes[0].plot([h["epoch"] for h in hist], [h["loss"] for h in hist], marker="o")
            axes[0].set(title="HNVM training loss (negative ELBO per item)", xlabel="epoch")
            for k in ("val_recall@5", "val_recall@20"):
                axes[1].plot([h["epoch"] for h in hist], [h[k] for h in hist], marker="o", label=k[4:])
            axes[1].set(title="validation", xlabel="epoch"); axes[1].legend()
            plt.tight_layout(); plt.show()

            rows = [{"model": n, **r["test"]} for n, r in (("POP", res_pop), ("GRU4REC", res_gru), ("HNVM", res))]
            print("next item (full ranking):")
            print(format_table(rows, ["model", "recall@5", "recall@20", "mrr@5", "mrr@20", "targets"]))
        '''),
        md("""
            ## Next-session task

            Each user's last session is the target *set*; one score vector per user from the
            history before it (`HNVM.score_next_session_batch` decodes the first item of a new
            session; other models use their next-item scores).
        """),
        code('''
            from tfrec.data.hierarchy import evaluate_next_session, next_session_dataset

            ns = next_session_dataset(data, gap=3600)
            print("users with >= 3 sessions in the test split:", len(ns.test))
            rows = [{"model": n, **evaluate_next_session(m, ns.test)} for n, m in
                    (("POP", pop), ("GRU4REC", gru), ("HNVM", hnvm))]
            print(format_table(rows, [c for c in rows[0] if c == "model" or "@" in c]))
        '''),
        md("""
            ## The ELBO, session by session

            `HNVM.sequence_elbo(sessions, user)` returns, for whole users at once, the
            log-likelihood of each session and the KL between the posterior and the conditional
            prior of its `z_n`. A session that the prior (built from the sessions before it and
            from `e^u`) predicts well costs little KL; surprises cost more.
        """),
        code('''
            from tfrec.data.hierarchy import user_layout, user_sessions

            seqs = data.test
            per_user = user_sessions(seqs, gap=3600, max_session_length=hnvm.max_session_length)
            users = [i for i, s in enumerate(per_user) if len(s) >= 3][:12]
            N = max(len(per_user[i]) for i in users)
            S = hnvm.max_session_length
            batch = np.zeros((len(users), N, S), np.int32)
            for r, i in enumerate(users):
                lay = user_layout(per_user[i], S)
                batch[r, : len(lay)] = lay
            out = {k: keras.ops.convert_to_numpy(v) for k, v in
                   hnvm.sequence_elbo(batch, seqs.users[users]).items()}
            present = batch.any(-1)
            fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
            for ax, key, title in ((axes[0], "log_likelihood", "log-likelihood of session n"),
                                   (axes[1], "kl_z", "KL(q(z_n) || p(z_n | s_<n, e^u))")):
                im = ax.imshow(np.where(present, out[key], np.nan), aspect="auto", cmap="magma")
                ax.set(title=title, xlabel="session n", ylabel="test user"); fig.colorbar(im, ax=ax)
            plt.tight_layout(); plt.show()
            print("ELBO per user:", np.round(out["elbo"], 1))
        '''),
        md("""
            The MovieLens benchmark with GRU4Rec, HGRU, Caser, STAMP and the RQ2 ablations
            (without `e^u`, without `z_n`) is `benchmarks/hnvm.py`.
        """),
    ]
    return cells


# --------------------------------------------------------------------------- 06
def nb_serving():
    cells = header(
        "Serving in depth and the incremental `step` signature",
        """
        Every tfrec SavedModel has five signatures. This notebook serves one with tfrec's
        server (TF Serving's gRPC and REST APIs) and shows

        * `serving_default` / `score` with raw string ids, `exclude_seen`, per-row `k`;
        * **`initial_state` / `step`**: advance many live sessions one event at a time, keeping
          the session state on the client (or in a feature store) instead of resending the history;
        * the exported graph running in plain TensorFlow (no tfrec import needed);
        * a new version dropped into the base path being picked up while serving.
        """, "06_serving_step.ipynb")
    cells += [
        code('''
            from tfrec.data import load_spec
            from tfrec.training.runs import train

            data = load_spec("sim:sessions?users=300" if SMALL else "sim:sessions?users=1000")
            MODEL = "gru4rec_ce"
            model, result = train(MODEL, data, model_config={"embedding_dim": 16, "units": 32, "batch_size": 64},
                                  fit_config={"epochs": 3 if SMALL else 20, "patience": None, "seed": SEED}, verbose=0)
            print("test recall@5", round(result["test"]["recall@5"], 3))
        '''),
        md("""
            ## Export

            A model without its own recurrent `step` gets the generic one: the state is a
            window of the last `step_window` events, re-scored each step. It equals replaying
            the full history while the history fits the window. We export with a small window
            (5) to see both regimes.
        """),
        code('''
            import json, shutil
            from tfrec.savedmodels.export import export

            BASE = os.path.abspath(f"savedmodels/{MODEL}_step")
            shutil.rmtree(BASE, ignore_errors=True)
            WINDOW = 5
            path = export(model, BASE, data=data, step_window=WINDOW)
            info = json.load(open(os.path.join(path, "assets.extra", "tfrec.json")))
            print(path, "| step kind:", info["step"], "| signatures:", info["signatures"])
        '''),
        code('''
            from tfrec.serving import Client, ModelServer

            server = ModelServer.from_base_path(MODEL, BASE, file_system_poll_wait_seconds=1)
            server.start(port=0, rest_api_port=0)
            client = Client(f"127.0.0.1:{server.port}", MODEL)
            meta = client.metadata()
            for name, sig in sorted(meta.items()):
                print(f"{name:18s} inputs {sorted(sig.inputs)} -> outputs {sorted(sig.outputs)}")
        '''),
        md("## `serving_default` and `score`"),
        code('''
            vocab = data.item_vocab
            histories = [vocab.ids(data.test.sequence(i)[:6]) for i in range(3)]
            for h, recs in zip(histories, client.recommend(histories, k=3, exclude_seen=True)):
                print(h, "-> (excluding seen)", recs)
            x = Client.history_inputs(histories[:1])
            x["candidates"] = np.array([[histories[0][-1], vocab.ids([1])[0], vocab.ids([2])[0]]], object)
            print("score", x["candidates"][0].tolist(), "->", client.predict(x, signature="score")["scores"][0])

            import grpc
            x["candidates"] = np.array([["no-such-item", vocab.ids([1])[0], vocab.ids([2])[0]]], object)
            try:  # this vocabulary's out-of-vocabulary policy is "error" (export(..., oov="pad") ignores unknown ids)
                client.predict(x, signature="score")
            except grpc.RpcError as e:
                print("unknown id ->", e.code().name, ":", e.details())
        '''),
        md("""
            ## Incremental `step`

            `initial_state(sessions)` returns the state tensors for a batch of new sessions;
            `step(state, item, k)` consumes one event per session and returns the new state and
            the top-k. The client keeps the state between calls. We follow one test session event
            by event and compare with `serving_default` on the full history so far.
        """),
        code('''
            import time

            session = vocab.ids(data.test.sequence(int(np.argmax(data.test.lengths))))[:12]
            state = client.predict({"sessions": np.array([b"demo"], object)}, signature="initial_state")
            rows, step_ms, full_ms = [], [], []
            for t, item in enumerate(session, start=1):
                t0 = time.perf_counter()
                out = client.predict({**state, "item": np.array([item.encode()], object),
                                      "k": np.array([3], np.int32)}, signature="step")
                step_ms.append((time.perf_counter() - t0) * 1e3)
                state = {k: v for k, v in out.items() if k.startswith("state_")}
                t0 = time.perf_counter()
                full = client.recommend([session[:t]], k=3)[0]
                full_ms.append((time.perf_counter() - t0) * 1e3)
                step_top = [i.decode() for i in out["item_ids"][0]]
                rows.append({"t": t, "item": item, "step top-3": " ".join(step_top),
                             "full-history top-3": " ".join(i for i, _ in full),
                             "same": step_top == [i for i, _ in full]})
            print(format_table(rows, ["t", "item", "step top-3", "full-history top-3", "same"]))
            print(f"window = {WINDOW}: identical while t <= {WINDOW}; afterwards step scores the last {WINDOW} events only")

            plt.figure(figsize=(7, 3))
            plt.plot(range(1, len(session) + 1), step_ms, marker="o", label="step (state on the client)")
            plt.plot(range(1, len(session) + 1), full_ms, marker="s", label="serving_default (resend history)")
            plt.axvline(WINDOW + 0.5, color="grey", ls="--", lw=1)
            plt.xlabel("events in the session"); plt.ylabel("ms per call (gRPC, loopback)"); plt.legend(fontsize=8)
            plt.title("per-event latency"); plt.show()
        '''),
        md("## Plain TensorFlow, no tfrec: the SavedModel is self-contained"),
        code('''
            import tensorflow as tf

            loaded = tf.saved_model.load(path)
            st = loaded.signatures["initial_state"](sessions=tf.constant(["a", "b"]))
            out = loaded.signatures["step"](**st, item=tf.constant([session[0], session[1]]), k=tf.constant([3, 3]))
            print({k: v.numpy().tolist() for k, v in out.items() if not k.startswith("state_")})
        '''),
        md("## A new version while serving"),
        code('''
            path2 = export(model, BASE, data=data, step_window=2 * WINDOW)  # version 2, e.g. a retrained model
            for _ in range(60):
                st = {s["version"]: s["state"] for s in client.status()}
                if st.get(2) == "AVAILABLE":
                    break
                time.sleep(1)
            for s in client.status():
                print("version", s["version"], s["state"])
            print("requests now go to version 2:", client.recommend([session[:3]], k=3)[0])
            try:  # like TF Serving's default "latest" version policy, version 1 was unloaded
                client.recommend([session[:3]], k=3, version=1)
            except grpc.RpcError as e:
                print("version 1 ->", e.code().name)
            client.close(); server.stop()
        '''),
        md("""
            Deployment with the official `tensorflow_model_server` (model config files,
            batching parameters, docker-compose, Kubernetes) is described in `serving/README.md`.
        """),
    ]
    return cells


NOTEBOOKS = {
    "01_quickstart.ipynb": nb_quickstart,
    "02_hcrnn_table3.ipynb": nb_hcrnn,
    "03_hrnn_meta.ipynb": nb_hrnn_meta,
    "04_arnn_user_context.ipynb": nb_arnn,
    "05_hnvm.ipynb": nb_hnvm,
    "06_serving_step.ipynb": nb_serving,
}


def build(name: str) -> nbformat.NotebookNode:
    nb = new_notebook(cells=NOTEBOOKS[name]())
    for i, cell in enumerate(nb.cells):  # stable ids: rebuilding an unchanged notebook changes nothing
        cell.id = hashlib.sha1(f"{name}:{i}:{cell.source}".encode()).hexdigest()[:8]
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "colab": {"provenance": [], "name": name},
    }
    if name == "02_hcrnn_table3.ipynb":  # the full setting wants a GPU runtime on Colab
        nb.metadata["accelerator"] = "GPU"
    nbformat.validate(nb)
    return nb


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="notebook file names (default: all)")
    args = p.parse_args(argv)
    for name in args.names or NOTEBOOKS:
        path = os.path.join(HERE, os.path.basename(name))
        nbformat.write(build(os.path.basename(name)), path)
        print("wrote", os.path.relpath(path))


if __name__ == "__main__":
    main()
