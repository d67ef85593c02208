"""Flower App Bundles (``.fab``): built, checked and unpacked the same way on both sides.

A FAB is the zip file ``flwr build`` makes: the app's files, its normalized
``pyproject.toml`` and ``.info/CONTENT``, which lists every file's SHA-256 and size.
Building uses Flower's own builder (``flwr.cli.build.build_fab_from_disk``), so a bundle made
here is byte for byte the one ``flwr build`` makes, and its hash is the app's identity.

Reading takes untrusted bytes (an operator's push, a bundle a site downloads, a file a site
admin names), so the zip's directory is checked before anything is decompressed or written:
no absolute paths, no ``..``, no symlinks or other special files, no duplicate names, no
encrypted members, and limits on the bundle's size, the bytes it unpacks to and its file
count (a zip bomb declares small sizes it cannot then exceed: ``zipfile`` stops at the
declared size and checks the CRC). Then every file must match ``.info/CONTENT``, and the
``pyproject.toml`` must pass Flower's own validation (``flwr.common.config.validate_config``).
Flower's own ``install_from_fab`` is not used for reading: it extracts before checking sizes
or symlinks, accepts files missing from CONTENT, and answers with CLI exceptions.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tomllib
import uuid
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from silolink import errors

CONFIG_FILE = "pyproject.toml"
CONTENT_FILE = ".info/CONTENT"
# Flower's own limits (flwr.common.constant.FAB_MAX_SIZE, flwr.supercore.constant.MAX_FILE_COUNT);
# unpacked bytes are bounded separately, since a small zip can declare large files.
DEFAULT_MAX_BUNDLE_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_UNPACKED_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_FILES = 1000
# Directories never part of an app (environments, caches); symlinks inside them are ignored.
IGNORED_DIRS = {".venv", "venv", "env", "ENV", ".flwr", ".git", "__pycache__", ".pytest_cache", ".ruff_cache"}


@dataclass(frozen=True)
class FabLimits:
    """What a bundle may weigh. Every limit is checked before anything is written."""

    max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES
    max_files: int = DEFAULT_MAX_FILES


@dataclass(frozen=True)
class FabFile:
    """One file of a bundle."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class FabInfo:
    """What a checked bundle is and declares (from its ``pyproject.toml``)."""

    name: str
    version: str
    publisher: str
    sha256: str  # of the .fab bytes: the app's identity
    size: int
    clientapp: str  # "module:attribute", from [tool.flwr.app.components]
    serverapp: str
    config: dict[str, Any]  # [tool.flwr.app.config], flattened with dots as Flower does
    dependencies: tuple[str, ...]  # [project] dependencies, PEP 508 strings
    files: tuple[FabFile, ...] = field(default=())

    @property
    def fab_id(self) -> str:
        """Flower's id for the app: ``publisher/name``."""
        return f"{self.publisher}/{self.name}"

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["files"] = [asdict(f) for f in self.files]
        data["dependencies"] = list(self.dependencies)
        return data


def build_fab(directory: Path) -> bytes:
    """A FAB of the Flower app in ``directory``, built by Flower's own builder.

    Symlinks are refused rather than skipped (Flower's builder skips them silently, which
    would leave an app that fails at the site for a reason nobody sees).
    """
    from flwr.cli.build import build_fab_from_disk  # flwr is heavy; only when building

    directory = Path(directory)
    if not directory.is_dir():
        raise errors.InvalidArgument(f"{directory} is not a directory holding a Flower app")
    if not (directory / CONFIG_FILE).is_file():
        raise errors.InvalidArgument(f"{directory} has no {CONFIG_FILE}; a Flower app declares itself there")
    links = _symlinks(directory)
    if links:
        raise errors.InvalidArgument(
            f"{directory} holds symlinks ({', '.join(links[:5])}); an app bundle takes regular files only, "
            "so copy the files in or remove the links"
        )
    try:
        return build_fab_from_disk(directory)
    except (ValueError, OSError, tomllib.TOMLDecodeError) as e:  # AppPathDepthError is a ValueError
        raise errors.InvalidArgument(f"{directory} is not a valid Flower app: {_one_line(e)}") from None


def read_fab(data: bytes, limits: FabLimits | None = None) -> tuple[FabInfo, dict[str, bytes]]:
    """Check a bundle and return what it declares and its files (path -> bytes)."""
    limits = limits or FabLimits()
    if len(data) > limits.max_bundle_bytes:
        raise errors.ResourceExhausted(
            f"the app bundle is {len(data):,} bytes, over the limit of {limits.max_bundle_bytes:,} bytes"
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise errors.InvalidArgument("the file is not a Flower App Bundle (not a zip archive)") from None
    with archive:
        members = _checked_members(archive, limits)
        files: dict[str, bytes] = {}
        for name, info in members.items():
            try:
                with archive.open(info) as handle:
                    files[name] = handle.read(info.file_size + 1)
            # NotImplementedError: zipfile's answer to a compression method it cannot read.
            except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as e:
                raise errors.InvalidArgument(f"the app bundle's file {name} cannot be read: {_one_line(e)}") from None
            if len(files[name]) != info.file_size:
                raise errors.InvalidArgument(f"the app bundle's file {name} is not the size its entry declares")
    listed = _check_content(files)
    config = _parse_config(files[CONFIG_FILE])
    info = _describe(config, hashlib.sha256(data).hexdigest(), len(data), listed)
    return info, files


def inspect_fab(data: bytes, limits: FabLimits | None = None) -> FabInfo:
    """Check a bundle (see the module's docstring) and return what it declares."""
    return read_fab(data, limits)[0]


def unpack_fab(data: bytes, destination: Path, limits: FabLimits | None = None) -> FabInfo:
    """Check a bundle and unpack it into ``destination``, which must not exist yet."""
    info, files = read_fab(data, limits)
    write_files(files, destination)
    return info


def write_files(files: dict[str, bytes], destination: Path) -> None:
    """Write a checked bundle's files (from ``read_fab``) into ``destination``.

    The files go to a temporary directory beside it, which is renamed into place once
    complete: ``destination`` either holds the whole app or does not exist.
    """
    destination = Path(destination)
    if destination.exists():
        raise errors.AlreadyExists(f"{destination} already exists")
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = destination.parent / f".{destination.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir()
        for name, content in files.items():
            if name == CONTENT_FILE:
                continue
            target = staging.joinpath(*PurePosixPath(_safe_path(name)).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "xb") as handle:  # "x": never through anything already there
                handle.write(content)
            os.chmod(target, 0o644)
        os.rename(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def component_file(info: FabInfo, component: str) -> str | None:
    """The bundle file that holds a component's module ("pkg/client_app.py"), or None.

    A static check (no code runs): Flower loads ``module:attribute`` relative to the app's
    root, so the module must be a file of the bundle.
    """
    reference = {"clientapp": info.clientapp, "serverapp": info.serverapp}[component]
    module = reference.partition(":")[0]
    if not module:
        return None
    base = module.replace(".", "/")
    paths = {f.path for f in info.files}
    for candidate in (f"{base}.py", f"{base}/__init__.py"):
        if candidate in paths:
            return candidate
    return None


def _checked_members(archive: zipfile.ZipFile, limits: FabLimits) -> dict[str, zipfile.ZipInfo]:
    members: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in archive.infolist():
        name = info.filename
        mode = info.external_attr >> 16
        kind = stat.S_IFMT(mode)
        if kind == stat.S_IFLNK:
            raise errors.InvalidArgument(f"the app bundle holds a symlink ({name}); bundles take regular files only")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise errors.InvalidArgument(
                f"the app bundle holds a special file ({name}); bundles take regular files only"
            )
        path = _safe_path(name)
        if name.endswith("/") or kind == stat.S_IFDIR:
            continue
        if info.flag_bits & 0x1:
            raise errors.InvalidArgument(f"the app bundle's file {name} is encrypted")
        if path in members:
            raise errors.InvalidArgument(f"the app bundle holds {path} twice")
        members[path] = info
        total += info.file_size
        if len(members) > limits.max_files:
            raise errors.ResourceExhausted(f"the app bundle holds more than {limits.max_files} files")
        if total > limits.max_unpacked_bytes:
            raise errors.ResourceExhausted(f"the app bundle unpacks to more than {limits.max_unpacked_bytes:,} bytes")
    for required in (CONFIG_FILE, CONTENT_FILE):
        if required not in members:
            raise errors.InvalidArgument(f"the app bundle has no {required}; build it with `flwr build`")
    return members


def _safe_path(name: str) -> str:
    """The member's path, if it stays inside the bundle's root."""
    if "\\" in name or "\x00" in name:
        raise errors.InvalidArgument(f"the app bundle holds a path with a backslash or NUL ({name!r})")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise errors.InvalidArgument(f"the app bundle holds an absolute path ({name}); paths must be relative")
    parts = [p for p in PurePosixPath(name).parts if p != "."]
    if ".." in parts:
        raise errors.InvalidArgument(f"the app bundle holds a path outside its root ({name})")
    if not parts:
        raise errors.InvalidArgument(f"the app bundle holds an empty path ({name!r})")
    return "/".join(parts)


def _check_content(files: dict[str, bytes]) -> tuple[FabFile, ...]:
    """Every file is listed in .info/CONTENT with its SHA-256 and size, and only those."""
    try:
        text = files[CONTENT_FILE].decode("utf-8")
    except UnicodeDecodeError:
        raise errors.InvalidArgument(f"the app bundle's {CONTENT_FILE} is not UTF-8 text") from None
    listed: dict[str, FabFile] = {}
    for number, line in enumerate(text.strip().splitlines(), 1):
        path, sep, rest = line.rpartition(",")  # paths may hold commas; digest and size may not
        path, sep2, digest = path.rpartition(",")
        if not (sep and sep2 and path and rest.isdigit()):
            raise errors.InvalidArgument(f"the app bundle's {CONTENT_FILE} line {number} is malformed")
        path = _safe_path(path)
        content = files.get(path)
        if content is None:
            raise errors.InvalidArgument(f"the app bundle lists {path} in {CONTENT_FILE} but does not hold it")
        actual = hashlib.sha256(content).hexdigest()
        if actual != digest or len(content) * 8 != int(rest):
            raise errors.InvalidArgument(
                f"the app bundle's file {path} does not match its {CONTENT_FILE} entry (altered after it was built)"
            )
        listed[path] = FabFile(path, len(content), actual)
    unlisted = sorted(set(files) - set(listed) - {CONTENT_FILE})
    if unlisted:
        raise errors.InvalidArgument(
            f"the app bundle holds files its {CONTENT_FILE} does not list ({', '.join(unlisted[:5])})"
        )
    return tuple(sorted(listed.values(), key=lambda f: f.path))


def _parse_config(raw: bytes) -> dict[str, Any]:
    from flwr.common.config import validate_config

    try:
        config = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise errors.InvalidArgument(f"the app's {CONFIG_FILE} is not valid TOML: {_one_line(e)}") from None
    valid, problems, _ = validate_config(config, check_module=False)
    if not valid:
        raise errors.InvalidArgument(f"the app's {CONFIG_FILE} is not a valid Flower app: {'; '.join(problems)}")
    return config


def _describe(config: dict[str, Any], sha256: str, size: int, files: tuple[FabFile, ...]) -> FabInfo:
    from flwr.cli.utils import validate_project_name
    from flwr.common.config import flatten_dict

    project, app = config["project"], config["tool"]["flwr"]["app"]
    name, version, publisher = project["name"], project["version"], app["publisher"]
    try:
        validate_project_name(str(name), "The app's [project] name")
    except ValueError as e:
        raise errors.InvalidArgument(str(e)) from None
    for kind, value in (("[project] version", version), ("[tool.flwr.app] publisher", publisher)):
        if not isinstance(value, str) or not _plain(value):
            raise errors.InvalidArgument(
                f"the app's {kind} {value!r} is not valid: use 1 to 64 letters, digits, '.', '_' or '-'"
            )
    dependencies = project.get("dependencies", [])
    if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
        raise errors.InvalidArgument("the app's [project] dependencies must be a list of requirement strings")
    components = app.get("components", {})
    try:
        defaults = flatten_dict(app.get("config", {}))
    except ValueError as e:
        raise errors.InvalidArgument(f"the app's [tool.flwr.app.config]: {_one_line(e)}") from None
    return FabInfo(
        name=name,
        version=version,
        publisher=publisher,
        sha256=sha256,
        size=size,
        clientapp=str(components.get("clientapp", "")),
        serverapp=str(components.get("serverapp", "")),
        config=defaults,
        dependencies=tuple(dependencies),
        files=files,
    )


def _plain(value: str) -> bool:
    return 0 < len(value) <= 64 and value[0].isalnum() and all(c.isalnum() or c in "._-" for c in value)


def _symlinks(directory: Path) -> list[str]:
    """Symlinks Flower's builder would silently skip (not in ignored or .gitignore'd places)."""
    from flwr.cli.utils import build_pathspec, load_gitignore_patterns

    gitignore = directory / ".gitignore"
    ignored = build_pathspec(load_gitignore_patterns(gitignore.read_bytes()) if gitignore.is_file() else [])
    found = []
    for root, dirs, names in os.walk(directory, followlinks=False):
        dirs[:] = [d for d in dirs if d not in IGNORED_DIRS]
        for entry in [*dirs, *names]:
            path = Path(root, entry)
            relative = path.relative_to(directory).as_posix()
            if path.is_symlink() and not ignored.match_file(relative):
                found.append(relative)
    return sorted(found)


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return " ".join(text.split())[:400] if text else type(error).__name__
