"""`/app/`: the workbench's pages, rendered on the server (docs/workbench.md).

Every page but the sign-in page needs a signed-in person: without a session it sends
the browser on to `/app/login?next=<the page>`. Pages only read; every action a page
offers is a call of the `/api` route that does it (with the session cookie and the CSRF
token, by `static/workbench.js`), so the roles, refusals and audit are the API's own.
The language is the person's choice (`?lang=zh|en`, kept in the `ehs_lang` cookie).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ehswatch.alarms.store import alarm_by_id, recent_alarms
from ehswatch.analytics.heatmap import heatmap
from ehswatch.analytics.review import monthly, radar_svg
from ehswatch.api.deps import SESSION_COOKIE, DeskDep, Id
from ehswatch.audit import recent_entries
from ehswatch.config import OWNER_ROLES, ROLES, Role
from ehswatch.control_channel import ControlUnavailable
from ehswatch.desk_part import DeskPart
from ehswatch.governance import patrols
from ehswatch.hazards.model import HazardTicket
from ehswatch.people.directory import Session
from ehswatch.refusals import Refusal, refuse
from ehswatch.roles import NotFound
from ehswatch.workbench.i18n import TEXT, Lang, language
from ehswatch.workbench.mywork import SECTIONS, my_work

HERE = Path(__file__).parent
STATIC = HERE / "static"
LANG_COOKIE = "ehs_lang"

router = APIRouter(prefix="/app", include_in_schema=False)
_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _lang(request: Request) -> Lang:
    return language(
        request.query_params.get("lang"),
        request.cookies.get(LANG_COOKIE),
        request.headers.get("accept-language"),
    )


def _render(
    request: Request,
    desk: DeskPart,
    template: str,
    session: Session | None,
    **context: Any,
) -> HTMLResponse:
    lang = _lang(request)
    tz = ZoneInfo(desk.config.site.timezone)

    def when(ts: float | None) -> str:
        if ts is None:
            return ""
        return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M")

    html = _env.get_template(template).render(
        t=TEXT[lang],
        lang=lang,
        other_lang="en" if lang == "zh" else "zh",
        person=session,
        site=desk.config.site,
        when=when,
        path=request.url.path,
        **context,
    )
    answer = HTMLResponse(html)
    if request.query_params.get("lang") == lang:
        answer.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="lax", path="/")
    return answer


async def _person(request: Request, desk: DeskPart) -> Session | None:
    token = request.cookies.get(SESSION_COOKIE)
    return await desk.people.session(token) if token else None


async def _admin_only(desk: DeskPart, session: Session, page: str, why: str) -> None:
    """An admin's page: anyone else is refused (403), audited."""
    await _at_least(desk, session, "admin", page, why)


async def _at_least(desk: DeskPart, session: Session, role: Role, page: str, why: str) -> None:
    """A page for `role` and above: anyone else is refused (403), audited."""
    if session.actor.at_least(role):
        return
    a = session.actor
    refusal = Refusal(
        actor=a,
        action=f"GET /app/{page}",
        subject=f"page:{page}",
        why=f"{a.name} is {a.role}; {why}",
        forbidden=True,
    )
    await refuse(desk.db, refusal, desk.clock())


def _to_sign_in(request: Request) -> RedirectResponse:
    return RedirectResponse(f"/app/login?next={quote(request.url.path)}", status_code=303)


async def _interlocks(desk: DeskPart, session: Session) -> list[dict[str, Any]]:
    """The zones as the controller holds them now (a bypass asked for a moment ago is
    there); if it does not answer, as it last published them."""
    try:
        answer = await desk.link.call("interlock.states", session.actor)
    except ControlUnavailable:
        status = desk.status()[1]
        return list((status or {}).get("interlocks") or [])
    return list(answer["zones"])


@router.get("/login")
async def login_page(request: Request, desk: DeskDep) -> Response:
    wanted = request.query_params.get("next", "/app/")
    return _render(request, desk, "login.html", None, next=wanted)


@router.get("/")
async def my_work_page(request: Request, desk: DeskDep) -> Response:
    session = await _person(request, desk)
    if session is None:
        return _to_sign_in(request)
    alarms = await recent_alarms(desk.db, include_closed=False, limit=500)
    tickets = await desk.hazards.tickets(open_only=True)
    work = my_work(
        session.actor,
        alarms=alarms,
        tickets=tickets,
        interlocks=await _interlocks(desk, session),
        grades=desk.config.hazards.grades,
        now=desk.clock(),
        predicted=((desk.status()[1] or {}).get("predictions") or {}).get("active") or [],
    )
    return _render(request, desk, "mywork.html", session, work=work, sections=SECTIONS)


@router.get("/alarms/{alarm_id}")
async def alarm_page(alarm_id: Id, request: Request, desk: DeskDep) -> Response:
    session = await _person(request, desk)
    if session is None:
        return _to_sign_in(request)
    alarm = await alarm_by_id(desk.db, alarm_id)
    if alarm is None:
        raise NotFound(f"no alarm {alarm_id}")
    return _render(request, desk, "alarm.html", session, alarm=alarm)


@router.get("/interlocks/{zone}")
async def interlock_page(zone: str, request: Request, desk: DeskDep) -> Response:
    session = await _person(request, desk)
    if session is None:
        return _to_sign_in(request)
    il = await desk.link.call("interlock.state", session.actor, zone=zone)
    return _render(request, desk, "interlock.html", session, il=il, now=desk.clock())


@router.get("/people")
async def people_page(request: Request, desk: DeskDep) -> Response:
    """The people who sign in (admin): add, disable, enable, set a password."""
    session = await _person(request, desk)
    if session is None:
        return _to_sign_in(request)
    await _admin_only(desk, session, "people", "people are an admin's")
    people = await desk.people.list()
    return _render(request, desk, "people.html", session, people=people, roles=ROLES)


@router.get("/hazards/{ticket_id}")
async def ticket_page(ticket_id: Id, request: Request, desk: DeskDep) -> Response:
    session = await _person(request, desk)
    if session is None:
        return _to_sign_in(request)
    ticket: HazardTicket = await desk.hazards.get(ticket_id)
    evidence = await desk.hazards.evidence_of(ticket_id)
    trail = await recent_entries(desk.db, subject=f"ticket:{ticket_id}", limit=200)
    people = sorted(await desk.people.names())
    return _render(
        request,
        desk,
        "hazard.html",
        session,
        ticket=ticket,
        evidence=evidence,
        trail=list(reversed(trail)),
        people=people,
    )


@router.get("/cleaning/{zone}")
async def cleaning_page(zone: str, request: Request, desk: DeskDep) -> Response:
    """A zone's cleaning: record this shift's (its team leader), and the records."""
    session = await _person(request, desk)
    if session is None:
        return _to_sign_in(request)
    gov = desk.hazards.governance
    shift = await gov.shift_to_record(zone)  # NotFound for a zone without a rule
    found = next(z for z in desk.config.zones if z.id == zone)
    records = await gov.cleaning_records(zone=zone)
    return _render(
        request,
        desk,
        "cleaning.html",
        session,
        zone=found,
        rule=gov.rules[zone],
        shift=shift,
        records=records[:30],
    )


@router.get("/checkpoints/{checkpoint_id}")
async def checkpoint_page(checkpoint_id: str, request: Request, desk: DeskDep) -> Response:
    """What a checkpoint's QR code opens: its checklist, to record a round."""
    session = await _person(request, desk)
    if session is None:
        return _to_sign_in(request)
    gov = desk.hazards.governance
    cp = gov.checkpoint(checkpoint_id)
    window = patrols.window_at(cp, gov.tz, desk.clock())
    rounds = await gov.patrol_records(checkpoint=cp.id, limit=20)
    done = any(r["window_start"] == window[0] for r in rounds)
    return _render(
        request,
        desk,
        "checkpoint.html",
        session,
        cp=cp,
        checklist=gov.checklist(cp),
        window=window,
        done=done,
        rounds=rounds[:20],
    )


@router.get("/owners")
async def owners_page(request: Request, desk: DeskDep) -> Response:
    """The responsibility map (admin): each zone's people by role."""
    session = await _person(request, desk)
    if session is None:
        return _to_sign_in(request)
    await _admin_only(desk, session, "owners", "the map is an admin's")
    people = sorted({*await desk.people.names(), *(u.name for u in desk.config.users)})
    return _render(
        request,
        desk,
        "owners.html",
        session,
        chains=await desk.hazards.owners.chains(),
        roles=OWNER_ROLES,
        people=people,
        zone_names={z.id: z.name for z in desk.config.zones},
        cleaning_zones={z.id for z in desk.config.zones if z.cleaning is not None},
    )


@router.get("/report/{zone}")
async def report_page(zone: str, request: Request, desk: DeskDep) -> Response:
    """What a zone's public code opens: a report of a hazard or a near miss, by anyone
    signed in — or by anyone at all where the site allows anonymous reports."""
    found = next((z for z in desk.config.zones if z.id == zone), None)
    if found is None:
        raise NotFound(f"no zone {zone!r}")
    session = await _person(request, desk)
    anonymous = desk.config.governance.anonymous_reports
    if session is None and not anonymous:
        return _to_sign_in(request)
    return _render(request, desk, "report.html", session, zone=found, anonymous_allowed=anonymous)


@router.get("/review")
async def review_page(request: Request, desk: DeskDep) -> Response:
    """The monthly safety performance review (department head or above): a radar chart
    and the figures per person, and last month's (`?month=YYYY-MM`, this month by default)."""
    session = await _person(request, desk)
    if session is None:
        return _to_sign_in(request)
    await _at_least(
        desk, session, "dept_head", "review", "reviews are a department head's and above"
    )
    tz = ZoneInfo(desk.config.site.timezone)
    today = datetime.fromtimestamp(desk.clock(), tz)
    year, month = today.year, today.month
    asked = request.query_params.get("month", "")
    if len(asked) == 7 and asked[4] == "-" and asked[:4].isdigit() and asked[5:].isdigit():
        year, month = min(max(int(asked[:4]), 2000), 2999), min(max(int(asked[5:]), 1), 12)
    chains = await desk.hazards.owners.chains()
    this, last, label = await monthly(desk.config, desk.db, chains, year, month)
    prev = f"{year - 1:04d}-12" if month == 1 else f"{year:04d}-{month - 1:02d}"
    return _render(
        request,
        desk,
        "review.html",
        session,
        this=this,
        last=last,
        label=label,
        prev=prev,
        radar=radar_svg,
    )


@router.get("/heatmap")
async def heatmap_page(request: Request, desk: DeskDep) -> Response:
    """The risk heatmap: each zone by hour of the week, the riskiest periods and zones
    (`?days=`, 90 by default)."""
    session = await _person(request, desk)
    if session is None:
        return _to_sign_in(request)
    try:
        days = min(max(float(request.query_params.get("days", "90")), 1.0), 3660.0)
    except ValueError:
        days = 90.0
    now = desk.clock()
    zones = [z.id for z in desk.config.zones]
    found = await heatmap(desk.db, zones, desk.config.site.timezone, now - days * 86400, now)
    top = max((max(row) for row in found["score"]), default=0.0)
    return _render(
        request,
        desk,
        "heatmap.html",
        session,
        map=found,
        top_score=top,
        weekdays=TEXT[_lang(request)]["weekdays"].split(),
        zone_names={z.id: z.name for z in desk.config.zones},
    )


board_router = APIRouter(include_in_schema=False)


@board_router.get("/governance")
async def governance_page(request: Request, desk: DeskDep) -> Response:
    """The dust governance board: per zone, the shifts' readings, cleaning and patrols
    done and missed, open tickets and their progress, the month against the last."""
    session = await _person(request, desk)
    if session is None:
        return _to_sign_in(request)
    board = await desk.hazards.governance.board()
    tz = ZoneInfo(desk.config.site.timezone)
    units = {k: f"{k} ({v.unit})" for k, v in desk.config.sensor_types.items()}

    def minutes(seconds: float) -> str:
        return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"

    def day(ts: float) -> str:
        return datetime.fromtimestamp(ts, tz).strftime("%m-%d")

    return _render(
        request,
        desk,
        "governance.html",
        session,
        board=board,
        units=units,
        minutes=minutes,
        day=day,
    )
