"""benchmarks/gpu_bundle.py without network: the bitsandbytes trim, wheel checks, the size check, the command."""

from __future__ import annotations

import subprocess
import zipfile

import pytest

from helpers.runs import REPO_ROOT

BENCH_DIR = REPO_ROOT / "benchmarks"


@pytest.fixture(scope="module")
def bundle():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCH_DIR))
        import gpu_bundle

        yield gpu_bundle


def test_trimmed_bitsandbytes_keeps_cpu_cuda13_and_the_dist_info(bundle, tmp_path):
    site = tmp_path / "site-packages"
    package = site / "bitsandbytes"
    (package / "nn").mkdir(parents=True)
    (package / "__pycache__").mkdir()
    (package / "__init__.py").write_text("__version__ = '0.50.2'\n")
    (package / "nn" / "modules.py").write_text("")
    libs = ["cpu", "cuda118", "cuda128", "cuda130", "cuda132", "rocm64", "xpu2025"]
    for lib in libs:
        (package / f"libbitsandbytes_{lib}.so").write_bytes(b"\0" * 10)
    (site / "bitsandbytes-0.50.2.dist-info").mkdir()
    (site / "bitsandbytes-0.50.2.dist-info" / "METADATA").write_text("Name: bitsandbytes\nVersion: 0.50.2\n")

    dest = tmp_path / "gpu-site"
    bundle.copy_bitsandbytes(site, dest)
    assert (dest / "bitsandbytes-0.50.2.dist-info" / "METADATA").exists()
    assert (dest / "bitsandbytes" / "nn" / "modules.py").exists()
    assert not (dest / "bitsandbytes" / "__pycache__").exists()
    kept = sorted(p.name for p in dest.rglob("*.so"))
    assert kept == ["libbitsandbytes_cpu.so", "libbitsandbytes_cuda130.so", "libbitsandbytes_cuda132.so"]
    assert bundle.installed(dest, "bitsandbytes")

    (site / "bitsandbytes-0.49.0.dist-info").mkdir()  # two versions side by side: which one is ambiguous
    with pytest.raises(FileNotFoundError):
        bundle.copy_bitsandbytes(site, tmp_path / "other")


def _wheel(folder, name, tag):
    path = folder / f"{name}-1.0-{tag}.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}/__init__.py", "")
        zf.writestr(f"{name}-1.0.dist-info/WHEEL", f"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: {tag}\n")
    return path


def test_wheels_unpack_only_when_built_for_python_312(bundle, tmp_path):
    assert [bundle.runs_on_python(t) for t in ("py3-none-any", "py312-none-any", "cp312-cp312-manylinux2014_x86_64",
                                               "py2.py3-none-any", "py311-none-any", "cp311-cp311-linux_x86_64")] \
        == [True, True, True, True, False, False]
    site = tmp_path / "site"
    site.mkdir()
    dist_info = bundle.unpack_wheel(_wheel(tmp_path, "multiprocess", "py312-none-any"), site)
    assert bundle.wheel_tags(dist_info) == ["py312-none-any"]
    assert (site / "multiprocess" / "__init__.py").exists() and bundle.installed(site, "multiprocess")
    with pytest.raises(ValueError, match="not for Python 3.12"):
        bundle.unpack_wheel(_wheel(tmp_path, "dill", "py311-none-any"), site)
    assert not bundle.installed(site, "dill")


def test_size_check_counts_the_tree_and_the_carried_paths(bundle, tmp_path):
    repo = tmp_path / "repo"
    (repo / "big").mkdir(parents=True)
    (repo / ".gitignore").write_text("big/\n")
    (repo / "tracked.txt").write_bytes(b"x" * 1000)
    (repo / "untracked.txt").write_bytes(b"y" * 500)  # not ignored: it travels with the tree
    (repo / "big" / "blob").write_bytes(b"z" * 4000)
    (repo / "big" / "other").write_bytes(b"z" * 96)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "tracked.txt", ".gitignore"], cwd=repo, check=True)

    sizes = bundle.travelling_bytes(repo, ["big", "absent"])
    assert sizes == {"tree": 1000 + 500 + len("big/\n"), "big": 4096, "absent": 0}
    assert bundle.check_size(sizes, limit=10_000) == sum(sizes.values())
    with pytest.raises(ValueError, match="over"):
        bundle.check_size(sizes, limit=5000)


def test_carry_list_fits_and_every_path_is_ignored(bundle):
    carry = bundle.carry_paths("runs/cpu")
    assert len(carry) <= bundle.MAX_CARRY and len(set(carry)) == len(carry)
    assert carry[-1] == "runs/cpu/data" and ".cache/trl-0.29.1" in carry
    for path in carry:  # a path git does not ignore travels with the tree anyway and should not take a slot
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO_ROOT).returncode == 0, path


def test_device_command_is_short_valid_bash_and_runs_gpu_check(bundle):
    command = bundle.device_command("plotly-7.1.0-py3-none-any.whl", "runs/cpu")
    assert len(command) < bundle.MAX_COMMAND
    assert subprocess.run(["bash", "-n", "-c", command]).returncode == 0
    assert "PYTHONPATH=$PWD/.cache/gpu/site:/tmp/plotly-site" in command
    assert "-m zipfile -e .cache/gpu/wheels/plotly-7.1.0-py3-none-any.whl /tmp/plotly-site" in command
    assert "-lt 20000000 ]; then mkdir -p .cache/gpu-tmp && export TMPDIR=$PWD/.cache/gpu-tmp" in command
    assert command.endswith("python3 benchmarks/gpu_check.py --run-dir runs/cpu --tokenizer-dir .cache/gpu/tokenizer "
                            "--out $OUT/gpu_check.json 2>&1 | tee $OUT/gpu_check.out")
    for path in (".cache/gpu/site", ".cache/gpu/wheels", ".cache/gpu/tokenizer"):
        assert path in bundle.carry_paths("runs/cpu")
