"""The prepared data cache: content addressing, resume, the formats and the tokenizers."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
from corpus import copy_stdlib_corpus

from engine.data import build_source
from engine.data.cache import TextSource, TokenStream, cache_root, find_manifest, prepare_tokens
from engine.data.layouts import EOS_ID
from engine.data.sentencepiece_training import SentencePieceTraining, trained_model
from engine.data.tokenizers import BYTE_OFFSET, SHIFT, TokenizerRef
from engine.errors import UserError
from engine.planning.sizing import ModelDims

DECODER = ModelDims("decoder", 32, 2, 16, 64, 2, vocab_size=259, seq_len=32)
DOCUMENTS = ["first document\nwith two lines", "second", "third: ünïcödé ✓", "fourth one " * 20]


def _byte_tokens(documents: list[str]) -> list[int]:
    tokens: list[int] = []
    for document in documents:
        tokens += [b + BYTE_OFFSET for b in document.encode()] + [EOS_ID]
    return tokens


def _all_tokens(manifest: object, length: int = 1) -> list[int]:
    stream = TokenStream(manifest, length)  # type: ignore[arg-type]
    return [int(t) for i in range(len(stream)) for t in stream[i]]


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("ENGINE_DATA_CACHE", str(root))
    return root


def _shard_mtimes(root: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (root / "shards").glob("*.tokens")}


def test_content_addressed_shards_are_reused_and_a_changed_file_is_redone(tmp_path: Path, cache: Path) -> None:
    files = [tmp_path / f"{name}.txt" for name in ("a", "b", "c")]
    for index, file in enumerate(files):
        file.write_text(f"file {index}\n" * 50)
    source = TextSource(tuple(files), "text", "text", TokenizerRef("bytes"))
    assert find_manifest(source) is None
    manifest = prepare_tokens(source, workers=1)
    assert manifest.documents == 3 and manifest.tokens == sum(f.stat().st_size + 1 for f in files)
    assert _all_tokens(manifest) == _byte_tokens([f.read_text() for f in files])
    before = _shard_mtimes(cache)
    assert prepare_tokens(source).key == manifest.key and _shard_mtimes(cache) == before  # nothing redone

    files[1].write_text("changed\n")
    changed = prepare_tokens(source, workers=1)
    assert changed.key != manifest.key
    after = _shard_mtimes(cache)
    assert len(after) == 4 and all(after[name] == before[name] for name in before)  # only b's shard is new
    assert changed.shards[0].key == manifest.shards[0].key and changed.shards[1].key != manifest.shards[1].key


def test_a_killed_preparation_resumes_from_its_finished_shards(tmp_path: Path, cache: Path) -> None:
    files = [tmp_path / f"{i}.txt" for i in range(4)]
    for index, file in enumerate(files):
        file.write_text(f"line {index}\n" * 100)
    source = TextSource(tuple(files), "text", "text", TokenizerRef("bytes"))
    whole = prepare_tokens(source, workers=2)  # in spawned worker processes
    # As if killed while the last file was being written: its shard unfinished, no manifest yet.
    (cache / "sets" / f"{whole.key}.json").unlink()
    last = whole.shards[-1].key
    (cache / "shards" / f"{last}.json").unlink()
    (cache / "shards" / f"{last}.tokens").write_bytes(b"torn")
    kept = {name: mtime for name, mtime in _shard_mtimes(cache).items() if not name.startswith(last)}
    finished = []
    resumed = prepare_tokens(source, workers=1, progress=finished.append)
    assert resumed == whole and _all_tokens(resumed) == _all_tokens(whole)
    assert {n: m for n, m in _shard_mtimes(cache).items() if not n.startswith(last)} == kept
    assert finished == [sum(f.stat().st_size for f in files[:3]), files[3].stat().st_size]


def test_formats_give_the_same_tokens(tmp_path: Path, cache: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from array_record.python.array_record_module import ArrayRecordWriter

    lines = "".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(DOCUMENTS))
    (tmp_path / "docs.jsonl").write_text(lines)
    with gzip.open(tmp_path / "docs.jsonl.gz", "wt") as handle:
        handle.write(lines)
    pq.write_table(pa.table({"body": DOCUMENTS}), tmp_path / "docs.parquet", row_group_size=2)
    writer = ArrayRecordWriter(str(tmp_path / "docs.array_record"), "group_size:1")
    for document in DOCUMENTS:
        writer.write(document.encode())
    writer.close()
    expected = _byte_tokens(DOCUMENTS)
    for name, fmt, field in [("docs.jsonl", "jsonl", "text"), ("docs.jsonl.gz", "jsonl", "text"),
                             ("docs.parquet", "parquet", "body"), ("docs.array_record", "array_record", "text")]:
        manifest = prepare_tokens(TextSource((tmp_path / name,), fmt, field, TokenizerRef("bytes")))
        assert manifest.documents == len(DOCUMENTS), name
        assert _all_tokens(manifest) == expected, name


@pytest.mark.parametrize(("name", "content", "fmt", "field", "match"), [
    ("bad.jsonl", '{"text": "ok"}\n{"text": 3}\n', "jsonl", "text", r"bad\.jsonl:2: no string field 'text'"),
    ("bad.jsonl", '{"text": "ok"}\nnot json\n', "jsonl", "text", r"bad\.jsonl:2: not a JSON object"),
    ("bad.parquet", None, "parquet", "content", r"bad\.parquet has no column 'content'"),
    ("bad.parquet", b"not parquet", "parquet", "text", r"cannot read .*bad\.parquet as Parquet"),
])
def test_bad_records_name_the_file_and_line(
    tmp_path: Path, cache: Path, name: str, content: object, fmt: str, field: str, match: str
) -> None:
    path = tmp_path / name
    if content is None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"text": ["a"]}), path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(UserError, match=match):
        prepare_tokens(TextSource((path,), fmt, field, TokenizerRef("bytes")), workers=1)  # type: ignore[arg-type]


def test_huggingface_tokenizer_json(tmp_path: Path, cache: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "hello": 1, "world": 2, "again": 3}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "a.txt").write_text("hello world\nhello again zzz\n")
    source = build_source("text_files", {"paths": ["a.txt"], "tokenizer": {"kind": "huggingface", "file": "tokenizer.json"},
                                         "eval_batch_size": 1}, ModelDims("decoder", 32, 2, 16, 64, 2, vocab_size=8, seq_len=1),
                          1, 0, tmp_path)
    tokens = _all_tokens(source.manifest)
    assert tokens == [1 + SHIFT, 2 + SHIFT, 1 + SHIFT, 3 + SHIFT, 0 + SHIFT, EOS_ID]
    assert source.manifest.id_count == 4 + SHIFT
    (tmp_path / "broken.json").write_text("{}")
    with pytest.raises(UserError, match=r"broken\.json is not a Hugging Face tokenizers JSON file"):
        TokenizerRef("huggingface", tmp_path / "broken.json").load()


def test_sentencepiece_trained_once_from_the_corpus_and_user_model_files(tmp_path: Path, cache: Path) -> None:
    import sentencepiece

    files = tuple(copy_stdlib_corpus(tmp_path / "text"))
    training = SentencePieceTraining(vocab_size=300, model_type="bpe", sample_bytes=200_000)
    model = trained_model(files, "text", "text", training)
    assert trained_model(files, "text", "text", training) == model  # cached: not trained again
    processor = sentencepiece.SentencePieceProcessor(model_file=str(model))
    assert processor.GetPieceSize() == 300 and processor.pad_id() == 0 and processor.eos_id() == 1
    # The same model as a user's own .model file: no shift (T5's layout), ids within 300.
    (tmp_path / "user.model").write_bytes(model.read_bytes())
    dims = ModelDims("decoder", 32, 2, 16, 64, 2, vocab_size=300, seq_len=32)
    user = build_source("text_files", {"paths": ["text"], "tokenizer": {"kind": "sentencepiece", "model": "user.model"}},
                        dims, 4, 0, tmp_path)
    spec_trained = build_source("text_files", {"paths": ["text"], "tokenizer": {
        "kind": "sentencepiece", "train": {"vocab_size": 300, "model_type": "bpe", "sample_bytes": 200_000}}},
        dims, 4, 0, tmp_path)
    assert user.manifest.key == spec_trained.manifest.key  # the same model file: the same cache
    rows = user.batch(0)["tokens"]
    corpus = " ".join(" ".join(file.read_text() for file in files).split())
    assert rows.max() < 300
    for row in rows[(rows != EOS_ID).all(axis=1)]:  # rows inside one file decode to its text
        assert " ".join(processor.DecodeIds([int(t) for t in row]).split()) in corpus
    small = ModelDims("decoder", 32, 2, 16, 64, 2, vocab_size=200, seq_len=32)
    with pytest.raises(UserError, match="vocab_size must be at least 300"):
        build_source("text_files", {"paths": ["text"], "tokenizer": {"kind": "sentencepiece", "model": "user.model"}},
                     small, 4, 0, tmp_path)
    (tmp_path / "bad.model").write_bytes(b"not a model")
    with pytest.raises(UserError, match=r"bad\.model is not a SentencePiece model"):
        TokenizerRef("sentencepiece", tmp_path / "bad.model").load()


def test_cache_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ENGINE_DATA_CACHE", str(tmp_path / "here"))
    assert cache_root() == tmp_path / "here"
    monkeypatch.delenv("ENGINE_DATA_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_root() == tmp_path / "sparse-scaling-engine" / "data"


def test_batches_prefetch_the_same_batches_and_shares_split_them(tmp_path: Path, cache: Path) -> None:
    copy_stdlib_corpus(tmp_path / "text")
    t5 = ModelDims("t5", 32, 2, 16, 64, 2, decoder_layers=2, vocab_size=300, seq_len=32, target_len=12)
    for dims in (DECODER, t5):
        whole = build_source("text_files", {"paths": ["text"]}, dims, 8, 3, tmp_path)
        prefetched = list(whole.batches(5, 9))
        for step, batch in zip(range(5, 9), prefetched, strict=True):
            for key, value in whole.batch(step).items():
                assert np.array_equal(batch[key], value)
        # Two processes' shares, side by side, are the whole batch.
        shares = [build_source("text_files", {"paths": ["text"]}, dims, 8, 3, tmp_path, process=(p, 2)).batch(6)
                  for p in range(2)]
        for key, value in whole.batch(6).items():
            assert np.array_equal(np.concatenate([share[key] for share in shares]), value)
    assert os.environ["ENGINE_DATA_CACHE"] == str(cache)


def test_engine_data_prepare_killed_mid_way_keeps_its_finished_shards(tmp_path: Path, cache: Path) -> None:
    """A real kill (SIGKILL) of `engine data prepare` between two files; the next prepare redoes
    only the files it had not finished and ends with the same cache as an uninterrupted one."""
    import signal
    import subprocess
    import sys
    import time

    corpus = tmp_path / "text"
    corpus.mkdir()
    for index in range(12):
        (corpus / f"{index}.txt").write_text(f"line {index} of a file\n" * 180_000)  # ~4 MB each
    spec = tmp_path / "spec.yaml"
    spec.write_text((Path(__file__).parent / "fixtures" / "data" / "tiny_text.yaml").read_text())
    command = [sys.executable, "-m", "engine.cli", "data", "prepare", str(spec), "--workers", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list((cache / "shards").glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in (cache / "shards").glob("*.tokens")
                if p.with_suffix(".json").is_file()}
    assert finished and not list((cache / "sets").glob("*.json")), "killed after the first shard, before the end"
    assert subprocess.run(command, capture_output=True).returncode == 0
    after = {p.name: p.stat().st_mtime_ns for p in (cache / "shards").glob("*.tokens")}
    assert len(after) == 12 and all(after[name] == mtime for name, mtime in finished.items())
    [manifest] = [json.loads(p.read_text()) for p in (cache / "sets").glob("*.json")]
    assert manifest["tokens"] == sum(f.stat().st_size + 1 for f in corpus.iterdir())
