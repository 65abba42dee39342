"""The daemon's config file (`/etc/trainsup/config.yaml`): model, loading, discovery, schema.

Validated like job files (`spec/yamlsource.py`): every problem at once, each with file, line,
column, key path, the value as written and what is allowed; unknown keys get "did you mean".

Where things are found (DESIGN "Conventions"): the config from `--config`, `$TRAINSUP_CONFIG`,
else `/etc/trainsup/config.yaml` when present (else the built-in defaults); the state dir from
the config, else `/var/lib/trainsup` for root and `$XDG_STATE_HOME/trainsup` for others; the
socket at `<state>/trainsup.sock` unless `--socket` or `$TRAINSUP_SOCKET` says otherwise.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from supervisor.spec.notify import NotifyTargets, PublicUrl
from supervisor.spec.yamlsource import (
    Problem,
    SpecError,
    file_problem,
    read_text,
    validate_yaml,
)
from supervisor.training.events import FLAVOURS, Flavour

SYSTEM_CONFIG = Path("/etc/trainsup/config.yaml")
# sun_path is 108 bytes including the terminating NUL (unix(7)).
MAX_SOCKET_PATH = 107
WHAT = "daemon config"
_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_LISTEN_RE = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(?P<port>\d{1,5})$")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _coerce(cls, data: Any) -> Any:
        return {} if data is None else data


class BinarySpec(_Section):
    """One darknet executable jobs may name."""

    path: Path = Field(description="absolute path of the darknet executable")
    flavour: Literal["auto", Flavour] = Field(
        default="auto", description="its flavour; auto = detected from its output"
    )

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            # PATH differs between the admin's shell and the service: only a path is certain.
            raise PydanticCustomError(
                "absolute", "must be an absolute path (e.g. /usr/bin/darknet)"
            )
        return value


class TcpSpec(_Section):
    """The optional TCP listener; always with a bearer token."""

    listen: str = Field(description='host:port, e.g. "127.0.0.1:8750"')
    token_file: Path = Field(
        description="file holding the bearer token (one line; keep it mode 0600)"
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        m = _LISTEN_RE.match(value.strip())
        if m is None or not 0 < int(m["port"]) < 65536:
            raise PydanticCustomError(
                "listen", 'must be host:port with a port in 1-65535, e.g. "127.0.0.1:8750"'
            )
        return value.strip()

    @property
    def host(self) -> str:
        host = self.listen.rsplit(":", 1)[0]
        return host.strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


class ApiSpec(_Section):
    """Where the API listens."""

    socket: Path | None = Field(
        default=None, description="Unix socket path; null = <state_dir>/trainsup.sock"
    )
    socket_mode: str = Field(
        default="0660", description="octal mode of the socket (who may connect)"
    )
    socket_group: str | None = Field(
        default=None, description="group that owns the socket (its members may submit)"
    )
    tcp: TcpSpec | None = Field(default=None, description="optional TCP listener (bearer token)")

    @field_validator("socket_mode")
    @classmethod
    def _mode(cls, value: str) -> str:
        if not re.fullmatch(r"0?[0-7]{3}", value):
            raise PydanticCustomError("mode", 'must be an octal mode as a string, e.g. "0660"')
        if int(value, 8) & 0o007:
            raise PydanticCustomError(
                "mode", "gives access to every user of the machine: use 0660 or 0600"
            )
        return value

    @field_validator("socket")
    @classmethod
    def _socket(cls, value: Path | None) -> Path | None:
        if value is not None and len(os.fsencode(value)) > MAX_SOCKET_PATH:
            raise PydanticCustomError(
                "socket_length",
                "is longer than the 107 bytes a Unix socket path may have: choose a shorter one",
            )
        return value

    @property
    def mode(self) -> int:
        return int(self.socket_mode, 8)


class RunnerKnobs(_Section):
    """How closely each runner watches its darknet (defaults suit real trainings)."""

    poll: float = Field(default=0.2, gt=0, le=10, description="seconds between log reads")
    tick: float = Field(default=1.0, gt=0, le=60, description="seconds between clock ticks")
    grace: float = Field(default=10.0, gt=0, le=300, description="seconds from TERM to KILL")
    checkpoint_every: float = Field(
        default=2.0, ge=0, le=60, description="seconds between log-offset checkpoints"
    )


class DaemonConfig(_Section):
    """`trainsup serve`'s configuration."""

    state_dir: Path | None = Field(
        default=None,
        description="jobs, store, socket, spool; null = /var/lib/trainsup (root) or "
        "$XDG_STATE_HOME/trainsup",
    )
    binaries: dict[str, BinarySpec] = Field(
        default_factory=lambda: {"darknet": BinarySpec(path=Path("/usr/bin/darknet"))},
        description="darknet executables jobs may name (darknet.binary), name → {path, flavour}",
    )
    data_roots: tuple[Path, ...] = Field(
        default=(),
        description="a job may read data (.data, .cfg, weights, lists, images) only under "
        "these absolute folders; [] = nothing is allowed",
    )
    gpus: Literal["auto"] | tuple[StrictInt, ...] = Field(
        default="auto", description="GPU indices jobs may use; auto = every GPU NVML finds"
    )
    cpu_slots: StrictInt = Field(
        default=1, ge=0, le=256, description="CPU jobs (gpus: []) that may run at once"
    )
    jobs_per_gpu: StrictInt = Field(
        default=1,
        ge=1,
        le=16,
        description="jobs that may share one GPU; 1 = a GPU is a job's alone (two trainings on "
        "one card compete for its memory and each runs at about half speed)",
    )
    on_shutdown: Literal["leave", "stop"] = Field(
        default="leave",
        description="on SIGTERM: leave trainings running (re-adopted at the next start), or "
        "stop them gracefully (after their next save)",
    )
    preflight: Literal["block", "warn", "off"] = Field(
        default="block",
        description="dataset checks at submit (image headers only): block = refuse a job with "
        "errors, warn = accept it, off = skip them (the binary is always proven darknet)",
    )
    queue_every: float = Field(
        default=2.0, gt=0, le=300, description="seconds between queue and spool passes"
    )
    stall_after: float = Field(
        default=1800.0,
        gt=0,
        description="seconds without a line from darknet before the log warns of a hang",
    )
    api: ApiSpec = Field(default_factory=ApiSpec)
    runner: RunnerKnobs = Field(default_factory=RunnerKnobs)
    defaults: dict[str, Any] = Field(
        default_factory=dict,
        description="job-file sections merged under every job (the job's own keys win)",
    )
    notify: NotifyTargets = Field(
        default=(),
        description="chat/webhook targets told about every job, besides the job's own "
        "`notify:` (docs/notifications.md)",
    )
    public_url: PublicUrl | None = Field(
        default=None,
        description="where users reach this daemon's API (usually a reverse proxy), e.g. "
        "https://trainsup.example.org: notifications link to the job's page "
        "<public_url>/jobs/<id>; null = no link",
    )

    @field_validator("preflight", mode="before")
    @classmethod
    def _off(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `off` as false.
        return "off" if value is False else value

    @field_validator("binaries")
    @classmethod
    def _names(cls, value: dict[str, BinarySpec]) -> dict[str, BinarySpec]:
        bad = [n for n in value if not _NAME_RE.fullmatch(n)]
        if bad:
            raise PydanticCustomError(
                "binary_name",
                "binary names are 1-64 characters from A-Z a-z 0-9 . _ - (not paths): {bad}",
                {"bad": ", ".join(repr(b) for b in bad)},
            )
        return value

    @field_validator("data_roots")
    @classmethod
    def _roots(cls, value: tuple[Path, ...]) -> tuple[Path, ...]:
        rel = [str(p) for p in value if not p.is_absolute()]
        if rel:
            raise PydanticCustomError(
                "absolute", "data roots must be absolute folders: {rel}", {"rel": ", ".join(rel)}
            )
        if any(p == Path("/") for p in value):
            raise PydanticCustomError(
                "root", "/ would allow every file of the machine: name the data folders"
            )
        return tuple(Path(os.path.normpath(p)) for p in value)

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, value: Any) -> Any:
        if isinstance(value, tuple) and (
            any(g < 0 or g > 63 for g in value) or len(set(value)) != len(value)
        ):
            raise PydanticCustomError("gpus", "GPU indices must be distinct, in 0-63")
        return value

    @field_validator("defaults")
    @classmethod
    def _defaults(cls, value: dict[str, Any]) -> dict[str, Any]:
        # What identifies a job is the job's own; defaults are for policy sections.
        banned = sorted(set(value) & {"name"})
        if banned:
            raise PydanticCustomError(
                "defaults", "a job's name cannot be a default: remove defaults.name"
            )
        return value

    # --- derived ---------------------------------------------------------------------------

    def state(self) -> Path:
        return self.state_dir if self.state_dir is not None else default_state_dir()

    def socket_path(self) -> Path:
        return self.api.socket if self.api.socket is not None else self.state() / "trainsup.sock"


def default_state_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/trainsup")
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "trainsup"


def _prepare(base: Path) -> Any:
    def prepare(data: object) -> None:
        # Relative paths in the config are taken from the config file's folder.
        if not isinstance(data, dict):
            return
        if isinstance(data.get("state_dir"), str):
            data["state_dir"] = str(base / Path(data["state_dir"]).expanduser())
        api = data.get("api")
        if isinstance(api, dict):
            if isinstance(api.get("socket"), str):
                api["socket"] = str(base / Path(api["socket"]).expanduser())
            tcp = api.get("tcp")
            if isinstance(tcp, dict) and isinstance(tcp.get("token_file"), str):
                tcp["token_file"] = str(base / Path(tcp["token_file"]).expanduser())

    return prepare


def parse_config(text: str, source: str = "<config>", base_dir: Path | None = None) -> DaemonConfig:
    """Validate config YAML text; SpecError lists every problem, located."""
    base = (base_dir or Path.cwd()).absolute()
    if not text.strip() or all(
        not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()
    ):
        # An all-comments config (the example with everything commented out) = defaults.
        return DaemonConfig()
    try:
        return validate_yaml(
            DaemonConfig,
            text,
            source,
            empty="an empty config uses every default",
            prepare=_prepare(base),
            what=WHAT,
        )
    except SpecError as e:
        raise SpecError([_binary_key_problem(p) for p in e.problems], WHAT) from None


def _binary_key_problem(p: Problem) -> Problem:
    """The generic mapper cannot see the model under `binaries.<name>` (a dict of models), so it
    lists no allowed keys there: name them, with a did-you-mean, like everywhere else."""
    parts = p.path.split(".")
    if len(parts) != 3 or parts[0] != "binaries" or "unknown key" not in p.message:
        return p
    allowed = list(BinarySpec.model_fields)
    close = difflib.get_close_matches(parts[2], allowed, n=1)
    hint = f"; did you mean `{close[0]}`?" if close else "."
    message = f"unknown key `{parts[2]}`{hint} Allowed here: {', '.join(allowed)}"
    return dataclasses.replace(p, message=message)


def load_config(path: Path) -> DaemonConfig:
    """Read and validate a config file."""
    if not path.is_file():
        raise file_problem(str(path), "no such file: give the path of the daemon config", WHAT)
    return parse_config(read_text(path, WHAT), str(path), path.absolute().parent)


def find_config(given: Path | None = None) -> Path | None:
    """The config file to use: `--config`, else `$TRAINSUP_CONFIG`, else the system one when
    present; None = built-in defaults."""
    if given is not None:
        return given
    env = os.environ.get("TRAINSUP_CONFIG")
    if env:
        return Path(env)
    return SYSTEM_CONFIG if SYSTEM_CONFIG.is_file() else None


def resolve_config(given: Path | None = None) -> DaemonConfig:
    path = find_config(given)
    return load_config(path) if path is not None else DaemonConfig()


def find_socket(config: DaemonConfig | None, given: Path | None = None) -> Path:
    """Where the CLI reaches the daemon: `--socket`, `$TRAINSUP_SOCKET`, else the config's."""
    if given is not None:
        return given
    env = os.environ.get("TRAINSUP_SOCKET")
    if env:
        return Path(env)
    return (config or DaemonConfig()).socket_path()


def config_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the daemon config."""
    schema = DaemonConfig.model_json_schema()
    schema.pop("title", None)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "trainsup daemon config",
        **schema,
    }


__all__ = [
    "FLAVOURS",
    "ApiSpec",
    "BinarySpec",
    "DaemonConfig",
    "SpecError",
    "TcpSpec",
    "config_schema",
    "find_config",
    "find_socket",
    "load_config",
    "parse_config",
    "resolve_config",
]
