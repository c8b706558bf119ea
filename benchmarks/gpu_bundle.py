"""What the GPU machine needs beside the working tree, built once here; then the one command to run there.

    .venv/bin/python benchmarks/gpu_bundle.py [--run-dir runs/cpu]

``gpu_check.py`` is made for a GPU machine that reaches no network, receives the repository's
working tree plus at most 8 ignored paths ("carry"), 64 MiB in all, and takes one command of at
most 2,000 characters. Its image (Python 3.12, CUDA 13 torch, transformers) lacks bitsandbytes,
datasets (TRL's side) and plotly (``helpers.ppo`` imports ``helpers.evaluation``, which imports it).
This script builds, under ``.cache/``, from the venv and PyPI:

* ``gpu/tokenizer``: the embedded model's tokenizer files (3.5 MB), for ``--tokenizer-dir``;
* ``gpu/site``, first on the device's ``PYTHONPATH``: the venv's bitsandbytes with only
  ``libbitsandbytes_cpu.so`` and its ``_cuda13*`` libraries (8 MB instead of 125 MB) and its
  dist-info (bitsandbytes reads its version there); datasets, dill and multiprocess at the venv's
  versions, unpacked from wheels for Python 3.12 (multiprocess is built per Python version, so the
  venv's own copy would not do);
* ``gpu/wheels``: plotly's wheel (9.7 MB), which the command unzips into ``/tmp/plotly-site``:
  unpacked it is 64 MB, and imported straight from the ``.whl`` it misses ``validators/_validators.json``;
* ``trl-0.29.1``: ``ppo_vs_trl.ensure_trl`` (``pip install --no-deps --target``).

A part already built is kept (delete its folder to rebuild it). Then the working tree (``git
ls-files``: tracked files and the untracked ones git does not ignore) and the carried paths are
added up against 64 MiB, and the device command and the carry list are written to
``.cache/gpu/device_command.sh`` and ``.cache/gpu/carry.txt`` and printed. The command goes
offline, unzips plotly, sets ``TMPDIR`` to ``.cache/gpu-tmp`` when ``/tmp`` has under 20 GB free
(the 8B shape is 14.8 GB on disk), writes a preflight (``df``, ``nvidia-smi``, the libraries'
versions) to ``$OUT/preflight.txt`` and runs ``gpu_check.py`` into ``$OUT``; give it a ``timeout_s``
of 540 (``gpu_check.py``'s budget of 470 s, the preflight and the start).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from fnmatch import fnmatch
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
if str(REPO_ROOT) not in sys.path:  # this checkout's helpers/, also where the project is not installed
    sys.path.insert(0, str(REPO_ROOT))

import ppo_vs_trl  # noqa: E402  (benchmarks/ is this script's own folder on sys.path)
import shapes  # noqa: E402

GPU_DIR = REPO_ROOT / ".cache" / "gpu"
TOKENIZER_DIR = GPU_DIR / "tokenizer"
SITE_DIR = GPU_DIR / "site"
WHEELS_DIR = GPU_DIR / "wheels"
DEVICE_TMP = REPO_ROOT / ".cache" / "gpu-tmp"  # TMPDIR on the device when its /tmp is small
PLOTLY_SITE = "/tmp/plotly-site"
DEFAULT_RUN_DIR = "runs/cpu"
MAX_BYTES = 64 * 2**20  # working tree and carried paths together
MAX_CARRY = 8
MAX_COMMAND = 2000  # characters
MIN_TMP_KB = 20_000_000  # /tmp with less free than this (df -Pk): TMPDIR moves into the checkout
DEVICE_TIMEOUT_S = 540
PYTHON = "3.12"  # the device image's
#: bitsandbytes' shared libraries that travel (the image's torch is built for CUDA 13)
BNB_LIBS = ("libbitsandbytes_cpu.so", "libbitsandbytes_cuda13*.so")
#: unpacked into gpu/site from Python 3.12 wheels (TRL's side needs datasets; datasets needs the other two)
SITE_WHEELS = ("datasets", "dill", "multiprocess")
PIP_DOWNLOAD = ["download", "--python-version", PYTHON, "--only-binary=:all:", "--platform", "manylinux2014_x86_64",
                "--no-deps", "--quiet"]


def rel(path: Path) -> str:
    """``path`` as the device sees it: relative to the repository root."""
    return Path(path).resolve().relative_to(REPO_ROOT).as_posix()


def pinned(name: str) -> str:
    """``name==<the venv's version>``, or ``name`` where the venv lacks it."""
    try:
        return f"{name}=={importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        return name


def installed(site: Path, name: str) -> bool:
    """Whether ``site`` holds a distribution of ``name`` (its dist-info is what is written last)."""
    return any(site.glob(f"{name}-*.dist-info"))


def build_tokenizer(dest: Path = TOKENIZER_DIR) -> Path:
    """The embedded model's tokenizer files (``shapes.TOKENIZER_FILES``) copied into ``dest``."""
    if (dest / "tokenizer.json").exists():
        return dest
    source = shapes.default_tokenizer_dir()  # provisions the embedded model if it is missing
    dest.mkdir(parents=True, exist_ok=True)
    for name in shapes.TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy2(source / name, dest / name)
    return dest


def copy_bitsandbytes(site_packages: Path, dest: Path, keep: tuple[str, ...] = BNB_LIBS) -> Path:
    """bitsandbytes from ``site_packages`` into ``dest`` with only the ``keep`` libraries, then its dist-info."""
    dist_infos = sorted(site_packages.glob("bitsandbytes-*.dist-info"))
    if len(dist_infos) != 1:
        raise FileNotFoundError(f"expected one bitsandbytes-*.dist-info in {site_packages}, found {dist_infos}")

    def ignore(_folder, names):
        return [n for n in names if n == "__pycache__" or (n.endswith(".so") and not any(fnmatch(n, k) for k in keep))]

    shutil.copytree(site_packages / "bitsandbytes", dest / "bitsandbytes", ignore=ignore, dirs_exist_ok=True)
    shutil.copytree(dist_infos[0], dest / dist_infos[0].name, ignore=ignore, dirs_exist_ok=True)
    return dest / "bitsandbytes"


def wheel_tags(dist_info: Path) -> list[str]:
    """The ``Tag:`` lines of a dist-info's ``WHEEL`` file, e.g. ``["py312-none-any"]``."""
    lines = (dist_info / "WHEEL").read_text().splitlines()
    return [line.split(":", 1)[1].strip() for line in lines if line.startswith("Tag:")]


def runs_on_python(tag: str, version: str = PYTHON) -> bool:
    """Whether a wheel tag's Python part fits ``version`` (py3, py312, cp312; not py311)."""
    nodot = version.replace(".", "")
    return any(part in ("py3", f"py{nodot}", f"cp{nodot}") for part in tag.split("-", 1)[0].split("."))


def unpack_wheel(wheel: Path, site: Path) -> Path:
    """Unzip ``wheel`` into ``site`` (dist-info last) after checking its tag fits Python 3.12; its dist-info."""
    with tempfile.TemporaryDirectory() as tmp:
        zipfile.ZipFile(wheel).extractall(tmp)
        dist_info = next(Path(tmp).glob("*.dist-info"))
        tags = wheel_tags(dist_info)
        if not any(runs_on_python(tag) for tag in tags):
            raise ValueError(f"{wheel.name} is not for Python {PYTHON}: {tags}")
        for entry in sorted(Path(tmp).iterdir(), key=lambda p: p == dist_info):
            target = site / entry.name
            if entry.is_dir():
                shutil.copytree(entry, target, dirs_exist_ok=True)
            else:
                shutil.copy2(entry, target)
    return site / dist_info.name


def pip_download(requirement: str, dest: Path) -> Path:
    """``pip download`` of one wheel for the device (Python 3.12, x86-64) into ``dest``; its path."""
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.glob("*.whl"))
    subprocess.run([sys.executable, "-m", "pip", *PIP_DOWNLOAD, "-d", str(dest), requirement], check=True)
    name = requirement.split("==")[0].replace("-", "_")
    found = sorted(set(dest.glob(f"{name}-*.whl")) - before) or sorted(dest.glob(f"{name}-*.whl"))
    return found[-1]


def build_site(dest: Path = SITE_DIR) -> Path:
    """gpu/site: the trimmed bitsandbytes and the Python 3.12 wheels of ``SITE_WHEELS``, each once."""
    dest.mkdir(parents=True, exist_ok=True)
    if not installed(dest, "bitsandbytes"):
        site_packages = Path(importlib.metadata.distribution("bitsandbytes").locate_file(""))
        copy_bitsandbytes(site_packages, dest)
        print(f"  bitsandbytes: copied from {site_packages} ({', '.join(BNB_LIBS)})")
    missing = [name for name in SITE_WHEELS if not installed(dest, name)]
    with tempfile.TemporaryDirectory() as tmp:
        for name in missing:
            wheel = pip_download(pinned(name), Path(tmp))
            unpack_wheel(wheel, dest)
            print(f"  {name}: unpacked {wheel.name}")
    return dest


def build_plotly_wheel(dest: Path = WHEELS_DIR) -> Path:
    """gpu/wheels: plotly's wheel at the venv's version (other plotly wheels there are removed)."""
    requirement = pinned("plotly")
    version = requirement.partition("==")[2] or "*"
    found = sorted(dest.glob(f"plotly-{version}-*.whl"))
    wheel = found[-1] if found else pip_download(requirement, dest)
    for other in dest.glob("plotly-*.whl"):
        if other != wheel:
            other.unlink()
    return wheel


def carry_paths(run_dir: str = DEFAULT_RUN_DIR) -> list[str]:
    """The ignored paths that travel, relative to the repository root."""
    carry = [rel(TOKENIZER_DIR), rel(SITE_DIR), rel(WHEELS_DIR), rel(ppo_vs_trl.TRL_DIR), f"{run_dir}/data"]
    assert len(carry) <= MAX_CARRY, carry
    return carry


def folder_bytes(path: Path) -> int:
    """Bytes of the regular files at or below ``path`` (links not followed; 0 when absent)."""
    if path.is_file() and not path.is_symlink():
        return path.stat().st_size
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            file = Path(folder) / name
            if not file.is_symlink():
                total += file.stat().st_size
    return total


def travelling_bytes(repo: Path, carry: list[str]) -> dict[str, int]:
    """Bytes per part that travels: ``"tree"`` (``git ls-files`` outside the carried paths) and each carry path."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                            check=True, capture_output=True, text=True).stdout.split("\0")
    tree = [name for name in listed if name and not any(name == c or name.startswith(c + "/") for c in carry)]
    sizes = {"tree": sum(folder_bytes(repo / name) for name in tree if (repo / name).exists())}
    sizes.update({c: folder_bytes(repo / c) for c in carry})
    return sizes


def check_size(sizes: dict[str, int], limit: int = MAX_BYTES) -> int:
    """The total of ``sizes``; ValueError, with the parts, when it is over ``limit``."""
    total = sum(sizes.values())
    if total > limit:
        parts = ", ".join(f"{name} {n / 2**20:.1f} MiB" for name, n in sizes.items())
        raise ValueError(f"{total / 2**20:.1f} MiB would travel, over {limit / 2**20:.0f} MiB: {parts}")
    return total


def device_command(plotly_wheel: str, run_dir: str = DEFAULT_RUN_DIR) -> str:
    """The one command for the GPU machine (run in the repository root there; ``$OUT`` comes back)."""
    site, tokenizer, tmp = rel(SITE_DIR), rel(TOKENIZER_DIR), rel(DEVICE_TMP)
    preflight = ("import torch, bitsandbytes as b, datasets, plotly; from bitsandbytes.cextension import lib; "
                 "print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available()); "
                 "print('bnb', b.__version__, b.__file__, type(lib).__name__); "
                 "print('datasets', datasets.__version__, 'plotly', plotly.__version__)")
    command = "; ".join([
        "set -o pipefail",
        "export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "
        f"PYTHONPATH=$PWD/{site}:{PLOTLY_SITE}",
        f"python3 -m zipfile -e {rel(WHEELS_DIR)}/{plotly_wheel} {PLOTLY_SITE} || exit 1",
        f"if [ \"$(df -Pk /tmp | awk 'NR==2{{print $4}}')\" -lt {MIN_TMP_KB} ]; then "
        f"mkdir -p {tmp} && export TMPDIR=$PWD/{tmp}; fi",
        f"{{ df -h /tmp .; echo \"TMPDIR=${{TMPDIR:-/tmp}}\"; nvidia-smi; timeout 60 python3 -c \"{preflight}\"; }} "
        "2>&1 | tee $OUT/preflight.txt",
        f"python3 benchmarks/gpu_check.py --run-dir {run_dir} --tokenizer-dir {tokenizer} "
        "--out $OUT/gpu_check.json 2>&1 | tee $OUT/gpu_check.out",
    ])
    assert len(command) < MAX_COMMAND, f"device command of {len(command)} characters"
    return command


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--run-dir", default=DEFAULT_RUN_DIR,
                        help="run whose data/ (the PPO prompts) travels, relative to the repository root")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir).as_posix().rstrip("/")

    print("Building the GPU bundle (parts already built are kept):")
    print(f"  tokenizer: {rel(build_tokenizer())}")
    print(f"  site: {rel(build_site())}")
    wheel = build_plotly_wheel()
    print(f"  plotly: {rel(wheel)}")
    ppo_vs_trl.ensure_trl()
    print(f"  trl: {rel(ppo_vs_trl.TRL_DIR)}")

    carry = carry_paths(run_dir)
    if not (REPO_ROOT / run_dir / "data" / "ppo.jsonl").exists():
        print(f"  note: {run_dir}/data/ppo.jsonl is absent; gpu_check.py will generate prompts there")
    sizes = travelling_bytes(REPO_ROOT, carry)
    total = check_size(sizes)
    print("\nTravels (working tree + carry):")
    for name, n in sizes.items():
        print(f"  {n / 2**20:6.1f} MiB  {name}")
    print(f"  {total / 2**20:6.1f} MiB  in all (limit {MAX_BYTES / 2**20:.0f} MiB)")

    command = device_command(wheel.name, run_dir)
    GPU_DIR.mkdir(parents=True, exist_ok=True)
    (GPU_DIR / "device_command.sh").write_text(command + "\n")
    (GPU_DIR / "carry.txt").write_text("\n".join(carry) + "\n")
    print(f"\nDevice command ({len(command)} characters; also in {rel(GPU_DIR / 'device_command.sh')}):\n{command}")
    print(f"\ncarry ({rel(GPU_DIR / 'carry.txt')}): {json.dumps(carry)}")
    print(f"timeout_s: {DEVICE_TIMEOUT_S}")


if __name__ == "__main__":
    main()
