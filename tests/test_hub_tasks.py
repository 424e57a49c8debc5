"""The hub/local dataset layer and the hh, hh-ood, tldr, tldr-ood tasks, on small files written here in the
public layouts (never ../shared)."""

from __future__ import annotations

import csv
import gzip
import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from gilbench import registry
from gilbench.data import hh, tldr
from gilbench.data.format import format_example, format_prompt
from gilbench.data.hub import Source, load_rows, read_local_file, split_keys
from gilbench.data.tasks import as_task_spec
from gilbench.errors import GilbenchError

# ---------------------------------------------------------------------------- writers of public layouts


def transcript(turns: list[tuple[str, str]]) -> str:
    return "".join(f"\n\n{role}: {text}" for role, text in turns)


def hh_rows(subset: str, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        if i % 3 == 2:  # multi-turn
            context = [
                ("Human", f"{subset} question {i}?"),
                ("Assistant", f"Earlier answer {i}."),
                ("Human", f"And a follow-up {i}?"),
            ]
        else:
            context = [("Human", f"{subset} question {i}?")]
        rows.append(
            {
                "chosen": transcript(context + [("Assistant", f"good reply {i}")]),
                "rejected": transcript(context + [("Assistant", f"bad reply {i}")]),
            }
        )
    return rows


def write_jsonl(path: Path, rows: list[dict], gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def tldr_prompt(i: int) -> str:
    return f"SUBREDDIT: r/test{i % 3}\n\nTITLE: Title number {i}\n\nPOST: This is post {i}. It has some text.\n\nTL;DR:"


def make_data_dir(root: Path, n_hh: int = 30, n_tldr: int = 40) -> Path:
    """A --data-dir shaped like ../shared/data: HH test files only, the TL;DR extract and the OOD files."""
    for subset in ("harmless-base", "helpful-base"):
        write_jsonl(root / f"hh-rlhf/{subset}/test.jsonl.gz", hh_rows(subset, n_hh), gz=True)
    write_jsonl(
        root / "tldr/tldr-1945.jsonl",
        [
            {"prompt": tldr_prompt(i), "label": f" human summary {i}", "openai_ppo_1.3b_response": f"ppo summary {i}"}
            for i in range(n_tldr)
        ],
    )
    long = "First sentence here. " * 150
    write_jsonl(
        root / "ood/cnndm-200.jsonl",
        [
            {"article": f"Article {i} says things. More text.", "highlights": "h", "article_truncated": False}
            for i in range(6)
        ]
        + [
            {"article": "Already cut " + long[:2000] + "...", "highlights": "h", "article_truncated": True},
            {"article": "Too long " + long, "highlights": "h", "article_truncated": False},
        ],
    )
    (root / "ood").mkdir(parents=True, exist_ok=True)
    with (root / "ood/beavertails-140.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "response", "category"])
        for i in range(8):
            w.writerow([f"How do I do harmful thing {i}?", "Some,\nmulti-line response", "violence"])
    write_jsonl(
        root / "ood/mt-bench-80.jsonl",
        [
            {"question_id": 81 + i, "category": "writing", "turns": [f"Write a poem about {i}.", "Now shorter."]}
            for i in range(5)
        ],
    )
    write_jsonl(
        root / "ood/vicuna-80.jsonl",
        [{"question_id": 1 + i, "category": "generic", "turns": [f"How can I improve skill {i}?"]} for i in range(4)],
    )
    return root


@pytest.fixture
def data_dir(tmp_path):
    return make_data_dir(tmp_path / "data")


def load(task: str, **kw):
    return as_task_spec(registry.tasks.get(task), task).load(**kw)


def all_train_texts(data):
    return {p.text for p in data.rl_prompts} | {e.prompt for e in data.sft} | {p.prompt for p in data.pairs_train}


# ---------------------------------------------------------------------------- hh


def test_hh_local_split_parses_transcripts(data_dir):
    data = load("hh", seed=0, data_dir=str(data_dir))
    assert data.prompt_format == "chat"
    counts = data.notes["split"]["subsets"]
    for subset in ("harmless-base", "helpful-base"):  # 30 prompts each: 24 / 3 / 3, recorded in the notes
        assert counts[subset]["prompts"] == {"train": 24, "validation": 3, "test": 3}
        assert "Random('hh:" in counts[subset]["how"] and data.notes["split"]["seed"] == 0
    assert (
        len(data.rl_prompts) == 48 and len(data.sft) == 48 and len(data.pairs_train) == 48 and len(data.pairs_val) == 6
    )
    assert (
        len(data.eval_splits) == 1 and data.eval_splits[0].name == "id:test" and len(data.eval_splits[0].prompts) == 6
    )
    assert {p.group for p in data.rl_prompts} == {"harmless", "helpful"}
    assert [p.group for p in data.rl_prompts[:4]] == ["harmless", "helpful", "harmless", "helpful"]  # interleaved
    single = next(p for p in data.pairs_train if p.group == "harmless" and "\n" not in p.prompt)
    n = single.prompt.split()[-1].rstrip("?")
    assert single.prompt == f"harmless-base question {n}?" and (single.chosen, single.rejected) == (
        f"good reply {n}",
        f"bad reply {n}",
    )
    multi = [p for p in data.pairs_train if "\n\n" in p.prompt]
    assert multi, "multi-turn prompts keep their context"
    m = multi[0]
    i = m.chosen.split()[-1]
    assert (
        m.prompt.startswith("Human: ")
        and m.prompt.endswith(f"Human: And a follow-up {i}?")
        and f"Assistant: Earlier answer {i}." in m.prompt
    )
    assert m.chosen == f"good reply {i}"
    # no eval prompt is trained on; ids are stable hashes of the text
    test_texts = {p.text for p in data.eval_splits[0].prompts}
    assert not test_texts & all_train_texts(data) and not test_texts & {p.prompt for p in data.pairs_val}
    assert all(p.id.startswith("hh-") and len(p.id) == 15 for p in data.rl_prompts)


def test_hh_prompt_text_works_with_plain_and_chat_formats(data_dir):
    from gilbench.models.presets import tiny_tokenizer

    data = load("hh", seed=0, data_dir=str(data_dir))
    text = next(p.text for p in data.rl_prompts if "\n\n" in p.text)
    chat = tiny_tokenizer()
    assert format_prompt(chat, text, "chat") == f"<|user|>{text}<|assistant|>"
    no_template = SimpleNamespace(chat_template=None, eos_token="</s>")
    assert format_prompt(no_template, text, "chat") == f"User: {text}\nAssistant:"
    assert format_prompt(no_template, text, "plain") == text
    head, tail = format_example(no_template, text, "a reply", "plain")
    assert head == text and tail == " a reply</s>"


def test_hh_is_deterministic_per_seed_and_limit_keeps_groups(data_dir):
    a, b = load("hh", seed=0, data_dir=str(data_dir)), load("hh", seed=0, data_dir=str(data_dir))
    assert (
        a.rl_prompts == b.rl_prompts
        and a.pairs_val == b.pairs_val
        and a.eval_splits[0].prompts == b.eval_splits[0].prompts
    )
    c = load("hh", seed=1, data_dir=str(data_dir))
    assert {p.text for p in c.eval_splits[0].prompts} != {p.text for p in a.eval_splits[0].prompts}
    small = load("hh", seed=0, limit=4, data_dir=str(data_dir))
    for part in (small.rl_prompts, small.sft, small.pairs_train, small.pairs_val, small.eval_splits[0].prompts):
        assert len(part) <= 4
    assert [p.group for p in small.rl_prompts] == ["harmless", "helpful"] * 2


def test_hh_with_train_files_uses_the_real_splits(data_dir):
    for subset in ("harmless-base", "helpful-base"):  # a full local copy: train.jsonl (plain jsonl is accepted too)
        rows = hh_rows(subset, 20) + hh_rows(subset, 33)[30:]  # 23 distinct prompts
        write_jsonl(data_dir / f"hh-rlhf/{subset}/train.jsonl", rows)
    data = load("hh", seed=0, data_dir=str(data_dir))
    notes = data.notes["split"]["subsets"]["harmless-base"]
    assert "real train/test splits" in notes["how"] and notes["rows"]["test"] == 30
    # the train file repeats prompts of the test file (question 0..19): they are dropped from training
    assert data.notes["removed_for_leakage"] > 0
    data.check_no_leakage()
    assert len(data.eval_splits[0].prompts) == 60


def test_hh_skips_odd_rows_and_counts_them(tmp_path):
    rows = hh_rows("harmless-base", 6)
    rows[1]["rejected"] = transcript([("Human", "something else?"), ("Assistant", "x")])  # context mismatch
    rows[2]["chosen"] = transcript([("Human", "harmless-base question 2?"), ("Assistant", "")])  # empty reply
    write_jsonl(tmp_path / "hh-rlhf/harmless-base/test.jsonl.gz", rows, gz=True)
    write_jsonl(tmp_path / "hh-rlhf/helpful-base/test.jsonl.gz", hh_rows("helpful-base", 6), gz=True)
    data = hh.load_hh(seed=0, data_dir=str(tmp_path))
    skipped = data.notes["skipped"]
    assert skipped == {
        "harmless-base/test: chosen and rejected differ before the final reply": 1,
        "harmless-base/test: empty final reply": 1,
    }


def test_malformed_rows_fail_with_file_and_line(tmp_path):
    rows = hh_rows("harmless-base", 20)
    del rows[16]["rejected"]
    path = write_jsonl(tmp_path / "hh-rlhf/harmless-base/test.jsonl.gz", rows, gz=True)
    write_jsonl(tmp_path / "hh-rlhf/helpful-base/test.jsonl.gz", hh_rows("helpful-base", 4), gz=True)
    with pytest.raises(GilbenchError, match=rf"{path} line 17: missing field 'rejected'"):
        load("hh", data_dir=str(tmp_path))
    rows[16]["rejected"] = "no transcript markers here"
    write_jsonl(path, rows, gz=True)
    with pytest.raises(GilbenchError, match=r"test.jsonl.gz line 17: field 'rejected' is not an HH transcript"):
        load("hh", data_dir=str(tmp_path))
    path.write_bytes(
        gzip.compress(
            b'{"chosen": "\\n\\nHuman: a\\n\\nAssistant: b", "rejected": "\\n\\nHuman: a\\n\\nAssistant: c"}\n{"chosen": 3\n'
        )
    )
    with pytest.raises(GilbenchError, match=r"test.jsonl.gz line 2: not valid JSON"):
        load("hh", data_dir=str(tmp_path))
    bad_csv = tmp_path / "x.csv"
    bad_csv.write_text('prompt,category\n"ok",a\n"multi\nline",b\n"too","many","cells"\n')
    with pytest.raises(GilbenchError, match=r"x.csv line 5: 1 more cell"):
        list(read_local_file(bad_csv))
    missing = tmp_path / "y.csv"
    missing.write_text("question,category\nhi,a\n")
    with pytest.raises(GilbenchError, match=r"y.csv line 2: missing field 'prompt'"):
        load_rows(Source("x/y", "test", "y.csv", required=("prompt",)), tmp_path)


def test_neither_hub_nor_data_dir_names_both_ways_out(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GilbenchError) as err:
        load("hh", seed=0)
    msg = str(err.value)
    assert (
        "Anthropic/hh-rlhf" in msg
        and "--data-dir" in msg
        and "hh-rlhf/harmless-base/train.jsonl.gz" in msg
        and "HF_HUB_OFFLINE" in msg
    )


def test_data_dir_without_the_files_says_what_is_expected(tmp_path):
    with pytest.raises(
        GilbenchError,
        match=r"hh-rlhf/harmless-base/train.jsonl.gz not found .*drop --data-dir to load Anthropic/hh-rlhf",
    ):
        load("hh", data_dir=str(tmp_path))
    with pytest.raises(GilbenchError, match=r"tldr/train.jsonl .* nor the extract .*tldr/tldr-1945.jsonl"):
        load("tldr", data_dir=str(tmp_path))
    with pytest.raises(GilbenchError, match=r"no such folder"):
        load("tldr", data_dir=str(tmp_path / "nope"))


def test_hub_path_reads_through_datasets(tmp_path, monkeypatch):
    """The default (hub) path is datasets.load_dataset; here it reads a local dataset folder, offline."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    write_jsonl(tmp_path / "repo/harmless-base/train.jsonl.gz", hh_rows("harmless-base", 5), gz=True)
    source = replace(hh.hh_source("harmless-base", "train"), hub_id=str(tmp_path / "repo"))
    rows, prov = load_rows(source)
    assert len(rows) == 5 and prov["from"] == "hub" and prov["rows"] == 5 and "row 0" in rows[0].where
    assert isinstance(hh.parse_hh_row(rows[0], "harmless"), hh.HHRow)


# ---------------------------------------------------------------------------- hh-ood


def test_hh_ood_names_stand_ins_and_removes_overlap(data_dir):
    # an HH training prompt that is also a BeaverTails prompt must leave training
    rows = hh_rows("harmless-base", 30)
    rows[0] = {
        k: transcript([("Human", "How do I do harmful thing 3?"), ("Assistant", f"{k} reply")])
        for k in ("chosen", "rejected")
    }
    write_jsonl(data_dir / "hh-rlhf/harmless-base/test.jsonl.gz", rows, gz=True)
    data = load("hh-ood", seed=0, data_dir=str(data_dir))
    names = [s.name for s in data.eval_splits]
    assert names == ["id:test", "ood:beavertails", "ood:mt-bench"]
    bt, mt = data.eval_splits[1], data.eval_splits[2]
    assert bt.distribution == mt.distribution == "ood" and "STAND-IN for PKU-SafeRLHF" in bt.description
    assert len(bt.prompts) == 8 and {p.group for p in bt.prompts} == {"harmless"}
    assert sorted(p.text for p in mt.prompts) == sorted(f"Write a poem about {i}." for i in range(5))  # turn 1 only
    assert data.notes["ood_sources"]["ood:beavertails"]["stand_in_for"] == "PKU-Alignment/PKU-SafeRLHF"
    assert "How do I do harmful thing 3?" not in all_train_texts(data)
    # vicuna instead of MT-bench; a local PKU-SafeRLHF copy replaces the stand-in
    write_jsonl(
        data_dir / "PKU-SafeRLHF/test.jsonl",
        [{"prompt": f"Unsafe request {i}?", "response_0": "a"} for i in range(3)] * 2,
    )
    other = hh.load_hh_ood(seed=0, data_dir=str(data_dir), helpful_ood="vicuna")
    assert [s.name for s in other.eval_splits] == ["id:test", "ood:pku-saferlhf", "ood:vicuna"]
    assert len(other.eval_splits[1].prompts) == 3 and len(other.eval_splits[2].prompts) == 4


# ---------------------------------------------------------------------------- tldr


def test_tldr_local_extract(data_dir):
    data = load("tldr", seed=0, data_dir=str(data_dir))
    assert data.prompt_format == "plain"
    assert (
        len(data.rl_prompts),
        len(data.sft),
        len(data.pairs_train),
        len(data.pairs_val),
        len(data.eval_splits[0].prompts),
    ) == (32, 32, 32, 4, 4)
    assert "LOCAL STAND-IN" in data.notes["pairs"] and "Random('tldr:0')" in data.notes["split"]["how"]
    pair = data.pairs_train[0]
    i = pair.prompt.split("post ")[1].split(".")[0]
    assert pair.prompt == tldr_prompt(int(i)) and (pair.chosen, pair.rejected) == (
        f"human summary {i}",
        f"ppo summary {i}",
    )
    head, tail = format_example(
        SimpleNamespace(chat_template=None, eos_token="<e>"), pair.prompt, pair.chosen, data.prompt_format
    )
    assert head.endswith("TL;DR:") and tail == f" human summary {i}<e>"
    again = load("tldr", seed=0, data_dir=str(data_dir))
    assert again.pairs_train == data.pairs_train and again.eval_splits[0].prompts == data.eval_splits[0].prompts
    assert {p.text for p in load("tldr", seed=2, data_dir=str(data_dir)).eval_splits[0].prompts} != {
        p.text for p in data.eval_splits[0].prompts
    }
    assert len(load("tldr", seed=0, limit=5, data_dir=str(data_dir)).rl_prompts) == 5


def test_tldr_full_local_copy_uses_human_comparisons(data_dir):
    # trl-lib/tldr layout (prompt + completion, single-newline spacing) and summarize_from_feedback comparisons
    write_jsonl(
        data_dir / "tldr/train.jsonl",
        [
            {"prompt": f"SUBREDDIT: r/a\nTITLE: T{i}\nPOST: Post {i}\nTL;DR:", "completion": f" sum {i}"}
            for i in range(10)
        ],
    )
    write_jsonl(data_dir / "tldr/test.jsonl", [{"prompt": tldr_prompt(100 + i), "completion": " s"} for i in range(3)])

    def comparison(i, choice, post=True):
        info = {
            "id": str(i),
            "post": f"Post {i}" if post else None,
            "title": f"T{i}",
            "subreddit": "a",
            "article": None if post else "news",
        }
        return {
            "info": info,
            "summaries": [{"text": f" first {i}", "policy": "p"}, {"text": f" second {i}", "policy": "q"}],
            "choice": choice,
            "worker": "w",
        }

    write_jsonl(
        data_dir / "summarize_from_feedback/comparisons/train.jsonl",
        [comparison(i, i % 2) for i in range(6)] + [comparison(50, 0, post=False)],
    )
    write_jsonl(
        data_dir / "summarize_from_feedback/comparisons/validation.jsonl",
        [comparison(7, 1), {"info": {}, "summaries": [], "choice": 0}],
    )
    with pytest.raises(GilbenchError, match=r"validation.jsonl line 2: field 'summaries' must be a list of two"):
        load("tldr", data_dir=str(data_dir))
    write_jsonl(data_dir / "summarize_from_feedback/comparisons/validation.jsonl", [comparison(7, 1)])
    data = load("tldr", seed=0, data_dir=str(data_dir))
    assert data.notes["skipped"] == {"comparisons/train: not a Reddit post (CNN/DM article)": 1}
    assert len(data.pairs_train) == 6 and len(data.pairs_val) == 1 and len(data.eval_splits[0].prompts) == 3
    pair = next(p for p in data.pairs_train if p.prompt.startswith("SUBREDDIT: r/a\n\nTITLE: T1\n\n"))
    assert (pair.chosen, pair.rejected) == ("second 1", "first 1")
    # SFT prompts are re-rendered in the canonical layout, so they match the comparison prompts exactly
    assert (
        pair.prompt in {e.prompt for e in data.sft}
        and pair.prompt == "SUBREDDIT: r/a\n\nTITLE: T1\n\nPOST: Post 1\n\nTL;DR:"
    )


def test_tldr_ood_cnndm_in_tldr_layout(data_dir):
    data = load("tldr-ood", seed=0, data_dir=str(data_dir))
    split = data.eval_splits[1]
    assert split.name == "ood:cnndm" and split.distribution == "ood" and len(split.prompts) == 8
    texts = {p.text for p in split.prompts}
    assert "POST: Article 3 says things. More text.\n\nTL;DR:" in texts
    cut = next(t for t in texts if "Too long" in t)
    assert len(cut) <= 2048 + len("POST: \n\nTL;DR:") and cut.endswith("here.\n\nTL;DR:")  # cut at a sentence end
    already = next(t for t in texts if "Already cut" in t)
    assert already.endswith("...\n\nTL;DR:")  # the extract's own cut is kept
    custom = tldr.load_tldr_ood(seed=0, data_dir=str(data_dir), ood_template="ARTICLE: {article}\nTL;DR:")
    assert all(p.text.startswith("ARTICLE: ") for p in custom.eval_splits[1].prompts)
    with pytest.raises(GilbenchError, match=r"ood_template must contain \{article\}"):
        tldr.load_tldr_ood(seed=0, data_dir=str(data_dir), ood_template="{post}")


# ---------------------------------------------------------------------------- shared pieces


def test_leakage_check_is_enforced_by_the_loader_machinery(data_dir):
    from gilbench.data.tasks import TaskSpec

    def leaky(seed=0, limit=None, data_dir=None):
        data = hh.load_hh(seed=seed, data_dir=data_dir)
        data.rl_prompts.append(data.eval_splits[0].prompts[0])
        return data

    with pytest.raises(GilbenchError, match=r"prompts of eval split id:test also appear in training data"):
        TaskSpec(name="leaky", description="", loader=leaky).load(data_dir=str(data_dir))


def test_split_keys_is_a_seeded_partition():
    keys = [f"k{i}" for i in range(100)] * 2
    parts = split_keys(keys, (0.8, 0.1, 0.1), seed=3, salt="x")
    assert [len(p) for p in parts] == [80, 10, 10] and set().union(*parts) == set(keys)
    assert parts == split_keys(list(reversed(keys)), (0.8, 0.1, 0.1), seed=3, salt="x")
    assert parts != split_keys(keys, (0.8, 0.1, 0.1), seed=4, salt="x")


def test_task_yaml_sources_match_the_loaders():
    root = Path(__file__).resolve().parent.parent / "tasks"
    expected = {
        "hh": hh.sources(),
        "tldr": tldr.sources(),
        "tldr-ood": tldr.sources() + [tldr.CNNDM],
        "hh-ood": hh.sources() + [hh.PKU_SAFERLHF, hh.MT_BENCH],
    }
    for name, sources in expected.items():
        spec = yaml.safe_load((root / f"{name}.yaml").read_text())
        declared = [{k: str(v) for k, v in entry.items()} for entry in spec["source"]["hub"]]
        assert declared == [{k: str(v) for k, v in s.describe().items()} for s in sources], name
        assert spec["license"] and spec["loader"].startswith("gilbench.data.")
        loaded = registry.tasks.get(name)
        assert loaded.prompt_format == ("chat" if name.startswith("hh") else "plain")
