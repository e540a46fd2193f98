"""Reads a tierlog partition manifest straight from the bucket, with no tierlog code.

The layout and envelope are documented in docs/manifest.md. This is the reference for how other
engines find the committed segments of a partition.
"""
import json
import os

import pyarrow.fs as pafs
import pyarrow.parquet as pq


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def read_envelope(path, kind, raw=None, fs=None):
    if raw is None:
        raw = _read(fs, path)
    doc = json.loads(raw)
    assert doc["format"] == "tierlog." + kind, (path, doc["format"])
    # The checksum covers the exact bytes of "body" as stored.
    start = raw.index(b'"body":') + len(b'"body":')
    body = raw[start:raw.rstrip().rindex(b"}")]
    assert crc32c(body) == doc["crc32c"], f"checksum mismatch in {path}"
    return doc["body"]


def _fs(fs):
    return fs if fs is not None else pafs.LocalFileSystem()


def _read(fs, path):
    with _fs(fs).open_input_file(path) as f:
        return f.read()


def _list(fs, directory):
    """(name, size) of the files directly in `directory`; empty when it does not exist."""
    infos = _fs(fs).get_file_info(pafs.FileSelector(directory, allow_not_found=True))
    return [(i.base_name, i.size) for i in infos if i.type == pafs.FileType.File]


def committed_segments(partition_dir, fs=None):
    """The committed segment entries of a partition, in offset order (see `committed`)."""
    return committed(partition_dir, fs)[1]


def committed(partition_dir, fs=None):
    """The log start and the committed segment entries of a partition, in offset order.

    `partition_dir` is a path in `fs` (a pyarrow FileSystem: the local one by default, or
    `pyarrow.fs.S3FileSystem` for a bucket, with paths as `bucket/prefix/...`). Rows with an
    offset below the log start are not part of the log: deleting records (Kafka's
    DeleteRecords) can cut through the first segment, which stays whole."""
    mdir = partition_dir + "/manifest"
    levels, start, seq = [[]], 0, 0
    # The newest checkpoint (the _last_checkpoint hint names it too, but a slow writer can leave
    # an older one there); retired segments below it may be gone from log/.
    names = [n for n, _ in _list(fs, mdir + "/checkpoints")]
    if names:
        seq = max(int(n.split(".")[0]) for n in names)
        state = read_envelope(f"{mdir}/checkpoints/{seq:020}.json", "checkpoint", fs=fs)
        levels, start = state["levels"], state["start_offset"]

    def expand(nodes):
        for node in nodes:
            if node["type"] == "chunk":
                chunk = read_envelope(partition_dir + "/" + node["path"], "chunk", fs=fs)
                yield from expand(chunk["nodes"])
            else:
                yield node

    # Levels hold the oldest entries last; chunks hold older entries, in offset order.
    segments = [s for s in expand(n for level in reversed(levels) for n in level)
                if s["last_offset"] >= start]
    # Every commit is a Parquet file in log/ whose footer holds the delta; one that adds a
    # segment is that segment, so its path and size are the file's own.
    ldir = partition_dir + "/log"
    for name, size in sorted(_list(fs, ldir)):
        n = int(name.split(".")[0])
        if n <= seq:
            continue
        assert n == seq + 1, f"gap in the log before {name}"
        path = f"{ldir}/{name}"
        with _fs(fs).open_input_file(path) as f:
            footer = pq.read_metadata(f).metadata[b"tierlog.delta"]
        d = read_envelope(path, "delta", footer)
        seq = n
        if d["op"] == "add":
            for s in d["segments"]:
                s.update(type="segment", path=f"log/{name}", size=size)
                segments.append(s)
        elif d["op"] == "truncate":
            start = max(start, d["start_offset"])
            segments = [s for s in segments if s["last_offset"] >= start]
        elif d["op"] == "init":
            start = d["next_offset"]
        elif d["op"] == "replace":
            # Merged or compacted objects take the place of exactly the segments they cover.
            lo, hi = d["base_offset"], d["last_offset"]
            inside = [i for i, s in enumerate(segments) if lo <= s["base_offset"] <= hi]
            assert inside and segments[inside[0]]["base_offset"] == lo, (path, lo)
            assert segments[inside[-1]]["last_offset"] == hi, (path, hi)
            assert len(inside) == len(d["replaced"]), (path, len(inside))
            new = [dict(s, type="segment") for s in d["segments"]]
            segments[inside[0]:inside[-1] + 1] = new
    return start, segments
