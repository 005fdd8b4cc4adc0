"""The configs live in the top-level configs/ and ship inside the package as ``qatrun.configs``:
both the editable install and a built wheel installed outside the repository compose every group."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

COMPOSE_ALL = textwrap.dedent("""
    import importlib.resources, sys
    from hydra import compose, initialize_config_module
    import qatrun
    import qatrun.api, qatrun.bench, qatrun.cli, qatrun.report, qatrun.train  # every subpackage ships
    cfgs = importlib.resources.files("qatrun.configs")
    groups = {g.name: sorted(p.name[:-5] for p in g.iterdir() if p.name.endswith(".yaml"))
              for g in cfgs.iterdir() if g.is_dir() and g.name in
              ("dataset", "model", "optimizer", "estimator", "experiment")}
    n = 0
    with initialize_config_module("qatrun.configs", version_base="1.3"):
        for group, options in sorted(groups.items()):
            for opt in options:
                cfg = compose("config", overrides=[f"{group}={opt}"])
                assert cfg.get(group) is not None or group == "experiment", (group, opt)
                n += 1
    print(qatrun.__file__, n, sorted(groups))
""")


def test_every_package_is_listed_for_setuptools():
    """pyproject lists the packages explicitly (discovery does not follow the configs/ mapping)."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "qatrun").rglob("__init__.py")}
    assert found | {"qatrun.configs"} == listed


def test_editable_install_reads_top_level_configs():
    import importlib.resources

    assert Path(str(importlib.resources.files("qatrun.configs"))).resolve() == ROOT / "configs"
    assert not (ROOT / "qatrun" / "configs").exists()  # one home for the YAML


@pytest.mark.slow
def test_wheel_installed_outside_the_repository_composes_every_group(tmp_path):
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(ROOT)], capture_output=True, text=True, cwd=tmp_path)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("qatrun-*.whl")
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                           str(wheel)], capture_output=True, text=True, cwd=tmp_path)
    assert inst.returncode == 0, inst.stderr[-2000:]
    out = subprocess.run([sys.executable, "-c", COMPOSE_ALL], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    where, n, groups = out.stdout.split(" ", 2)
    assert where.startswith(str(site))  # the wheel's copy, not the repository's
    expected = sum(len(list((ROOT / "configs" / g).glob("*.yaml")))
                   for g in ("dataset", "model", "optimizer", "estimator", "experiment"))
    assert int(n) == expected and "experiment" in groups
