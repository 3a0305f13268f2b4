"""One self-contained HTML page for a run folder (``fastgan report``): config, sample grids over
time, loss and D-output curves, metrics, checkpoints, and every analysis under ``analysis/``.

Images are inlined as base64 data URIs and there is no external script or style, so the file opens
from disk or a mail attachment with no server and no network. A small inline script records any
page error (or an image that fails to decode) in the title and ``<body data-errors>``, which the
headless-browser test reads."""

from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path
from typing import Any

from fastgan.engine import runfolder
from fastgan.errors import FastganError

MAX_SAMPLE_GRIDS = 8  # sample grids shown over time, evenly spaced (first and last always)
_MIME = {".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
_ERR_SCRIPT = """<script>
window.__errors = [];
function __err(msg) { window.__errors.push(String(msg)); document.title = "ERROR: " + window.__errors[0];
  document.body && document.body.setAttribute("data-errors", window.__errors.length); }
window.onerror = function (m) { __err(m); };
window.addEventListener("load", function () {
  document.querySelectorAll("img").forEach(function (im) {
    if (!im.complete || im.naturalWidth === 0) __err("image did not decode: " + im.alt); });
  if (!window.__errors.length) document.body.setAttribute("data-errors", "0");
});
</script>"""
_STYLE = """<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1150px; color: #222; }
h1 { font-size: 22px; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 32px; }
table { border-collapse: collapse; margin: 8px 0; } td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
figure { display: inline-block; margin: 6px 12px 12px 0; vertical-align: top; }
figcaption { font-size: 12px; color: #555; } img { max-width: 100%; image-rendering: pixelated; }
pre { background: #f7f7f7; padding: 8px; overflow-x: auto; font-size: 12px; }
</style>"""


def data_uri(path: Path) -> str:
    return f"data:{_MIME[path.suffix.lower()]};base64,{base64.b64encode(path.read_bytes()).decode()}"


class _Page:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.parts: list[str] = []
        self.figures: list[str] = []  # run-folder-relative paths of every image inlined

    def add(self, s: str) -> None:
        self.parts.append(s)

    def figure(self, path: Path, caption: str, width: int | None = None) -> None:
        rel = path.relative_to(self.run_dir).as_posix() if path.is_relative_to(self.run_dir) else path.name
        self.figures.append(rel)
        w = f' width="{width}"' if width else ""
        self.add(f'<figure data-file="{html.escape(rel)}"><img alt="{html.escape(rel)}"{w} src="{data_uri(path)}">'
                 f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def figure_bytes(self, png: bytes, name: str, caption: str) -> None:
        self.figures.append(name)
        src = "data:image/png;base64," + base64.b64encode(png).decode()
        self.add(f'<figure data-file="{html.escape(name)}"><img alt="{html.escape(name)}" src="{src}">'
                 f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return html.escape("" if v is None else str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _num(v: Any) -> float:
    """A logged value as a float for a plot; anything else (an edited row's text, list, object) is a gap (NaN)."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else float("nan")


def _files(paths: Any) -> list[Path]:
    """Only regular files (symlinks to them included): a FIFO or a link to /dev/zero would block or never end."""
    return sorted(p for p in paths if p.is_file())


def _curves(rows: list[dict[str, Any]]) -> bytes | None:
    """Losses, D outputs and (when logged) evaluation metrics against the step, as one PNG."""
    train = [r for r in rows if "d_loss" in r]
    evals = [r for r in rows if any(k in r for k in ("fid", "classifier_fid", "classifier_acc"))]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = 2 + bool(evals)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.2))
    steps = [r["step"] for r in train]
    for key in ("d_loss", "g_loss", "gp"):
        if train and key in train[0]:
            axes[0].plot(steps, [_num(r.get(key)) for r in train], label=key)
    axes[0].set_title("losses")
    for key, name in (("d_real", "D(x)"), ("d_fake", "D(G(z))")):
        if train and key in train[0]:
            axes[1].plot(steps, [_num(r.get(key)) for r in train], label=name)
    axes[1].set_title("discriminator outputs")
    if evals:
        for key in ("fid", "classifier_fid", "classifier_acc"):
            pts = [(r["step"], _num(r[key])) for r in evals if key in r]
            if pts:
                axes[2].plot(*zip(*pts), "o-", label=key)
        axes[2].set_title("evaluation")
    for a in axes:
        a.set_xlabel("step")
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=8)
        a.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def _checkpoints(run_dir: Path) -> list[dict[str, Any]]:
    out = []
    files = _files((run_dir / "checkpoints").glob("step-*.pt")) + [p for p in [run_dir / "best.pt"] if p.is_file()]
    for p in files:
        row: dict[str, Any] = {"file": p.relative_to(run_dir).as_posix(), "MB": round(p.stat().st_size / 2**20, 2)}
        if p.name == "best.pt":
            try:
                from fastgan.engine.checkpoint import load_checkpoint

                ck = load_checkpoint(p)
                best = ck.get("best") if isinstance(ck.get("best"), dict) else {}
                row.update(step=ck.get("step"), best_metric=best.get("metric"), best_value=best.get("value"))
            except FastganError as e:
                row["note"] = str(e)
        else:
            m = re.search(r"step-(\d+)", p.name)
            row["step"] = int(m.group(1)) if m else None
        out.append(row)
    return out


def _scalars(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """The numbers of an analysis JSON (nested dicts flattened), protocol and file lists aside."""
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        if k in ("protocol", "files", "analysis", "per_class", "table", "results", "targets"):
            continue
        if isinstance(v, dict):
            out += _scalars(v, f"{prefix}{k}.")
        elif isinstance(v, (int, float, str)) or v is None:
            out.append((prefix + k, v))
    return out


def _analysis(page: _Page, folder: Path) -> None:
    page.add(f"<h3>{html.escape(folder.name)}</h3>")
    for js in _files(folder.glob("*.json")):
        try:
            d = json.loads(js.read_bytes().decode("utf-8", errors="replace"))
        except (ValueError, RecursionError):
            d = None
        if not isinstance(d, dict):
            page.add(f"<p>{html.escape(js.name)}: not an analysis result (invalid JSON: an interrupted analysis?)</p>")
            continue
        sc = _scalars(d)
        if sc:
            page.add(_table([{"quantity": k, "value": v} for k, v in sc], ["quantity", "value"]))
        for key in ("table", "results", "targets"):
            table = [r for r in d[key] if isinstance(r, dict)] if isinstance(d.get(key), list) else []
            if table:  # rows that are not objects (an edited file) are left out
                cols = [c for c in table[0] if not isinstance(table[0][c], (list, dict))]
                page.add(_table(table, cols))
        page.add(f"<details><summary>protocol ({html.escape(js.name)})</summary><pre>"
                 f"{html.escape(json.dumps(d.get('protocol', {}), indent=2))}</pre></details>")
    for img in _files(p for p in folder.iterdir() if p.suffix.lower() in _MIME):
        page.figure(img, img.name)


def _read_config(path: Path) -> dict[str, Any]:
    """The run's config.json, or {} when absent or unreadable: the page says so instead of failing."""
    if not path.is_file():  # a FIFO is never opened
        return {}
    try:
        cfg = json.loads(path.read_bytes().decode("utf-8", errors="replace"))
    except (OSError, ValueError, RecursionError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def build_report(run_dir: str | Path) -> tuple[str, list[str]]:
    """(HTML text, run-relative names of every figure inlined) for a run folder."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FastganError(f"run folder {run_dir} does not exist: pass the folder `fastgan train --out` wrote")
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file() and not (run_dir / "metrics.jsonl").is_file():
        raise FastganError(f"{run_dir} is not a fastgan run folder (no config.json or metrics.jsonl): "
                           "pass the folder `fastgan train --out` wrote")
    cfg = _read_config(cfg_path)
    title = f"fastgan run {run_dir.resolve().name}" + (f" ({cfg['preset']})" if isinstance(cfg.get("preset"), str) else "")
    page = _Page(run_dir)
    page.add(f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
             f"{_STYLE}{_ERR_SCRIPT}</head><body><h1>{html.escape(title)}</h1>")
    metrics = run_dir / "metrics.jsonl"
    rows = runfolder.read_jsonl(metrics)[0] if metrics.is_file() else []  # a cut line is skipped
    rows = [r for r in rows if isinstance(r.get("step"), int)]  # and a row without a step cannot be plotted
    train = [r for r in rows if "d_loss" in r]
    if train:
        last = train[-1]
        page.add(f"<p>{len(train)} log lines up to step {last['step']}; "
                 f"{html.escape(str(last.get('images_per_s', '?')))} images/s at the end.</p>")

    page.add("<h2>Configuration</h2>")
    if cfg:
        for sec in ("model", "data", "loss", "optim", "train", "eval"):
            if isinstance(cfg.get(sec), dict):
                page.add(f"<details{' open' if sec in ('model', 'train') else ''}><summary>{sec}</summary>"
                         + _table([{"key": k, "value": json.dumps(v)} for k, v in cfg[sec].items()], ["key", "value"])
                         + "</details>")
    else:
        page.add("<p>no readable config.json</p>")

    page.add("<h2>Samples over time</h2>")
    grids = _files((run_dir / "samples").glob("step-*.png"))
    if len(grids) > MAX_SAMPLE_GRIDS:
        pick = sorted({round(i * (len(grids) - 1) / (MAX_SAMPLE_GRIDS - 1)) for i in range(MAX_SAMPLE_GRIDS)})
        grids = [grids[i] for i in pick]
    final = run_dir / "samples" / "final.png"
    for g in grids + ([final] if final.is_file() else []):
        m = re.search(r"step-0*(\d+)", g.name)
        page.figure(g, f"step {m.group(1)}" if m else "final (fixed latents)", 260)
    if not grids and not final.is_file():
        page.add("<p>no sample grids yet</p>")

    page.add("<h2>Losses and discriminator outputs</h2>")
    png = _curves(rows)
    if png:
        page.figure_bytes(png, "curves (from metrics.jsonl)", "losses, D(x) and D(G(z)) per logged step")
    else:
        page.add("<p>metrics.jsonl has no training rows yet</p>")

    page.add("<h2>Metrics</h2>")
    eval_rows = [r for r in rows if any(k.startswith(("fid", "classifier_", "is")) for k in r)]
    if eval_rows:
        keys = ["step"] + sorted({k for r in eval_rows for k in r if k.startswith(("fid", "classifier_", "is"))})
        page.add(_table(eval_rows, keys[:12]))
    if train:
        keys = [k for k in train[-1] if not isinstance(train[-1][k], (list, dict))]
        page.add("<p>last training log line:</p>" + _table([train[-1]], keys))
    if not eval_rows and not train:
        page.add("<p>no metrics logged</p>")

    page.add("<h2>Checkpoints</h2>")
    ck = _checkpoints(run_dir)
    page.add(_table(ck, ["file", "step", "MB", "best_metric", "best_value"]) if ck else "<p>none</p>")

    page.add("<h2>Analyses</h2>")
    folders = sorted(p for p in (run_dir / "analysis").glob("*") if p.is_dir()) if (run_dir / "analysis").is_dir() else []
    for f in folders:
        _analysis(page, f)
    if not folders:
        page.add("<p>none yet: run <code>fastgan analyze NAME CHECKPOINT</code></p>")
    page.add(f'<p style="color:#888;font-size:12px">{len(page.figures)} figures, all inlined.</p></body></html>')
    return "\n".join(page.parts), page.figures
