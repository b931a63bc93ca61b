"""Writing a comparison: results.csv, summary.md, and report.html with spectrograms and audio players.

The report folder is self-contained and works offline: report.html refers to
figures/*.png and audio/*/*.wav by relative paths, and has no external scripts or
styles. A small inline script marks every image and audio element with
`data-load="ok"` or `"error"` once the browser has (or has not) loaded it, shows a
line saying so, and writes a visible message next to anything that failed to load.
"""

from __future__ import annotations

import csv
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from restorekit_tools.compare.stats import ROW_KEYS, Stat, SummaryRow, summarize

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from restorekit.audio import Audio
    from restorekit_tools.compare.run import CompareRun

CSV_NAME = "results.csv"
SUMMARY_NAME = "summary.md"
HTML_NAME = "report.html"
AUDIO_DIR = "audio"
FIGURE_DIR = "figures"
AUDIO_BITS = 16
MAX_COLUMNS = 800  # spectrogram columns per image row
MAX_BINS = 384  # spectrogram rows per image row
RANGE_DB = 90.0  # colour range of the spectrograms below their loudest point


def _safe(name: str) -> str:
    """A file-name-safe slug: letters, digits, '-' and '_' only (no dots, so no fake suffixes)."""
    return re.sub(r"[^A-Za-z0-9-]+", "_", name).strip("_") or "x"


@dataclass
class _Entry:
    label: str
    audio: str | None = None  # relative path
    spec: np.ndarray | None = None  # dB, (bins, columns)
    duration_s: float = 0.0
    nyquist_hz: float = 0.0
    note: str = ""
    error: str | None = None


@dataclass
class _FileAssets:
    slug: str
    entries: list[_Entry] = field(default_factory=list)
    figure: str | None = None
    figure_error: str | None = None


class ReportAssets:
    """Listening copies (16-bit wav) and one spectrogram figure per file, written as a run goes."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.files: dict[str, _FileAssets] = {}
        self._slugs: set[str] = set()

    def _file(self, name: str) -> _FileAssets:
        if name not in self.files:
            slug, k = _safe(name), 1
            while slug in self._slugs:
                k += 1
                slug = f"{_safe(name)}_{k}"
            self._slugs.add(slug)
            self.files[name] = _FileAssets(slug)
        return self.files[name]

    def add(self, name: str, label: str, audio: Audio) -> None:
        """Write the listening copy of one version of a file and keep its (small) spectrogram."""
        import numpy as np

        from restorekit.io import write_audio

        fa = self._file(name)
        entry = _Entry(label, duration_s=audio.duration_s, nyquist_hz=audio.sample_rate / 2)
        fa.entries.append(entry)
        rel = f"{AUDIO_DIR}/{fa.slug}/{_safe(label)}.wav"
        audio = audio.to("cpu")
        peak = float(np.abs(audio.numpy()).max()) if audio.frames else 0.0
        if peak >= 1.0:
            entry.note = f"peaks at {20 * math.log10(peak):+.1f} dBFS: clipped in this 16-bit listening copy"
        try:
            write_audio(self.out / rel, audio, bit_depth=AUDIO_BITS)
            entry.audio = rel
        except Exception as exc:  # noqa: BLE001 - the report still shows the numbers
            entry.error = f"could not write the listening copy: {exc}"
        entry.spec = spectrogram_db(audio)

    def add_failure(self, name: str, label: str, error: str) -> None:
        self._file(name).entries.append(_Entry(label, error=error))

    def finish_file(self, name: str) -> None:
        """Draw the file's spectrogram comparison and drop the spectrogram data."""
        fa = self._file(name)
        rel = f"{FIGURE_DIR}/{fa.slug}.png"
        try:
            draw_spectrograms(fa.entries, self.out / rel, title=name)
            fa.figure = rel
        except Exception as exc:  # noqa: BLE001
            fa.figure_error = f"could not draw the spectrograms: {type(exc).__name__}: {exc}"
        for e in fa.entries:
            e.spec = None


def spectrogram_db(audio: Audio) -> np.ndarray:
    """A display spectrogram of the mono downmix in dB re full scale, at most MAX_BINS x MAX_COLUMNS."""
    import numpy as np

    from restorekit_plugins.spectral import hann, stft_blocks

    rate = audio.sample_rate
    n_fft = 1024 if rate >= 32000 else 512 if rate >= 16000 else 256
    hop = max(n_fft // 4, math.ceil(audio.frames / MAX_COLUMNS))
    mono = audio.numpy().mean(axis=0, keepdims=True)
    blocks = [b[0] for b in stft_blocks(mono, n_fft, hop)]
    p = np.concatenate(blocks, axis=0).T  # (bins, frames)
    p = np.abs(p) ** 2 / (hann(n_fft).sum() / 2) ** 2
    if p.shape[0] > MAX_BINS:
        group = math.ceil(p.shape[0] / MAX_BINS)
        rows = p.shape[0] // group * group
        p = p[:rows].reshape(-1, group, p.shape[1]).mean(axis=1)
    return (10 * np.log10(p + 1e-12)).astype(np.float32)


def draw_spectrograms(entries: list[_Entry], path: Path, title: str = "") -> None:
    """One PNG with a spectrogram row per version (clean, degraded, each pipeline), shared colours."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    specs = [e.spec for e in entries if e.spec is not None]
    vmax = max((float(s.max()) for s in specs), default=0.0)
    vmin = vmax - RANGE_DB
    top_khz = max((e.nyquist_hz for e in entries), default=1.0) / 1000
    longest = max((e.duration_s for e in entries), default=1.0) or 1.0
    fig = Figure(figsize=(10, 1.55 * len(entries) + 0.7))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(entries), 1, squeeze=False, sharex=True)[:, 0]
    image = None
    for ax, e in zip(axes, entries):
        ax.set_ylabel("kHz")
        ax.set_title(e.label, loc="left", fontsize=10)
        ax.set_ylim(0, top_khz)
        ax.set_xlim(0, longest)
        ax.set_facecolor("#d9d9d9")  # grey: above this version's Nyquist frequency, or past its end
        if e.spec is None:
            ax.text(0.5, 0.5, f"failed: {e.error or 'no audio'}"[:140], ha="center", va="center",
                    transform=ax.transAxes, fontsize=9, color="#b00020", wrap=True)
            continue
        image = ax.imshow(e.spec, origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax,
                          extent=(0, e.duration_s, 0, e.nyquist_hz / 1000), interpolation="nearest")
    axes[-1].set_xlabel("time (s)")
    if title:
        fig.suptitle(title, fontsize=11)
    if image is not None:
        fig.colorbar(image, ax=list(axes), label="dB re full scale", fraction=0.025, pad=0.01)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)


# -- numbers ----------------------------------------------------------------------------------


def _num(v: float | None, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    a = abs(v)
    digits = 4 if a < 1 else 3 if a < 10 else 2 if a < 100 else 1 if a < 1000 else 0
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def _ci(s: Stat | None, signed: bool = False) -> str:
    if s is None or s.n < 2 or math.isnan(s.low):
        return "—"
    return f"[{_num(s.low, signed)}, {_num(s.high, signed)}]"


def verdict(row: SummaryRow, higher_is_better: bool | None) -> str:
    """better / worse / changed when the CI of the difference excludes zero; else 'no clear change'."""
    return diff_verdict(row.diff, higher_is_better)


def diff_verdict(d: Stat | None, higher_is_better: bool | None) -> str:
    """The verdict on a paired difference (see `verdict`); '' for the baseline itself (None)."""
    if d is None:
        return ""
    if d.n < 2:
        return "too few files"
    if not d.excludes_zero:
        return "no clear change"
    if higher_is_better is None:
        return "changed"
    return "better" if (d.mean > 0) == higher_is_better else "worse"


def _metric_info(run: CompareRun) -> dict[str, tuple[str, str, bool | None]]:
    return {m.id: (m.summary, m.unit, m.higher_is_better) for m in run.metrics}


def _metric_order(run: CompareRun, summary: list[SummaryRow]) -> list[str]:
    """Metrics in the order they were chosen, then any others found in the rows."""
    return list(dict.fromkeys([*(m.id for m in run.metrics if any(r.metric == m.id for r in summary)),
                               *(r.metric for r in summary)]))


def _unit_suffix(info: dict, metric: str) -> str:
    unit = info.get(metric, ("", "", None))[1]
    return f" ({unit})" if unit else ""


def _direction(hib: bool | None) -> str:
    return "higher is better" if hib else "lower is better" if hib is False else "neither better nor worse"


# -- writers ------------------------------------------------------------------------------------


def write_report(run: CompareRun, out: Path, assets: ReportAssets | None = None) -> dict[str, Path]:
    """Write results.csv, summary.md and report.html into `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(run.rows, run.delta_row)
    paths = {"csv": out / CSV_NAME, "summary": out / SUMMARY_NAME, "html": out / HTML_NAME}
    write_csv(run.rows, paths["csv"])
    paths["summary"].write_text(summary_markdown(run, summary), encoding="utf-8")
    paths["html"].write_text(report_html(run, summary, assets), encoding="utf-8")
    return paths


def write_csv(rows: list[dict], path: Path) -> None:
    """One row per file x pipeline x metric: file, pipeline, metric, value, unit, error, notes."""

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(ROW_KEYS)
        for r in rows:
            value = r.get("value")
            w.writerow([r["file"], r["pipeline"], r["metric"], "" if value is None else repr(float(value)),
                        r.get("unit") or "", r.get("error") or "", r.get("notes") or ""])


def read_csv(path: str | Path) -> list[dict]:
    """Rows back from a results.csv (values as floats, None where empty)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["value"] = float(r["value"]) if r["value"] else None
        r["error"] = r["error"] or None
    return rows


def _describe_run(run: CompareRun) -> list[str]:
    from restorekit import __version__

    if run.mode == "reference":
        mode = (f"reference: each clean file is degraded with `{run.degrade}`, then every version is "
                "measured against the clean file")
    elif run.mode == "generated":
        mode = (f"generated: the source pipeline `{run.degrade}` makes each clip (row \"generated\"), every "
                "pipeline restores it, and the reference-free metrics measure each version")
    else:
        mode = "no reference: the reference-free metrics of each input and each output"
    pipes = ", ".join(f"`{label}`" + (f" ({' '.join(p.description.split())})" if p.description else "")
                      for label, p in run.pipelines) or "none"
    return [
        f"mode: {mode}",
        f"sources: {', '.join(run.sources)} ({len(run.files)} file(s))",
        f"pipelines: {pipes}",
        f"seed: {run.seed} (each file gets its own, derived from this one); device: {run.device or 'pipeline default'}",
        f"created: {run.started} by restorekit {__version__}",
    ]


def summary_markdown(run: CompareRun, summary: list[SummaryRow]) -> str:
    """summary.md: per metric, each row's mean and 95 % CI, n, and the paired difference vs the baseline."""
    info = _metric_info(run)
    lines = ["# restorekit comparison", ""]
    lines += [f"- {line}" for line in _describe_run(run)]
    lines += [
        f"- Δ is the mean over files of (pipeline − {run.delta_row}) for the same file, with its 95 % "
        "confidence interval (t-distribution); a verdict of better/worse means that interval excludes 0.",
        "",
    ]
    for metric in _metric_order(run, summary):
        summ, unit, hib = info.get(metric, ("", "", None))
        unit_text = f"{unit}, " if unit else ""
        lines += [f"## {metric} ({unit_text}{_direction(hib)})", "", summ, "",
                  f"| row | mean | 95 % CI | n | Δ vs {run.delta_row} | 95 % CI of Δ | verdict | errors |",
                  "|---|---:|---|---:|---:|---|---|---:|"]
        for r in (r for r in summary if r.metric == metric):
            lines.append(f"| {r.pipeline} | {_num(r.stat.mean)} | {_ci(r.stat)} | {r.stat.n} | "
                         f"{_num(r.diff.mean, True) if r.diff else '—'} | {_ci(r.diff, True)} | "
                         f"{verdict(r, hib)} | {r.errors} |")
        lines.append("")
    failures = [r for r in run.rows if r.get("error")]
    if failures:
        lines += ["## Failures", "", "| file | row | metric | error |", "|---|---|---|---|"]
        for r in failures:
            err = " ".join(str(r["error"]).split()).replace("|", "\\|")
            lines.append(f"| {r['file']} | {r['pipeline'] or '—'} | {r['metric'] or '(whole run)'} | {err} |")
        lines.append("")
    if run.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in run.notes] + [""]
    return "\n".join(lines)


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem auto;max-width:1100px;
 padding:0 1rem;color:#1d1d1f;line-height:1.4}
h1{font-size:1.6rem}h2{margin-top:2rem;border-bottom:1px solid #ddd}h3{margin-bottom:.3rem}
table{border-collapse:collapse;margin:.5rem 0 1rem}th,td{border:1px solid #ddd;padding:.25rem .5rem;
 font-size:.9rem}th{background:#f5f5f7;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
.better{background:#e3f6e5}.worse{background:#fbe4e4}.changed{background:#fff4d6}
.err{color:#b00020}.note{color:#666;font-size:.8rem}.metric-summary{color:#555;margin:.2rem 0}
img.spec{max-width:100%;height:auto;border:1px solid #eee}audio{width:260px;height:32px}
#media-status{font-size:.85rem;color:#555}.load-error{color:#b00020;font-size:.8rem;display:block}
"""

_SCRIPT = """
(function () {
  var items = Array.prototype.slice.call(document.querySelectorAll('img, audio'));
  function update() {
    var ok = 0, bad = 0;
    items.forEach(function (el) {
      var s = el.getAttribute('data-load');
      if (s === 'ok') ok++; else if (s === 'error') bad++;
    });
    var pending = items.length - ok - bad;
    document.body.setAttribute('data-media-ok', ok);
    document.body.setAttribute('data-media-error', bad);
    document.body.setAttribute('data-media-pending', pending);
    var line = document.getElementById('media-status');
    if (line) line.textContent = ok + ' of ' + items.length + ' images and audio files loaded' +
      (bad ? ', ' + bad + ' failed (see the red notes)' : '') + (pending ? ', ' + pending + ' loading' : '') + '.';
  }
  function mark(el, state) {
    if (el.getAttribute('data-load') === state) return;
    el.setAttribute('data-load', state);
    if (state === 'error') {
      var msg = document.createElement('span');
      msg.className = 'load-error';
      msg.textContent = 'could not load ' + (el.getAttribute('src') || 'this file');
      el.parentNode.insertBefore(msg, el.nextSibling);
    }
    update();
  }
  items.forEach(function (el) {
    el.setAttribute('data-load', 'pending');
    if (el.tagName === 'IMG') {
      el.addEventListener('load', function () { mark(el, 'ok'); });
      el.addEventListener('error', function () { mark(el, 'error'); });
      if (el.complete) mark(el, el.naturalWidth > 0 ? 'ok' : 'error');
    } else {
      el.addEventListener('loadedmetadata', function () { mark(el, 'ok'); });
      el.addEventListener('error', function () { mark(el, 'error'); }, true);
      if (el.error) mark(el, 'error'); else if (el.readyState >= 1) mark(el, 'ok');
    }
  });
  update();
})();
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def report_html(run: CompareRun, summary: list[SummaryRow], assets: ReportAssets | None) -> str:
    """report.html: the summary tables, failures, and per file a spectrogram figure and audio players."""
    info = _metric_info(run)
    metrics = [m for m in _metric_order(run, summary) if any(r["metric"] == m for r in run.rows)]
    p: list[str] = ['<!doctype html>', '<html lang="en"><head><meta charset="utf-8">',
                    '<meta name="viewport" content="width=device-width, initial-scale=1">',
                    '<title>restorekit comparison</title>', f'<style>{_STYLE}</style></head><body>',
                    '<h1>restorekit comparison</h1>', '<ul class="info">']
    p += [f"<li>{_e(line).replace('`', '')}</li>" for line in _describe_run(run)]
    p += ['</ul>', '<p id="media-status">Images and audio not checked (scripts are off).</p>']
    if run.notes:
        p += ['<h2>Notes</h2>', '<ul>'] + [f'<li>{_e(n)}</li>' for n in run.notes] + ['</ul>']

    p += ['<h2 id="summary">Summary</h2>',
          f'<p>Mean over files with its 95 % confidence interval (t-distribution); Δ is the mean paired '
          f'difference against the <b>{_e(run.delta_row)}</b> row for the same file. Green: the interval of Δ '
          f'lies entirely on the better side of 0; red: on the worse side.</p>']
    for metric in _metric_order(run, summary):
        summ, unit, hib = info.get(metric, ("", "", None))
        p += [f'<h3 id="metric-{_e(_safe(metric))}">{_e(metric)}'
              f'{" (" + _e(unit) + ")" if unit else ""} — {_e(_direction(hib))}</h3>',
              f'<p class="metric-summary">{_e(summ)}</p>',
              '<table class="summary"><tr><th>row</th><th>mean</th><th>95 % CI</th><th>n</th>'
              f'<th>Δ vs {_e(run.delta_row)}</th><th>95 % CI of Δ</th><th>verdict</th><th>errors</th></tr>']
        for r in (r for r in summary if r.metric == metric):
            v = verdict(r, hib)
            cls = v if v in ("better", "worse", "changed") else ""
            p.append(f'<tr class="{cls}"><td>{_e(r.pipeline)}</td><td class="num">{_num(r.stat.mean)}</td>'
                     f'<td class="num">{_ci(r.stat)}</td><td class="num">{r.stat.n}</td>'
                     f'<td class="num">{_num(r.diff.mean, True) if r.diff else "—"}</td>'
                     f'<td class="num">{_ci(r.diff, True)}</td><td>{_e(v)}</td><td class="num">{r.errors}</td></tr>')
        p.append('</table>')

    failures = [r for r in run.rows if r.get("error")]
    if failures:
        p += ['<h2 id="failures">Failures</h2>',
              '<table><tr><th>file</th><th>row</th><th>metric</th><th>error</th></tr>']
        p += [f'<tr><td>{_e(r["file"])}</td><td>{_e(r["pipeline"] or "—")}</td>'
              f'<td>{_e(r["metric"] or "(whole run)")}</td><td class="err">{_e(r["error"])}</td></tr>'
              for r in failures]
        p.append('</table>')

    values: dict[tuple[str, str, str], dict] = {(r["file"], r["pipeline"], r["metric"]): r for r in run.rows}
    p.append('<h2 id="files">Files</h2>')
    if assets is None:
        p.append('<p>No listening material was written.</p>')
    for i, name in enumerate(run.files, 1):
        fa = assets.files.get(name) if assets else None
        p += [f'<section class="file" id="file-{i}"><h3>{_e(name)}</h3>']
        if fa is not None and fa.figure:
            labels = ", ".join(e.label for e in fa.entries)
            p.append(f'<img class="spec" src="{_e(quote(fa.figure))}" alt="spectrograms of {_e(name)}: {_e(labels)}">')
        elif fa is not None and fa.figure_error:
            p.append(f'<p class="err">{_e(fa.figure_error)}</p>')
        heads = "".join(f'<th>{_e(m)}{_e(_unit_suffix(info, m))}</th>' for m in metrics)
        p.append(f'<table class="listen"><tr><th>version</th><th>listen</th>{heads}</tr>')
        entries = {e.label: e for e in fa.entries} if fa else {}
        for label in run.row_labels():
            e = entries.get(label)
            run_err = values.get((name, label, ""))
            if e is None and run_err is None and not any((name, label, m) in values for m in metrics):
                continue
            cell = ""
            if e is not None and e.audio:
                cell = f'<audio controls preload="metadata" src="{_e(quote(e.audio))}"></audio>'
            if e is not None and e.note:
                cell += f'<span class="note">{_e(e.note)}</span>'
            err = (e.error if e is not None and e.error else None) or (run_err or {}).get("error")
            if err:
                cell += f'<span class="err">failed: {_e(err)}</span>'
            tds = []
            for m in metrics:
                r = values.get((name, label, m))
                if r is None:
                    tds.append('<td class="num">—</td>')
                elif r.get("error"):
                    tds.append(f'<td class="num err" title="{_e(r["error"])}">error</td>')
                else:
                    tds.append(f'<td class="num">{_num(r["value"])}</td>')
            p.append(f'<tr><td>{_e(label)}</td><td>{cell}</td>{"".join(tds)}</tr>')
        p.append('</table>')
        notes = dict.fromkeys(f'{r["pipeline"]}: {r["notes"]}' for r in run.rows
                              if r["file"] == name and r.get("notes"))
        if notes:
            p.append('<p class="note">' + "<br>".join(_e(n) for n in notes) + '</p>')
        p.append('</section>')
    p += [f'<script>{_SCRIPT}</script>', '</body></html>', '']
    return "\n".join(p)


def summary_text(run: CompareRun, summary: list[SummaryRow]) -> str:
    """A compact terminal table: per metric and row, the mean and the difference vs the baseline."""
    info = _metric_info(run)
    labels = [r.pipeline for r in summary] or [""]
    lw = max(len(x) for x in labels)
    heads = [m + _unit_suffix(info, m) for m in _metric_order(run, summary)]
    mw = max((len(h) for h in heads), default=6)
    lines = [f"{'metric':<{mw}}  {'row':<{lw}}  {'mean':>9}  {'Δ vs ' + run.delta_row + ' [95 % CI]':<34}  verdict"]
    for metric, head in zip(_metric_order(run, summary), heads):
        hib = info.get(metric, ("", "", None))[2]
        for i, r in enumerate(x for x in summary if x.metric == metric):
            diff = "" if r.diff is None else f"{_num(r.diff.mean, True)} {_ci(r.diff, True)}"
            err = f"  ({r.errors} failed)" if r.errors else ""
            lines.append(f"{head if i == 0 else '':<{mw}}  {r.pipeline:<{lw}}  {_num(r.stat.mean):>9}  "
                         f"{diff:<34}  {verdict(r, hib)}{err}".rstrip())
    return "\n".join(lines)
