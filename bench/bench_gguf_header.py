"""Time and peak memory of parsing hostile GGUF headers, before and after the bounded parser (issue 26, item 1).

Each case is a GGUF file whose header declares more than its bytes hold (or, for the last one,
a large but valid header). Each parse runs in a fresh process: the parent polls the child's
``/proc/<pid>/status`` (RssAnon, VmHWM) every 20 ms and kills it after ``--limit`` seconds; the
child caps its own address space at its size after imports + ``--cap-mib`` so a runaway parse
cannot take the shared machine's memory (it then dies with MemoryError, which is reported).

``--parser gguf``: the ``gguf`` package's ``GGUFReader`` (what ``engine.weights.gguf`` used
before); ``--parser pack``: ``engine.weights.gguf.read_gguf_header`` (the bounded parser).
Run: ``python bench/bench_gguf_header.py --parser gguf --parser pack``. Results:
``bench/results_gguf_header.md``.
"""
from __future__ import annotations

import argparse
import json
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20
UINT8, STRING, ARRAY = 0, 8, 9


def _str(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


def _header(kvs: list[bytes], tensors: int = 0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, tensors, len(kvs)) + b"".join(kvs)


def _array_kv(key: bytes, item: int, count: int) -> bytes:
    return _str(key) + struct.pack("<IIQ", ARRAY, item, count)


def write_cases(folder: Path, padded_mib: int) -> dict[str, Path]:
    """The bad files (and one large valid header); returns name -> path."""
    cases = {
        # 2^40 UINT8 items declared, 64 bytes of file
        "array_2^40_small": _header([_array_kv(b"tokenizer.ggml.scores", UINT8, 1 << 40)]) + bytes(16),
        # the same declaration, padded with zeros to a multi-MB file
        "array_2^40_padded": _header([_array_kv(b"tokenizer.ggml.scores", UINT8, 1 << 40)]) + bytes(padded_mib * MIB),
        # 2^40 strings declared (each at least 8 bytes), in a padded file
        "strings_2^40_padded": _header([_array_kv(b"tokenizer.ggml.tokens", STRING, 1 << 40)])
        + bytes(padded_mib * MIB),
        # 2^40 tensors declared in a small file
        "tensors_2^40_small": b"GGUF" + struct.pack("<IQQ", 3, 1 << 40, 0) + bytes(64),
        # valid: one string array filling the padded size with empty strings (the parser's worst case per byte)
        "valid_strings_padded": _header([_array_kv(b"tokenizer.ggml.tokens", STRING, padded_mib * MIB // 8)])
        + bytes(padded_mib * MIB // 8 * 8),
    }
    paths = {}
    for name, data in cases.items():
        paths[name] = folder / f"{name}.gguf"
        paths[name].write_bytes(data)
    return paths


def status_kib(field: str, pid: str = "self") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def child(parser: str, path: str, cap_mib: int) -> None:
    """Import the parser, cap the address space, parse, print one JSON line."""
    sys.path.insert(0, str(ROOT / "scripts"))
    if parser == "gguf":
        import gguf

        parse = gguf.GGUFReader
    else:
        from packpath import load_pack

        load_pack()
        from wan22duo.engine.weights.gguf import read_gguf_header as parse
    limit = status_kib("VmSize") * 1024 + cap_mib * MIB
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    base = status_kib("RssAnon")
    print(json.dumps({"base_kib": base}), flush=True)
    start = time.perf_counter()
    try:
        parse(path)
        outcome = "parsed"
    except MemoryError:
        outcome = "MemoryError (address-space cap reached)"
    except Exception as err:  # noqa: BLE001 - the outcome is what we report
        outcome = f"{type(err).__name__}: {str(err)[:160]}"
    print(json.dumps({"seconds": time.perf_counter() - start, "outcome": outcome,
                      "rss_anon_kib": status_kib("RssAnon"), "hwm_kib": status_kib("VmHWM")}), flush=True)


def measure(parser: str, path: Path, limit: float, cap_mib: int) -> dict:
    proc = subprocess.Popen([sys.executable, __file__, "--child", parser, str(path), "--cap-mib", str(cap_mib)],
                            stdout=subprocess.PIPE, text=True)
    base = json.loads(proc.stdout.readline() or "{}").get("base_kib", 0)
    start, peak_anon, hwm = time.perf_counter(), 0, 0
    while proc.poll() is None and time.perf_counter() - start < limit:
        peak_anon = max(peak_anon, status_kib("RssAnon", str(proc.pid)))
        hwm = max(hwm, status_kib("VmHWM", str(proc.pid)))
        time.sleep(0.02)
    if proc.poll() is None:
        anon = status_kib("RssAnon", str(proc.pid))
        proc.kill()
        proc.wait()
        return {"outcome": f"still parsing after {limit:g} s (killed)", "seconds": limit,
                "peak_anon_mib": max(peak_anon, anon) / 1024, "growth_mib": (max(peak_anon, anon) - base) / 1024,
                "hwm_mib": hwm / 1024}
    result = json.loads(proc.stdout.read().strip().splitlines()[-1])
    peak_anon = max(peak_anon, result["rss_anon_kib"])
    return {"outcome": result["outcome"], "seconds": result["seconds"], "peak_anon_mib": peak_anon / 1024,
            "growth_mib": (peak_anon - base) / 1024, "hwm_mib": max(hwm, result["hwm_kib"]) / 1024}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parser", action="append", choices=("gguf", "pack"), help="repeatable; default both")
    p.add_argument("--limit", type=float, default=20.0, help="seconds before a parse is killed")
    p.add_argument("--cap-mib", type=int, default=2048, help="address space a child may add after its imports")
    p.add_argument("--padded-mib", type=int, default=64, help="size of the padded files")
    p.add_argument("--child", nargs=2, metavar=("PARSER", "FILE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(*args.child, args.cap_mib)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in write_cases(Path(tmp), args.padded_mib).items():
            for parser in args.parser or ["gguf", "pack"]:
                row = measure(parser, path, args.limit, args.cap_mib)
                row = {"case": name, "file_bytes": path.stat().st_size, "parser": parser, **row}
                print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
