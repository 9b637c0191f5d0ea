"""The service fixtures work the way the jobs code will use them: Slurm via sbatch, squeue and
scancel; SSH via asyncssh and the ssh CLI with verified host keys; SFTP; sbatch over SSH."""

from __future__ import annotations

import asyncio
import os
import shlex
import socket
import subprocess

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
