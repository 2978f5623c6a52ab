"""Build the carry bundle that runs vLLM + driftcheck + ESamp on the GPU device machine.

The device has torch 2.11 + Triton 3.6 but no vLLM and no network, and a call carries
at most 64 MiB. Route (measured in ../shared/gpu/README.md): the Python-only tree of a
vLLM release pinned to torch 2.11 (0.20.x-0.27.x), a stub for its compiled extension,
and the pure dependency wheels the device lacks.

usage (here):   python benchmarks/gpu_bundle.py [--vllm 0.20.0] [--out .gpu-bundle]   -> .gpu-bundle/
then one device call (the `run` tool, carry [".gpu-bundle"]):
                bash benchmarks/gpu_device.sh qwen2.5-0.5b:eager qwen2.5-7b:graphs ...
and here:       python benchmarks/gpu_bundle.py --merge DIR [--code COMMIT]   (DIR: the call's files, holding gpu.json)
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout: driftcheck's own wheel reader
from driftcheck import env  # noqa: E402
from driftcheck.readers.source_tree import wheel_requirements  # noqa: E402
BUNDLE = ROOT / ".gpu-bundle"
CARRY_LIMIT = 64 * 2 ** 20
STUB = Path(__file__).resolve().parent / "gpu" / "vllm_C_stub.py"

#: What the device image already has (its package list), so the closure skips them.
DEVICE_HAS = set(canonicalize_name(x) for x in """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal
annotated-doc anyio attrs certifi charset-normalizer click cloudpickle colorama einops filelock frozenlist fsspec
h11 hf-xet httpcore httpx humanize hypothesis idna jinja2 joblib llvmlite markdown markdown-it-py markupsafe mdurl
mpmath msgpack multidict networkx ninja numba numpy nvidia-ml-py opencv-python-headless packaging pillow pip pluggy
prometheus-client propcache protobuf psutil py-cpuinfo pygments pyyaml regex requests rich safetensors
sentencepiece setuptools six sympy tiktoken tokenizers torch tqdm transformers triton typing-extensions urllib3
uvloop wheel xxhash yarl zipp""".split())
#: GPU-kernel packages the Python-only route does not use (and too big to carry).
SKIP = {canonicalize_name(x) for x in ["torch", "torchaudio", "torchvision", "flashinfer-python", "flashinfer-cubin",
                                         "apache-tvm-ffi", "tilelang", "nvidia-cudnn-frontend", "fastsafetensors",
                                         "nvidia-cutlass-dsl", "quack-kernels", "numba", "opencv-python-headless",
                                         # big, and not imported by a Qwen2 engine on the Python-only route
                                         # (Triton forks, video/media decoding, gRPC exporters; 0.27.1)
                                         "tokenspeed-triton", "tokenspeed-mla", "pynvvideocodec", "torchcodec",
                                         "grpcio"]}
#: Needed beyond vLLM's own requirements: xgrammar needs a newer tvm-ffi than vLLM pins for
#: flashinfer; mistral_common needs pycountry; libcst is driftcheck's static reader.
EXTRA = ["apache-tvm-ffi>=0.1.11", "pycountry", "libcst"]
DEVICE_ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "platform_system": "Linux",
              "platform_machine": "x86_64", "sys_platform": "linux", "os_name": "posix",
              "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
PLATFORMS = [f"--platform={p}_x86_64" for p in ("manylinux_2_35", "manylinux_2_34", "manylinux_2_31",
                                                 "manylinux_2_28", "manylinux_2_27", "manylinux_2_24",
                                                 "manylinux_2_17", "manylinux2014", "manylinux_2_5", "manylinux1")]


def fetch_vllm_wheel(version: str, cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"vllm-{version}-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "--implementation", "cp", *PLATFORMS, f"vllm=={version}",
                        "-d", str(cache)], check=True)
        found = sorted(cache.glob(f"vllm-{version}-*.whl"))
    return found[0]


def python_tree(wheel: Path, out: Path) -> None:
    """The wheel without compiled code and C/C++ headers, plus the stub extension modules."""
    # compiled code, C/C++/CUDA sources, the web UI and pictures: nothing the Python engine imports
    skip_ext = (".so", ".h", ".hpp", ".cuh", ".inl", ".cu", ".cpp", ".js", ".css", ".jpg", ".png", ".md")
    buf = io.BytesIO()
    with zipfile.ZipFile(wheel) as zf, tarfile.open(fileobj=buf, mode="w:xz", preset=9) as tar:  # xz: 40 % smaller than gzip
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for name in zf.namelist():
            base = name.rsplit("/", 1)[-1]
            if name.endswith(skip_ext) or name.endswith("/") or (name.startswith("vllm/") and "." not in base):
                continue  # (a file without a suffix under vllm/ is a native executable, e.g. vllm/vllm-rs)
            data = zf.read(name)
            if name == "vllm/vllm_flash_attn/__init__.py":
                # fa_utils imports this package on CUDA; without FA2/FA3 kernels it raises, and
                # the Triton attention backend never calls into it.
                data = data.replace(b"if not (FA2_AVAILABLE or FA3_AVAILABLE):\n    raise ImportError(",
                                    b"if False:\n    raise ImportError(")
            add(name, data)
        add("vllm/_C.py", STUB.read_bytes())
        # 0.27 moved the torch.ops._C ops into _C_stable_libtorch, which the CUDA platform imports
        # instead of _C (measured on the device: 'cutlass_scaled_mm_supports_fp8' missing): it
        # registers the same stub ops, whichever module a release imports
        add("vllm/_C_stable_libtorch.py", b"# stub: the same ops as vllm/_C.py\nimport vllm._C  # noqa: F401\n")
        add("vllm/_moe_C.py", b"# stub: compiled extension not carried to the device\n")
    (out / "vllm-tree.tar.xz").write_bytes(buf.getvalue())


def dependency_wheels(wheel: Path, wh: Path) -> list[str]:
    """The cp312 wheels the device lacks: vLLM's Requires-Dist closure, minus what it has, into `wh`."""
    wh.mkdir(parents=True, exist_ok=True)
    queue = [Requirement(line) for line in wheel_requirements(wheel)] + [Requirement(x) for x in EXTRA]
    done, failed = set(), []
    while queue:
        req = queue.pop()
        name = canonicalize_name(req.name)
        if name in done or name in DEVICE_HAS or (name in SKIP and str(req) not in EXTRA):
            continue
        if req.marker and not req.marker.evaluate(DEVICE_ENV):
            continue
        done.add(name)
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--python-version", "3.12",
                               "--implementation", "cp", "--only-binary=:all:", "-d", str(wh), *PLATFORMS,
                               f"{req.name}{req.specifier}"], capture_output=True, text=True)
        if proc.returncode:
            failed.append(f"{req.name}{req.specifier}")
            continue
        for w in glob.glob(str(wh / "*.whl")):
            if canonicalize_name(os.path.basename(w).split("-")[0]) == name:
                queue += [Requirement(line) for line in wheel_requirements(w)]
    return failed


def newest_per_name(wheels) -> list[Path]:
    """One wheel per distribution, its newest version: the staging directory keeps every build's downloads,
    and a distribution staged twice (a newer release on the index since) must not reach the device twice
    (pip refuses the pair: ResolutionImpossible)."""
    best: dict = {}
    for w in wheels:
        name, version, _, _ = parse_wheel_filename(w.name)
        if name not in best or version > best[name][0]:
            best[name] = (version, w)
    return sorted(w for _, w in best.values())


def tree_size() -> int:
    """Bytes of the working tree the device call copies (tracked + untracked, not ignored)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.split(b"\0")
    return sum((ROOT / f.decode()).stat().st_size for f in files if f and (ROOT / f.decode()).is_file())


def tiny_model(out: Path) -> None:
    """The built-in tiny model (built here if needed; ~3 MiB), for the engine checks on the device:
    it lands in the device's driftcheck cache (DRIFTCHECK_CACHE=.gpu-bundle/cache)."""
    import shutil

    from driftcheck.models.tiny import ensure_tiny_model

    src = ensure_tiny_model()
    dest = out / "cache" / src.name
    if not dest.exists():
        shutil.copytree(src, dest)


def closure_file(version: str) -> Path:
    """The distributions a GPU engine of this release imported on the device, measured there
    (driftcheck.engine_checks --imports writes them): the bundle carries only those wheels."""
    return Path(__file__).resolve().parent / "gpu" / f"import-closure-{version}.txt"


def build(version: str, bundle_dir: Path) -> None:
    import shutil

    wheel = fetch_vllm_wheel(version, env.cache_dir() / "wheels")
    shutil.rmtree(bundle_dir, ignore_errors=True)
    bundle_dir.mkdir()
    python_tree(wheel, bundle_dir)
    tiny_model(bundle_dir)
    staging = env.cache_dir() / "gpu-wheels" / version  # the whole closure, kept here, not carried
    failed = dependency_wheels(wheel, staging)
    closure = closure_file(version)
    keep = ({canonicalize_name(x) for x in closure.read_text().split() if x} if closure.is_file() else None)
    (bundle_dir / "wh").mkdir()
    left_out = []
    extra = {canonicalize_name(e.split(">")[0]) for e in EXTRA}
    for w in newest_per_name(staging.glob("*.whl")):
        name = canonicalize_name(w.name.split("-")[0])
        if (name in SKIP and name not in extra) or name in DEVICE_HAS:
            continue  # staged by an earlier build with other rules
        if keep is None or name in keep or name in extra:
            shutil.copy2(w, bundle_dir / "wh" / w.name)
        else:
            left_out.append(f"{w.name} ({w.stat().st_size / 2**20:.1f} MiB)")
    bundle = sum(p.stat().st_size for p in bundle_dir.rglob("*") if p.is_file())
    total = bundle + tree_size()
    (bundle_dir / "manifest.json").write_text(json.dumps({"vllm": version, "wheel": wheel.name,
                                                          "bundle_bytes": bundle, "failed": failed,
                                                          "closure": str(closure) if keep else None,
                                                          "left_out": left_out}, indent=1))
    print(f"bundle {bundle_dir}: {bundle / 2**20:.1f} MiB; with the working tree {total / 2**20:.1f} MiB "
          f"(carry limit {CARRY_LIMIT / 2**20:.0f} MiB); {len(left_out)} wheels outside the measured import closure "
          f"left out")
    if failed:
        print("could not download (the device may still have them):", ", ".join(failed))
    if total > CARRY_LIMIT:
        sys.exit("bundle too large to carry")
    rel = os.path.relpath(bundle_dir, ROOT)
    print(f"device call: run(carry=['{rel}'], command='BUNDLE={rel} bash benchmarks/gpu_device.sh "
          "check:scan:eager qwen2.5-0.5b:graphs qwen2.5-7b:graphs')")


def merge(files_dir: Path, code: str | None = None) -> None:
    """Merge the device call's results into reports/: benchmarks (gpu.json) into benchmarks.json/.md,
    engine checks (check-*.json) into reports/gpu/ and the GPU section of compat.md, host and kernel costs
    (hostcost-HIDDEN.json/.md, kernelcost-HIDDEN.json/.md) into reports/gpu/ with a line naming the code that measured them. Each benchmark row
    is stamped with `code`, the commit the call ran, over any stamp the device wrote (default: the device's
    stamp, else this checkout's, for a merge right after it)."""
    from driftcheck import compat
    from driftcheck.bench.report import code_stamp, record, render_markdown
    from driftcheck.files import write_atomic, write_files

    results = ROOT / "reports" / "benchmarks.json"
    benchmarks = sorted(files_dir.rglob("gpu.json"))
    stamp = code or code_stamp(ROOT)  # the device ran this checkout's tree
    for path in benchmarks:
        for result in json.loads(path.read_text()).values():
            if code:  # the commit given wins over the device's own stamp: its copy's git need not be this HEAD
                for part in (*result.get("variants", {}).values(), result.get("components") or {},
                             *(result.get("filter_replay") or {}).values()):
                    part.pop("measured_with", None)
            record(result, results, stamp)
    if benchmarks:
        write_atomic(ROOT / "reports" / "benchmarks.md", render_markdown(json.loads(results.read_text())))
        print(f"merged into {results} and reports/benchmarks.md")
    gpu_dir = ROOT / "reports" / "gpu"
    checks = sorted(files_dir.rglob("check-*.json"))
    for path in checks:
        check = json.loads(path.read_text())
        write_atomic(gpu_dir / f"check-vllm{check.get('vllm', 'unknown')}-{path.name[len('check-'):]}", path.read_text())
    titles = {"hostcost": "ESamp's per-step host calls alone", "kernelcost": "ESamp's candidate kernels alone",
              "precision": "The distiller alone: fp32 vs bf16, eager vs captured"}
    precision = False
    for path in sorted(p for kind in titles for p in files_dir.rglob(f"{kind}-*.json")):
        md, kind = path.with_suffix(".md"), path.stem.split("-")[0]
        machine = json.loads(path.read_text()).get("machine") or "the device"
        header = (f"# {titles[kind]}\n\nProduced on {machine} by `bash benchmarks/gpu_device.sh "
                  f"{path.stem.replace('-', ':', 1)}` (driftcheck/bench/{kind}.py; code {stamp}), merged by "
                  f"`python benchmarks/gpu_bundle.py --merge`. Do not edit by hand; the raw figures are in "
                  f"{path.name} beside it.\n\n")
        write_files({gpu_dir / path.name: path.read_text(),
                     gpu_dir / md.name: header + without_warnings(md.read_text())})
        precision |= kind == "precision"
        print(f"merged {path.name} into {gpu_dir}")
    if precision:
        write_atomic(ROOT / "reports" / "distiller-precision.md", render_precision(gpu_dir))
        print("rendered reports/distiller-precision.md")
    if checks:
        compat_md = ROOT / "reports" / "compat.md"
        write_atomic(compat_md, compat.render_markdown(json.loads((ROOT / "reports" / "compat.json").read_text()),
                                                       compat.read_gpu_checks(gpu_dir),
                                                       compat.read_parallel_checks(ROOT / "reports" / "parallel")))
        print(f"merged {len(checks)} engine checks into {gpu_dir} and {compat_md}")


def without_warnings(text: str) -> str:
    """A device job's Markdown without the Python warnings that reached it (a `file.py:N: SomeWarning: ...` line and
    the indented source line Python prints under it)."""
    import re

    out, skip = [], False
    for line in text.splitlines(keepends=True):
        if re.match(r"\S+\.py:\d+: \w*Warning: ", line):
            skip = True
            continue
        if skip and line.startswith(" "):
            continue
        skip = False
        out.append(line)
    return "".join(out)


def render_precision(gpu_dir: Path) -> str:
    """reports/distiller-precision.md: every reports/gpu/precision-HIDDEN.md, by hidden size, each with the line that
    says where and at which code it was measured."""
    parts = ["# The distiller alone: fp32 vs bf16, eager vs captured\n\nRendered by `python benchmarks/gpu_bundle.py "
             "--merge` from reports/gpu/precision-*.md (driftcheck/bench/precision.py). Do not edit by hand. Loss: "
             "mean over each window of steps, the same seed and the same stream of synthetic residual-stream rows "
             "for both precisions. Step: device time of one distiller step (forward, the model's final norm of the "
             "prediction, the gradients, Adam), 256 rows, width 256, median [min–max] of 5 repeats of 50 steps, in "
             "the caller's stream order.\n"]
    def hidden(path):
        return int(path.stem.split("-")[1])

    for path in sorted(gpu_dir.glob("precision-*.md"), key=hidden):
        lines = path.read_text().splitlines()
        provenance = next((line for line in lines if line.startswith("Produced on")), "")
        body = [line for line in lines if not line.startswith("# ") and line != provenance]
        parts.append(f"\n{provenance}\n\n" + "\n".join(body).strip("\n") + "\n")
    return "".join(parts)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vllm", default="0.20.0", help="vLLM release (torch 2.11 pin: 0.20.x-0.27.x)")
    ap.add_argument("--out", type=Path, default=BUNDLE, help="bundle directory (carry it)")
    ap.add_argument("--merge", type=Path, help="merge a device call's gpu.json files into reports/")
    ap.add_argument("--code", help="with --merge: the commit the call ran (default: this checkout's HEAD)")
    args = ap.parse_args()
    merge(args.merge, args.code) if args.merge else build(args.vllm, args.out)
