"""The hub/local dataset layer and the hh and hh-ood tasks, on small files in the public layouts (never ../shared);
tldr and tldr-ood: tests/test_hub_tldr.py."""

from __future__ import annotations

import gzip
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from hub_fixtures import all_train_texts, hh_rows, load, make_data_dir, transcript, write_jsonl

from gilbench import registry
from gilbench.data import hh, tldr
from gilbench.data.format import format_example, format_prompt
from gilbench.data.hub import Source, load_rows, read_local_file, split_keys
from gilbench.errors import GilbenchError


@pytest.fixture
def data_dir(tmp_path):
    return make_data_dir(tmp_path / "data")


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
