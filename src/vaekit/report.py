"""One self-contained HTML report of a run: config, metrics, every figure that applies,
and the published numbers of matching settings beside ours.

The file embeds its figures as base64 PNG and its CSS inline; it makes no request of
any kind, so it opens offline and can be mailed or archived as one file.

Example:
    >>> import vaekit
    >>> write_report(vaekit.load("runs/demo"))             # doctest: +SKIP
    PosixPath('runs/demo/report.html')
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml
from matplotlib.figure import Figure

from vaekit._version import __version__
from vaekit.config import config_to_dict
from vaekit.data import Dataset
from vaekit.evaluate import evaluate_run
from vaekit.plots import FIGURES, applicable_figures, run_figures
from vaekit.quality import quality_html
from vaekit.rundir import (
    Run,
    atomic_write,
    check_not_run_file,
    eval_file_name,
    part_labels,
    saved_evaluation,
    write_json,
)

__all__ = [
    "Reference",
    "REFERENCES",
    "matching_references",
    "load_or_evaluate",
    "render_report",
    "write_report",
]


@dataclass(frozen=True)
class Reference:
    """A published number and the setting it belongs to.

    ``when`` maps dotted config keys to the values a run must have for the number to be
    shown beside it; ``closest`` adds the keys that make it the same model (that row is
    highlighted). ``metric`` is ``nll`` (test negative log-likelihood, nats) or
    ``neg_elbo`` (test negative ELBO, nats).
    """

    source: str
    citation: str
    model: str
    metric: str
    value: float
    approx: bool = False
    when: Mapping[str, Any] = field(default_factory=dict)
    closest: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""


def _load_references() -> tuple[Reference, ...]:
    """The literature's numbers (``references.yaml`` beside this module), in one place."""
    text = (Path(__file__).with_name("references.yaml")).read_text()
    data = yaml.safe_load(text)
    sources = data["sources"]
    out = []
    for row in data["references"]:
        row = dict(row)
        row["citation"] = sources[row.pop("cite")]
        out.append(Reference(**row))
    return tuple(out)


# All on statically binarized MNIST (Larochelle & Murray 2011 split), the test set's
# average in nats, unless a row says otherwise.
REFERENCES: tuple[Reference, ...] = _load_references()


def _lookup(cfg: Mapping[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _matches(cfg: Mapping[str, Any], conditions: Mapping[str, Any]) -> bool:
    return all(_lookup(cfg, key) == value for key, value in conditions.items())


def matching_references(config: Any) -> list[tuple[Reference, bool]]:
    """The references whose setting the run shares, each with whether it is the same model."""
    cfg = config_to_dict(config) if not isinstance(config, Mapping) else config
    return [(r, _matches(cfg, r.closest)) for r in REFERENCES if _matches(cfg, r.when)]


def load_or_evaluate(
    run: Run,
    *,
    k: int | None = None,
    dataset: Dataset | None = None,
    data_dir: str | None = None,
    threads: int | None = None,
    default_k: int = 100,
    log: TextIO | None = None,
) -> dict[str, Any]:
    """The run's evaluation: when ``k`` is None, the most thorough one saved for these
    weights (:func:`vaekit.rundir.saved_evaluation`); else, or when there is none, a new
    evaluation with ``k`` (default ``default_k``) importance samples, saved beside the
    others (``eval-k100.json``, say; ``wrote PATH`` to ``log``)."""
    if k is None:
        saved = saved_evaluation(run.dir, run.weights, run.weights_epoch)
        if saved is not None:
            return saved
    k = k or default_k
    result = evaluate_run(
        run, k=k, dataset=dataset, data_dir=data_dir, threads=threads, progress=False
    )
    path = run.dir / eval_file_name(run, k=k)
    write_json(path, result)
    _wrote(path, log)
    return result


def _wrote(path: Path, log: TextIO | None) -> None:
    """Every file written is said, as the command line says each of its own."""
    if log is not None:
        print(f"wrote {path}", file=log)


def _png_data_uri(fig: Figure, dpi: int = 90) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _num(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:,.{digits}f}"


def _pm(v: Any, se: Any, digits: int = 2) -> str:
    if v is None:
        return "n/a"
    return f"{_num(v, digits)} &plusmn; {_num(se, digits)}" if se is not None else _num(v, digits)


def _metric_rows(
    results: Mapping[str, Any],
    metrics: Sequence[Mapping[str, Any]],
    caveat: str | None = None,
) -> list[tuple[str, str, str]]:
    """(name, value, explanation) rows of the metrics table; values are already HTML.

    ``caveat`` says what the NLL is when it is not a likelihood of the data (see
    :meth:`~vaekit.distributions.LikelihoodHead.nll_caveat`); it stands beside the NLL
    and bits per dimension."""
    rows: list[tuple[str, str, str]] = []
    k = results.get("k")
    warn = f"<strong>Caveat: {html.escape(caveat)}.</strong> " if caveat else ""
    if results.get("nll") is not None:
        rows.append(
            (
                "test NLL",
                _pm(results["nll"], results.get("nll_se")) + " nats",
                warn
                + (
                    "the bound &minus;log p(x|z<sub>q</sub>) &minus; log p(z<sub>q</sub>) of one code per example"
                    if results.get("nll_bound")
                    else f"&minus;log p(x), importance sampling with k={k}"
                )
                + f", mean &plusmn; standard error over {results.get('n')} examples",
            )
        )
    else:
        rows.append(("test NLL", "undefined", html.escape(str(results.get("nll_note", "")))))
    if results.get("bits_per_dim") is not None:
        rows.append(
            (
                "bits per dimension",
                _pm(results["bits_per_dim"], results.get("bits_per_dim_se"), 4),
                "NLL / (D ln 2)" + ("; the NLL's caveat applies" if caveat else ""),
            )
        )
    if results.get("elbo") is not None:
        rows.append(
            (
                "test ELBO",
                _pm(results["elbo"], results.get("elbo_se")) + " nats",
                "one posterior sample per example",
            )
        )
        rows.append(
            (
                "reconstruction",
                _num(results.get("recon")) + " nats",
                "&minus;E<sub>q</sub> log p(x|z)",
            )
        )
        rows.append(("KL", _num(results.get("kl")) + " nats", "KL(q(z|x) || p(z))"))
    elif results.get("recon") is not None:
        rows.append(
            (
                "reconstruction",
                _pm(results["recon"], results.get("recon_se")) + " nats",
                "&minus;log p(x|z) at the code",
            )
        )
    if results.get("active_units") is not None:
        rows.append(
            (
                "active units",
                f"{results['active_units']} of {results.get('latent_dim')}",
                "Cov<sub>x</sub>(E<sub>q</sub>[z<sub>d</sub>]) &gt; 0.01 (Burda et al. 2016)",
            )
        )
    sizes, kls = results.get("layer_sizes"), results.get("kl_per_layer")
    if isinstance(sizes, list) and isinstance(kls, list):
        units = results.get("active_units_per_layer") or [None] * len(sizes)
        rows.append(
            (
                "per layer (z1 first)",
                "; ".join(
                    f"z{i + 1}: KL {_num(k)}, {u} of {s} active"
                    for i, (s, k, u) in enumerate(zip(sizes, kls, units, strict=False))
                ),
                "KL(q(z<sub>l</sub>|x, z<sub>l+1</sub>) || p(z<sub>l</sub>|z<sub>l+1</sub>)) and active units of each stochastic layer",
            )
        )
    codes = results.get("codes")
    if isinstance(codes, Mapping):  # a discrete posterior's codebook over the test split
        rows.append(
            (
                "codebook use",
                f"{codes.get('used')} of {codes.get('codes')} codes, perplexity {_num(codes.get('perplexity'))}",
                f"codes at {codes.get('positions')} positions ({codes.get('bits')} bits per code "
                "grid); perplexity: exp of the entropy of the code frequencies",
            )
        )
    clf = results.get("classifier")
    if isinstance(clf, Mapping):
        rows.append(
            (
                "classifier on latent means",
                f"{clf.get('logistic_regression', 0):.1%} (logistic regression), {clf.get('knn', 0):.1%} (5-NN)",
                f"trained on {clf.get('train_n')} training codes, scored on the test codes",
            )
        )
    last = metrics[-1] if metrics else None
    if last is not None:
        for split in ("train", "test"):
            terms = last.get(split)
            if isinstance(terms, Mapping) and terms:
                text = ", ".join(
                    f"{html.escape(str(key))} {_num(v)}"
                    for key, v in terms.items()
                    if isinstance(v, (int, float))
                )
                scored = (last.get("scored") or {}).get(split)
                rows.append(
                    (
                        f"last epoch ({last.get('epoch')}), {split}",
                        text,
                        "as logged during training (metrics.jsonl)"
                        + (
                            f", on a seeded {scored} examples of the split (train.score_limit)"
                            if scored
                            else ""
                        ),
                    )
                )
    return rows


def _kl_bars(results: Mapping[str, Any]) -> str:
    kl = results.get("kl_per_dim")
    if not kl:
        return ""
    top = max(max(kl), 1e-9)
    var = results.get("latent_variance") or [None] * len(kl)
    rows = []
    for d, (v, s) in enumerate(zip(kl, var, strict=False)):
        width = max(0.0, 100.0 * v / top)
        active = s is not None and s > 0.01
        rows.append(
            f'<tr><td>z{d}</td><td class="bar"><span style="width:{width:.1f}%" class="{"on" if active else "off"}"></span></td>'
            f"<td>{_num(v, 3)}</td><td>{_num(s, 3) if s is not None else ''}</td></tr>"
        )
    method = html.escape(str(results.get("kl_per_dim_method", "")))
    return (
        f'<h3>KL per latent dimension <span class="muted">({method}; dark bars: active units)</span></h3>'
        '<table class="kl"><tr><th>dim</th><th></th><th>KL (nats)</th><th>Var<sub>x</sub> E[z]</th></tr>'
        + "".join(rows)
        + "</table>"
    )


def _reference_table(config: Any, results: Mapping[str, Any]) -> str:
    refs = matching_references(config)
    if not refs:
        return ""
    ours = {
        "nll": results.get("nll"),
        "neg_elbo": -results["elbo"] if results.get("elbo") is not None else None,
    }
    rows = []
    for ref, same in refs:
        value = ours.get(ref.metric)
        diff = "" if value is None else f"{value - ref.value:+.2f}"
        label = "test NLL" if ref.metric == "nll" else "test &minus;ELBO"
        published = ("&asymp; " if ref.approx else "") + f"{ref.value:.2f}"
        note = f'<div class="muted">{html.escape(ref.note)}</div>' if ref.note else ""
        rows.append(
            f'<tr class="{"same" if same else ""}"><td>{html.escape(ref.source)}<div class="muted">{html.escape(ref.citation)}</div></td>'
            f"<td>{html.escape(ref.model)}{note}</td><td>{label}</td><td>{published}</td><td>{_num(value)}</td><td>{diff}</td></tr>"
        )
    k = results.get("k")
    return (
        "<h2>Published numbers for this setting</h2>"
        f'<p class="muted">Ours: k={k} importance samples (the papers use k=5000 for NLL; a smaller k overestimates the NLL). '
        "Highlighted rows are the same kind of model as this run.</p>"
        "<table><tr><th>source</th><th>model</th><th>metric</th><th>published</th><th>this run</th><th>difference</th></tr>"
        + "".join(rows)
        + "</table>"
    )


_CSS = """
body{font:15px/1.45 -apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif;color:#1d232b;background:#f6f7f9;margin:0}
main{max-width:1100px;margin:0 auto;padding:24px 28px 48px;background:#fff;min-height:100vh;box-shadow:0 0 0 1px #e3e6ea}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:32px 0 10px;border-bottom:1px solid #e3e6ea;padding-bottom:4px}
h3{font-size:16px;margin:20px 0 8px}.muted{color:#6b7480;font-size:13px;font-weight:normal}
table{border-collapse:collapse;width:100%;margin:6px 0 12px}th,td{text-align:left;padding:6px 10px;border-bottom:1px solid #eceff2;vertical-align:top}
th{background:#f3f5f7;font-weight:600}td:first-child{white-space:nowrap}tr.same td{background:#fff7e0}
table.kl{width:auto}table.kl td{padding:2px 10px}td.bar{width:320px}td.bar span{display:block;height:12px;border-radius:2px}
td.bar span.on{background:#3b6fb6}td.bar span.off{background:#c4cfdd}
.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:12px 0}.facts div:nth-child(odd){color:#6b7480}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:8px 24px;align-items:start}
figure{margin:10px 0 18px}figure.wide{grid-column:1/-1}figure img{max-width:100%;height:auto;border:1px solid #eceff2}
figcaption{color:#4b5563;font-size:14px;margin-top:4px}
pre{background:#f3f5f7;padding:12px;overflow:auto;font-size:12.5px;border-radius:4px}
ul.skipped{color:#6b7480;font-size:14px}footer{margin-top:40px;color:#8a929c;font-size:12px}
"""


def _yaml(data: Any) -> str:
    """The config as block-style YAML with lists on one line (hidden: [500, 500])."""

    class _Dumper(yaml.SafeDumper):
        pass

    def _flow_list(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.Node:
        return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=True)

    _Dumper.add_representer(list, _flow_list)
    text: str = yaml.dump(
        data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100
    )
    return text


def _nll_caveat(run: Run) -> str | None:
    # From the run, not the saved evaluation: an eval.json written before the note
    # existed gets it too.
    head = run.model.decoder.head
    caveat: str | None = head.nll_caveat(str(run.info.get("data", {}).get("kind", "")))
    return caveat


def render_report(
    run: Run,
    results: Mapping[str, Any],
    figures: Mapping[str, Figure],
    skipped: Mapping[str, str] | None = None,
    *,
    dpi: int = 90,
    disentanglement: Mapping[str, Any] | None = None,
) -> str:
    """The report as one HTML string (figures embedded as base64 PNG); ``disentanglement``,
    a :func:`vaekit.disentangle.metrics.evaluate_disentanglement` result, adds its table
    and plot."""
    cfg = run.config
    data = run.info.get("data", {})
    m = cfg.model
    metrics = run.metrics
    esc = html.escape
    labels = part_labels(cfg)
    model_bits = [
        f"latent dim {m.latent_dim}",
        f"encoder {labels['encoder']}",
        *([f"decoder {labels['decoder']}"] if "decoder" in labels else []),
        f"posterior {labels['posterior']}",
        f"prior {labels['prior']}",
        f"likelihood {labels['likelihood']}",
    ] + (["conditional"] if m.conditional else [])
    objective = labels["objective"]
    sizes = data.get("sizes", {})
    facts = [
        (
            "data",
            f"{data.get('name')} {tuple(data.get('shape', []))}, {data.get('kind', '')}; train {sizes.get('train', '?')}, test {sizes.get('test', '?')}",
        ),
        ("model", ", ".join(model_bits)),
        ("objective", objective),
        (
            "training",
            f"{len(metrics)} epochs of {cfg.train.epochs}, {cfg.train.optimizer} lr {cfg.train.lr:g}, batch {cfg.train.batch_size}, seed {cfg.train.seed}",
        ),
        ("run directory", str(run.dir)),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>vaekit report: {esc(run.dir.name)}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>{esc(run.dir.name)}</h1>",
        f'<div class="muted">{esc(cfg.description)}</div>' if cfg.description else "",
        '<div class="facts">'
        + "".join(f"<div>{esc(a)}</div><div>{esc(b)}</div>" for a, b in facts)
        + "</div>",
        "<h2>Metrics</h2><table><tr><th>metric</th><th>value</th><th>how</th></tr>",
        "".join(
            f"<tr><td>{esc(a)}</td><td>{b}</td><td class='muted'>{c}</td></tr>"
            for a, b, c in _metric_rows(results, metrics, _nll_caveat(run))
        ),
        "</table>",
        _kl_bars(results),
        _disentanglement_section(disentanglement, dpi),
        _reference_table(cfg, results),
        quality_html(run.dir),
        "<h2>Figures</h2>" if figures else "",
        '<div class="figs">' if figures else "",
    ]
    for name, fig in figures.items():
        caption = FIGURES[name].caption if name in FIGURES else name.replace("_", " ")
        # Wide figures (and the many-panel histograms) take the whole row; square ones
        # sit two to a row.
        width, height = fig.get_size_inches()
        wide = "wide" if (width > 1.4 * height or len(fig.axes) > 4) else ""
        parts.append(
            f'<figure id="{esc(name)}" class="{wide}"><img alt="{esc(name)}" src="{_png_data_uri(fig, dpi)}">'
            f"<figcaption><b>{esc(name.replace('_', ' '))}.</b> {esc(caption)}</figcaption></figure>"
        )
    if figures:
        parts.append("</div>")
    if skipped:
        parts.append(
            '<h3>Not shown</h3><ul class="skipped">'
            + "".join(f"<li>{esc(n)}: {esc(w)}</li>" for n, w in skipped.items())
            + "</ul>"
        )
    parts += [
        "<h2>Configuration</h2>",
        '<p class="muted">As saved in config.json (load it with <code>vaekit train --config</code>).</p>',
        f"<pre>{html.escape(_yaml(config_to_dict(cfg)), quote=False)}</pre>",
        f"<footer>vaekit {esc(__version__)}, written {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}. "
        "Self-contained: figures are embedded, nothing is fetched.</footer>",
        "</main></body></html>",
    ]
    return "\n".join(p for p in parts if p)


def _disentanglement_section(result: Mapping[str, Any] | None, dpi: int) -> str:
    if result is None:
        return ""
    # The disentanglement metrics import scikit-learn (~1.3 s): only for data with factors.
    from vaekit.disentangle.figures import metrics_table_html, run_metrics_figure

    uri = _png_data_uri(run_metrics_figure(result), dpi)
    return (
        "<h2>Disentanglement</h2>"
        + metrics_table_html(result)
        + f'<figure id="disentanglement" class="wide"><img alt="disentanglement scores" src="{uri}">'
        "<figcaption><b>disentanglement.</b> The scores against the data's ground-truth factors, "
        "and the mutual information gap of each factor.</figcaption></figure>"
    )


def load_or_score_disentanglement(
    run: Run, dataset: Dataset, threads: int | None = None, log: TextIO | None = None
) -> dict[str, Any] | None:
    """A saved ``vaekit evaluate --disentanglement`` result for these weights (the full
    protocol's before a quick one), else a quick one, saved; None for data without factors."""
    # scikit-learn (~1.3 s), which the metrics import: only for data with factors.
    from vaekit.disentangle.metrics import (
        Protocol,
        disentanglement_file_name,
        evaluate_disentanglement,
    )

    if dataset.factor_names is None:
        return None
    for quick in (False, True):
        path = run.dir / disentanglement_file_name(run, quick=quick)
        if path.is_file():
            try:
                saved = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            # Files without "pool" predate held-out DCI and SAP rows: scored again.
            if (
                isinstance(saved, dict)
                and saved.get("epoch") == run.weights_epoch
                and "pool" in saved
            ):
                return saved
    result = evaluate_disentanglement(
        run, dataset=dataset, protocol=Protocol.quick(), threads=threads
    )
    path = run.dir / disentanglement_file_name(run, quick=True)
    write_json(path, result)
    _wrote(path, log)
    return result


def write_report(
    run: Run,
    *,
    k: int | None = None,
    out: str | Path | None = None,
    dataset: Dataset | None = None,
    data_dir: str | None = None,
    threads: int | None = None,
    log: TextIO | None = None,
) -> Path:
    """Evaluate (or reuse the run's most thorough saved evaluation), draw every applicable figure, and write the
    report (default RUN/report.html). Returns its path; an evaluation it saves in the run
    directory is said to ``log`` (``wrote PATH``)."""
    if out is not None:  # before the long part: never over a run's own files
        check_not_run_file(out, "out", "report.html")
    ds = dataset if dataset is not None else run.dataset(data_dir)
    results = load_or_evaluate(run, k=k, dataset=ds, threads=threads, log=log)
    figures = run_figures(run, ds)
    skipped = {n: why for n, why in applicable_figures(run, ds).items() if why is not None}
    scores = load_or_score_disentanglement(run, ds, threads, log=log)
    text = render_report(run, results, figures, skipped, disentanglement=scores)
    path = Path(out) if out is not None else run.dir / "report.html"
    with atomic_write(path, "w") as f:
        f.write(text)
    return path
