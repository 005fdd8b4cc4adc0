"""The configs live in the top-level configs/ and ship inside the package as ``qatrun.configs``:
both the editable install and a built wheel installed outside the repository compose every group."""

import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import zipfile
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


def setuptools_table() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def config_packages() -> dict[str, Path]:
    """qatrun.configs and one package per folder of configs/ (data only: the YAML)."""
    folders = [ROOT / "configs"] + sorted(d for d in (ROOT / "configs").rglob("*")
                                          if d.is_dir() and d.name != "__pycache__")
    return {".".join(("qatrun", "configs") + d.relative_to(ROOT / "configs").parts): d for d in folders}


def test_every_package_is_listed_for_setuptools():
    """pyproject lists the packages explicitly (discovery does not follow the configs/ mapping), every
    folder of configs/ among them: one left out makes setuptools warn that its YAML "would be ignored"."""
    listed = set(setuptools_table()["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "qatrun").rglob("__init__.py")}
    assert found | set(config_packages()) == listed, "add the missing packages to pyproject.toml"


def test_package_data_names_the_yaml_of_every_config_folder():
    data = setuptools_table()["package-data"]
    for package, folder in config_packages().items():
        if any(folder.glob("*.yaml")):
            assert "*.yaml" in data.get(package, []), f'pyproject.toml: package-data "{package}" = ["*.yaml"]'


def copy_project(dst: Path) -> Path:
    """What a build reads, without the work tree's build/ and egg-info (other builds may be running)."""
    dst.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dst / name)
    for name in ("qatrun", "configs"):
        shutil.copytree(ROOT / name, dst / name, ignore=ignore)
    return dst


def makefile_pip_env() -> dict[str, str]:
    """The environment the Makefile gives pip (PIP_ENV := NAME=value ...)."""
    m = re.search(r"^PIP_ENV\s*:=\s*(.*)$", (ROOT / "Makefile").read_text(), re.M)
    assert m, "Makefile has no PIP_ENV"
    return dict(item.split("=", 1) for item in shlex.split(m.group(1)))


NOISE = ("would be ignored", "is absent from", "BuildBackendWarning", "SetuptoolsWarning",
         "SetuptoolsDeprecationWarning")


def test_wheel_build_is_quiet_and_ships_every_yaml(tmp_path):
    src = copy_project(tmp_path / "src")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "wheels"), str(src)], capture_output=True, text=True, cwd=tmp_path)
    out = build.stdout + build.stderr
    assert build.returncode == 0, out[-3000:]
    assert not [n for n in NOISE if n in out], out[-3000:]
    (wheel,) = (tmp_path / "wheels").glob("qatrun-*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".yaml")}
    expected = {"qatrun/configs/" + p.relative_to(ROOT / "configs").as_posix() for p in (ROOT / "configs").rglob("*.yaml")}
    assert expected and shipped == expected, (expected - shipped, shipped - expected)


def test_editable_build_as_make_install_does_it_warns_nothing(tmp_path):
    """make install's `pip install -e` builds an editable wheel through setuptools' PEP 660 hook: the
    same hook here, on a copy, with the Makefile's PIP_ENV, and nothing installed anywhere (a pip
    install would replace the work tree's own editable install). The editable finder's notice is an
    InformationOnly message that PIP_ENV filters out; nothing else may warn."""
    src = copy_project(tmp_path / "src")
    hook = "from setuptools import build_meta as b; print(b.build_editable(%r))" % str(tmp_path / "wheel")
    done = subprocess.run([sys.executable, "-c", hook], capture_output=True, text=True, cwd=src,
                          env={**os.environ, **makefile_pip_env()})
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert not [n for n in NOISE if n in out] and "Editable installation" not in out, out[-3000:]
    assert list((tmp_path / "wheel").glob("qatrun-*.editable-*.whl"))


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
