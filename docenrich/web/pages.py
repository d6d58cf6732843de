"""The pages people use: documents, one document, search, sign-in."""
from __future__ import annotations

import re

from flask import (
    Blueprint,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from markupsafe import Markup, escape

from docenrich import pdf, uploads
from docenrich.client import WorkerUnavailable
from docenrich.context import MAX_CONTEXT
from docenrich.errors import caused_by
from docenrich.filters import SNIPPET_KINDS
from docenrich.search import MODES
from docenrich.storage import renditions
from docenrich.storage.terms import fold, stem
from docenrich.web.auth import csrf_ok, signed_in, token_matches, token_tag
from docenrich.web.errors import QUEUE_DOWN, QUEUE_ERRORS, ApiError
from docenrich.web.params import collection_names, search_filter_arg
from docenrich.web.presenters import collection_json, doc_json, search_json, snippet_json
from docenrich.web.trust import limiter, login_limit, safe_next

pages = Blueprint("pages", __name__)

STOPWORDS = frozenset(
    "a an and are as at be by de der die das und for from how in is it of on or the to was what which who with".split()
)
# Endpoints open to everyone even when API_TOKEN is set.
PUBLIC_ENDPOINTS = ("pages.login", "health.healthz", "static", "metrics.scrape")


def services():
    """The app's shared Services."""
    return current_app.extensions["docenrich"]


def highlight(text: str, query: str) -> Markup:
    """Escape text, then wrap in <mark> the words sharing a stem with a query word ("computing" marks
    "Compute", as the lexical index matched it); each piece is escaped on its own."""
    words = {w for w in re.findall(r"\w{2,}", query or "")}
    words = words - STOPWORDS if words - STOPWORDS else words
    wanted = {stem(fold(w)) for w in words}
    if not wanted:
        return escape(text)
    out, last = Markup(), 0
    for m in re.finditer(r"\w{2,}", text):
        if stem(fold(m.group(0))) in wanted:
            out += escape(text[last : m.start()]) + Markup("<mark>%s</mark>") % m.group(0)
            last = m.end()
    return out + escape(text[last:])


def require_login():
    """With API_TOKEN set the pages are private too: a person signs in once with the token."""
    if not current_app.config["API_TOKEN"] or signed_in():
        return None
    # /api/... answers for itself (bearer token, JSON errors), also where no route matched.
    if request.endpoint in PUBLIC_ENDPOINTS or request.blueprint == "api" or request.path.startswith("/api/"):
        return None
    return redirect(url_for("pages.login", next=request.full_path if request.method == "GET" else "/"))


def security_headers(response):
    """No sniffing, same-origin referrers, and a strict CSP on pages."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if response.mimetype == "text/html":
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'self'; "
            "form-action 'self'; frame-ancestors 'none'",
        )
    return response


@pages.route("/login", methods=["GET", "POST"])
@limiter.limit(login_limit, methods=["POST"])
def login():
    """Sign in with the API token."""
    error = None
    if request.method == "POST":
        if not csrf_ok():
            error = "The form expired; please try again."
        elif token_matches(request.form.get("token", ""), current_app.config["API_TOKEN"]):
            session["authed"] = token_tag(current_app.config["API_TOKEN"])
            return redirect(safe_next(request.args.get("next")))
        else:
            error = "That token is not right."
    return render_template("login.html", error=error), 401 if error else 200


@pages.post("/logout")
def logout():
    """Sign out."""
    if csrf_ok():
        session.clear()
    return redirect(url_for("pages.index"))


@pages.get("/")
def index():
    """The document list with the upload area."""
    store = services().store
    docs = [doc_json(d) for d in store.list_documents()]
    return render_template("index.html", documents=docs, max_upload_mb=current_app.config["MAX_UPLOAD_MB"],
                           collections=store.list_collections(), accept=",".join(uploads.accepted_extensions()))


@pages.get("/documents/<doc_id>")
def document(doc_id: str):
    """One document: its pages and snippets."""
    store = services().store
    doc = store.get_document(doc_id)
    if doc is None:
        abort(404, description="There is no document with this id; it may have been deleted.")
    by_page: dict[int, list[dict]] = {}
    for snip in store.snippets(doc_id):
        by_page.setdefault(snip.page, []).append(snippet_json(snip))
    return render_template("document.html", doc=doc_json(doc), pages=by_page,
                           collections=store.collections_of([doc_id])[doc_id])


@pages.post("/documents/<doc_id>/cancel")
def cancel_document(doc_id: str):
    """The page's Cancel button: stop the document's ingestion, then show it again."""
    if not csrf_ok():
        abort(403, description="The form expired; reload the page and try again.")
    services().cancel(doc_id)
    return redirect(url_for("pages.document", doc_id=doc_id))


@pages.get("/search")
def search_page():
    """Search, with results, notes and the reasons it could not run."""
    q = request.args.get("q", "").strip()[:1000]
    document_id = request.args.get("document") or None
    rerank = (request.args.getlist("rerank") or ["1"])[-1] not in ("0", "false", "off")
    svc = services()
    mode = request.args.get("mode") if request.args.get("mode") in MODES else svc.config["SEARCH_MODE"]
    context = context_choice(request.args.get("context"))
    result, error, status = None, None, 200
    f = None
    try:
        chosen = collection_names(request.args.getlist("collection"))
        f = search_filter_arg()
    except ApiError as exc:
        chosen, q, error, status = None, "", exc.message, 400
    if q:
        try:
            result = search_json(svc.search(q, 10, rerank, None, mode, filter=f, context=context))
        except WorkerUnavailable as exc:
            error, status = f"Search is unavailable: {exc}.", 503
        except Exception as exc:
            if not caused_by(exc, QUEUE_ERRORS):
                raise
            error, status = QUEUE_DOWN, 503
    docs = [d for d in svc.store.list_documents() if d.state == "ready"]
    return render_template(
        "search.html", q=q, result=result, error=error, documents=docs, document_id=document_id, rerank=rerank,
        mode=mode, modes=MODES, collections=svc.store.list_collections(), chosen=chosen or [],
        kinds=SNIPPET_KINDS, args=request.args, context=context, contexts=range(MAX_CONTEXT + 1),
    ), status


def context_choice(raw: str | None) -> int:
    """The page's context choice: neighbours either side of each result, 0 when absent or not a choice."""
    try:
        return min(max(int(raw or 0), 0), MAX_CONTEXT)
    except ValueError:
        return 0


@pages.get("/collections")
def collections_page():
    """Every collection with its counts."""
    found = [collection_json(c) for c in services().store.list_collections()]
    return render_template("collections.html", collections=found)


@pages.get("/collections/<name>")
def collection_page(name: str):
    """One collection: its documents, search within it, export and delete."""
    store = services().store
    found = store.get_collection(name)
    if found is None:
        abort(404, description="There is no collection with this name; it may have been deleted.")
    docs = [doc_json(d) for d in store.list_documents([found.name])]
    return render_template("collection.html", collection=collection_json(found), documents=docs)


@pages.get("/documents/<doc_id>/pages/<int:page>")
def cited_page(doc_id: str, page: int):
    """One page drawn large with its snippets' boxes over it; the cited snippet (?snippet=) marked."""
    store = services().store
    doc = store.get_document(doc_id)
    if doc is None or not 1 <= page <= max(doc.pages, 0):
        abort(404, description="There is no such page; the document may have been deleted.")
    try:
        width, height = pdf.page_size(renditions.pdf_bytes(store, doc_id), page)
    except (pdf.PDFError, ValueError, KeyError):
        abort(404, description="This page cannot be drawn.")
    snippets = [snippet_json(s) for s in store.snippets(doc_id, page=page)]
    cited = request.args.get("snippet", type=int)
    return render_template("cited.html", doc=doc_json(doc), page=page, size=(width, height),
                           snippets=snippets, cited=cited, q=request.args.get("q", "")[:1000])
