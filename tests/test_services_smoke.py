"""The service fixtures work the way the jobs code will use them: Slurm via sbatch, squeue and
scancel; SSH via asyncssh and the ssh CLI with verified host keys; SFTP; sbatch over SSH."""

from __future__ import annotations

import asyncio
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(180)


@pytest.mark.slurm
def test_sbatch_runs_a_job_and_writes_its_output(slurm_cluster, tmp_path):
    out = tmp_path / "hello-%j.txt"
    job = subprocess.run(
        ["sbatch", "--parsable", "--output", str(out), "--wrap", "echo hello from $SLURM_JOB_ID"],
        env=slurm_cluster.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()

    assert slurm_cluster.wait_for_job(job) == "COMPLETED"
    assert (tmp_path / f"hello-{job}.txt").read_text() == f"hello from {job}\n"
    # Finished jobs stay visible to scontrol (the jobs code polls it; sacct needs slurmdbd).
    show = slurm_cluster.run("scontrol", "show", "job", "--oneliner", job).stdout
    assert "ExitCode=0:0" in show
    # ... and every finished job is logged by jobcomp/filetxt (written as the job completes).
    deadline = time.monotonic() + 10
    while True:
        log = slurm_cluster.jobcomp_log
        lines = log.read_text().splitlines() if log.exists() else []
        finished = [line for line in lines if line.startswith(f"JobId={job} ")]
        if finished or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(finished) == 1
    assert " JobState=COMPLETED " in finished[0]


@pytest.mark.slurm
def test_a_failing_job_is_reported_failed(slurm_cluster, tmp_path):
    job = slurm_cluster.submit("--output", str(tmp_path / "fail.txt"), "--wrap", "exit 3")

    assert slurm_cluster.wait_for_job(job) == "FAILED"
    assert "ExitCode=3:0" in slurm_cluster.run("scontrol", "show", "job", "-o", job).stdout


@pytest.mark.slurm
def test_scancel_stops_a_running_job(slurm_cluster, tmp_path):
    marker = tmp_path / "finished"
    job = slurm_cluster.submit(
        "--output", str(tmp_path / "sleep.txt"), "--wrap", f"sleep 120; touch {marker}"
    )
    assert slurm_cluster.wait_for_job(job, {"RUNNING"}, timeout=60) == "RUNNING"
    running = slurm_cluster.run("squeue", "--noheader", "--format=%i %T", "--jobs", job).stdout
    assert running.split() == [job, "RUNNING"]

    subprocess.run(["scancel", job], env=slurm_cluster.env, check=True)

    assert slurm_cluster.wait_for_job(job, timeout=60) == "CANCELLED"
    assert not marker.exists()


@pytest.mark.slurm
def test_slurm_daemons_listen_on_loopback_only(slurm_cluster):
    for port in (slurm_cluster.ctld_port, slurm_cluster.slurmd_port):
        listening = subprocess.run(
            ["ss", "--listening", "--tcp", "--numeric", f"sport = :{port}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()[1:]
        assert listening, f"nothing listens on port {port}"
        assert all(" 127.0.0.1:" in line for line in listening), listening


def _asyncssh_run(server, command: str, **overrides) -> str:
    import asyncssh

    async def main() -> str:
        async with asyncssh.connect(**{**server.connect_kwargs(), **overrides}) as conn:
            result = await conn.run(command, check=True)
            return result.stdout

    return asyncio.run(main())


@pytest.mark.ssh
def test_asyncssh_runs_a_command_with_a_verified_host_key(sshd_server):
    out = _asyncssh_run(sshd_server, "id -un; printf '%s' \"$SSH_CONNECTION\"")

    user, connection = out.split("\n", 1)
    assert user == sshd_server.user
    assert connection.split()[2:] == ["127.0.0.1", str(sshd_server.port)]


@pytest.mark.ssh
def test_a_wrong_known_hosts_entry_is_refused(sshd_server, tmp_path):
    import asyncssh

    impostor = tmp_path / "impostor"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    key_type, key = impostor.with_suffix(".pub").read_text().split()[:2]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd_server.port} {key_type} {key}\n")

    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        _asyncssh_run(sshd_server, "true", known_hosts=str(wrong))

    # The ssh CLI refuses too, with StrictHostKeyChecking=yes.
    config = sshd_server.write_client_config(tmp_path / "ssh_config")
    config.write_text(config.read_text().replace(str(sshd_server.known_hosts), str(wrong)))
    refused = subprocess.run(
        ["ssh", "-F", str(config), "nc-test", "true"], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 255
    assert "host key" in refused.stderr.lower()


@pytest.mark.ssh
def test_ssh_cli_uses_the_written_client_config(sshd_server):
    path_with_space = "a dir/it's; here"
    result = subprocess.run(
        sshd_server.ssh_argv(f"printf '%s' {shlex.quote(path_with_space)}"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout == path_with_space


@pytest.mark.ssh
def test_sftp_round_trip_keeps_every_byte(sshd_server, tmp_path):
    import asyncssh

    payload = os.urandom(3 * 1024 * 1024 + 17)
    local = tmp_path / "payload.bin"
    local.write_bytes(payload)
    remote_dir = tmp_path / "remote side"
    remote_dir.mkdir()
    back = tmp_path / "back.bin"

    async def main() -> None:
        async with (
            asyncssh.connect(**sshd_server.connect_kwargs()) as conn,
            conn.start_sftp_client() as sftp,
        ):
            await sftp.put(str(local), str(remote_dir / "payload.bin"))
            assert await sftp.getsize(str(remote_dir / "payload.bin")) == len(payload)
            await sftp.get(str(remote_dir / "payload.bin"), str(back))

    asyncio.run(main())
    assert back.read_bytes() == payload


@pytest.mark.ssh
def test_sshd_listens_on_loopback_only(sshd_server):
    with socket.create_connection((sshd_server.host, sshd_server.port), timeout=5) as sock:
        assert sock.recv(8).startswith(b"SSH-2.0")
    listening = subprocess.run(
        ["ss", "--listening", "--tcp", "--numeric", f"sport = :{sshd_server.port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()[1:]
    assert listening
    assert all(" 127.0.0.1:" in line for line in listening), listening


@pytest.mark.slurm
@pytest.mark.ssh
def test_sbatch_over_ssh_reaches_the_cluster(slurm_login_node, slurm_cluster, tmp_path):
    out = tmp_path / "remote job.txt"
    command = shlex.join(
        ["sbatch", "--parsable", "--output", str(out), "--wrap", "echo ran on $SLURM_JOB_NODELIST"]
    )
    job = _asyncssh_run(slurm_login_node, command).strip()

    assert slurm_cluster.wait_for_job(job) == "COMPLETED"
    assert out.read_text() == "ran on localhost\n"
    state = _asyncssh_run(slurm_login_node, f"squeue --noheader --jobs {job} --states=all -o %T")
    assert state.strip() == "COMPLETED"


def test_a_missing_program_names_the_package_to_install():
    from napari_connectome.testing.processes import ServiceUnavailable, require_binary

    with pytest.raises(
        ServiceUnavailable, match=r"^nc-no-such-daemon not found: apt-get install x$"
    ):
        require_binary("nc-no-such-daemon", "apt-get install x")


@pytest.mark.slurm
def test_a_second_cluster_runs_beside_the_first_and_leaves_nothing_behind(slurm_cluster, tmp_path):
    from napari_connectome.testing.services import ServiceUnavailable, start_slurm_cluster

    try:
        second = start_slurm_cluster()
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))
    with second:
        assert second.ctld_port != slurm_cluster.ctld_port
        job = second.submit("--output", str(tmp_path / "second.txt"), "--wrap", "echo second")
        assert second.wait_for_job(job) == "COMPLETED"
        pids = [d.pid for d in second.daemons]
        root = second.root
    assert (tmp_path / "second.txt").read_text() == "second\n"
    assert not root.exists()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"daemon {pid} still running"
    # The session's cluster is untouched.
    assert slurm_cluster.run("sinfo", "--noheader", "--format=%t").stdout.strip() == "idle"


def test_required_services_turn_skips_into_failures(tmp_path):
    root = Path(__file__).resolve().parents[1]
    (tmp_path / "test_skips.py").write_text(
        "import pytest\n"
        "def test_needs_a_service():\n"
        "    pytest.skip('frobd not found: apt-get install frob')\n"
        "@pytest.mark.gpu\n"
        "def test_needs_a_gpu():\n"
        "    pytest.skip('no CUDA device')\n"
    )
    argv = [
        sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
        "-c", str(root / "pyproject.toml"), "--rootdir", str(root), str(tmp_path), "-q",
    ]  # fmt: skip
    # Only our conftest: napari's and pytest-qt's plugins would add seconds of imports.
    env = {
        **os.environ,
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
        "NAPARI_CONNECTOME_REQUIRE_SERVICES": "1",
    }
    result = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=120)

    assert result.returncode == 1, result.stdout
    assert "1 failed, 1 skipped" in result.stdout
    assert "NAPARI_CONNECTOME_REQUIRE_SERVICES=1 forbids skips" in result.stdout
    assert "frobd not found: apt-get install frob" in result.stdout


@pytest.mark.ssh
def test_ssh_through_a_jump_host(sshd_server):
    import asyncssh

    from napari_connectome.testing.services import start_sshd

    with start_sshd() as target:

        async def main() -> str:
            async with (
                asyncssh.connect(**sshd_server.connect_kwargs()) as jump,
                asyncssh.connect(tunnel=jump, **target.connect_kwargs()) as conn,
            ):
                return (await conn.run("printf '%s' \"$SSH_CONNECTION\"", check=True)).stdout

        connection = asyncio.run(main())
    assert connection.split()[2:] == ["127.0.0.1", str(target.port)]


@pytest.mark.ssh
def test_a_port_taken_between_choosing_and_binding_is_retried(monkeypatch):
    from napari_connectome.testing import sshd
    from napari_connectome.testing.processes import free_port

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        # The first port handed to sshd is already bound by someone else, as when parallel test
        # runs race for a port; the start must retry with a fresh one.
        monkeypatch.setattr(sshd, "free_port", lambda host: next(ports, None) or free_port(host))
        try:
            server = sshd.start_sshd()
        except sshd.ServiceUnavailable as exc:
            pytest.skip(str(exc))
        with server:
            assert server.port != taken
            assert _asyncssh_run(server, "echo ok") == "ok\n"


@pytest.mark.ssh
def test_daemons_die_with_a_killed_test_run(tmp_path):
    """A test run killed with SIGKILL runs no finalizer; the kernel still stops its daemons."""
    script = (
        "from napari_connectome.testing.services import start_sshd\n"
        "server = start_sshd()\n"
        "print(server.pid, flush=True)\n"
        "import time; time.sleep(120)\n"
    )
    run = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        line = run.stdout.readline()
        if not line.strip().isdigit():
            pytest.skip(f"sshd did not start in the child: {line!r}")
        pid = int(line)
        assert Path(f"/proc/{pid}").exists()
    finally:
        run.kill()
        run.wait()
    deadline = time.monotonic() + 10
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(pid), f"sshd {pid} outlived the killed run"


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting for init to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
