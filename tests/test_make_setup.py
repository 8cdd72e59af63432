"""`make test` alone sets up what the suite needs, and overlapping runs share Redis safely."""

from __future__ import annotations

import ast
import os
import subprocess
from pathlib import Path

import redis
from django.conf import settings
from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache

from tests.conftest import ROOT, clear_run_cache

SCRIPT = ROOT / ".ci" / "ensure-chromium"
NOBODY = ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _bin_dir(tmp_path: Path) -> Path:
    """A PATH holding `id` and a stand-in `apt-get` (installing packages cannot run in a test):
    it records its arguments and, on `install`, puts an executable `chromium` next to itself."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "id").symlink_to("/usr/bin/id")
    log = tmp_path / "apt-get.log"
    stand_in = bin_dir / "apt-get"
    stand_in.write_text(
        "#!/bin/bash\n"
        f'echo "$*" >> {log}\n'
        'if [ "$1" = install ] || [[ " $* " == *" install "* ]]; then\n'
        f"  printf '#!/bin/bash\\necho chromium\\n' > {bin_dir}/chromium\n"
        f"  /bin/chmod +x {bin_dir}/chromium\n"
        "fi\n"
    )
    stand_in.chmod(0o755)
    return bin_dir


def _run(bin_dir: Path, prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(bin_dir), "HOME": str(bin_dir)}
    return subprocess.run(
        [*(prefix or []), "/bin/bash", str(SCRIPT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_make_test_runs_the_chromium_setup_before_pytest():
    out = subprocess.run(
        ["make", "-n", "test", "PYTEST_ARGS=--co"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    setup = next(i for i, line in enumerate(out) if ".ci/ensure-chromium" in line)
    pytest_line = next(i for i, line in enumerate(out) if "tests/shards.py" in line)
    assert setup < pytest_line


def test_missing_chromium_is_installed_with_apt_get_when_running_as_root(tmp_path):
    bin_dir = _bin_dir(tmp_path)
    if os.geteuid() != 0:  # a run as another user: `id` stands in for root's answer
        (bin_dir / "id").unlink()
        (bin_dir / "id").write_text("#!/bin/bash\necho 0\n")
        (bin_dir / "id").chmod(0o755)
    result = _run(bin_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = (tmp_path / "apt-get.log").read_text().splitlines()
    assert calls[0] == "update -qq"
    assert calls[1].split()[-1] == "chromium"
    assert "install" in calls[1].split()
    assert (bin_dir / "chromium").exists()


def test_missing_chromium_without_root_stops_with_the_exact_command(tmp_path):
    bin_dir = _bin_dir(tmp_path)
    tmp_path.chmod(0o755)
    result = _run(bin_dir, prefix=NOBODY if os.geteuid() == 0 else None)
    assert result.returncode == 1
    assert "sudo apt-get install -y chromium" in result.stderr
    assert not (tmp_path / "apt-get.log").exists()  # nothing was attempted


def test_chromium_on_path_needs_no_setup(tmp_path):
    bin_dir = _bin_dir(tmp_path)
    (bin_dir / "chromium").symlink_to("/bin/true")
    result = _run(bin_dir)
    assert result.returncode == 0
    assert not (tmp_path / "apt-get.log").exists()


# --- the shared Redis -----------------------------------------------------------------------


def test_no_test_clears_the_whole_shared_cache():
    """cache.clear() is FLUSHDB on the shared Redis: it wipes every overlapping run's keys."""
    offenders = []
    for path in (ROOT / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "clear"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "cache"
                and path.name != "conftest.py"
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"use tests.conftest.clear_run_cache() instead: {offenders}"


def test_clearing_the_run_cache_leaves_another_runs_keys_alone():
    assert isinstance(caches["default"], RedisCache), "the test shape keeps its cache in Redis"
    raw = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"])
    other = f"other-run-{os.getpid()}:1:throttle"
    raw.set(other, b"42", ex=60)
    cache.set("mine", 1, 60)
    cache.set("also-mine", 2, 60)
    try:
        clear_run_cache()
        assert cache.get("mine") is None
        assert cache.get("also-mine") is None
        assert raw.get(other) == b"42"
    finally:
        raw.delete(other)
