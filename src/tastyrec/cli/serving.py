"""Commands that serve recommendations: recommend, campaigns, serve, app."""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from tastyrec.config import Workspace
from tastyrec.cli.base import JsonOpt, app, err, fail, out, progress_bar, visible, warn


WITHOUT_SHOWN = 20  # customers without recommendations listed on the terminal (--json has them all)


def print_recommendations(result) -> None:
    """One row per customer: where they are, what they bought, what to offer them."""
    model = result.model
    table = Table(title=f"top {result.top_k} for {len(result.customers):,} customers "
                        f"(tastyrec-dlrm version {model['version']}{', ' + model['alias'] if model['alias'] else ''})")
    from tastyrec.reasons import percent

    days = model.get("label_days")
    chance = f"chance of buying in {days} days" if days else "chance of buying"
    for column in ("customer", "city", "purchase history (orders, last)", f"recommendations ({chance}): why"):
        table.add_column(column)
    for c in result.customers:
        history = ", ".join(f"{h['menu_item_name']} ({h['orders']}, {h['last_purchase']})" for h in c.history[:4])
        more = f" +{len(c.history) - 4} more" if len(c.history) > 4 else ""
        recs = "\n".join(f"{r['rank']}. {r['menu_item_name']} - {r['truck_brand_name'] or '-'}, "
                         f"{money(r['sale_price_usd'])} ({percent(r['score'])}): {r['reason']}" for r in c.recommendations)
        table.add_row(str(c.customer_id), f"{c.city}, {c.country}", (history + more) or "-", recs)
    out.print(table)


@app.command()
def recommend(ctx: typer.Context,
              customer: Annotated[Optional[list[int]], typer.Option(help="Customer id (repeat for several).")] = None,
              country: Annotated[Optional[list[str]], typer.Option(help="Customers of this country (repeatable).")] = None,
              city: Annotated[Optional[list[str]], typer.Option(help="Customers of this city (repeatable).")] = None,
              brand: Annotated[Optional[list[str]], typer.Option(help="Only items of this truck brand (repeatable).")] = None,
              trucks_not_visited: Annotated[bool, typer.Option(
                  "--trucks-not-visited", help="Only items of brands the customer never bought from.")] = False,
              items_not_ordered: Annotated[bool, typer.Option(
                  "--items-not-ordered", help="Only items the customer never bought.")] = False,
              top_k: Annotated[int, typer.Option(help="Items per customer (1-50).")] = 3,
              version: Annotated[Optional[str], typer.Option(help="Model version or alias (default: champion).")] = None,
              save: Annotated[Optional[str], typer.Option(help="Save the result as a campaign with this name.")] = None,
              holdout: Annotated[Optional[float], typer.Option(
                  help="With --save: the share of the customers kept as control, drawn at random: their lists are "
                       "stored but left out of the mailing files, to measure the campaign against (`campaigns "
                       "report`). Default 0.1 (10%); 0 sends to everyone.", show_default=False)] = None,
              seed: Annotated[Optional[int], typer.Option(
                  help="With --save: the seed of the control draw (default: derived from the run id; recorded "
                       "with the campaign).", show_default=False)] = None,
              every: Annotated[bool, typer.Option("--all", help="Every customer (what no --customer, --country "
                                                  "or --city also selects).")] = False,
              as_json: JsonOpt = False) -> None:
    """Top-k menu items for customers: by id, or by country / city / brand filters, or --all.

    With --save and filters (or --all), the campaign is written while it is scored, a chunk of
    customers at a time, and the lists are not printed (the counts are): any number of customers
    fits in memory. A saved campaign keeps --holdout of its customers (default 10%) as control."""
    from tastyrec.campaigns import HOLDOUT, Saving, campaign_name, features_end, holdout_seed, holdout_share
    from tastyrec.features.stores import OnlineStoreError
    from tastyrec.recommend import Engine, Filters, RecommendError

    if customer and (country or city):
        fail("give --customer ids or --country/--city filters, not both")
    if every and (customer or country or city):
        fail("--all selects every customer: give it without --customer, --country or --city")
    if save is not None and not save.strip():  # refused before the scoring, not skipped after it
        fail("--save needs a campaign name")
    if save is not None:
        try:
            save = campaign_name(save)  # too long, control characters: refused before the scoring too
        except RecommendError as e:
            fail(f"--save: {e}")
    elif holdout is not None or seed is not None:
        fail("--holdout and --seed go with --save (they choose a saved campaign's control group)")
    try:  # an impossible share or seed is refused before the scoring
        holdout = holdout_share(HOLDOUT if holdout is None else holdout)
        holdout_seed(seed, "")
    except RecommendError as e:
        fail(f"--holdout/--seed: {e}")
    filters = Filters(tuple(country or ()), tuple(city or ()), tuple(brand or ()), trucks_not_visited,
                      items_not_ordered)
    ids = list(customer) if customer else None
    campaign = None
    try:
        engine = Engine(ctx.obj, version or "champion")
        filters = engine.spelt(filters)  # as the campaign records them
        if save:  # a selection by filters is streamed: each chunk's lists go to the campaign as they come
            with Saving(ctx.obj, save, engine.model_info["version"], filters.to_dict(), holdout, seed,
                        features_end(engine.online.repo)) as saving, \
                    progress_bar(not as_json and not ids) as bar:
                result = engine.recommend(customer_ids=ids, filters=filters, top_k=top_k,
                                          sink=None if ids else saving.add, progress=bar)
                saving.add(result.customers)  # the customers given by id: printed too
            campaign = saving.campaign
        elif ids:
            with err.status("scoring..."):
                result = engine.recommend(customer_ids=ids, filters=filters, top_k=top_k)
        else:  # a selection by filters can be every customer: a progress bar
            with progress_bar(not as_json) as bar:
                result = engine.recommend(filters=filters, top_k=top_k, progress=bar)
    except (RecommendError, OnlineStoreError) as e:
        fail(str(e))
    if result.unknown_customers:
        warn(", ".join(map(str, result.unknown_customers)), label="unknown customer ids:")
    if as_json:
        print(json.dumps(result.to_dict() | {"campaign": campaign.to_dict() if campaign else None}, default=str))
    elif result.customers:
        print_recommendations(result)
    if result.message:
        err.print(result.message)
    for w in result.without_recommendations[:WITHOUT_SHOWN] if not as_json else ():
        err.print(f"  customer {w['customer_id']} ({w['city']}): {w['reason']}")
    if len(result.without_recommendations) > WITHOUT_SHOWN and not as_json:
        err.print(f"  ... and {len(result.without_recommendations) - WITHOUT_SHOWN:,} more (--json lists them all)")
    if campaign and not as_json:
        expected = campaign.totals
        out.print(f"saved campaign {campaign.name!r} as run {campaign.run_id}: {campaign.customers:,} customers "
                  f"({groups(campaign)}), {campaign.rows:,} rows; in the mailing, expected buyers "
                  f"{expected['expected_buyers']:,.1f}, expected revenue {money(expected['expected_revenue_usd'])}; "
                  f"mailing files (treated only) {', '.join(campaign.files)}")
    if save and campaign is None:  # the message above says why there are none
        fail(f"nothing was saved as campaign {save!r}: the result has no recommendations")
    if customer and not result.selected:
        raise typer.Exit(1)


campaigns_app = typer.Typer(help="Saved campaigns: list them (no command), or export, describe, rename or "
                                   "delete one (by name or run id).")
app.add_typer(campaigns_app, name="campaigns")
CampaignArg = Annotated[str, typer.Argument(help="The campaign's name, or its run id (where several share a name).",
                                            show_default=False)]


class ExportFormat(str, Enum):
    csv = "csv"
    parquet = "parquet"


FormatOpt = Annotated[ExportFormat, typer.Option("--format", case_sensitive=False,
                                                 help="csv (for spreadsheets) or parquet.")]


def money(value: float | None) -> str:
    return "no price" if value is None else f"${value:,.2f}"


def groups(campaign) -> str:
    """'900 treated, 100 control: 10% held out, seed S' (or why there is no control group)."""
    if campaign.holdout is None:
        return "all treated: saved before control groups"
    return (f"{campaign.treated:,} treated, {campaign.control:,} control: {campaign.holdout:.0%} held out, "
            f"seed {campaign.holdout_seed}")


@campaigns_app.callback(invoke_without_command=True)
def campaigns(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List saved campaigns (name, description, time, filters, customers treated / kept as control,
    the day their lists were computed for, model version)."""
    from tastyrec.campaigns import list_campaigns
    from tastyrec.recommend import RecommendError

    if ctx.invoked_subcommand is not None:
        return
    try:
        saved = list_campaigns(ctx.obj)
    except RecommendError as e:  # another process writes to the warehouse
        fail(str(e))
    if as_json:
        print(json.dumps([c.to_dict() for c in saved]))
        return
    table = Table(title="saved campaigns")
    for column in ("run id", "name", "description", "created", "filters", "customers", "treated / control",
                   "data end", "model version"):
        table.add_column(column)
    for c in saved:  # names and filters as stored, however odd: older versions checked neither
        filters = ", ".join(f"{k}={v}" for k, v in c.filters.items() if v)
        split = f"{c.treated:,} / {c.control:,}" if c.holdout is not None else "all / - (no control)"
        table.add_row(c.run_id, visible(c.name), visible(c.description or "") or "-", c.created_at.replace("T", " "),
                      visible(filters) or "-", f"{c.customers:,}", split, c.data_end or "-", str(c.model_version))
    out.print(table)


@campaigns_app.command("export")
def campaigns_export(ctx: typer.Context, name: CampaignArg,
                     fmt: FormatOpt = ExportFormat.csv,
                     output: Annotated[Optional[Path], typer.Option(
                         help="File to write, or a folder for the default name (default: the current folder, "
                              "<name>-<run id>.<format>).")] = None,
                     as_json: JsonOpt = False) -> None:
    """Write a campaign's mailing file (csv or parquet) and print its totals.

    One row per customer: first name, e-mail, preferred language, city, country, then each item
    with brand, price, chance of buying and reason, then the chance of buying any of them and the
    expected revenue. Personal fields appear only in such files."""
    from tastyrec.campaigns import export_campaign
    from tastyrec.recommend import RecommendError

    try:
        campaign, path, totals = export_campaign(ctx.obj, name, fmt.value, output)
    except RecommendError as e:
        fail(str(e))
    except OSError as e:  # a folder that does not exist, no permission
        fail(f"could not write the file: {e.strerror or e}{' (' + str(e.filename) + ')' if e.filename else ''}")
    if as_json:
        print(json.dumps({"campaign": campaign.to_dict() | {"totals": totals}, "path": str(path)}))
        return
    out.print(f"exported campaign {campaign.name!r} (run {campaign.run_id}) to {path}")
    out.print(f"{totals['customers']:,} customers; expected buyers {totals['expected_buyers']:,.1f}, expected revenue "
              f"{money(totals['expected_revenue_usd'])} (if each chance of buying within the label window holds)")


@campaigns_app.command("report")
def campaigns_report(ctx: typer.Context, name: CampaignArg,
                     days: Annotated[int, typer.Option(min=1, help="Days of orders after the campaign's serving day "
                                                                  "to measure.")] = 28,
                     as_json: JsonOpt = False) -> None:
    """Did the campaign work? Its treated customers against its control group over the orders of the
    --days after the day its lists were computed for: the share who bought an item of their list,
    the list items bought and their revenue per customer; each difference with a 95% interval
    (normal approximation: unpooled for the share, Welch for the means).

    When the orders do not cover the window yet it says so (and shows the figures so far, marked
    partial); a campaign without a control group is named as such. Neither is an error."""
    from tastyrec.campaign_report import campaign_report
    from tastyrec.recommend import RecommendError

    try:
        report = campaign_report(ctx.obj, name, days)
    except RecommendError as e:
        fail(str(e))
    if as_json:
        print(json.dumps(report.to_dict()))
        return
    out.print(f"campaign {report.name!r} (run {report.run_id}): {report.treated:,} treated, {report.control:,} "
              f"control" + (f"; orders from {report.data_end} to {report.window_last_day} ({report.days} days)"
                            if report.window_last_day else ""))
    if report.message:
        out.print(report.message)
    if not report.figures:
        return
    shown = {"share": lambda v: f"{v:.1%}", "items": lambda v: f"{v:,.3f}", "revenue_usd": money}
    signed = {"share": lambda v: f"{v * 100:+.1f} pts", "items": lambda v: f"{v:+,.3f}",
              "revenue_usd": lambda v: f"{'+' if v >= 0 else '-'}${abs(v):,.2f}"}
    table = Table(title="treated vs control" + ("" if report.complete else " (partial)"))
    for column in ("measure", "treated", "control", "difference", "95% interval"):
        table.add_column(column)
    for f in report.figures:
        ci = f"{signed[f.measure](f.low)} .. {signed[f.measure](f.high)}" if f.low is not None else "- (a group of one)"
        table.add_row(f.label, shown[f.measure](f.treated), shown[f.measure](f.control), signed[f.measure](f.difference),
                      ci)
    out.print(table)
    out.print(report.method)


@campaigns_app.command("describe")
def campaigns_describe(ctx: typer.Context, name: CampaignArg,
                       text: Annotated[str, typer.Argument(help="The description (\"\" clears it).",
                                                           show_default=False)]) -> None:
    """Set a campaign's description (shown in the listing and the app)."""
    from tastyrec.campaigns import describe_campaign
    from tastyrec.recommend import RecommendError

    try:
        campaign = describe_campaign(ctx.obj, name, text)
    except RecommendError as e:
        fail(str(e))
    done = "described" if campaign.description else "has no description now"
    out.print(f"campaign {campaign.name!r} (run {campaign.run_id}) {done}")


@campaigns_app.command("rename")
def campaigns_rename(ctx: typer.Context, name: CampaignArg,
                     new_name: Annotated[str, typer.Argument(help="The new name.", show_default=False)]) -> None:
    """Rename a campaign: its rows and its stage files together, all or nothing."""
    from tastyrec.campaigns import rename_campaign
    from tastyrec.recommend import RecommendError

    try:
        campaign = rename_campaign(ctx.obj, name, new_name)
    except RecommendError as e:
        fail(str(e))
    out.print(f"campaign {name!r} (run {campaign.run_id}) is now {campaign.name!r}"
              f"{': ' + ', '.join(campaign.files) if campaign.files else ''}")


@campaigns_app.command("delete")
def campaigns_delete(ctx: typer.Context, name: CampaignArg,
                     yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False) -> None:
    """Delete a campaign: its rows and its stage files together, all or nothing."""
    from tastyrec.campaigns import delete_campaign, find_campaign
    from tastyrec.recommend import RecommendError

    try:
        campaign = find_campaign(ctx.obj, name)
        if not yes and not typer.confirm(f"delete campaign {campaign.name!r} (run {campaign.run_id}, "
                                         f"{campaign.customers:,} customers) and its files?", err=True):
            fail("nothing was deleted")
        campaign = delete_campaign(ctx.obj, campaign.run_id)
    except RecommendError as e:
        fail(str(e))
    out.print(f"deleted campaign {campaign.name!r} (run {campaign.run_id}): {campaign.rows:,} rows"
              f"{', ' + ', '.join(campaign.files) if campaign.files else ''}")


@app.command()
def serve(ctx: typer.Context,
          host: Annotated[str, typer.Option(help="Address to listen on (loopback unless a token is set).")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
          workers: Annotated[int, typer.Option(min=1, help="Worker processes (each opens the model once).")] = 1,
          version: Annotated[Optional[str], typer.Option(help="Model version or alias (default: champion).")] = None,
          ) -> None:
    """Start the REST inference service (FastAPI + uvicorn; OpenAPI docs at /docs). Ctrl-C stops it.

    Set TASTYREC_API_TOKEN (printable ASCII, 16 characters or more) to require `Authorization:
    Bearer <token>`; it is required off loopback. Without it, only loopback Host names are answered.
    Exposed beyond this machine, put a reverse proxy in front (docs/serving.md, "Security")."""
    import tempfile

    import uvicorn

    from tastyrec import service
    from tastyrec.recommend import Engine, RecommendError
    from tastyrec.registry.lineage import drift

    ws: Workspace = ctx.obj
    token = os.environ.get(service.TOKEN_ENV) or None
    if token:
        try:  # a token that no request could match, or too short: refused before anything is opened
            service.validate_token(token)
        except ValueError as e:
            fail(str(e))
    if not token and not service.is_loopback(host):
        fail(f"refusing to serve on {host} without a token: set {service.TOKEN_ENV} (clients then send "
             "`Authorization: Bearer <token>`), or listen on 127.0.0.1")
    ref = version or "champion"
    try:
        # errors (no model, no features) before listening, in plain words; one worker serves with it
        engine = Engine(ws, ref, precompute=workers == 1)
    except RecommendError as e:
        fail(str(e))
    info = engine.model_info
    if warning := drift(ws, info["version"]):
        warn(warning)
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    # a wildcard address listens on every interface but is none to open: the docs on this machine's loopback
    local = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host)
    docs = f"http://{local}:{port}/docs" if local else f"{url}/docs"
    out.print(f"serving tastyrec-dlrm version {info['version']}{' (' + info['alias'] + ')' if info['alias'] else ''} "
              f"at {url} (docs {docs}), {workers} worker{'s' if workers > 1 else ''}"
              f"{', bearer token required' if token else ''}; Ctrl-C stops it")
    if workers == 1:
        uvicorn.run(service.create_app(ws, ref, token, engine=engine), host=host, port=port,
                    **service.SERVER_SETTINGS)
        return
    del engine  # each worker process opens its own, from the environment set here
    with tempfile.TemporaryDirectory(prefix="tastyrec-serve-") as tmp:
        os.environ.update({service.HOME_ENV: str(ws.home), service.REF_ENV: ref,
                           service.STAMP_ENV: str(Path(tmp, "reload"))})
        uvicorn.run("tastyrec.service:app_from_env", factory=True, host=host, port=port, workers=workers,
                    **service.SERVER_SETTINGS)


@app.command("app")
def streamlit_app(ctx: typer.Context,
                  port: Annotated[int, typer.Option(help="Port to listen on.")] = 8501,
                  host: Annotated[str, typer.Option(help="Address to listen on (the app has no login).")] = "127.0.0.1",
                  service: Annotated[Optional[str], typer.Option(
                      help="Get recommendations from this `tastyrec serve` URL instead of an in-process engine "
                           "(its token from TASTYREC_API_TOKEN).")] = None) -> None:
    """Start the Streamlit app for marketing people (streamlit run, headless, no usage statistics).
    Ctrl-C stops it."""
    from tastyrec.app import command
    from tastyrec.registry import RegistryError, champion_version

    ws: Workspace = ctx.obj
    if not ws.warehouse.exists():
        fail(f"no warehouse in {ws.home}: run `tastyrec pipeline` first")
    if not service:
        try:
            version = champion_version(ws)
        except RegistryError as e:
            fail(str(e))
        if version is None:
            fail(f"no champion model in {ws.home}: run `tastyrec pipeline` (or `tastyrec train`) first")
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    out.print(f"app at {url} ({'recommendations from ' + service if service else 'engine in-process'}, "
              f"workspace {ws.home}); Ctrl-C stops it")
    if host not in ("127.0.0.1", "localhost", "::1"):
        warn(f"the app has no login: anyone who can reach {url} can use it")
    sys.stdout.flush()
    sys.stderr.flush()
    argv = command(ws.home, port, host, service)
    os.execv(argv[0], argv)  # streamlit takes over this process: Ctrl-C and kill reach it directly
