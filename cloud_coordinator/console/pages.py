"""The console's pages and actions. Each handler reads or acts through the admin API as the
logged-in account (``ctx.client``); what a role may not do, the coordinator refuses."""

from __future__ import annotations

import re
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from silolink import errors
from silolink.audit.remote import check_chain, fetch_all
from silolink.cli_util import parse_tags
from silolink.exchange_protos import AGREEMENT_STATES

from ..analytics.client import OUTCOMES, AnalyticsClient
from ..cli.exchange import ExchangeAdmin
from ..registry.client import RegistryClient
from . import start_form, views
from .web import Console, Context

SITE_STATES = ("online", "offline", "pending", "revoked")
JOB_STATES = ("running", "completed", "failed", "stopped")
ROLLOUT_STATES = ("held", "pending", "downloading", "verified", "awaiting_approval", "active", "failed", "superseded")


def _params(request: Request, *names: str) -> dict[str, str]:
    return {n: request.query_params.get(n, "")[:200] for n in names}


def _back(path: str) -> Response:
    return RedirectResponse(path, status_code=303)


# -- overview ------------------------------------------------------------------------------
def overview_values(console: Console, ctx: Context) -> dict[str, Any]:
    now = console.clock()
    client = ctx.client
    # Counts and the few sites worth an alert come from the API, filtered there: the
    # overview costs the same with 10 sites or 10,000.
    expiring = client.find_sites(20, certificate_expires_before=now + views.CERT_EXPIRY_WARNING_S)
    offline = client.find_sites(20, state="offline")
    recent = client.find_jobs(5)
    failed = client.find_jobs(10, state="failed")
    # Rollouts, agreements and queues are counted by the coordinator too (one call each).
    rollouts = [{**r, "active": sum(r["state_counts"].values())} for r in RegistryClient(client).active_rollouts(20)]
    exchange = ExchangeAdmin(client)
    agreements = exchange.find_agreements(1, state="active")["total"]
    queues = exchange.find_queues(1)
    sites_expiring = [s for s in expiring["sites"] if s["state"] != "revoked"]
    alerts = views.site_alerts(sites_expiring + offline["sites"], now, console.stale_after_s)
    if offline["total"] > len(offline["sites"]):
        alerts.append(views.Alert("warning", f"{offline['total']} sites offline in all", "/sites?state=offline"))
    return {
        "site_counts": {state: expiring["state_counts"].get(state, 0) for state in SITE_STATES},
        "job_counts": {state: recent["state_counts"].get(state, 0) for state in JOB_STATES},
        "rollouts": rollouts,
        "agreements": agreements,
        "backlog": queues["envelopes"],
        "backlog_bytes": queues["bytes"],
        "alerts": alerts + views.job_alerts(failed["jobs"]),
        "recent_jobs": recent["jobs"],
    }


def overview(console: Console, ctx: Context) -> Response:
    return console.render("overview.html", ctx, **overview_values(console, ctx))


def overview_fragment(console: Console, ctx: Context) -> Response:
    return console.render("overview_live.html", ctx, **overview_values(console, ctx))


# -- sites ---------------------------------------------------------------------------------
def _sites_page(console: Console, ctx: Context) -> dict[str, Any]:
    params = _params(ctx.request, "kind", "state", "tag", "name")
    number = views.page_number(ctx.request.query_params.get("page"))
    found = ctx.client.find_sites(
        views.PAGE_SIZE,
        (number - 1) * views.PAGE_SIZE,
        kind=params["kind"],
        state=params["state"],
        tag=params["tag"],
        name_contains=params["name"].strip().lower(),
    )
    page = views.api_page(found["sites"], number, found["total"])
    return {"params": params, "page": page, "states": SITE_STATES}


def sites(console: Console, ctx: Context) -> Response:
    return console.render("sites.html", ctx, **_sites_page(console, ctx))


def sites_fragment(console: Console, ctx: Context) -> Response:
    return console.render("sites_table.html", ctx, **_sites_page(console, ctx))


def site_detail(console: Console, ctx: Context) -> Response:
    site = ctx.client.get_site(ctx.request.path_params["name"])
    return console.render("site.html", ctx, site=site)


def site_live(console: Console, ctx: Context) -> Response:
    # The live facts only: the chart reads the history from resources.json.
    site = ctx.client.get_site(ctx.request.path_params["name"], history_after=console.clock())
    return console.render("site_live.html", ctx, site=site)


def site_resources(console: Console, ctx: Context) -> Response:
    """The chart's data: the coordinator's resource history of the site, and its latest report."""
    return JSONResponse(views.resource_series(ctx.client.get_site(ctx.request.path_params["name"])))


def site_datasets(console: Console, ctx: Context) -> Response:
    """What the site's catalog policy lets the coordinator see (asked of the site now)."""
    try:
        answer = ctx.client.list_site_datasets(ctx.request.path_params["name"])
    except (errors.Unavailable, errors.DeadlineExceeded, errors.FailedPrecondition) as exc:
        return console.render("site_datasets.html", ctx, answer=None, unavailable=exc.message)
    return console.render("site_datasets.html", ctx, answer=answer, unavailable=None)


def add_site(console: Console, ctx: Context, form: dict[str, str]) -> Response:
    tags = parse_tags([t.strip() for t in form.get("tags", "").split(",") if t.strip()])
    added = ctx.client.add_site(form.get("name", "").strip(), form.get("kind", ""), tags)
    # The token is shown once, on this response only; it is never stored in the console.
    return console.render("site_added.html", ctx, added=added)


def revoke_site(console: Console, ctx: Context, form: dict[str, str]) -> Response:
    name = ctx.request.path_params["name"]
    ctx.client.revoke_site(name)
    return _back(f"/sites/{name}")


# -- training ------------------------------------------------------------------------------
def _jobs_page(ctx: Context) -> dict[str, Any]:
    params = _params(ctx.request, "state", "dataset")
    number = views.page_number(ctx.request.query_params.get("page"))
    if params["state"] and params["state"] not in JOB_STATES:
        raise errors.InvalidArgument(f"job state must be one of {', '.join(JOB_STATES)}")
    found = ctx.client.find_jobs(views.PAGE_SIZE, (number - 1) * views.PAGE_SIZE, params["state"], params["dataset"])
    return {"params": params, "page": views.api_page(found["jobs"], number, found["total"]), "states": JOB_STATES}


def training(console: Console, ctx: Context) -> Response:
    return console.render("training.html", ctx, **_jobs_page(ctx))


def training_fragment(console: Console, ctx: Context) -> Response:
    return console.render("jobs_table.html", ctx, **_jobs_page(ctx))


def job_detail(console: Console, ctx: Context) -> Response:
    job = ctx.client.get_job(ctx.request.path_params["job"])
    return console.render("job.html", ctx, job=job)


def job_live(console: Console, ctx: Context) -> Response:
    job = ctx.client.get_job(ctx.request.path_params["job"])
    part = "job_rounds.html" if ctx.request.query_params.get("part") == "rounds" else "job_live.html"
    return console.render(part, ctx, job=job)


LOG_TAIL_LINES = 200
LOG_TAIL_BYTES = 64 * 1024  # enough for 200 lines of a ServerApp's log
ANSI_ESCAPES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # Flower's coloured log levels


def job_log(console: Console, ctx: Context) -> Response:
    """The tail of the job's ServerApp output (stdout, stderr, logging), as text in a <pre>.

    Only the last 64 KiB are fetched: a long job's log can be many megabytes, and reading it
    from the start would show its first lines (one read returns at most 1 MiB)."""
    job_id = ctx.request.path_params["job"]
    _, size, _ = ctx.client.read_job_logs(job_id, offset=1 << 62, max_bytes=1)  # where the log ends now
    start = max(0, size - LOG_TAIL_BYTES)
    data, _, complete = ctx.client.read_job_logs(job_id, offset=start, max_bytes=LOG_TAIL_BYTES)
    lines = ANSI_ESCAPES.sub("", data.decode("utf-8", errors="replace")).splitlines()
    if start and lines:
        lines = lines[1:]  # the first line was cut by the 64 KiB boundary
    cut = max(0, len(lines) - LOG_TAIL_LINES)
    return console.render("job_log.html", ctx, lines=lines[cut:], cut=cut, skipped=start, complete=complete)


def job_rounds(console: Console, ctx: Context) -> Response:
    job = ctx.client.get_job(ctx.request.path_params["job"])
    return JSONResponse({"state": job["state"], **views.round_series(job)})


def _int(form: dict[str, str], key: str, default: int, low: int, high: int) -> int:
    text = form.get(key, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise errors.InvalidArgument(f"{key.replace('_', ' ')} must be a whole number") from None
    if not low <= value <= high:
        raise errors.InvalidArgument(f"{key.replace('_', ' ')} must be between {low} and {high}")
    return value


def stop_job(console: Console, ctx: Context, form: dict[str, str]) -> Response:
    job = ctx.client.stop_job(ctx.request.path_params["job"])
    return _back(f"/training/{job['job']}")


# -- models and rollouts ----------------------------------------------------------------------
def models(console: Console, ctx: Context) -> Response:
    params = _params(ctx.request, "name")
    found = [m for m in reversed(RegistryClient(ctx.client).list()) if params["name"] in m["name"]]
    page = views.paginate(found, views.page_number(ctx.request.query_params.get("page")))
    return console.render("models.html", ctx, params=params, page=page)


def _model(ctx: Context) -> dict[str, Any]:
    name, version = ctx.request.path_params["name"], ctx.request.path_params["version"]
    return RegistryClient(ctx.client).show(name, version)[0]


def _rollout_page(ctx: Context, name: str, version: str) -> dict[str, Any]:
    """One page of the sites' states for the version (filtered by state), and the counts."""
    params = _params(ctx.request, "state")
    if params["state"] and params["state"] not in ROLLOUT_STATES:
        raise errors.InvalidArgument(f"rollout state must be one of {', '.join(ROLLOUT_STATES)}")
    number = views.page_number(ctx.request.query_params.get("page"))
    found = RegistryClient(ctx.client).status_page(
        name, version, views.PAGE_SIZE, (number - 1) * views.PAGE_SIZE, params["state"]
    )
    page = views.api_page(found["sites"], number, found["total"])
    return {"params": params, "page": page, "status": found["sites"], "state_counts": found["state_counts"],
            "states": ROLLOUT_STATES, "model_ref": (name, version)}  # fmt: skip


def model_detail(console: Console, ctx: Context) -> Response:
    model = _model(ctx)
    return console.render("model.html", ctx, model=model, **_rollout_page(ctx, model["name"], model["version"]))


def rollout_live(console: Console, ctx: Context) -> Response:
    name, version = ctx.request.path_params["name"], ctx.request.path_params["version"]
    return console.render("rollout_table.html", ctx, **_rollout_page(ctx, name, version))


def start_rollout(console: Console, ctx: Context, form: dict[str, str]) -> Response:
    name, version = ctx.request.path_params["name"], ctx.request.path_params["version"]
    targets = [t.strip() for t in form.get("to", "").split(";") if t.strip()]
    if not targets:
        raise errors.InvalidArgument("name the sites to roll out to, e.g. kind=hospital")
    RegistryClient(ctx.client).rollout(name, version, targets, _int(form, "canary", 0, 0, 100_000))
    return _back(f"/models/{name}/{version}")


def continue_rollout(console: Console, ctx: Context, form: dict[str, str]) -> Response:
    name, version = ctx.request.path_params["name"], ctx.request.path_params["version"]
    RegistryClient(ctx.client).continue_rollout(name, version)
    return _back(f"/models/{name}/{version}")


def rollback(console: Console, ctx: Context, form: dict[str, str]) -> Response:
    name = ctx.request.path_params["name"]
    to = form.get("to_version", "").strip()
    if not to:
        raise errors.InvalidArgument("name the version to roll back to")
    RegistryClient(ctx.client).rollback(name, to)
    return _back(f"/models/{name}/{to}")


# -- exchange ------------------------------------------------------------------------------
def exchange(console: Console, ctx: Context) -> Response:
    """Agreements (filtered and paged by the coordinator) and the fullest queues in the broker."""
    params = _params(ctx.request, "site", "state")
    if params["state"] and params["state"] not in AGREEMENT_STATES:
        raise errors.InvalidArgument(f"agreement state must be one of {', '.join(AGREEMENT_STATES)}")
    number = views.page_number(ctx.request.query_params.get("page"))
    admin = ExchangeAdmin(ctx.client)
    site = params["site"].strip()
    found = admin.find_agreements(views.PAGE_SIZE, (number - 1) * views.PAGE_SIZE, site, params["state"])
    page = views.api_page(found["agreements"], number, found["total"])
    queues = admin.find_queues(views.PAGE_SIZE, site)
    return console.render("exchange.html", ctx, params=params, page=page, queues=queues, states=AGREEMENT_STATES)


def propose_agreement(console: Console, ctx: Context, form: dict[str, str]) -> Response:
    ExchangeAdmin(ctx.client).add_agreement(
        form.get("sender", "").strip(), form.get("recipient", "").strip(), form.get("purpose", "").strip()
    )
    return _back("/exchange")


def revoke_agreement(console: Console, ctx: Context, form: dict[str, str]) -> Response:
    ExchangeAdmin(ctx.client).revoke_agreement(ctx.request.path_params["agreement"])
    return _back("/exchange")


# -- audit and analytics -------------------------------------------------------------------
def _audit_entries(console: Console, ctx: Context) -> tuple[list[Any], dict[str, Any]]:
    """The whole chain, fetched through the API as this account (only entries newer than the
    ones this console already holds), and the verdict of checking it here."""
    admin = ExchangeAdmin(ctx.client)
    with console.audit_lock:
        held, public_key = console.audit_chain
        newer, public_key = fetch_all(admin.audit_page, after_seq=held[-1].seq if held else 0)
        entries = held + newer
        console.audit_chain = (entries, public_key)
        head = entries[-1].seq if entries else 0
        cached = console.audit_verified
        if cached is None or cached[0] != head:
            started = time.perf_counter()
            try:
                chain = check_chain(entries, public_key)
                verdict = {"ok": True, "entries": len(entries), "head_hash": chain.head_hash, "message": ""}
            except errors.SiloError as exc:
                verdict = {"ok": False, "entries": len(entries), "head_hash": "", "message": exc.message}
                console.audit_chain = ([], b"")  # fetch it all again next time
            verdict["seconds"] = round(time.perf_counter() - started, 3)
            console.audit_verified = cached = (head, verdict)
    return entries, cached[1]


def audit(console: Console, ctx: Context) -> Response:
    params = _params(ctx.request, "action", "site", "account")
    entries, verdict = _audit_entries(console, ctx)
    flt = views.AuditFilter(**params)
    found = [e for e in reversed(entries) if flt.matches(e)]
    page = views.paginate(found, views.page_number(ctx.request.query_params.get("page")))
    return console.render("audit.html", ctx, params=params, page=page, verdict=verdict)


ANALYTICS_FILTERS = ("dataset", "account", "site", "outcome")


def analytics(console: Console, ctx: Context) -> Response:
    """Query history, kept by the coordinator: who asked what of which sites, the totals,
    and which sites refused and why. Filtered and paged by the coordinator."""
    params = _params(ctx.request, *ANALYTICS_FILTERS)
    number = views.page_number(ctx.request.query_params.get("page"))
    found = AnalyticsClient(ctx.client).history(
        views.PAGE_SIZE,
        str((number - 1) * views.PAGE_SIZE) if number > 1 else "",
        dataset=params["dataset"].strip(),
        asked_by=params["account"].strip(),
        site=params["site"].strip(),
        outcome=params["outcome"],
    )
    page = views.api_page(found["queries"], number, found["total"])
    return console.render("analytics.html", ctx, params=params, page=page, outcomes=OUTCOMES)


def query_detail(console: Console, ctx: Context) -> Response:
    found = AnalyticsClient(ctx.client).history(1, query_id=ctx.request.path_params["query"])["queries"]
    if not found:
        raise errors.NotFound(f"no query {ctx.request.path_params['query']!r} in the history")
    return console.render("query.html", ctx, q=found[0])


# -- routes --------------------------------------------------------------------------------
def routes(console: Console) -> list[Route]:
    def page(fn):
        return console.page(lambda ctx: fn(console, ctx))

    def action(fn):
        return console.action(lambda ctx, form: fn(console, ctx, form))

    return [
        Route("/", page(overview)),
        Route("/live/overview", page(overview_fragment)),
        Route("/sites", page(sites)),
        Route("/sites", action(add_site), methods=["POST"]),
        Route("/live/sites", page(sites_fragment)),
        Route("/sites/{name}", page(site_detail)),
        Route("/sites/{name}/live", page(site_live)),
        Route("/sites/{name}/resources.json", page(site_resources)),
        Route("/sites/{name}/datasets", page(site_datasets)),
        Route("/sites/{name}/revoke", action(revoke_site), methods=["POST"]),
        Route("/training", page(training)),
        Route("/training", action(start_form.start_job), methods=["POST"]),
        Route("/training/new", page(start_form.start_form)),
        Route("/live/training", page(training_fragment)),
        Route("/training/{job}", page(job_detail)),
        Route("/training/{job}/live", page(job_live)),
        Route("/training/{job}/rounds.json", page(job_rounds)),
        Route("/training/{job}/log", page(job_log)),
        Route("/training/{job}/stop", action(stop_job), methods=["POST"]),
        Route("/models", page(models)),
        Route("/models/{name}/{version}", page(model_detail)),
        Route("/models/{name}/{version}/live", page(rollout_live)),
        Route("/models/{name}/{version}/rollout", action(start_rollout), methods=["POST"]),
        Route("/models/{name}/{version}/continue", action(continue_rollout), methods=["POST"]),
        Route("/models/{name}/{version}/rollback", action(rollback), methods=["POST"]),
        Route("/exchange", page(exchange)),
        Route("/exchange/agreements", action(propose_agreement), methods=["POST"]),
        Route("/exchange/agreements/{agreement}/revoke", action(revoke_agreement), methods=["POST"]),
        Route("/analytics", page(analytics)),
        Route("/analytics/{query}", page(query_detail)),
        Route("/audit", page(audit)),
    ]
