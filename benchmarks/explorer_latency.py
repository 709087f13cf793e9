"""Round-trip latency of the latent-space explorer: decode a point, the grid, and the rest.

Starts the real server (``vaekit explore RUN`` in its own process, as a user would) and
times every API route from a client over one keep-alive connection, the way the page's
fetch() talks to it. With headless Chromium available it also times the page's own
path: fetch() -> JSON -> base64 PNG -> decoded <img>, measured inside the browser.

The target (issue 7) is under 50 ms round trip to decode one point of a 28x28 model.

Usage (default: the tutorial-003 VAE, 784-128-16-2, on mnist-10k; weights as
initialised, which does not change the time a decode takes):

    VAEKIT_DATA_DIR=/path/to/data python benchmarks/explorer_latency.py
    python benchmarks/explorer_latency.py --run runs/003_vae --repeats 500

It prints a table and writes JSON to benchmarks/results/explorer_latency.json. Other
processes on the same cores slow it down: the load average is recorded with the result.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _machine import machine_record
from PIL import Image

import vaekit
from vaekit.config import load_config
from vaekit.model import build_model
from vaekit.rundir import save_weights, write_run_files

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 50.0


def make_untrained_run(out: Path, config: Path) -> Path:
    """A run directory with freshly initialised weights: same shapes, same decode cost."""
    cfg = load_config(config, ["data.name=mnist-10k"])
    data_info = {
        "name": "mnist-10k",
        "shape": [1, 28, 28],
        "num_classes": 10,
        "kind": "grey",
        "is_image": True,
        "class_names": [str(i) for i in range(10)],
        "sizes": {"train": 8000, "valid": 0, "test": 2000},
    }
    torch.manual_seed(0)
    model = build_model(cfg.model, (1, 28, 28), 10)
    write_run_files(out, cfg, data_info)
    save_weights(out / "model.safetensors", model)
    return out


def start_server(run: Path, threads: int) -> tuple[subprocess.Popen[str], str, int]:
    cmd = [
        sys.executable,
        "-m",
        "vaekit",
        "explore",
        str(run),
        "--port",
        "0",
        "--threads",
        str(threads),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "http://" not in line:
        err = proc.stderr.read() if proc.stderr else ""
        raise SystemExit(f"the explorer did not start: {line}{err}")
    address = line.split("http://", 1)[1].split()[0].rstrip("/")
    host, port = address.rsplit(":", 1)
    return proc, host, int(port)


def drawing_png() -> str:
    """A 168x168 drawing-pad picture, as the page sends it."""
    a = np.zeros((168, 168), np.uint8)
    a[30:44, 40:130] = 255
    for i in range(100):
        c = 125 - i // 2
        a[40 + i, c - 7 : c + 7] = 255
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def summarise(ms: list[float]) -> dict[str, Any]:
    a = np.asarray(ms)
    return {
        "n": len(ms),
        "median_ms": float(np.median(a)),
        "p90_ms": float(np.percentile(a, 90)),
        "p99_ms": float(np.percentile(a, 99)),
        "max_ms": float(a.max()),
        "mean_ms": float(a.mean()),
    }


def time_route(
    conn: http.client.HTTPConnection, path: str, bodies: list[Any], warmup: int = 3
) -> tuple[list[float], int]:
    """Milliseconds per request (send, model, PNG, JSON, receive, parse) and the response size."""
    times, size = [], 0
    for i, body in enumerate(bodies[:warmup] + bodies):
        data = json.dumps(body)
        t0 = time.perf_counter()
        conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        payload = resp.read()
        json.loads(payload)
        dt = (time.perf_counter() - t0) * 1e3
        if resp.status != 200:
            raise SystemExit(f"{path}: HTTP {resp.status}: {payload[:200]!r}")
        if i >= warmup:
            times.append(dt)
            size = len(payload)
    return times, size


BROWSER_SCRIPT = """
const [n, dim, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
(async () => {
  const img = document.getElementById('decoded');
  const times = [];
  for (let i = 0; i < n + 3; i++) {
    const z = Array.from({length: dim}, () => (Math.random() * 6 - 3));
    const t0 = performance.now();
    const r = await fetch('/api/decode', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                          body: JSON.stringify({z})});
    const data = await r.json();
    img.src = data.images[0];
    await img.decode();
    if (i >= 3) times.push(performance.now() - t0);
  }
  done(times);
})().catch((e) => done(String(e)));
"""


def browser_decode_times(url: str, n: int, dim: int) -> list[float] | str:
    """Decode round trips measured inside headless Chromium, or why they could not be."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if chromium is None or not Path(driver_path).is_file():
        return "skipped: chromium and chromedriver are not installed"
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return "skipped: selenium is not installed"
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium download a browser
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="vaekit-bench-chromium-")
    for flag in [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    try:
        driver.set_script_timeout(300)
        driver.get(url)
        end = time.monotonic() + 30
        while driver.find_element("id", "map").get_attribute("data-ready") != "1":
            if time.monotonic() > end:
                return "skipped: the page did not load"
            time.sleep(0.1)
        out = driver.execute_async_script(BROWSER_SCRIPT, n, dim)
        return [float(v) for v in out] if isinstance(out, list) else f"failed: {out}"
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--run",
        default=None,
        help="run directory (default: an untrained tutorial-003 VAE on mnist-10k)",
    )
    p.add_argument(
        "--config", default=str(ROOT / "configs" / "003_vae.yaml"), help="config of the default run"
    )
    p.add_argument("--repeats", type=int, default=300, help="requests per single-point measurement")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the server (vaekit explore --threads)",
    )
    p.add_argument("--no-browser", action="store_true", help="skip the in-browser measurement")
    p.add_argument("--out", default=str(RESULTS / "explorer_latency.json"))
    a = p.parse_args(argv)

    tmp = None
    if a.run is None:
        tmp = tempfile.mkdtemp(prefix="vaekit-bench-run-")
        run_dir = make_untrained_run(Path(tmp) / "vae", Path(a.config))
        what = f"untrained {Path(a.config).name} (weights as initialised)"
    else:
        run_dir = Path(a.run)
        what = str(run_dir)
    run = vaekit.load(run_dir)
    dim, shape = run.latent_dim, list(run.data_shape)
    params = sum(p.numel() for p in run.model.decoder.parameters())

    proc, host, port = start_server(run_dir, a.threads)
    rng = np.random.default_rng(0)
    label = {"label": 0} if run.num_classes else {}
    try:
        conn = http.client.HTTPConnection(host, port, timeout=60)
        conn.request("GET", "/api/info")
        info = json.loads(conn.getresponse().read())
        pca = info["pca"]
        plane = (
            {"origin": pca["mean"], "axes": pca["components"]}
            if dim > 2
            else {"origin": [0.0] * dim, "axes": np.eye(dim)[:2].tolist()}
        )
        r = a.repeats
        small = max(20, r // 10)
        cases: list[tuple[str, str, list[Any]]] = [
            (
                "decode 1 point",
                "/api/decode",
                [{"z": rng.uniform(-3, 3, dim).tolist()} | label for _ in range(r)],
            ),
            (
                "decode 16 points",
                "/api/decode",
                [{"z": rng.uniform(-3, 3, (16, dim)).tolist()} | label for _ in range(small)],
            ),
            (
                "grid 16x16",
                "/api/grid",
                [{"plane": plane, "bounds": [-3, 3, -3, 3], "n": 16} | label for _ in range(small)],
            ),
            (
                "grid 32x32",
                "/api/grid",
                [{"plane": plane, "bounds": [-3, 3, -3, 3], "n": 32} | label for _ in range(small)],
            ),
            (
                "interpolate 10 steps",
                "/api/interpolate",
                [{"a": int(i), "b": int(i) + 1, "steps": 10} | label for i in range(small)],
            ),
            ("sample 16", "/api/sample", [{"n": 16, "seed": i} | label for i in range(small)]),
            (
                "encode a drawing",
                "/api/encode",
                [{"image": drawing_png()} | label for _ in range(small)],
            ),
        ]
        if info["has_prior"] and dim >= 2:
            cases.append(
                (
                    "prior contours 72x72",
                    "/api/prior",
                    [{"plane": plane, "bounds": [-4, 4, -4, 4], "n": 72} for _ in range(small)],
                )
            )
        rows: list[dict[str, Any]] = []
        for name, path, bodies in cases:
            times, size = time_route(conn, path, bodies)
            rows.append({"case": name, "route": path, "response_bytes": size} | summarise(times))
        conn.close()
        browser: list[float] | str = "skipped: --no-browser"
        if not a.no_browser:
            browser = browser_decode_times(f"http://{host}:{port}/", min(r, 200), dim)
        if isinstance(browser, list):
            rows.append(
                {
                    "case": "decode 1 point, in Chromium (fetch + PNG <img>)",
                    "route": "/api/decode",
                    "response_bytes": None,
                }
                | summarise(browser)
            )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    decode = rows[0]
    result = {
        "benchmark": "explorer_latency",
        "machine": machine_record(a.threads),
        "server_threads": a.threads,
        "run": what,
        "latent_dim": dim,
        "data_shape": shape,
        "decoder_parameters": params,
        "target_ms": TARGET_MS,
        "decode_median_under_target": decode["median_ms"] < TARGET_MS,
        "decode_p99_under_target": decode["p99_ms"] < TARGET_MS,
        "browser": browser if isinstance(browser, str) else "measured",
        "rows": rows,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    print(
        f"explorer latency: {what}, latent {dim}, data {'x'.join(map(str, shape))}, server threads {a.threads}"
    )
    print(
        f"load average {result['machine']['load_average']}, {result['machine']['cpus']} CPUs, torch {torch.__version__}"
    )
    print()
    head = f"{'case':<48} {'n':>5} {'median':>8} {'p90':>8} {'p99':>8} {'max':>8} {'KB':>7}"
    print(head)
    print("-" * len(head))
    for row in rows:
        kb = f"{row['response_bytes'] / 1024:7.1f}" if row["response_bytes"] else f"{'':>7}"
        print(
            f"{row['case']:<48} {row['n']:>5} {row['median_ms']:>7.1f}ms {row['p90_ms']:>6.1f}ms {row['p99_ms']:>6.1f}ms {row['max_ms']:>6.1f}ms {kb}"
        )
    if isinstance(browser, str):
        print(f"in-browser measurement {browser}")
    verdict = (
        "meets" if decode["median_ms"] < TARGET_MS and decode["p99_ms"] < TARGET_MS else "MISSES"
    )
    print(
        f"\ndecoding one point {verdict} the {TARGET_MS:.0f} ms target (median {decode['median_ms']:.1f} ms, p99 {decode['p99_ms']:.1f} ms)"
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
