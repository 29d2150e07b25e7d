"""The offline HTML report ``index.html`` of a ``loradyn reproduce`` run.

One self-contained page: inline CSS, images referenced by relative path
(``figures/figN.png``), no CDN, no web fonts, no network access. A tiny inline script
counts the images that rendered (``naturalWidth > 0``) and writes the counts into the
element ``#img-check`` (``data-total``, ``data-loaded``), which the browser test reads.
"""

from __future__ import annotations

import html
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ..io import atomic_write_text
from .claims import summary, summary_text
from .registry import VERDICTS

# where the claims that fail or are inconclusive are discussed (the repository's docs)
DIFFERENCES_DOC = "docs/paper-differences.md"
DIFFERENCES_URL_ENV = "LORADYN_DIFFERENCES_URL"

if TYPE_CHECKING:
    from .runner import ReproduceResult

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;
  color:#1d1d1f;background:#fafafa;line-height:1.45}
main{max-width:1100px;margin:0 auto;padding:1.5rem}
h1{font-size:1.6rem;margin:.2rem 0}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid
  #ddd;padding-bottom:.2rem}h3{font-size:1.05rem;margin:.3rem 0}
.meta{color:#555;font-size:.9rem}
figure{background:#fff;border:1px solid #e3e3e3;border-radius:6px;margin:1.2rem 0;padding:.8rem}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{font-size:.88rem;color:#333;margin-top:.5rem}
.links{font-size:.8rem;color:#666}.links a{color:#0b5cad}
table{border-collapse:collapse;width:100%;font-size:.83rem;background:#fff}
th,td{border:1px solid #ddd;padding:.3rem .45rem;vertical-align:top;text-align:left}
th{background:#f0f0f0}
.v-holds{background:#e6f4ea;color:#176b2c;font-weight:600}
.v-fails{background:#fdecea;color:#a31515;font-weight:600}
.v-inconclusive{background:#fff4d6;color:#7a5a00;font-weight:600}
.v-not-tested{background:#f3f3f3;color:#666}
.summary span{display:inline-block;padding:.1rem .45rem;margin-right:.3rem;border-radius:4px}
.pending{color:#8a6d00}.failed{color:#a31515}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.8rem}
pre{background:#f4f4f4;padding:.6rem;overflow-x:auto}
nav a{margin-right:.6rem;font-size:.85rem;color:#0b5cad}
#img-check{font-size:.8rem;color:#666}
"""

SCRIPT = """
(function(){
  function check(){
    var imgs=document.querySelectorAll('img.fig');
    var ok=0;
    for(var i=0;i<imgs.length;i++){ if(imgs[i].complete && imgs[i].naturalWidth>0){ok++;} }
    var el=document.getElementById('img-check');
    el.setAttribute('data-total', imgs.length);
    el.setAttribute('data-loaded', ok);
    el.textContent=ok+' of '+imgs.length+' images rendered';
  }
  window.addEventListener('load', check);
})();
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return os.path.relpath(path, root).replace(os.sep, "/")


def _differences_href(root: Path) -> str:
    """Link to ``docs/paper-differences.md``: ``$LORADYN_DIFFERENCES_URL`` if set, else a
    relative path when the report sits inside the repository checkout (``report/``),
    else the path of the installed package's repository docs."""
    env = os.environ.get(DIFFERENCES_URL_ENV)
    if env:
        return env
    repo = Path(__file__).resolve().parents[3]
    doc = repo / DIFFERENCES_DOC
    return _rel(doc, root) if doc.is_file() else DIFFERENCES_DOC


def render(result: ReproduceResult) -> str:
    """The report's HTML text."""
    from .environment import package_versions

    root = result.out
    counts = summary(result.claims)
    parts: list[str] = []
    parts.append("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>")
    parts.append("<meta name='viewport' content='width=device-width, initial-scale=1'>")
    parts.append("<title>loradyn: reproduction of 'When pre-training hurts LoRA fine-tuning'"
                 "</title>")
    parts.append(f"<style>{CSS}</style></head><body><main>")
    parts.append("<h1>When pre-training hurts LoRA fine-tuning: reproduction</h1>")
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(
        f"<p class='meta'>scale <b>{_e(result.scale)}</b> &middot; engine "
        f"<b>{_e(result.engine)}</b> &middot; run time <b>{result.seconds:.1f} s</b> &middot; "
        f"{now} &middot; {len(result.done)} made, {len(result.pending)} pending, "
        f"{len(result.failed)} failed &middot; claims: {_e(summary_text(counts))}</p>"
    )
    parts.append("<p id='img-check' data-total='-1' data-loaded='-1'>images not checked</p>")
    nav = " ".join(f"<a href='#{_e(i.id)}'>{_e(i.id)}</a>" for i in result.done)
    parts.append(f"<nav>{nav} <a href='#claims'>claims</a> <a href='#pending'>pending</a> "
                 "<a href='#config'>configuration</a></nav>")

    parts.append("<h2>Figures and tables</h2>")
    for item in result.done:
        fo = item.output
        assert fo is not None
        parts.append(f"<figure id='{_e(item.id)}'><h3>{_e(item.id)}: {_e(item.title)}</h3>")
        for f in fo.files:
            if f.suffix.lower() == ".png":
                parts.append(f"<img class='fig' src='{_e(_rel(f, root))}' alt='{_e(item.id)}'>")
        if fo.html:
            parts.append(fo.html)
        parts.append(f"<figcaption>{_e(fo.caption)}</figcaption>")
        links = [f"<a href='{_e(_rel(f, root))}'>{_e(f.name)}</a>" for f in fo.files + fo.data]
        parts.append(f"<p class='links'>files: {' '.join(links)} &middot; made in "
                     f"{item.seconds:.1f} s</p></figure>")

    parts.append("<h2 id='claims'>Claims</h2>")
    parts.append(
        "<p class='summary' id='claims-summary' " + " ".join(
            f"data-{_e(v)}='{counts[v]}'" for v in VERDICTS) + ">" + "".join(
            f"<span class='v-{_e(v)}'>{counts[v]} {_e(v)}</span>" for v in VERDICTS) +
        f"&middot; {len(result.claims)} claims</p>")
    parts.append(
        "<p class='meta'>Each row quotes the paper's surviving text and is evaluated from the "
        "data produced in this run (<a href='claims.csv'>claims.csv</a>). Simulation rows "
        "rest on a stated statistical test whose p-value or interval is in the measured "
        "column: <b>holds</b> and <b>fails</b> are what the test decides, "
        "<b>inconclusive</b> means the test cannot tell at this sample size, <b>not-tested</b> "
        "that no data was made. Where and why we differ from the paper: "
        f"<a href='{_e(_differences_href(root))}'>{_e(DIFFERENCES_DOC)}</a>.</p>")
    parts.append("<table><thead><tr><th>id</th><th>section</th><th>statement</th>"
                 "<th>measured</th><th>expected</th><th>verdict</th></tr></thead><tbody>")
    for c in result.claims:
        parts.append(
            f"<tr><td>{_e(c.id)}</td><td>{_e(c.section)}</td><td>{_e(c.statement)}</td>"
            f"<td>{_e(c.measured)}</td><td>{_e(c.expected)}</td>"
            f"<td class='v-{_e(c.verdict)}'>{_e(c.verdict)}</td></tr>"
        )
    parts.append("</tbody></table>")

    parts.append("<h2 id='pending'>Pending and failed</h2>")
    rest = result.pending + result.failed
    if not rest:
        parts.append("<p>Nothing pending.</p>")
    else:
        parts.append("<ul>")
        for i in rest:
            parts.append(f"<li class='{_e(i.status)}'><b>{_e(i.id)}</b> ({_e(i.title)}): "
                         f"{_e(i.status)} &mdash; {_e(i.reason)}</li>")
        parts.append("</ul>")

    parts.append("<h2 id='config'>Configuration and versions</h2>")
    config = {
        "scale": result.scale,
        "engine": result.engine,
        "run_seconds": round(result.seconds, 2),
        "items": {i.id: {"status": i.status, "seconds": round(i.seconds, 2)} for i in result.items},
    }
    parts.append(f"<pre>{_e(json.dumps(config, indent=1))}</pre>")
    vers = package_versions()
    parts.append("<table><tbody>" + "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in vers.items()) + "</tbody></table>")
    parts.append(f"</main><script>{SCRIPT}</script></body></html>")
    return "\n".join(parts)


def write_report(result: ReproduceResult) -> Path:
    """Write ``index.html`` into ``result.out`` atomically and return its path."""
    text = render(result)
    return atomic_write_text(result.out / "index.html", text, mkdir=False)
