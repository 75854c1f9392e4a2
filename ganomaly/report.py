"""One HTML page per run: title, metrics, figures and configuration.

The page has inline CSS and no scripts, fonts or other external resources; figures are linked
by their path relative to the run directory (``figures/roc.png``), so the directory can be
moved, zipped or served as a whole. Every value is HTML-escaped.

Example:
    >>> import pathlib, tempfile
    >>> run_dir = pathlib.Path(tempfile.mkdtemp())
    >>> page = write_report(run_dir, {"auroc": 0.91234}, {"data": "mnist"}, [])
    >>> "0.9123" in page.read_text()
    True
"""

from __future__ import annotations

import datetime as dt
import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from ganomaly.atomic import atomic_write_text

__all__ = ["write_report"]

ORACLE_NOTE = "oracle: uses test labels, for comparison only"

_CSS = """
:root { --fg: #1d2430; --muted: #5b6472; --line: #e3e7ee; --accent: #2f6fdb; --warn: #b4531a; }
* { box-sizing: border-box; }
body { margin: 0; background: #f6f7fb; color: var(--fg);
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 32px 24px 64px; }
h1 { font-size: 1.6rem; margin: 0 0 4px; }
h2 { font-size: 1.15rem; margin: 36px 0 12px; padding-bottom: 6px;
     border-bottom: 2px solid var(--line); }
.sub { color: var(--muted); margin: 0; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 10px;
        padding: 4px 0; overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 7px 16px; border-bottom: 1px solid var(--line);
         vertical-align: top; }
tr:last-child th, tr:last-child td { border-bottom: none; }
th { font-weight: 600; white-space: nowrap; width: 35%; }
td { font-variant-numeric: tabular-nums; word-break: break-word; }
tr.oracle th, tr.oracle td { color: var(--warn); }
.badge { display: inline-block; margin-left: 8px; padding: 1px 8px; border-radius: 999px;
         background: #fdf0e6; color: var(--warn); font-size: 0.78rem; font-weight: 500; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr));
           gap: 18px; }
figure { margin: 0; background: #fff; border: 1px solid var(--line); border-radius: 10px;
         padding: 12px; }
figure img { display: block; width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 0.9rem; margin-top: 8px; }
.steps p { margin: 10px 0 4px; }
.steps pre { margin: 0; padding: 8px 12px; background: #fff; border: 1px solid var(--line);
             border-radius: 8px; overflow-x: auto; }
footer { color: var(--muted); font-size: 0.8rem; margin-top: 40px; }
"""


def _format(value: Any) -> str:
    """A value as table text: floats to 4 decimals (4 significant digits when tiny)."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        value = float(value)  # numpy float32 / float64 too
        if not math.isfinite(value):
            return str(value)
        # Raw latent scores and thresholds can be ~1e-4: "0.0000" would hide them.
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.4g}"
        return f"{value:.4f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_format(v) for v in value)
    return str(value)


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Nested dicts as dotted keys, so sections of a config or per-class metrics get rows."""
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, f"{name}.")
        else:
            yield name, value


def _lookup(config: Mapping[str, Any], key: str) -> Any:
    """``config[key]``, else the first nested scalar named ``key`` (e.g. ``data.protocol``)."""
    value = config.get(key)
    if value is not None and not isinstance(value, Mapping):
        return value
    for name, nested in _flatten(config):
        if name.rsplit(".", 1)[-1] == key and nested is not None:
            return nested
    return None


def _title(config: Mapping[str, Any]) -> str:
    parts = []
    data, protocol, target = (_lookup(config, k) for k in ("data", "protocol", "target_class"))
    if data is not None:
        parts.append(str(data))
    if protocol is not None:
        parts.append(f"protocol {protocol}")
    if target is not None:
        parts.append(f"target class {target}")
    return "GANomaly report" + (f": {' · '.join(parts)}" if parts else "")


def _table(rows: Sequence[tuple[str, Any]], mark_oracle: bool = False) -> str:
    if not rows:
        return '<div class="card"><table><tr><td>none</td></tr></table></div>'
    lines = []
    for name, value in rows:
        oracle = mark_oracle and "oracle" in name
        badge = f'<span class="badge">{escape(ORACLE_NOTE)}</span>' if oracle else ""
        css = ' class="oracle"' if oracle else ""
        lines.append(
            f"<tr{css}><th>{escape(name)}{badge}</th><td>{escape(_format(value))}</td></tr>"
        )
    return '<div class="card"><table>\n' + "\n".join(lines) + "\n</table></div>"


def write_report(
    run_dir: Path,
    metrics: Mapping[str, Any],
    config: Mapping[str, Any],
    figures: Sequence[tuple[str, str]],
    card: Mapping[str, Any] | None = None,
    next_steps: Sequence[tuple[str, str]] = (),
) -> Path:
    """Write ``run_dir/report.html`` and return its path.

    Args:
        run_dir: the run directory (created if missing).
        metrics: as in ``metrics.json``; nested dicts become dotted rows. Rows whose name
            contains "oracle" (``best_f1_oracle``) are marked as using the test labels.
        config: the run's configuration; ``data``, ``protocol`` and ``target_class`` (top
            level, or the first nested key of that name) make up the title.
        figures: ``(path relative to run_dir, caption)`` pairs, shown in this order.
        card: the model card (``GANomalyDetector.model_card()``), shown as its own table.
        next_steps: ``(what, command)`` pairs shown under "Next steps", before the metrics.

    The file is written to a temporary name and renamed, so a crash never leaves a
    half-written report over a previous one.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    title = _title(config)
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    figure_html = "\n".join(
        f'<figure><img src="{escape(src)}" alt="{escape(caption)}" loading="lazy">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
        for src, caption in figures
    )
    steps_html = "\n".join(
        f"<p>{escape(what)}</p><pre><code>{escape(command)}</code></pre>"
        for what, command in next_steps
    )
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<h1>{escape(title)}</h1>
<p class="sub">Run directory: {escape(run_dir.name)} · generated {generated}</p>
{f'<h2>Next steps</h2>{chr(10)}<div class="steps">{steps_html}</div>' if steps_html else ""}
<h2>Metrics</h2>
{_table(list(_flatten(metrics)), mark_oracle=True)}
<h2>Figures</h2>
<div class="figures">
{figure_html or '<p class="sub">No figures.</p>'}
</div>
{f"<h2>Model</h2>{chr(10)}{_table(list(_flatten(card)))}" if card else ""}
<h2>Configuration</h2>
{_table(list(_flatten(config)))}
<footer>Scores are raw (higher = more abnormal); an image is flagged when its score is above
the saved threshold (fitted on validation normals unless set by hand), never one chosen on
the test set. Figures are linked from this directory.</footer>
</main>
</body>
</html>
"""
    return atomic_write_text(run_dir / "report.html", page)
