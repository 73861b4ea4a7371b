"""Find or build the pinned control-plane binaries for `paved dev` and the test fixtures.

The binaries are the real upstream programs (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kubectl, kwok), compiled from the Go modules pinned by the wrapper modules in
hack/controlplane/. The wrapper go.mod files are the single source of truth for versions, so a
version bump is a one-line change there and the cache key follows automatically.

Builds are cached under ``$PAVED_CACHE_DIR/bin/<component>-<version>/`` (default
``~/.cache/paved``) and never inside the repository. A folder in the style of envtest's
``KUBEBUILDER_ASSETS`` can supply some of them (usually etcd, kube-apiserver, kubectl); only the
rest is built then.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "COMPONENTS",
    "BinaryError",
    "Component",
    "LogFn",
    "cache_root",
    "ensure_binaries",
    "gateway_api_crd_dir",
    "security_group_policy_crd",
    "go_module_dir",
    "kube_version",
    "module_version",
    "repo_root",
]

_logger = logging.getLogger(__name__)

LogFn = Callable[[str], None]

BINARY_NAMES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
)


class BinaryError(RuntimeError):
    """A control-plane binary could not be found or built; the message says what to do."""


@dataclass(frozen=True)
class Component:
    """One wrapper module under hack/controlplane/ and the binaries it produces.

    ``binaries`` maps a binary name to the Go package whose main it is.
    ``ldflags`` may contain ``{version}``; it is formatted with the pinned version.
    """

    name: str
    wrapper: str
    module: str
    binaries: Mapping[str, str]
    ldflags: str = "-s -w"


_KUBE_LDFLAGS = (
    "-s -w"
    " -X k8s.io/component-base/version.gitVersion={version}"
    " -X k8s.io/component-base/version.gitMajor={major}"
    " -X k8s.io/component-base/version.gitMinor={minor}"
    " -X k8s.io/component-base/version.gitTreeState=clean"
    " -X k8s.io/client-go/pkg/version.gitVersion={version}"
)

COMPONENTS: tuple[Component, ...] = (
    Component(
        name="etcd",
        wrapper="etcd",
        module="go.etcd.io/etcd/server/v3",
        binaries={"etcd": "go.etcd.io/etcd/server/v3"},
    ),
    Component(
        name="kubernetes",
        wrapper="kube",
        module="k8s.io/kubernetes",
        binaries={
            name: f"k8s.io/kubernetes/cmd/{name}"
            for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
        },
        ldflags=_KUBE_LDFLAGS,
    ),
    Component(
        name="kwok",
        wrapper="kwok",
        module="sigs.k8s.io/kwok",
        binaries={"kwok": "sigs.k8s.io/kwok/cmd/kwok"},
        ldflags="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version={bare_version}",
    ),
)


def _default_log(message: str) -> None:
    _logger.info("%s", message)


def cache_root() -> Path:
    """Root of everything paved caches outside the repo (binaries, build logs, dev state)."""
    override = os.environ.get("PAVED_CACHE_DIR")
    return Path(override).expanduser() if override else Path.home() / ".cache" / "paved"


def repo_root() -> Path:
    """The checkout holding hack/controlplane/, found upwards from this file or the cwd.

    The wrapper modules are not package data, so `paved dev` works from a source checkout
    (editable install) or when run from inside one.
    """
    for start in (Path(__file__).resolve(), Path.cwd().resolve()):
        for candidate in (start, *start.parents):
            if (candidate / "hack" / "controlplane").is_dir():
                return candidate
    raise BinaryError(
        "cannot find hack/controlplane/ (the pinned Go wrapper modules); run paved dev from a "
        "checkout of the paved repository"
    )


def _wrapper_dir(component: Component) -> Path:
    return repo_root() / "hack" / "controlplane" / component.wrapper


def module_version(wrapper: str, module: str) -> str:
    """The version of ``module`` required by hack/controlplane/<wrapper>/go.mod."""
    go_mod = repo_root() / "hack" / "controlplane" / wrapper / "go.mod"
    text = go_mod.read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.MULTILINE)
    if not match:
        raise BinaryError(f"{go_mod} does not require {module}")
    return match.group(1)


def _component_version(component: Component) -> str:
    return module_version(component.wrapper, component.module)


def kube_version() -> str:
    """The pinned Kubernetes version (what the API server reports, e.g. v1.36.3)."""
    return _component_version(_component("kubernetes"))


def _component(name: str) -> Component:
    return next(c for c in COMPONENTS if c.name == name)


def _component_dir(component: Component) -> Path:
    return cache_root() / "bin" / f"{component.name}-{_component_version(component)}"


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _assets_dir(assets_dir: Path | None, log: LogFn) -> Path | None:
    """The explicit assets folder, else $KUBEBUILDER_ASSETS when it names a folder."""
    if assets_dir is not None:
        if not assets_dir.is_dir():
            raise BinaryError(f"assets folder {assets_dir} does not exist")
        return assets_dir
    env = os.environ.get("KUBEBUILDER_ASSETS")
    if not env:
        return None
    path = Path(env).expanduser()
    if not path.is_dir():
        log(f"ignoring KUBEBUILDER_ASSETS={env}: not a folder")
        return None
    return path


def ensure_binaries(assets_dir: Path | None = None, log: LogFn | None = None) -> dict[str, Path]:
    """Return the path of every control-plane binary, building the missing ones.

    Order of preference per binary: the assets folder (``assets_dir`` or
    ``$KUBEBUILDER_ASSETS``), then the cache, then a fresh ``go build`` into the cache.
    """
    log = log or _default_log
    assets = _assets_dir(assets_dir, log)
    found: dict[str, Path] = {}
    for component in COMPONENTS:
        missing: list[str] = []
        for binary in component.binaries:
            if assets is not None and _is_executable(assets / binary):
                found[binary] = assets / binary
            elif _is_executable(_component_dir(component) / binary):
                found[binary] = _component_dir(component) / binary
            else:
                missing.append(binary)
        if missing:
            found.update(_build(component, missing, log))
    return {name: found[name] for name in BINARY_NAMES}


@contextlib.contextmanager
def _build_lock(component: Component) -> Iterator[None]:
    """Serialise builds of one component across processes (a dev shell and a test run)."""
    lock_dir = cache_root() / "bin"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f".{component.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BinaryError(
            "the Go toolchain (`go`) is not on PATH; install Go matching "
            "hack/controlplane/*/go.mod, or point KUBEBUILDER_ASSETS / --assets at a folder "
            "holding prebuilt binaries"
        )
    return go


def _ldflags(component: Component) -> str:
    version = _component_version(component)
    parts = version.lstrip("v").split(".")
    return component.ldflags.format(
        version=version, bare_version=version.lstrip("v"), major=parts[0], minor=parts[1]
    )


def _build(component: Component, binaries: list[str], log: LogFn) -> dict[str, Path]:
    """Build ``binaries`` of ``component`` atomically into its cache folder.

    ``go build`` writes into a temporary sibling folder; each finished binary is then renamed
    into place, so an interrupted build never leaves a half-written binary that a later run
    would trust.
    """
    target = _component_dir(component)
    with _build_lock(component):
        # Another process may have finished the same build while we waited for the lock.
        if all(_is_executable(target / name) for name in binaries):
            return {name: target / name for name in binaries}
        go = _go()
        logs = cache_root() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"build-{target.name}.log"
        target.parent.mkdir(parents=True, exist_ok=True)
        log(f"building {', '.join(binaries)} ({target.name}) with go build; log: {log_path}")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f".build-{target.name}-", dir=target.parent) as tmp:
            out = Path(tmp) / "out"
            out.mkdir()
            packages = [component.binaries[name] for name in binaries]
            # `-o dir/` names each binary after its package; a single package gets an explicit
            # file name because etcd's import path ends in a major version (".../server/v3").
            output = str(out / binaries[0]) if len(binaries) == 1 else f"{out}/"
            command = [go, "build", "-trimpath", "-ldflags", _ldflags(component), "-o", output]
            _run_build(command + packages, _wrapper_dir(component), log_path)
            target.mkdir(parents=True, exist_ok=True)
            for name in binaries:
                built = out / name
                if not _is_executable(built):
                    raise BinaryError(f"go build did not produce {name}; see {log_path}")
                os.replace(built, target / name)
        log(f"built {target.name} in {time.monotonic() - started:.0f}s")
    return {name: target / name for name in binaries}


def _run_build(command: list[str], cwd: Path, log_path: Path) -> None:
    with open(log_path, "w") as log_file:
        log_file.write("$ " + " ".join(command) + "\n")
        log_file.flush()
        result = subprocess.run(
            command, cwd=cwd, stdout=log_file, stderr=subprocess.STDOUT, check=False
        )
    if result.returncode != 0:
        tail = "\n".join(log_path.read_text().splitlines()[-20:])
        raise BinaryError(
            f"go build failed (exit {result.returncode}) in {cwd}; full log: {log_path}\n{tail}"
        )


def go_module_dir(wrapper: str, module: str) -> Path:
    """The module-cache folder of ``module`` at the version pinned by a wrapper go.mod.

    ``go mod download -json`` fetches it through the module proxy if needed and reports
    where it lives, so no repository checkout or vendored copy is needed.
    """
    version = module_version(wrapper, module)
    result = subprocess.run(
        [_go(), "mod", "download", "-json", f"{module}@{version}"],
        cwd=repo_root() / "hack" / "controlplane" / wrapper,
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        info = json.loads(result.stdout)
    except json.JSONDecodeError:
        info = {}
    if result.returncode != 0 or "Dir" not in info:
        detail = info.get("Error") or result.stderr.strip() or result.stdout.strip()
        raise BinaryError(f"go mod download {module}@{version} failed: {detail}")
    return Path(info["Dir"])


def gateway_api_crd_dir() -> Path:
    """The standard-channel Gateway API CRDs of the pinned sigs.k8s.io/gateway-api release."""
    crds = go_module_dir("gateway-api", "sigs.k8s.io/gateway-api") / "config" / "crd" / "standard"
    if not crds.is_dir():
        raise BinaryError(f"{crds} is missing from the gateway-api module")
    return crds


def security_group_policy_crd() -> Path:
    """The SecurityGroupPolicy CRD (EKS security groups for pods, vpcresources.k8s.aws) of the
    pinned amazon-vpc-resource-controller-k8s release: DatabaseIntents on RDS render one per
    allowFrom namespace. Only this CRD of config/crd/bases: the CNINode one is the
    controller's own business."""
    module = go_module_dir("vpc-resource-controller", "github.com/aws/amazon-vpc-resource-controller-k8s")
    crd = module / "config" / "crd" / "bases" / "vpcresources.k8s.aws_securitygrouppolicies.yaml"
    if not crd.is_file():
        raise BinaryError(f"{crd} is missing from the amazon-vpc-resource-controller-k8s module")
    return crd
