"""The console's "start a training job" form: any app pushed to the app registry, with the
run_config keys that app declares as fields.

The form sends only what the operator filled in (the app, dataset, sites, and each run_config
value typed); everything left empty keeps the app's default. The coordinator checks every
key and value against what the app declares, so a wrong key or a value of the wrong type
comes back as the API's own message, shown above the form with the values kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.responses import RedirectResponse, Response

from silolink import errors

from ..apps.client import AppsClient
from ..training.runconfig import value_from_text
from .web import Console, Context

RUN_CONFIG_PREFIX = "rc."
MAX_TIMEOUT_S = 30 * 24 * 3600.0  # as `train start --timeout`
# Refusals shown on the form itself (the operator can fix the input and post again); other
# errors (a viewer, an expired session, the coordinator down) get the console's error page.
FIXABLE = (errors.InvalidArgument, errors.NotFound, errors.FailedPrecondition, errors.AlreadyExists)


@dataclass(frozen=True)
class AppChoice:
    """One app in the form's list: its versions, oldest first."""

    name: str
    versions: list[dict[str, Any]]

    @property
    def newest(self) -> dict[str, Any]:
        return self.versions[-1]


def app_choices(apps: list[dict[str, Any]]) -> list[AppChoice]:
    """ListApps' versions (by name, then publication) grouped by app."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for app in apps:
        grouped.setdefault(app["name"], []).append(app)
    return [AppChoice(name, versions) for name, versions in grouped.items()]


def chosen(choices: list[AppChoice], ref: str) -> tuple[str, dict[str, Any] | None]:
    """(the select's value, the app version whose run_config the form shows) for ``ref``
    (NAME, meaning the newest version, or NAME:VERSION); the first app when ``ref`` is empty
    or names no published app."""
    name, _, version = ref.partition(":")
    for choice in choices:
        if choice.name != name:
            continue
        if not version:
            return name, choice.newest
        for app in choice.versions:
            if app["version"] == version:
                return f"{name}:{version}", app
    if not choices:
        return "", None
    return choices[0].name, choices[0].newest


def field_kind(default: Any) -> str:
    """How a declared run_config key is typed in: its default's type."""
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    return "text"


def run_config_overrides(form: dict[str, str], declared: dict[str, Any]) -> dict[str, Any]:
    """The run_config values the operator typed (empty fields are left out: the app's default
    stands). A key the app declares as text is sent as typed; any other is read as ``flwr run
    --run-config`` reads it, and the coordinator refuses it if it is not of the declared type
    (or not declared at all)."""
    out: dict[str, Any] = {}
    for field, text in form.items():
        if not field.startswith(RUN_CONFIG_PREFIX) or not text.strip():
            continue
        key = field.removeprefix(RUN_CONFIG_PREFIX)
        out[key] = text if isinstance(declared.get(key), str) else value_from_text(text)
    return out


# Where and when the job runs (issue 18's work queue): form field -> (StartJob field, type,
# scale to the API's unit, what it is called in a message). Ranges are the coordinator's to check.
SCHEDULING = {
    "cpu": ("cpu", float, 1, "CPUs per site"),
    "memory_gib": ("memory_bytes", float, 1 << 30, "memory per site (GiB)"),
    "gpus": ("gpus", int, 1, "GPUs per site"),
    "expected_duration_s": ("expected_duration_s", float, 1, "the expected duration (s)"),
    "priority": ("priority", int, 1, "the priority"),
    "max_sites": ("max_sites", int, 1, "the most sites"),
}


def _number(text: str, kind: type, what: str) -> int | float:
    try:
        return kind(text)
    except ValueError:
        whole = "a whole number" if kind is int else "a number"
        raise errors.InvalidArgument(f"{what} must be {whole}, not {text!r}") from None


def job_spec(form: dict[str, str], declared: dict[str, Any]) -> dict[str, Any]:
    """The StartJob fields the form filled in, and nothing else."""
    name, _, version = form.get("app", "").strip().partition(":")  # the coordinator checks them
    spec: dict[str, Any] = {
        "app": name,
        "app_version": version,
        "dataset": form.get("dataset", "").strip(),
        # Selectors are separated by ";" or new lines ("kind=hospital; region=north").
        "sites": [s.strip() for s in form.get("sites", "").replace("\n", ";").split(";") if s.strip()],
        "run_config": run_config_overrides(form, declared),
    }
    for field in ("model_name", "study"):
        if form.get(field, "").strip():
            spec[field] = form[field].strip()
    timeout = form.get("timeout_s", "").strip()
    if timeout:
        spec["timeout_s"] = _number(timeout, float, "the job timeout (s)")
        if not 1 <= spec["timeout_s"] <= MAX_TIMEOUT_S:
            raise errors.InvalidArgument(f"the job timeout must be between 1 and {MAX_TIMEOUT_S:.0f} seconds")
    for field, (target, kind, scale, what) in SCHEDULING.items():
        text = form.get(field, "").strip()
        if text:
            value = _number(text, kind, what) * scale
            spec[target] = int(value) if target == "memory_bytes" else value
    return spec


def _form_values(console: Console, ctx: Context, ref: str, **extra: Any) -> dict[str, Any]:
    choices = app_choices(AppsClient(ctx.client).list())
    selected, app = chosen(choices, ref)
    return {"choices": choices, "selected": selected, "app": app, "field_kind": field_kind, **extra}


def start_form(console: Console, ctx: Context) -> Response:
    """GET /training/new[?app=NAME[:VERSION]]: the form, with that app's run_config fields
    (choosing another app swaps them in through htmx, from this same page)."""
    ref = ctx.request.query_params.get("app", "")[:300]
    return console.render("training_start.html", ctx, **_form_values(console, ctx, ref, values={}, error=""))


def start_job(console: Console, ctx: Context, form: dict[str, str]) -> Response:
    """POST /training: start the job, or show the coordinator's refusal above the form."""
    ref = form.get("app", "").strip()
    try:
        name, _, version = ref.partition(":")
        declared = AppsClient(ctx.client).show(name, version or None)[-1]["config"] if name else {}
        job = ctx.client.start_training(**job_spec(form, declared))
    except FIXABLE as exc:
        values = _form_values(console, ctx, ref, values=form, error=exc.message)
        return console.render("training_start.html", ctx, http_status=400, **values)
    return RedirectResponse(f"/training/{job['job']}", status_code=303)
