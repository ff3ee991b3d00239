import os
from collections.abc import Callable, Mapping
from pathlib import Path

import psutil
import pytest

from dynocorn.metrics.memory import (
    DynoMemory,
    ProcessMemory,
    RssReader,
    ancestors,
    holds_only,
    memory_cgroup,
    pss_total,
    read_cgroup_memory,
    read_oom_kills,
    read_process_memory,
)

MB = 2**20
PAGE = os.sysconf("SC_PAGE_SIZE")
NO_SUCH_PID = 4_194_305  # above Linux's largest pid_max


def cgroup_memory(root: Path = Path("/")) -> DynoMemory | None:
    """What the sampler reads: the cgroup found under `root`, then its figures."""
    return read_cgroup_memory(memory_cgroup(root))


def owns_cgroup(root: Path, own_pids: set[int]) -> bool:
    return holds_only(memory_cgroup(root), own_pids)


ROOT_FS = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw"
V2_MOUNT = "30 22 0:26 / /sys/fs/cgroup rw,nosuid,relatime shared:4 - cgroup2 cgroup2 rw"
V1_MEMORY_MOUNT = "35 22 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory"
# A hybrid host (systemd's default for years): an empty v2 hierarchy beside the v1 ones.
HYBRID_V2_MOUNT = "41 22 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw"


def write_tree(root: Path, files: Mapping[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def v2_tree(files: Mapping[str, str], cgroup: str = "/dyno") -> dict[str, str]:
    return {
        "proc/self/cgroup": f"0::{cgroup}\n",
        "proc/self/mountinfo": f"{ROOT_FS}\n{V2_MOUNT}\n",
        "sys/fs/cgroup/cgroup.controllers": "cpu io memory pids\n",
        **{f"sys/fs/cgroup{cgroup}/{name}": text for name, text in files.items()},
    }


def v1_tree(files: Mapping[str, str], cgroup: str = "/dyno") -> dict[str, str]:
    return {
        "proc/self/cgroup": f"4:memory:{cgroup}\n1:cpu:/\n0::/\n",
        "proc/self/mountinfo": f"{ROOT_FS}\n{V1_MEMORY_MOUNT}\n{HYBRID_V2_MOUNT}\n",
        "sys/fs/cgroup/unified/cgroup.procs": "1\n",
        **{f"sys/fs/cgroup/memory{cgroup}/{name}": text for name, text in files.items()},
    }


V2_STAT = (
    f"anon {300 * MB}\nfile {40 * MB}\nkernel {7 * MB}\nshmem 0\n"
    "pgfault 123456\npgmajfault 12\nworkingset_refault_anon 0\n"
)

V1_STAT = (
    f"cache {10 * MB}\nrss {100 * MB}\nrss_huge 0\nswap {2 * MB}\npgpgin 348836\n"
    "pgpgout 343403\nhierarchical_memory_limit 536870912\n"
    f"total_cache {11 * MB}\ntotal_rss {120 * MB}\ntotal_swap {3 * MB}\n"
    "total_pgpgin 400000\ntotal_pgpgout 390000\n"
)


# --- the OOM-kill count --------------------------------------------------------------------


def oom_kills(root: Path) -> int | None:
    """What the master reads when a worker dies of a SIGKILL it did not send."""
    return read_oom_kills(memory_cgroup(root))


def test_cgroup_v2_oom_kills_come_from_memory_events(tmp_path: Path) -> None:
    events = "low 0\nhigh 12\nmax 40\noom 3\noom_kill 2\noom_group_kill 0\n"
    root = write_tree(tmp_path, v2_tree({"memory.stat": V2_STAT, "memory.events": events}))
    assert oom_kills(root) == 2


def test_cgroup_v1_oom_kills_come_from_memory_oom_control(tmp_path: Path) -> None:
    control = "oom_kill_disable 0\nunder_oom 0\noom_kill 7\n"
    root = write_tree(tmp_path, v1_tree({"memory.stat": V1_STAT, "memory.oom_control": control}))
    assert oom_kills(root) == 7  # on a hybrid host: the empty v2 hierarchy is passed over


def test_no_oom_kill_count_is_none(tmp_path: Path) -> None:
    # A v1 kernel before 4.13 has no oom_kill line; a cgroup without memory accounting
    # has no file at all; and no cgroup is no count either.
    old_kernel = "oom_kill_disable 0\nunder_oom 0\n"
    root = write_tree(
        tmp_path / "old", v1_tree({"memory.stat": V1_STAT, "memory.oom_control": old_kernel})
    )
    assert oom_kills(root) is None
    assert oom_kills(write_tree(tmp_path / "v2", v2_tree({"memory.stat": V2_STAT}))) is None
    assert read_oom_kills(None) is None


# --- cgroup_memory --------------------------------------------------------------------------


def test_cgroup_v2_reads_anon_file_and_swap(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path,
        v2_tree({"memory.stat": V2_STAT, "memory.swap.current": f"{5 * MB}\n"}),
    )
    assert cgroup_memory(root) == DynoMemory(
        total=345 * MB,
        rss=300 * MB,
        cache=40 * MB,
        swap=5 * MB,
        pgpgin=0,  # v2 has no page-in/page-out counters
        pgpgout=0,
        source="cgroup v2",
    )


def test_cgroup_v2_without_swap_accounting_reports_no_swap(tmp_path: Path) -> None:
    root = write_tree(tmp_path, v2_tree({"memory.stat": V2_STAT}))
    memory = cgroup_memory(root)
    assert memory is not None
    assert (memory.swap, memory.total) == (0, 340 * MB)


def test_cgroup_v1_prefers_total_keys(tmp_path: Path) -> None:
    root = write_tree(tmp_path, v1_tree({"memory.stat": V1_STAT}))
    assert cgroup_memory(root) == DynoMemory(
        total=134 * MB,
        rss=120 * MB,
        cache=11 * MB,
        swap=3 * MB,
        pgpgin=400000,
        pgpgout=390000,
        source="cgroup v1",
    )


def test_cgroup_v1_without_total_keys_uses_plain_ones(tmp_path: Path) -> None:
    plain = "".join(line + "\n" for line in V1_STAT.splitlines() if not line.startswith("total_"))
    root = write_tree(tmp_path, v1_tree({"memory.stat": plain}))
    assert cgroup_memory(root) == DynoMemory(
        total=112 * MB,
        rss=100 * MB,
        cache=10 * MB,
        swap=2 * MB,
        pgpgin=348836,
        pgpgout=343403,
        source="cgroup v1",
    )


def test_cgroup_v1_without_swap_accounting(tmp_path: Path) -> None:
    stat = f"cache {MB}\nrss {4 * MB}\npgpgin 7\npgpgout 5\n"
    root = write_tree(tmp_path, v1_tree({"memory.stat": stat}))
    assert cgroup_memory(root) == DynoMemory(5 * MB, 4 * MB, MB, 0, 7, 5, "cgroup v1")


def test_container_without_cgroup_namespace_reads_the_mount(tmp_path: Path) -> None:
    # /proc/self/cgroup names the host's path, which the container cannot see: the mount
    # itself is the container's cgroup.
    files = v2_tree({}, cgroup="/kubepods/pod1234/abcdef")
    files["sys/fs/cgroup/memory.stat"] = V2_STAT
    root = write_tree(tmp_path, files)
    memory = cgroup_memory(root)
    assert memory is not None
    assert memory.rss == 300 * MB


@pytest.mark.parametrize(
    "files",
    [
        pytest.param({}, id="nothing"),
        pytest.param({"proc/self/cgroup": "0::/dyno\n"}, id="no-mounts"),
        pytest.param(v2_tree({"memory.current": "123\n"}), id="v2-without-memory.stat"),
        pytest.param(v1_tree({"memory.usage_in_bytes": "123\n"}), id="v1-without-memory.stat"),
        pytest.param(
            {
                "proc/self/cgroup": "0::/\n",
                "proc/self/mountinfo": f"{ROOT_FS}\n{HYBRID_V2_MOUNT}\n",
            },
            id="hybrid-without-v1-memory",
        ),
    ],
)
def test_no_cgroup_memory(tmp_path: Path, files: Mapping[str, str]) -> None:
    assert cgroup_memory(write_tree(tmp_path, files)) is None


def test_garbage_lines_in_memory_stat_are_skipped(tmp_path: Path) -> None:
    stat = f"anon {MB}\nfile\nnonsense x y\nfile -5\nfile {MB}\n"
    root = write_tree(tmp_path, v2_tree({"memory.stat": stat, "memory.swap.current": "max\n"}))
    assert cgroup_memory(root) == DynoMemory(2 * MB, MB, MB, 0, 0, 0, "cgroup v2")


def test_this_machine_does_not_crash() -> None:
    memory = cgroup_memory()
    if memory is not None:
        assert memory.total == memory.rss + memory.cache + memory.swap
        assert memory.source in ("cgroup v1", "cgroup v2")


# --- owns_cgroup ----------------------------------------------------------------------------


@pytest.mark.parametrize("tree", [v1_tree, v2_tree])
def test_owns_cgroup_when_every_process_is_ours(
    tmp_path: Path, tree: Callable[[Mapping[str, str]], dict[str, str]]
) -> None:
    root = write_tree(tmp_path, tree({"memory.stat": "", "cgroup.procs": "1\n7\n8\n9\n"}))
    assert owns_cgroup(root, {1, 7, 8, 9})
    assert owns_cgroup(root, {1, 7, 8, 9, 10})  # a worker that has just exited
    assert not owns_cgroup(root, {7, 8, 9})  # pid 1 is someone else's


def test_a_shared_cgroup_is_not_ours(tmp_path: Path) -> None:
    # A login session: our shell, our server, and an editor we know nothing of.
    procs = "".join(f"{pid}\n" for pid in (812, 900, 901, 902, 1500))
    root = write_tree(tmp_path, v2_tree({"memory.stat": V2_STAT, "cgroup.procs": procs}))
    assert not owns_cgroup(root, {812, 900, 901, 902})


@pytest.mark.parametrize(
    "files",
    [
        pytest.param({}, id="no-cgroup"),
        pytest.param(v2_tree({"memory.stat": V2_STAT}), id="no-cgroup.procs"),
        pytest.param(v2_tree({"memory.stat": V2_STAT, "cgroup.procs": ""}), id="empty"),
    ],
)
def test_unknown_ownership_is_not_ours(tmp_path: Path, files: Mapping[str, str]) -> None:
    assert not owns_cgroup(write_tree(tmp_path, files), {1, 2, 3})


# --- processes ------------------------------------------------------------------------------

ROLLUP = """\
55e9b7e3d000-7ffdd71c1000 ---p 00000000 00:00 0                          [rollup]
Rss:               51200 kB
Pss:               30720 kB
Pss_Dirty:         20000 kB
Pss_Anon:          20000 kB
Pss_File:          10720 kB
Pss_Shmem:             0 kB
Shared_Clean:      10240 kB
Shared_Dirty:      20480 kB
Private_Clean:      1024 kB
Private_Dirty:     19456 kB
Referenced:        51200 kB
Anonymous:         39936 kB
Swap:               2048 kB
SwapPss:            1024 kB
Locked:                0 kB
"""


def test_smaps_rollup(tmp_path: Path) -> None:
    write_tree(tmp_path, {"42/smaps_rollup": ROLLUP})
    assert read_process_memory(42, tmp_path) == ProcessMemory(
        pid=42, rss=50 * MB, pss=30 * MB, uss=20 * MB, swap=2 * MB
    )


def test_a_gone_process_has_no_memory(tmp_path: Path) -> None:
    write_tree(tmp_path, {"42/smaps_rollup": ROLLUP})
    assert read_process_memory(43, tmp_path) is None


def test_a_zombie_has_no_memory(tmp_path: Path) -> None:
    write_tree(tmp_path, {"42/smaps_rollup": "", "42/status": "State:\tZ (zombie)\n"})
    assert read_process_memory(42, tmp_path) is None


def test_an_unreadable_rollup_is_no_memory(tmp_path: Path) -> None:
    (tmp_path / "42" / "smaps_rollup").mkdir(parents=True)  # EISDIR stands for EACCES
    assert read_process_memory(42, tmp_path) is None


def test_without_smaps_rollup_psutil_answers(tmp_path: Path) -> None:
    # A kernel older than 4.14: the pid's directory exists, smaps_rollup does not.
    pid = os.getpid()
    (tmp_path / str(pid)).mkdir()
    memory = read_process_memory(pid, tmp_path)
    assert memory is not None
    assert memory.pid == pid
    assert 0 < memory.uss <= memory.pss <= memory.rss


def test_without_smaps_rollup_a_gone_process_is_none(tmp_path: Path) -> None:
    (tmp_path / str(NO_SUCH_PID)).mkdir()
    assert read_process_memory(NO_SUCH_PID, tmp_path) is None


def test_without_proc_psutil_answers(tmp_path: Path) -> None:
    memory = read_process_memory(os.getpid(), tmp_path / "no-proc-here")
    assert memory is not None
    assert memory.rss > 0


needs_rollup = pytest.mark.skipif(
    not Path(f"/proc/{os.getpid()}/smaps_rollup").exists(), reason="no /proc/PID/smaps_rollup"
)


@needs_rollup
def test_this_process_from_the_real_smaps_rollup() -> None:
    memory = read_process_memory(os.getpid())
    assert memory is not None
    assert memory.pid == os.getpid()
    assert 0 < memory.uss <= memory.pss <= memory.rss
    # The same figures psutil computes the slow way, give or take what moved in between.
    slow = psutil.Process().memory_full_info()
    assert memory.rss == pytest.approx(slow.rss, rel=0.1)
    assert memory.pss == pytest.approx(slow.pss, rel=0.1)
    assert memory.uss == pytest.approx(slow.uss, rel=0.1)


@needs_rollup
def test_a_real_child_process() -> None:
    child = psutil.Popen(["sleep", "30"])
    try:
        memory = read_process_memory(child.pid)
        assert memory is not None
        assert memory.rss > 0
    finally:
        child.kill()
        child.wait()
    assert read_process_memory(child.pid) is None


def test_the_rss_reader_reads_statm_again_each_time(tmp_path: Path) -> None:
    statm = write_tree(tmp_path, {"self/statm": "3660 2843 1524 1 0 1716 0\n"}) / "self/statm"
    reader = RssReader(tmp_path)
    try:
        assert reader.read() == 2843 * PAGE
        statm.write_text("3660 2900 1524 1 0 1716 0\n")  # the same file, as /proc's
        assert reader.read() == 2900 * PAGE
    finally:
        reader.close()


def test_the_rss_reader_without_proc_uses_psutil(tmp_path: Path) -> None:
    assert RssReader(tmp_path / "no-proc").read() == pytest.approx(
        psutil.Process().memory_info().rss, rel=0.1
    )


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="no /proc")
def test_the_rss_reader_follows_this_process() -> None:
    reader = RssReader()
    try:
        before = reader.read()
        assert before == pytest.approx(psutil.Process().memory_info().rss, rel=0.1)
        kept = os.urandom(16) * (32 * MB // 16)  # written: resident
        assert reader.read() - before >= 30 * MB
        del kept
    finally:
        reader.close()


def test_ancestors_from_stat(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            # comm may hold spaces and parentheses: only the last ")" ends it.
            "300/stat": "300 (gunicorn: m) (x)) S 200 300 200 0 -1 4194560 1\n",
            "200/stat": "200 (sh) S 1 200 200 0 -1 4194560 1\n",
            "1/stat": "1 (init) S 0 1 1 0 -1 4194560 1\n",
        },
    )
    assert ancestors(300, tmp_path) == [200, 1]
    assert ancestors(1, tmp_path) == []
    assert ancestors(999, tmp_path) == []


def test_ancestors_stop_on_a_loop(tmp_path: Path) -> None:
    write_tree(tmp_path, {"5/stat": "5 (a) S 6 0\n", "6/stat": "6 (b) S 5 0\n"})
    assert len(ancestors(5, tmp_path)) == 64


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="no /proc")
def test_ancestors_of_this_process() -> None:
    assert ancestors(os.getpid())[0] == os.getppid()


def test_pss_total_sums_pss_and_swap() -> None:
    memories = [
        ProcessMemory(pid=1, rss=60 * MB, pss=30 * MB, uss=10 * MB, swap=MB),
        ProcessMemory(pid=2, rss=50 * MB, pss=20 * MB, uss=9 * MB, swap=0),
        ProcessMemory(pid=3, rss=50 * MB, pss=20 * MB, uss=9 * MB, swap=2 * MB),
    ]
    assert pss_total(memories) == DynoMemory(
        total=73 * MB, rss=70 * MB, cache=0, swap=3 * MB, pgpgin=0, pgpgout=0, source="pss"
    )
    assert pss_total([]) == DynoMemory(0, 0, 0, 0, 0, 0, "pss")
