"""The cluster-profile form of the Remote jobs widget: one field per
:class:`~napari_connectome.jobs.profiles.ClusterProfile` setting, a picker of saved profiles, and
Save / Delete. Checking and saving go through the core, so a profile typed here is the same file
a notebook or a colleague's desk reads.
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import CheckBox, ComboBox, Container, LineEdit, PushButton, SpinBox, TextEdit

from napari_connectome.jobs.profiles import (
    ClusterProfile,
    delete_profile,
    list_profiles,
    load_profile,
    make_profile,
    save_profile,
)

NEW = "<new profile>"


def _opt(text: str) -> str | None:
    return text.strip() or None


def _saved_choices(_widget: Any = None) -> list[str]:
    return [NEW, *list_profiles()]


class ProfileEditor(Container):
    """Pick, edit and save cluster profiles."""

    def __init__(self) -> None:
        # choices are read from the config dir each time: napari calls reset_choices() on docked
        # widgets whenever layers change, which would otherwise reset a fixed list
        self.choice = ComboBox(label="profile", choices=_saved_choices)
        self.profile_name = LineEdit(label="name", value="my-cluster")
        self.host = LineEdit(label="login host")
        self.host.tooltip = "empty: submit on this machine (it is the login node)"
        self.port = SpinBox(label="port", value=22, min=1, max=65535)
        self.user = LineEdit(label="user")
        self.key = LineEdit(label="SSH key")
        self.key.tooltip = "private key file; empty: use your SSH agent"
        self.known_hosts = LineEdit(label="known_hosts")
        self.known_hosts.tooltip = "empty: ~/.ssh/known_hosts (host keys are always verified)"
        self.jump_host = LineEdit(label="jump host")
        self.jump_host.tooltip = "optional bastion: user@host:port"
        self.scheduler = ComboBox(label="scheduler", choices=["slurm", "pbs"])
        self.partition = LineEdit(label="partition/queue")
        self.account = LineEdit(label="account")
        self.walltime = LineEdit(label="walltime", value="01:00:00")
        self.nodes = SpinBox(label="nodes", value=1, min=1, max=100000)
        self.gpus = SpinBox(label="GPUs per node", value=0, min=0, max=64)
        self.setup = TextEdit(label="set-up lines")
        self.setup.tooltip = "shell lines run before the job, e.g. module load conda"
        self.workdir = LineEdit(label="work dir")
        self.workdir.tooltip = "absolute folder on the cluster where results are written"
        self.python = LineEdit(label="python", value="python3")
        self.python.tooltip = "Python on the cluster that has napari-connectome installed"
        self.save_button = PushButton(text="Save profile")
        self.delete_button = PushButton(text="Delete")
        self.editing = CheckBox(text="edit profile", value=True)
        self.fields = Container(
            widgets=[
                self.profile_name,
                self.host,
                self.port,
                self.user,
                self.key,
                self.known_hosts,
                self.jump_host,
                self.scheduler,
                self.partition,
                self.account,
                self.walltime,
                self.nodes,
                self.gpus,
                self.setup,
                self.workdir,
                self.python,
                Container(widgets=[self.save_button, self.delete_button], layout="horizontal"),
            ],
            labels=True,
        )
        self.fields.margins = (0, 0, 0, 0)
        super().__init__(widgets=[self.choice, self.editing, self.fields], labels=True)
        self.margins = (0, 0, 0, 0)
        self.editing.changed.connect(lambda on: setattr(self.fields, "visible", on))
        self._extra: dict[str, Any] = {}  # fields the form does not show (submit_env)
        self.reload()
        self.choice.changed.connect(self._on_choice)
        self._on_choice(self.choice.value)
        self.editing.value = self.choice.value == NEW  # a saved profile starts folded away

    def reload(self, select: str | None = None) -> None:
        """Refill the picker from the config dir."""
        names = list_profiles()
        self.choice.reset_choices()
        if select is not None and select in names:
            self.choice.value = select
        elif names and self.choice.value == NEW:
            self.choice.value = names[0]

    def _on_choice(self, name: str) -> None:
        if name and name != NEW:
            self.fill(load_profile(name))

    def fill(self, profile: ClusterProfile) -> None:
        """Fill the form from a profile."""
        self.profile_name.value = profile.name
        self.host.value = profile.host
        self.port.value = profile.port
        self.user.value = profile.user or ""
        self.key.value = profile.key or ""
        self.known_hosts.value = profile.known_hosts or ""
        self.jump_host.value = profile.jump_host or ""
        self.scheduler.value = profile.scheduler
        self.partition.value = profile.partition or ""
        self.account.value = profile.account or ""
        self.walltime.value = profile.walltime
        self.nodes.value = profile.nodes
        self.gpus.value = profile.gpus_per_node
        self.setup.value = "\n".join(profile.setup)
        self.workdir.value = profile.workdir
        self.python.value = profile.python
        self._extra = {"submit_env": dict(profile.submit_env)} if profile.submit_env else {}

    def profile(self) -> ClusterProfile:
        """The profile the form describes (validated; a bad field raises UserInputError)."""
        return make_profile(
            {
                "name": self.profile_name.value.strip(),
                "host": self.host.value.strip(),
                "port": self.port.value,
                "user": _opt(self.user.value),
                "key": _opt(self.key.value),
                "known_hosts": _opt(self.known_hosts.value),
                "jump_host": _opt(self.jump_host.value),
                "scheduler": self.scheduler.value,
                "partition": _opt(self.partition.value),
                "account": _opt(self.account.value),
                "walltime": self.walltime.value.strip() or "01:00:00",
                "nodes": self.nodes.value,
                "gpus_per_node": self.gpus.value,
                "setup": [ln for ln in self.setup.value.splitlines() if ln.strip()],
                "workdir": self.workdir.value.strip(),
                "python": self.python.value.strip() or "python3",
                **self._extra,
            }
        )

    def save(self) -> ClusterProfile:
        profile = self.profile()
        save_profile(profile)
        self.reload(select=profile.name)
        return profile

    def delete(self) -> None:
        if self.choice.value != NEW:
            delete_profile(self.choice.value)
            self.choice.value = NEW
            self.reload()
