"""The Dockerfile's base image: pulled when a registry answers, else a stand-in made here.

With no registry reachable, ``FROM python:3.11.14-slim-bookworm`` cannot be pulled. The
stand-in is a Debian bookworm root file system made by ``debootstrap`` from this
machine's own Debian mirror (read from its apt sources at run time), with Debian's
Python 3.11 (3.11.2, not 3.11.14) linked as ``/usr/local/bin/python`` like the real
image's, imported under the same tag. It is built locally, labelled as a stand-in and
never pushed anywhere.

So that ``pip install`` inside the build reaches PyPI the way this machine does, the
stand-in trusts the same certificate authorities (the host's locally added ones are
copied in and ``update-ca-certificates`` runs there) and gets an ``/etc/pip.conf`` with
the host's network settings for pip (index URLs, trusted hosts, timeout, proxy), taken
from ``pip config list`` and ``PIP_*`` variables at run time. None of it is in the
repository. Local-only settings (``file://`` indexes, find-links, constraints) are left
out: their paths do not exist inside the build.

The root file system is cached as a tarball under the cache directory, keyed by a hash of
everything that goes into it; the imported image carries that hash as a label, so an
engine whose data root still holds it skips even the import.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.deploy.docker_engine import DEBOOTSTRAP, Engine, Say, last_line, report, run

BASE_IMAGE = "python:3.11.14-slim-bookworm"
STAND_IN_LABEL = "org.softmax-serving.stand-in"
STAND_IN = "Debian bookworm, Debian's Python 3.11.2"
SUITE = "bookworm"
PACKAGES = ("python3.11", "python3.11-venv", "python3-pip", "ca-certificates")
# Bump when the recipe below changes: it is part of the cache key.
RECIPE = "2"
PULL_TIMEOUT = 300
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
APT_SOURCES = Path("/etc/apt/sources.list")
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")
# What pip needs to reach an index over the network; anything else in the host's pip
# configuration (find-links, constraints, file:// indexes, ...) is about its own disk.
PIP_NETWORK_KEYS = ("index-url", "extra-index-url", "trusted-host", "timeout", "retries", "proxy")
PIP_ALIASES = {"default-timeout": "timeout"}
IMAGE_ENV = (
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG=C.UTF-8",
)
# Left out of the root file system, as the slim images leave them out.
TRIM = ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale")


@dataclass(frozen=True)
class BaseImage:
    """What the builds start from."""

    tag: str
    stand_in: bool
    how: str  # one line for the test output


# ------------------------------------------------------------ the host's settings


def _deb_entries(text: str, deb822: bool) -> list[tuple[str, list[str], list[str]]]:
    """(URI, suites, components) of every enabled ``deb`` entry in one apt sources file."""
    entries: list[tuple[str, list[str], list[str]]] = []
    if not deb822:
        for line in text.splitlines():
            words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                entries.append((words[1], [words[2]], words[3:]))
        return entries
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0].isspace() and key:
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        suites, components = fields.get("suites", "").split(), fields.get("components", "").split()
        entries += [(uri, suites, components) for uri in fields.get("uris", "").split()]
    return entries


def mirror_from(sources: list[tuple[str, bool]]) -> str | None:
    """The first http(s) archive of a main suite (not -security, -updates) with ``main``.

    ``sources`` are apt sources files' texts, each with whether it is deb822 (``.sources``).
    """
    for text, deb822 in sources:
        for uri, suites, components in _deb_entries(text, deb822):
            main_suites = [s for s in suites if "-" not in s and "/" not in s]
            if uri.startswith(("http://", "https://")) and main_suites and "main" in components:
                return uri
    return None


def debian_mirror() -> str:
    """The Debian archive this machine's apt uses, read from its sources at run time."""
    files: list[tuple[Path, bool]] = []
    if APT_SOURCES.is_file():
        files.append((APT_SOURCES, False))
    if APT_SOURCES_DIR.is_dir():
        for path in sorted(APT_SOURCES_DIR.iterdir()):
            if path.suffix in {".list", ".sources"}:
                files.append((path, path.suffix == ".sources"))
    mirror = mirror_from([(path.read_text(errors="replace"), deb822) for path, deb822 in files])
    if mirror is None:
        raise RuntimeError(
            f"no Debian archive (a 'deb' entry of a main suite) in {APT_SOURCES} or "
            f"{APT_SOURCES_DIR}: cannot make the stand-in base image"
        )
    return mirror


def pip_conf_from(listing: str) -> str:
    """An ``/etc/pip.conf``: the system CA bundle, and the network settings of ``pip config list``.

    Only http(s) URLs are kept: ``file://`` indexes and paths do not exist inside a build.
    """
    settings: dict[str, str] = {}
    for line in listing.splitlines():
        match = re.fullmatch(r"(?:global|install|download|:env:)\.([a-z-]+)='(.*)'", line.strip())
        if match:
            key = PIP_ALIASES.get(match.group(1), match.group(1))
            settings[key] = match.group(2)  # later lines (the environment) win
    lines = ["[global]", "cert = /etc/ssl/certs/ca-certificates.crt"]
    for key in PIP_NETWORK_KEYS:
        if key not in settings:
            continue
        value = settings[key]
        if key in {"index-url", "extra-index-url", "proxy"}:
            urls = [u for u in value.split() if u.startswith(("http://", "https://"))]
            if not urls:
                continue
            value = " ".join(urls)
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def host_pip_conf() -> str:
    """The stand-in's ``/etc/pip.conf``, from this machine's pip settings and PIP_* variables."""
    return pip_conf_from(run([sys.executable, "-m", "pip", "config", "list"], timeout=60).stdout)


def host_ca_certificates() -> list[Path]:
    """The certificate authorities added locally on this machine, for update-ca-certificates."""
    if not HOST_CA_DIR.is_dir():
        return []
    return sorted(path for path in HOST_CA_DIR.rglob("*.crt") if path.is_file())


def recipe_key(mirror: str, pip_conf: str, certificates: list[Path]) -> str:
    """A hash of everything that goes into the stand-in: its cache key and label."""
    digest = hashlib.sha256()
    for part in (RECIPE, BASE_IMAGE, SUITE, " ".join(PACKAGES), mirror, pip_conf, *IMAGE_ENV):
        digest.update(part.encode() + b"\0")
    for path in certificates:
        digest.update(str(path.relative_to(HOST_CA_DIR)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------- the stand-in


def _chroot(rootfs: Path, *argv: str) -> None:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    result = run(["chroot", rootfs, *argv], env=env, timeout=300)
    assert result.returncode == 0, report(result)


def make_rootfs(rootfs: Path, mirror: str, pip_conf: str, certificates: list[Path]) -> None:
    """debootstrap a minimal bookworm with Python 3.11 into ``rootfs``, shaped like the image."""
    argv = [
        str(DEBOOTSTRAP),
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        SUITE,
        str(rootfs),
        mirror,
    ]
    result = run(argv, timeout=1800)
    if result.returncode != 0:
        log = rootfs / "debootstrap" / "debootstrap.log"
        detail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        raise RuntimeError(f"debootstrap failed:\n{report(result)}\n{detail}")
    for relative in TRIM:
        for child in (rootfs / relative).glob("*"):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    for certificate in certificates:
        target = rootfs / certificate.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(certificate, target)
    _chroot(rootfs, "update-ca-certificates")
    (rootfs / "etc/pip.conf").write_text(pip_conf)
    for name in ("python", "python3"):
        (rootfs / "usr/local/bin" / name).symlink_to("/usr/bin/python3.11")


def _stand_in_tarball(cache: Path, key: str, mirror: str, pip_conf: str, say: Say) -> Path:
    """The cached root file system tarball for ``key``, made first if it is not there."""
    directory = cache / "stand-in"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    tarball = directory / f"{key}.tar"
    if tarball.exists():
        say(f"stand-in root file system from the cache: {tarball}")
        return tarball
    for stale in directory.glob("*.tar"):
        stale.unlink()
    say(f"making it with debootstrap from {mirror} (about a minute)")
    with tempfile.TemporaryDirectory(prefix="rootfs-", dir=directory) as scratch:
        rootfs = Path(scratch) / "rootfs"
        make_rootfs(rootfs, mirror, pip_conf, host_ca_certificates())
        partial = Path(scratch) / "rootfs.tar"
        result = run(["tar", "--numeric-owner", "-C", rootfs, "-cf", partial, "."], timeout=600)
        assert result.returncode == 0, report(result)
        os.replace(partial, tarball)  # whole or not at all
    return tarball


def import_stand_in(engine: Engine, tarball: Path, key: str) -> None:
    """``docker import`` the root file system as BASE_IMAGE, with the real image's settings."""
    changes = [f"ENV {setting}" for setting in IMAGE_ENV]
    changes += ['CMD ["python3"]', f"LABEL {STAND_IN_LABEL}={key}"]
    flags = [word for change in changes for word in ("--change", change)]
    result = engine.docker("import", *flags, tarball, BASE_IMAGE, timeout=600)
    assert result.returncode == 0, report(result)


def _labels(engine: Engine, tag: str) -> dict[str, str] | None:
    """The labels of a local image, or None when the engine does not have it."""
    result = engine.docker("image", "inspect", "--format", "{{json .Config.Labels}}", tag)
    if result.returncode != 0:
        return None
    labels = json.loads(result.stdout) or {}
    return {str(k): str(v) for k, v in labels.items()}


def ensure_base_image(engine: Engine, cache: Path, say: Say) -> BaseImage:
    """Give the engine BASE_IMAGE: the real one if it can be pulled, else the stand-in."""
    mirror, pip_conf = debian_mirror(), host_pip_conf()
    key = recipe_key(mirror, pip_conf, host_ca_certificates())
    labels = _labels(engine, BASE_IMAGE)
    if labels is not None and STAND_IN_LABEL not in labels:
        return BaseImage(BASE_IMAGE, False, f"base image {BASE_IMAGE}: the real one, already local")
    if labels is not None and labels[STAND_IN_LABEL] == key:
        how = f"base image {BASE_IMAGE}: the STAND-IN ({STAND_IN}), already in the engine"
        return BaseImage(BASE_IMAGE, True, how)
    pull = engine.docker("pull", BASE_IMAGE, timeout=PULL_TIMEOUT)
    if pull.returncode == 0:
        return BaseImage(BASE_IMAGE, False, f"base image {BASE_IMAGE}: pulled (the real one)")
    say(
        f"cannot pull {BASE_IMAGE} ({last_line(pull.stderr + pull.stdout)}); "
        f"using a STAND-IN made from Debian packages ({STAND_IN})"
    )
    tarball = _stand_in_tarball(cache, key, mirror, pip_conf, say)
    import_stand_in(engine, tarball, key)
    return BaseImage(
        BASE_IMAGE, True, f"base image {BASE_IMAGE}: the STAND-IN, imported from {tarball}"
    )


def is_stand_in(engine: Engine, tag: str = BASE_IMAGE) -> bool:
    """Whether the engine's ``tag`` is the stand-in made here."""
    labels = _labels(engine, tag)
    return labels is not None and STAND_IN_LABEL in labels
