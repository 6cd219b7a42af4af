"""Converting Meta's full-size sam3.pt: time, peak memory, and the cached restart.

No real weights exist here, so the source is the published architecture with random weights
written in Meta's layout (``hf_to_meta``): same keys, shapes, dtype and size (3.45 GB) as the
facebook/sam3 ``sam3.pt``. Each step runs in a fresh interpreter so its peak RSS is its own:

1. convert: sha256 + conversion into ``<workdir>/cache`` (``cached_conversion``, as the server does);
2. restart: the same call again (hash remembered, conversion reused);
3. load: ``load_sam3`` on the lone sam3.pt (CPU, float32), as a model worker starts.

    .venv/bin/python bench/bench_checkpoint_conversion.py [--workdir /tmp/sam3-bench-meta] [--json FILE]

Needs ~11 GB of disk (source + conversion) and ~4 GB of memory to write the source once.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_STEP = r"""
import json, sys, threading, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])

def status_kb(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":"))

# Anonymous memory is what the conversion costs; mapped file pages (the memory-mapped source)
# count in RSS too but are page cache the kernel reclaims. Sampled every 20 ms.
peak = {"RssAnon": 0, "RssFile": 0}
def sample():
    while True:
        for field in peak:
            peak[field] = max(peak[field], status_kb(field))
        time.sleep(0.02)
threading.Thread(target=sample, daemon=True).start()
from inference.runtime.checkpoints import cached_conversion
from inference.runtime.loader import load_sam3
source, cache, step = Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
started = time.perf_counter()
if step == "load":
    loaded = load_sam3(source, source.parent / "bpe_simple_vocab_16e6.txt.gz", "cpu", cache_dir=cache)
    detail = {"parameters": loaded.identity["parameters"]}
else:
    directory, digest = cached_conversion(source, cache)
    detail = {"directory": str(directory), "files": sorted(p.name for p in directory.iterdir())}
seconds = time.perf_counter() - started
time.sleep(0.05)
# VmHWM, not getrusage's ru_maxrss: Linux carries the parent's high-water mark into a forked child.
print("RESULT" + json.dumps({"step": step, "seconds": round(seconds, 1), "peak_rss_gb": round(status_kb("VmHWM") / 2**20, 2),
      "peak_anon_gb": round(peak["RssAnon"] / 2**20, 2), "peak_file_mapped_gb": round(peak["RssFile"] / 2**20, 2), **detail}))
"""


def write_source(path: Path) -> None:
    import torch
    from transformers import Sam3VideoConfig, Sam3VideoModel

    from inference.runtime.checkpoints import hf_to_meta
    from inference.runtime.tokenizer import write_small_bpe_file

    path.parent.mkdir(parents=True, exist_ok=True)
    write_small_bpe_file(path.parent / "bpe_simple_vocab_16e6.txt.gz")
    if path.is_file():
        return
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Sam3VideoModel(Sam3VideoConfig())
    state = hf_to_meta(model.state_dict())
    del model
    partial = path.with_suffix(".partial")
    torch.save({"model": state}, partial)
    os.replace(partial, path)
    print(f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - started:.0f}s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sam3-bench-meta"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    source, cache = args.workdir / "weights" / "sam3.pt", args.workdir / "cache"
    write_source(source)
    if cache.exists():
        import shutil

        shutil.rmtree(cache)
    results = []
    for step in ("convert", "restart", "load"):
        done = subprocess.run([sys.executable, "-c", _STEP, str(ROOT), str(source), str(cache), step],
                              capture_output=True, text=True, timeout=1800, check=False)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
        if done.returncode or not lines:
            sys.exit(f"step {step} failed:\n{done.stderr[-4000:]}")
        results.append({k: v for k, v in json.loads(lines[0][len("RESULT"):]).items() if k != "files"})
        print(json.dumps(results[-1]), flush=True)
    summary = {"source_gb": round(source.stat().st_size / 1e9, 2), "cpu_count": os.cpu_count(),
               "load_average": os.getloadavg(), "steps": results}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
