import os
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from dynocorn.platform import (
    Capacity,
    Platform,
    PlatformError,
    WorkerCount,
    detect,
    detect_cpus,
    detect_memory,
    ipv6_available,
    parse_port,
    parse_web_concurrency,
    worker_count,
)

MB = 1024**2
GB = 1024**3
V1_UNLIMITED = "9223372036854771712"  # what cgroup v1 reports when there is no limit

# --- fake /proc and /sys/fs/cgroup trees ---------------------------------------------------

ROOT_FS = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro"
CGROUP_TMPFS = (
    "25 22 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755"
)


def v2_mount(point: str = "/sys/fs/cgroup", mount_root: str = "/") -> str:
    return f"30 22 0:26 {mount_root} {point} rw,nosuid,relatime shared:4 - cgroup2 cgroup2 rw"


def v1_mount(point: str, options: str, mount_root: str = "/") -> str:
    return (
        f"35 25 0:30 {mount_root} {point} rw,nosuid,relatime shared:14 - cgroup cgroup rw,{options}"
    )


def write_tree(root: Path, files: Mapping[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def in_dir(directory: str, files: Mapping[str, str] | None) -> dict[str, str]:
    return {f"{directory.rstrip('/')}/{name}": text for name, text in (files or {}).items()}


def meminfo(total_kb: int = 16_000_000) -> dict[str, str]:
    return {
        "proc/meminfo": f"MemTotal:       {total_kb} kB\nMemFree:         1234567 kB\n"
        "MemAvailable:    7654321 kB\n"
    }


def cgroup_v2(
    cgroup: str = "/",
    files: Mapping[str, str] | None = None,
    *,
    mount: str = "/sys/fs/cgroup",
    mount_root: str = "/",
) -> dict[str, str]:
    """A unified (v2 only) host: files go in the process's cgroup directory."""
    return {
        "proc/self/cgroup": f"0::{cgroup}\n",
        "proc/self/mountinfo": "\n".join([ROOT_FS, v2_mount(mount, mount_root)]) + "\n",
        f"{mount}/cgroup.controllers": "cpuset cpu io memory pids\n",
        **in_dir(mount + cgroup, files),
    }


def cgroup_v1(
    cgroup: str = "/",
    memory: Mapping[str, str] | None = None,
    cpu: Mapping[str, str] | None = None,
    *,
    mount_root: str = "/",
) -> dict[str, str]:
    """A v1 host like a Heroku dyno; cpuset comes first so "cpu" must not match it."""
    mounts = [
        ROOT_FS,
        CGROUP_TMPFS,
        v1_mount("/sys/fs/cgroup/cpuset", "cpuset", mount_root),
        v1_mount("/sys/fs/cgroup/cpu,cpuacct", "cpu,cpuacct", mount_root),
        v1_mount("/sys/fs/cgroup/memory", "memory", mount_root),
    ]
    return {
        "proc/self/cgroup": f"12:memory:{cgroup}\n5:cpuset:/\n4:cpu,cpuacct:{cgroup}\n"
        f"1:name=systemd:{cgroup}\n",
        "proc/self/mountinfo": "\n".join(mounts) + "\n",
        **in_dir("/sys/fs/cgroup/cpuset", {"cpu.cfs_quota_us": "100000"}),  # must be ignored
        **in_dir(f"/sys/fs/cgroup/memory{cgroup}", memory),
        **in_dir(f"/sys/fs/cgroup/cpu,cpuacct{cgroup}", cpu),
    }


def hybrid(cgroup: str = "/", memory: Mapping[str, str] | None = None) -> dict[str, str]:
    """systemd's hybrid layout: v1 controllers, plus an empty cgroup2 at .../unified."""
    mounts = [
        ROOT_FS,
        CGROUP_TMPFS,
        v2_mount("/sys/fs/cgroup/unified"),
        v1_mount("/sys/fs/cgroup/memory", "memory"),
    ]
    return {
        "proc/self/cgroup": f"12:memory:{cgroup}\n0::{cgroup}\n",
        "proc/self/mountinfo": "\n".join(mounts) + "\n",
        "sys/fs/cgroup/unified/cgroup.controllers": "",
        **in_dir(f"/sys/fs/cgroup/unified{cgroup}", {"cgroup.procs": "1\n"}),
        **in_dir(f"/sys/fs/cgroup/memory{cgroup}", memory),
    }


# --- memory ------------------------------------------------------------------------------


def memory(
    tmp_path: Path, files: Mapping[str, str], environ: Mapping[str, str] | None = None
) -> Capacity | None:
    return detect_memory(environ or {}, write_tree(tmp_path, files))


def test_cgroup_v2_memory_max(tmp_path: Path) -> None:
    files = cgroup_v2("/user.slice/app.service", {"memory.max": "536870912\n"}) | meminfo()
    assert memory(tmp_path, files) == Capacity(536870912, "cgroup v2 memory.max", imposed=True)


def test_cgroup_v2_max_means_no_limit(tmp_path: Path) -> None:
    files = cgroup_v2("/app", {"memory.max": "max\n", "memory.high": "max\n"}) | meminfo(2_000_000)
    assert memory(tmp_path, files) == Capacity(2_000_000 * 1024, "/proc/meminfo", imposed=False)


@pytest.mark.parametrize(
    ("maximum", "high", "expected"),
    [
        ("1073741824", "536870912", Capacity(512 * MB, "cgroup v2 memory.high", imposed=True)),
        ("max", "536870912", Capacity(512 * MB, "cgroup v2 memory.high", imposed=True)),
        ("536870912", "max", Capacity(512 * MB, "cgroup v2 memory.max", imposed=True)),
        ("536870912", "1073741824", Capacity(512 * MB, "cgroup v2 memory.max", imposed=True)),
        ("536870912", "536870912", Capacity(512 * MB, "cgroup v2 memory.max", imposed=True)),
    ],
)
def test_cgroup_v2_memory_high_when_lower(
    tmp_path: Path, maximum: str, high: str, expected: Capacity
) -> None:
    files = cgroup_v2("/app", {"memory.max": maximum, "memory.high": high}) | meminfo()
    assert memory(tmp_path, files) == expected


def test_cgroup_v2_limit_on_a_parent_binds(tmp_path: Path) -> None:
    # Kubernetes and systemd put the limit on the pod or slice; the leaf says "max".
    files = (
        cgroup_v2("/kubepods/pod1/ctr", {"memory.max": "max\n"})
        | in_dir("/sys/fs/cgroup/kubepods/pod1", {"memory.max": "1073741824\n"})
        | in_dir("/sys/fs/cgroup/kubepods", {"memory.max": "8589934592\n"})
        | meminfo()
    )
    assert memory(tmp_path, files) == Capacity(GB, "cgroup v2 memory.max", imposed=True)


def test_cgroup_v2_directory_not_visible_uses_mount_root(tmp_path: Path) -> None:
    # Inside a container the host's path is not under the mount: the mount is our cgroup.
    files = cgroup_v2("/") | in_dir("/sys/fs/cgroup", {"memory.max": "268435456\n"})
    files["proc/self/cgroup"] = "0::/system.slice/docker-abc.scope\n"
    assert memory(tmp_path, files) == Capacity(256 * MB, "cgroup v2 memory.max", imposed=True)


def test_cgroup_v2_mount_root_is_stripped(tmp_path: Path) -> None:
    # Without a cgroup namespace the mount shows the container's cgroup at its top.
    files = cgroup_v2("/", {"memory.max": "268435456\n"}, mount_root="/docker/abc")
    files["proc/self/cgroup"] = "0::/docker/abc\n"
    assert memory(tmp_path, files) == Capacity(256 * MB, "cgroup v2 memory.max", imposed=True)


def test_cgroup_path_cannot_escape_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write_tree(outside, {"memory.max": "1024\n"})
    files = cgroup_v2("/") | meminfo(1_000_000)
    files["proc/self/cgroup"] = "0::/../../../outside\n"
    assert memory(tmp_path / "root", files) == Capacity(1_000_000 * 1024, "/proc/meminfo", False)


def test_cgroup_v2_mount_with_escaped_space(tmp_path: Path) -> None:
    files = cgroup_v2("/", {"memory.max": "268435456\n"}, mount="/sys/fs/my cgroup")
    files["proc/self/mountinfo"] = v2_mount("/sys/fs/my\\040cgroup") + "\n"
    assert memory(tmp_path, files) == Capacity(256 * MB, "cgroup v2 memory.max", imposed=True)


def test_cgroup_v1_memory_limit(tmp_path: Path) -> None:
    files = cgroup_v1("/heroku/dyno", {"memory.limit_in_bytes": "536870912\n"}) | meminfo()
    expected = Capacity(536870912, "cgroup v1 memory.limit_in_bytes", imposed=True)
    assert memory(tmp_path, files) == expected


def test_cgroup_v1_unlimited_sentinel_falls_through(tmp_path: Path) -> None:
    files = cgroup_v1("/", {"memory.limit_in_bytes": V1_UNLIMITED + "\n"}) | meminfo(1_000_000)
    assert memory(tmp_path, files) == Capacity(1_000_000 * 1024, "/proc/meminfo", imposed=False)


def test_cgroup_v1_above_one_tebibyte_is_unlimited(tmp_path: Path) -> None:
    files = cgroup_v1("/", {"memory.limit_in_bytes": str(2 * 1024**4)})
    assert memory(tmp_path, files, {"DYNO_RAM": "512"}) == Capacity(512 * MB, "DYNO_RAM", True)


def test_cgroup_v1_directory_not_visible_uses_mount_root(tmp_path: Path) -> None:
    files = cgroup_v1("/") | in_dir(
        "/sys/fs/cgroup/memory", {"memory.limit_in_bytes": "1073741824"}
    )
    files["proc/self/cgroup"] = "12:memory:/process_api/4dadedc3\n"
    expected = Capacity(GB, "cgroup v1 memory.limit_in_bytes", imposed=True)
    assert memory(tmp_path, files) == expected


def test_cgroup_v1_leaf_unlimited_mount_root_limited(tmp_path: Path) -> None:
    files = cgroup_v1("/app", {"memory.limit_in_bytes": V1_UNLIMITED}) | in_dir(
        "/sys/fs/cgroup/memory", {"memory.limit_in_bytes": "1073741824"}
    )
    expected = Capacity(GB, "cgroup v1 memory.limit_in_bytes", imposed=True)
    assert memory(tmp_path, files) == expected


def test_cgroup_v1_container_mount_root(tmp_path: Path) -> None:
    files = cgroup_v1("/", {"memory.limit_in_bytes": "268435456"}, mount_root="/docker/abc")
    files["proc/self/cgroup"] = "12:memory:/docker/abc\n"
    expected = Capacity(256 * MB, "cgroup v1 memory.limit_in_bytes", imposed=True)
    assert memory(tmp_path, files) == expected


def test_hybrid_layout_reads_v1_memory(tmp_path: Path) -> None:
    files = hybrid("/user.slice", {"memory.limit_in_bytes": "1073741824"}) | meminfo()
    expected = Capacity(GB, "cgroup v1 memory.limit_in_bytes", imposed=True)
    assert memory(tmp_path, files) == expected


def test_cgroup_v2_wins_over_v1(tmp_path: Path) -> None:
    files = hybrid("/", {"memory.limit_in_bytes": "1073741824"}) | in_dir(
        "/sys/fs/cgroup/unified", {"memory.max": "536870912"}
    )
    assert memory(tmp_path, files) == Capacity(512 * MB, "cgroup v2 memory.max", imposed=True)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"sys/fs/cgroup/cgroup.controllers": "memory\n", "sys/fs/cgroup/memory.max": "1048576"},
            Capacity(MB, "cgroup v2 memory.max", imposed=True),
        ),
        (
            {"sys/fs/cgroup/memory/memory.limit_in_bytes": "1048576"},
            Capacity(MB, "cgroup v1 memory.limit_in_bytes", imposed=True),
        ),
        (
            # Without cgroup.controllers the directory is not a cgroup2 mount.
            {"sys/fs/cgroup/memory.max": "1048576", "proc/meminfo": "MemTotal: 2048 kB\n"},
            Capacity(2 * MB, "/proc/meminfo", imposed=False),
        ),
    ],
    ids=["v2", "v1", "not-a-cgroup"],
)
def test_missing_mountinfo_tries_conventional_paths(
    tmp_path: Path, files: dict[str, str], expected: Capacity
) -> None:
    files = files | {"proc/self/cgroup": "12:memory:/\n0::/\n"}
    assert memory(tmp_path, files) == expected


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("DYNO_RAM", "512", 512 * MB),
        ("MEMORY_AVAILABLE", "1024", GB),
        ("FLY_VM_MEMORY_MB", "256", 256 * MB),
        ("MEMORY_LIMIT", "2345M", 2345 * MB),
        ("MEMORY_LIMIT", "1G", GB),
        ("CONTAINER_MEMORY", "536870912", 512 * MB),
    ],
)
def test_memory_from_environment(tmp_path: Path, variable: str, value: str, expected: int) -> None:
    files = meminfo()
    assert memory(tmp_path, files, {variable: value}) == Capacity(expected, variable, imposed=True)


@pytest.mark.parametrize(
    "variable",
    ["DYNO_RAM", "MEMORY_AVAILABLE", "FLY_VM_MEMORY_MB", "MEMORY_LIMIT", "CONTAINER_MEMORY"],
)
@pytest.mark.parametrize("value", ["lots", "0", "-512", "12XB"])
def test_garbage_memory_variable(tmp_path: Path, variable: str, value: str) -> None:
    with pytest.raises(PlatformError) as caught:
        memory(tmp_path, meminfo(), {variable: value})
    assert (caught.value.variable, caught.value.value) == (variable, value)
    assert str(caught.value).startswith(f"{variable}={value!r}: ")


def test_garbage_memory_variable_fails_even_when_cgroup_wins(tmp_path: Path) -> None:
    # Otherwise the typo would pass on the platform and fail only on a laptop, or vice versa.
    files = cgroup_v1("/", {"memory.limit_in_bytes": "536870912"})
    with pytest.raises(PlatformError, match=r"^MEMORY_LIMIT="):
        memory(tmp_path, files, {"MEMORY_LIMIT": "two gigs"})


def test_empty_memory_variable_is_unset(tmp_path: Path) -> None:
    environ = {"DYNO_RAM": "", "MEMORY_LIMIT": "  ", "CONTAINER_MEMORY": "1073741824"}
    assert memory(tmp_path, meminfo(), environ) == Capacity(GB, "CONTAINER_MEMORY", imposed=True)


@pytest.mark.parametrize(
    ("environ", "source"),
    [
        ({"DYNO_RAM": "512", "MEMORY_AVAILABLE": "1024"}, "DYNO_RAM"),
        ({"MEMORY_AVAILABLE": "1024", "FLY_VM_MEMORY_MB": "256"}, "MEMORY_AVAILABLE"),
        ({"FLY_VM_MEMORY_MB": "256", "MEMORY_LIMIT": "1G"}, "FLY_VM_MEMORY_MB"),
        ({"MEMORY_LIMIT": "1G", "CONTAINER_MEMORY": "536870912"}, "MEMORY_LIMIT"),
    ],
)
def test_environment_precedence(tmp_path: Path, environ: dict[str, str], source: str) -> None:
    found = memory(tmp_path, meminfo(), environ)
    assert found is not None
    assert found.source == source


def test_cgroup_wins_over_environment(tmp_path: Path) -> None:
    files = cgroup_v2("/", {"memory.max": "1073741824"})
    expected = Capacity(GB, "cgroup v2 memory.max", imposed=True)
    assert memory(tmp_path, files, {"DYNO_RAM": "512"}) == expected


def test_physical_memory_last(tmp_path: Path) -> None:
    expected = Capacity(16_000_000 * 1024, "/proc/meminfo", imposed=False)
    assert memory(tmp_path, meminfo()) == expected


def test_nothing_readable(tmp_path: Path) -> None:
    assert memory(tmp_path, {}) is None
    assert memory(tmp_path, {"proc/meminfo": "MemFree: 12 kB\n"}) is None


# --- CPU ---------------------------------------------------------------------------------


def cpus(
    tmp_path: Path,
    files: Mapping[str, str],
    affinity: int = 8,
    environ: Mapping[str, str] | None = None,
) -> Capacity:
    return detect_cpus(environ or {}, write_tree(tmp_path, files), lambda: affinity)


def test_cpus_without_cgroup_come_from_affinity(tmp_path: Path) -> None:
    assert cpus(tmp_path, {}, affinity=8) == Capacity(8, "sched_getaffinity", imposed=False)


def test_cpus_default_affinity_is_this_process(tmp_path: Path) -> None:
    found = detect_cpus({}, tmp_path)
    assert found == Capacity(len(os.sched_getaffinity(0)), "sched_getaffinity", imposed=False)


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        ("200000 100000", Capacity(2, "cgroup v2 cpu.max", imposed=True)),
        ("150000 100000", Capacity(2, "cgroup v2 cpu.max", imposed=True)),  # rounded up
        ("50000 100000", Capacity(1, "cgroup v2 cpu.max", imposed=True)),
        ("800000 100000", Capacity(8, "cgroup v2 cpu.max", imposed=True)),  # equal still limits
        ("1600000 100000", Capacity(8, "sched_getaffinity", imposed=False)),  # above: no cap
        ("max 100000", Capacity(8, "sched_getaffinity", imposed=False)),
        ("nonsense", Capacity(8, "sched_getaffinity", imposed=False)),
    ],
)
def test_cgroup_v2_cpu_quota(tmp_path: Path, cpu_max: str, expected: Capacity) -> None:
    assert cpus(tmp_path, cgroup_v2("/app", {"cpu.max": cpu_max + "\n"})) == expected


@pytest.mark.parametrize(
    ("quota", "period", "expected"),
    [
        ("200000", "100000", Capacity(2, "cgroup v1 cpu.cfs_quota_us", imposed=True)),
        ("250000", "100000", Capacity(3, "cgroup v1 cpu.cfs_quota_us", imposed=True)),
        ("10000", "100000", Capacity(1, "cgroup v1 cpu.cfs_quota_us", imposed=True)),
        ("-1", "100000", Capacity(8, "sched_getaffinity", imposed=False)),
        ("200000", "0", Capacity(8, "sched_getaffinity", imposed=False)),
    ],
)
def test_cgroup_v1_cpu_quota(tmp_path: Path, quota: str, period: str, expected: Capacity) -> None:
    files = cgroup_v1("/app", cpu={"cpu.cfs_quota_us": quota, "cpu.cfs_period_us": period})
    assert cpus(tmp_path, files) == expected


def test_cgroup_v1_cpu_without_mountinfo(tmp_path: Path) -> None:
    files = in_dir(
        "/sys/fs/cgroup/cpu", {"cpu.cfs_quota_us": "300000", "cpu.cfs_period_us": "100000"}
    )
    files["proc/self/cgroup"] = "4:cpu,cpuacct:/\n"
    assert cpus(tmp_path, files) == Capacity(3, "cgroup v1 cpu.cfs_quota_us", imposed=True)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"RENDER_CPU_COUNT": "2"}, Capacity(2, "RENDER_CPU_COUNT", imposed=True)),
        ({"RENDER_CPU_COUNT": "16"}, Capacity(8, "sched_getaffinity", imposed=False)),
        ({"RENDER_CPU_COUNT": ""}, Capacity(8, "sched_getaffinity", imposed=False)),
    ],
)
def test_render_cpu_count(tmp_path: Path, environ: dict[str, str], expected: Capacity) -> None:
    assert cpus(tmp_path, {}, environ=environ) == expected


def test_smallest_cap_wins(tmp_path: Path) -> None:
    files = cgroup_v2("/", {"cpu.max": "400000 100000"})
    assert cpus(tmp_path, files, environ={"RENDER_CPU_COUNT": "2"}).source == "RENDER_CPU_COUNT"
    assert cpus(tmp_path, files, environ={"RENDER_CPU_COUNT": "6"}).source == "cgroup v2 cpu.max"


@pytest.mark.parametrize("value", ["0", "two", "1.5", "-1"])
def test_garbage_render_cpu_count(tmp_path: Path, value: str) -> None:
    with pytest.raises(PlatformError) as caught:
        cpus(tmp_path, {}, environ={"RENDER_CPU_COUNT": value})
    assert (caught.value.variable, caught.value.value) == ("RENDER_CPU_COUNT", value)


# --- environment variables ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("5000", 5000), ("10000", 10000), ("1", 1), ("65535", 65535), (" 8080\n", 8080)],
)
def test_parse_port(value: str, expected: int) -> None:
    assert parse_port(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("0", "must be between 1 and 65535"),
        ("65536", "must be between 1 and 65535"),
        ("-1", "not a port number"),
        ("http", "not a port number"),
        ("80.0", "not a port number"),
        ("", "not a port number"),
    ],
)
def test_parse_port_rejects(value: str, reason: str) -> None:
    with pytest.raises(PlatformError) as caught:
        parse_port(value)
    assert (caught.value.variable, caught.value.value, caught.value.reason) == (
        "PORT",
        value,
        reason,
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3),
        ("011", 11),
        (" 4 ", 4),
        ("auto", "auto"),
        ("AUTO", "auto"),
        ("", None),
        ("  ", None),
    ],
)
def test_parse_web_concurrency(value: str, expected: int | str | None) -> None:
    assert parse_web_concurrency(value) == expected


@pytest.mark.parametrize("value", ["0", "00", "-1", "lots", "3.5", "3 workers"])
def test_parse_web_concurrency_rejects(value: str) -> None:
    with pytest.raises(PlatformError) as caught:
        parse_web_concurrency(value)
    assert (caught.value.variable, caught.value.value) == ("WEB_CONCURRENCY", value)


@pytest.mark.parametrize("value", ["-2", "-1", "0", "000"])
def test_a_negative_or_zero_web_concurrency_is_too_few(value: str) -> None:
    with pytest.raises(PlatformError) as caught:
        parse_web_concurrency(value)
    assert caught.value.reason == "must be at least 1"


def test_platform_error_message() -> None:
    error = PlatformError("PORT", "http", "not a port number")
    assert str(error) == "PORT='http': not a port number"
    assert isinstance(error, ValueError)


@pytest.mark.parametrize(
    ("environ", "name", "source"),
    [
        ({"DYNO": "web.1", "HONCHO_PROCESS_NAME": "web.2", "CONTAINER": "web-3"}, "web.1", "DYNO"),
        ({"HONCHO_PROCESS_NAME": "web.2", "CONTAINER": "web-3"}, "web.2", "HONCHO_PROCESS_NAME"),
        ({"DYNO": "", "CONTAINER": "web-3"}, "web-3", "CONTAINER"),
        ({"DYNO": "web-12a34b56d-e78f9"}, "web-12a34b56d-e78f9", "DYNO"),
        ({}, None, None),
    ],
)
def test_process_name_precedence(
    tmp_path: Path, environ: dict[str, str], name: str | None, source: str | None
) -> None:
    platform = detect(environ, tmp_path, affinity=lambda: 1, ipv6=False)
    assert (platform.process_name, platform.process_name_source) == (name, source)
    assert platform.on_heroku is (source == "DYNO")


def test_detect_reads_everything(tmp_path: Path) -> None:
    root = write_tree(tmp_path, cgroup_v1("/", {"memory.limit_in_bytes": "536870912"}))
    environ = {
        "PORT": "5000",
        "DYNO": "web.1",
        "WEB_CONCURRENCY": "011",
        "WEB_CONCURRENCY_SET_BY": "heroku/python",
    }
    assert detect(environ, root, affinity=lambda: 8, ipv6=True) == Platform(
        port=5000,
        process_name="web.1",
        process_name_source="DYNO",
        on_heroku=True,
        memory=Capacity(512 * MB, "cgroup v1 memory.limit_in_bytes", imposed=True),
        cpus=Capacity(8, "sched_getaffinity", imposed=False),
        ipv6=True,
        web_concurrency=11,
        web_concurrency_set_by="heroku/python",
        web_concurrency_raw="011",
    )


@pytest.mark.parametrize("environ", [{}, {"PORT": ""}, {"PORT": " "}])
def test_detect_port_unset(tmp_path: Path, environ: dict[str, str]) -> None:
    assert detect(environ, tmp_path, affinity=lambda: 1, ipv6=False).port is None


def test_detect_rejects_bad_variables(tmp_path: Path) -> None:
    with pytest.raises(PlatformError, match=r"^PORT="):
        detect({"PORT": "http"}, tmp_path, affinity=lambda: 1, ipv6=False)
    with pytest.raises(PlatformError, match=r"^WEB_CONCURRENCY="):
        detect({"WEB_CONCURRENCY": "lots"}, tmp_path, affinity=lambda: 1, ipv6=False)


def test_detect_empty_set_by_is_none(tmp_path: Path) -> None:
    environ = {"WEB_CONCURRENCY": "", "WEB_CONCURRENCY_SET_BY": ""}
    platform = detect(environ, tmp_path, affinity=lambda: 1, ipv6=True)
    assert (platform.web_concurrency, platform.web_concurrency_set_by) == (None, None)
    assert platform.ipv6 is True


def test_ipv6_available_agrees_with_detect(tmp_path: Path) -> None:
    assert detect({}, tmp_path, affinity=lambda: 1).ipv6 is ipv6_available()


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc and /sys/fs/cgroup")
def test_detect_on_this_machine() -> None:
    platform = detect({}, Path("/"))
    assert platform.cpus.amount >= 1
    assert platform.cpus.amount <= (os.cpu_count() or 1)
    assert platform.memory is not None
    assert platform.memory.amount >= 64 * MB
    assert worker_count(platform, 256).workers >= 1


# --- worker count ------------------------------------------------------------------------


def heroku_dyno(
    tmp_path: Path, limit_in_bytes: int, cpu_quota: int = -1, **environ: str
) -> Platform:
    """A dyno as Heroku builds it: cgroup v1, a host of 8 CPUs, maybe a CFS quota."""
    files = cgroup_v1(
        "/",
        {"memory.limit_in_bytes": str(limit_in_bytes)},
        {"cpu.cfs_quota_us": str(cpu_quota), "cpu.cfs_period_us": "100000"},
    )
    return detect(
        {"DYNO": "web.1", **environ}, write_tree(tmp_path, files), affinity=lambda: 8, ipv6=True
    )


@pytest.mark.parametrize(
    ("limit_in_bytes", "cpu_quota", "workers", "explanation"),
    [
        (
            536870912,
            -1,
            2,
            "512 MB (cgroup v1 memory.limit_in_bytes) / 256 MB per worker,"
            " 8 CPUs (sched_getaffinity)",
        ),
        (
            1073741824,
            -1,
            4,
            "1024 MB (cgroup v1 memory.limit_in_bytes) / 256 MB per worker,"
            " 8 CPUs (sched_getaffinity)",
        ),
        (
            2684354560,
            200000,
            5,
            "2560 MB (cgroup v1 memory.limit_in_bytes) / 256 MB per worker,"
            " 2 CPUs (cgroup v1 cpu.cfs_quota_us)",
        ),
        (
            15032385536,
            -1,
            17,
            "14336 MB (cgroup v1 memory.limit_in_bytes) / 256 MB per worker,"
            " 8 CPUs (sched_getaffinity)",
        ),
    ],
    ids=["standard-1x", "standard-2x", "performance-m", "performance-l"],
)
def test_heroku_dyno_sizes(
    tmp_path: Path, limit_in_bytes: int, cpu_quota: int, workers: int, explanation: str
) -> None:
    platform = heroku_dyno(tmp_path, limit_in_bytes, cpu_quota)
    assert worker_count(platform, 256) == WorkerCount(workers, explanation, from_platform=True)


@pytest.mark.parametrize(("value", "workers"), [("3", 3), ("011", 11), ("1", 1), ("40", 40)])
def test_user_web_concurrency_wins(tmp_path: Path, value: str, workers: int) -> None:
    platform = heroku_dyno(tmp_path, 536870912, WEB_CONCURRENCY=value)
    expected = WorkerCount(workers, f"WEB_CONCURRENCY={value}", from_platform=True)
    assert worker_count(platform, 256) == expected


def test_buildpack_web_concurrency_is_recomputed(tmp_path: Path) -> None:
    platform = heroku_dyno(
        tmp_path, 1073741824, WEB_CONCURRENCY="4", WEB_CONCURRENCY_SET_BY="heroku/python"
    )
    assert worker_count(platform, 512) == WorkerCount(
        2,
        "WEB_CONCURRENCY=4 set by heroku/python, recomputed: 1024 MB (cgroup v1"
        " memory.limit_in_bytes) / 512 MB per worker, 8 CPUs (sched_getaffinity)",
        from_platform=True,
    )


def test_auto_uses_physical_memory(tmp_path: Path) -> None:
    root = write_tree(tmp_path, meminfo(2 * 1024 * 1024))
    platform = detect({"WEB_CONCURRENCY": "auto"}, root, affinity=lambda: 2, ipv6=True)
    assert worker_count(platform, 256) == WorkerCount(
        5,
        "WEB_CONCURRENCY=auto: 2048 MB (/proc/meminfo) / 256 MB per worker,"
        " 2 CPUs (sched_getaffinity)",
        from_platform=True,
        auto=True,
    )


def test_auto_memory_bound(tmp_path: Path) -> None:
    root = write_tree(tmp_path, meminfo(512 * 1024))
    platform = detect({"WEB_CONCURRENCY": "AUTO"}, root, affinity=lambda: 8, ipv6=True)
    count = worker_count(platform, 256)
    assert (count.workers, count.auto) == (2, True)  # AUTO is auto


def test_auto_without_memory_uses_cpus(tmp_path: Path) -> None:
    platform = detect({"WEB_CONCURRENCY": "auto"}, tmp_path, affinity=lambda: 1, ipv6=True)
    assert platform.memory is None
    assert worker_count(platform, 256) == WorkerCount(
        3,
        "WEB_CONCURRENCY=auto: memory unknown, 1 CPU (sched_getaffinity)",
        from_platform=True,
        auto=True,
    )


def test_unset_without_limits_falls_back_to_one(tmp_path: Path) -> None:
    platform = detect({}, write_tree(tmp_path, meminfo()), affinity=lambda: 8, ipv6=True)
    assert worker_count(platform, 256) == WorkerCount(
        1,
        "no memory or CPU limit found: gunicorn's default of 1 worker; set WEB_CONCURRENCY",
        from_platform=False,
    )


def test_unset_with_only_a_cpu_limit(tmp_path: Path) -> None:
    files = cgroup_v2("/", {"cpu.max": "100000 100000"}) | meminfo(4 * 1024 * 1024)
    platform = detect({}, write_tree(tmp_path, files), affinity=lambda: 8, ipv6=True)
    assert worker_count(platform, 256) == WorkerCount(
        3,
        "4096 MB (/proc/meminfo) / 256 MB per worker, 1 CPU (cgroup v2 cpu.max)",
        from_platform=True,
    )


def test_memory_quota_replaces_detected_memory(tmp_path: Path) -> None:
    platform = detect({}, write_tree(tmp_path, meminfo()), affinity=lambda: 8, ipv6=True)
    assert worker_count(platform, 256, memory_quota=GB) == WorkerCount(
        4,
        "1024 MB (memory quota) / 256 MB per worker, 8 CPUs (sched_getaffinity)",
        from_platform=True,
    )


def test_less_memory_than_one_worker_still_runs_one(tmp_path: Path) -> None:
    platform = heroku_dyno(tmp_path, 128 * MB)
    assert worker_count(platform, 256).workers == 1


def test_worker_memory_must_be_positive(tmp_path: Path) -> None:
    platform = heroku_dyno(tmp_path, 536870912)
    with pytest.raises(ValueError, match="worker_memory_mb"):
        worker_count(platform, 0)
