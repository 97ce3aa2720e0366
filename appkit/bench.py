"""Timings of the app in headless Chromium: ``python -m appkit.bench`` (about 2-4 minutes).

A benchmark, not a test: it prints what it measures and asserts nothing. For each layout of the
compute service (``--layouts 2x1 1x2``: workers × torch threads per job; default: this machine's
default first, then the others given) it starts a fresh server and measures

1. **cold**: from launching ``streamlit run app.py`` to the first heatmap, and to all default maps,
   in a browser that opens the landing page as soon as the server answers its health check;
2. **warm**: a new browser session (a new page load: a new Streamlit session) on the warm server,
   to all default maps (``--warm`` repetitions; the median is reported);
3. **4 sessions**: four browsers (started beforehand) open the landing page at the same moment,
   each with another sample (their maps are not computed yet); for each: the time to all its
   default maps, and that its page shows its own sample and four loaded maps;
4. **4 sessions, one image**: the same, all on one image not computed yet (the service computes
   each map once and the four sessions share it);
5. **4 open pages pick 4 samples**: the four pages of (4) stay open and each clicks another
   sample's pill at the same moment (a rerun of an open page, as when a class explores on its own:
   no page load, so the browsers' own start-up work is not in it);
6. **4 returning browsers, new sessions**: the same four browsers, which have now loaded the app
   before (Streamlit's frontend in their cache, as a student's browser after the first visit),
   open new page loads (new Streamlit sessions) at the same moment, each on its own sample at a
   layer not computed yet (``blocks.6``: the predictions are cached, the maps and activation maps
   are not). Beside phase 2 (one returning browser) this is the 4-session case without the
   browsers' first-ever load, whose cost on this CPU ``--first-load`` measures.

For each 4-session phase it also reports when the *server* had computed everything the phase
asked for (the end of the last job in the service's trace, from the phase's start): the part of the
time that is the server's; the rest is the browsers' receiving and drawing.

During the runs the service writes one line per job start and end (``CAMLIB_SERVICE_TRACE``):
the benchmark reports the most torch threads in use at once and the most concurrent jobs, against
the cores. It also samples the CPU time of the server process and of the Chromium processes, per
kind (renderer, browser, gpu-process, utility). The load average (``uptime``) before and
after is printed, and the CPU time the hypervisor stole during the run (``/proc/stat``): the machine
may be shared. ``--json PATH`` writes every number.

The four browsers run on the same CPU as the server (on a laptop in a classroom they would be the
students' own machines), so the 4-session times here are pessimistic. ``--browser-nice 19`` runs
them at the lowest CPU priority: the server's work goes first, the browsers draw with what is left.

``python -m appkit.bench --first-load`` measures how much of a browser's first page load is the
page's own: a fresh Chromium (no cache) loads a trivial Streamlit page (a title and two images)
and then the landing page to all its default maps (on a warm server), ``--warm`` times each,
alternating; it prints the median CPU seconds per Chromium process kind and Chrome's own counters
(script, layout and style time, DOM nodes; the DevTools protocol's ``Performance.getMetrics``),
and their ratio. CPU seconds, unlike wall times, change little when other work shares the CPU.

``python -m appkit.bench --gil`` times a single-pass map in a thread beside busy Python threads,
per GIL switch interval (why the compute service sets it: :func:`appkit.service.switch_interval`).

``python -m appkit.bench --compute`` measures the compute side alone, without browsers: four
"sessions" (threads) each ask for the default maps of their own sample (predictions, the four
single-pass explanations, the activation maps), through a compute service of each layout, and, as
the app did before the service, each session calling camlib itself with torch's default threads.
The layouts run interleaved (``--rounds``), each round in a fresh subprocess per OpenMP wait
policy (``--policies PASSIVE ACTIVE``), and the times are printed side by side with their ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import threading
import time

from appkit import browser
from appkit.service import cores, default_layout

DEFAULT_KEYS = None  # filled from camlib (the default methods)
SESSION_SAMPLES = ("coffee", "rocket", "camera", "astronaut")
#: The 4-session phases: four page loads at once on four samples, on one new image (blocks.5),
#: and four open pages (left on blocks.5) that each pick another sample at once (a rerun).
#: Then the same four browsers, having loaded the app before, open new sessions at once, each on its
#: sample at a layer not computed yet.
PHASES = (("four", "4 sessions, 4 samples"), ("four_same", "4 sessions, one new image"),
          ("four_pick", "4 open pages pick 4 samples"),
          ("four_again", "4 returning browsers, new sessions, 4 samples at blocks.6"))
OWN_SAMPLE_PHASES = ("four", "four_pick", "four_again")


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cpu_times() -> tuple[float, float]:
    """(seconds since boot, CPU seconds stolen by the hypervisor summed over the CPUs), from
    /proc/stat: on a shared VM the steal says how much of the machine was not ours."""
    with open("/proc/uptime") as f:
        up = float(f.read().split()[0])
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return up, int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def default_keys() -> list[str]:
    import camlib

    return [f"cam_{m}" for m in camlib.default_methods()]


def trace_events(path: str) -> list[dict]:
    """The service trace's events (one JSON object per line; none when the file is missing)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def computed_by(path: str, since: float) -> float | None:
    """Seconds from ``since`` (time.time()) to the end of the last job that ended after it: when the
    server had computed everything a phase asked for (None: no job ended)."""
    ends = [e["t"] for e in trace_events(path) if e["event"] == "end" and e["t"] >= since]
    return max(ends) - since if ends else None


def read_trace(path: str) -> dict:
    lines = trace_events(path)
    if not lines:
        return {"jobs": 0, "peak_threads": 0, "peak_running": 0, "cores": None}
    return {"jobs": sum(1 for e in lines if e["event"] == "end"),
            "peak_threads": max(e["threads_in_use"] for e in lines),
            "peak_running": max(e["running"] for e in lines),
            "cores": lines[0]["cores"],
            "threads_per_running_job": sorted({e["job_threads"] for e in lines if e["event"] == "start"})}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its threads (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def process_kind(pid: int) -> str:
    """What a Chromium process is: its ``--type`` (renderer, gpu-process, utility, zygote), or
    "browser" / "chromedriver"."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:  # Chromium rewrites it into one space-separated string
        args = f.read().decode(errors="replace").replace("\0", " ").split()
    kind = next((a.split("=", 1)[1] for a in args if a.startswith("--type=")), None)
    return kind or ("chromedriver" if args and "chromedriver" in args[0] else "browser")


def browsers_cpu(drivers) -> dict[int, tuple[str, float]]:
    """CPU seconds of every process of the Chromium instances now ({pid: (kind, seconds)})."""
    out = {}
    for d in drivers:
        root = d.service.process.pid
        for pid in (root, *browser.descendants(root)):
            try:
                out[pid] = (process_kind(pid), cpu_seconds(pid))
            except (OSError, ValueError, IndexError):
                pass
    return out


def browsers_cpu_since(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds the Chromium processes used between two :func:`browsers_cpu`, per process kind
    (processes that ended meanwhile are missed: at least this much)."""
    used: dict[str, float] = {}
    for pid, (kind, seconds) in after.items():
        used[kind] = used.get(kind, 0.0) + seconds - before.get(pid, (kind, 0.0))[1]
    return used


def session(driver, url: str, keys, timeout: float, results: dict, name: str, barrier=None,
            pick: str | None = None) -> None:
    """Time one session to all its default maps: a page load of ``url``, or with ``pick`` (a sample's
    title) a click on that sample's pill in the page already open (a rerun, no page load)."""
    if pick is not None:
        browser.forget_images(driver)
    if barrier is not None:
        barrier.wait()
    start = time.monotonic()
    if pick is None:
        driver.get(url)
    else:
        browser.click_pill(driver, pick)
    seen = browser.wait_rendered(driver, keys, timeout, start)
    results[name] = {"first": min(seen.values()) if seen else None,
                     "all": max(seen.values()) if len(seen) == len(keys) else None, "maps": len(seen)}


def check_own_sample(driver, title: str) -> bool:
    """Whether the page shows the sample's own title above its image."""
    return any(title in t for t in browser.texts(driver, '[data-testid="stMarkdownContainer"]'))


def run_layout(workers: int, threads: int, warm_runs: int, timeout: float, browser_nice: int = 0) -> dict:
    from camlib.samples import list_samples

    titles = {s.key: s.title for s in list_samples()}
    keys = default_keys()
    out = {"workers": workers, "threads": threads, "browser_nice": browser_nice, "load_before": load()}
    up0, steal0 = cpu_times()
    trace = tempfile.NamedTemporaryFile(prefix="camlib-trace-", suffix=".jsonl", delete=False).name
    env = {"CAMLIB_APP_WORKERS": str(workers), "CAMLIB_APP_THREADS": str(threads), "CAMLIB_SERVICE_TRACE": trace}
    drivers = [browser.chrome() for _ in range(4)]  # started before the clock runs
    for d in drivers if browser_nice else ():
        browser.renice(d, browser_nice)
    try:
        with browser.Server(env=env) as server:
            cold = {}
            session(drivers[0], server.url("/"), keys, timeout, cold, "cold")
            launched = server.healthy - server.started
            out["health"] = launched
            out["cold_first"] = None if cold["cold"]["first"] is None else launched + cold["cold"]["first"]
            out["cold_all"] = None if cold["cold"]["all"] is None else launched + cold["cold"]["all"]
            browser.idle(drivers[0], timeout)

            warm = []
            for _ in range(warm_runs):
                r = {}
                session(drivers[0], server.url("/"), keys, timeout, r, "warm")
                warm.append(r["warm"]["all"])
                browser.idle(drivers[0], timeout)
            out["warm"] = warm
            out["warm_median"] = statistics.median([w for w in warm if w is not None]) if any(warm) else None

            for label, urls, picks in (
                ("four", [server.url("/", sample=s) for s in SESSION_SAMPLES], [None] * 4),
                ("four_same", [server.url("/", layer="blocks.5")] * 4, [None] * 4),
                # the four pages stay open (on blocks.5): each student picks another sample
                ("four_pick", [None] * 4, [titles[s] for s in SESSION_SAMPLES]),
                # new sessions (page loads) in browsers that have loaded the app before
                ("four_again", [server.url("/", sample=s, layer="blocks.6") for s in SESSION_SAMPLES], [None] * 4),
            ):
                results, barrier = {}, threading.Barrier(4)
                cpu0, t0, chrome0 = cpu_seconds(server.process.pid), time.monotonic(), browsers_cpu(drivers)
                since = time.time()
                threads_ = [threading.Thread(target=session, args=(d, u, keys, timeout, results, i, barrier, p))
                            for i, (d, u, p) in enumerate(zip(drivers, urls, picks))]
                for t in threads_:
                    t.start()
                for t in threads_:
                    t.join()
                wall = time.monotonic() - t0
                out[label] = [results[i] for i in range(4)]
                out[label + "_computed"] = computed_by(trace, since)
                out[label + "_server_cpu_per_wall"] = (cpu_seconds(server.process.pid) - cpu0) / wall
                used = browsers_cpu_since(chrome0, browsers_cpu(drivers))
                out[label + "_browsers_cpu_per_wall"] = sum(used.values()) / wall
                out[label + "_browsers_cpu_by_kind"] = used
                if label in OWN_SAMPLE_PHASES:
                    out[label + "_own_sample"] = [check_own_sample(d, titles[s]) for d, s in zip(drivers, SESSION_SAMPLES)]
                for d in drivers:
                    browser.idle(d, timeout)
                out[label + "_exceptions"] = sum(len(browser.exceptions(d)) for d in drivers)
    finally:
        for d in drivers:
            d.quit()
    out["trace"] = read_trace(trace)
    os.unlink(trace)
    out["load_after"] = load()
    up1, steal1 = cpu_times()
    out["steal_per_wall"] = (steal1 - steal0) / max(up1 - up0, 1e-9)  # CPUs' worth stolen, on average
    return out


def fmt(x) -> str:
    return "—" if x is None else f"{x:.2f}"


COMPUTE_SAMPLES = ("chelsea", "coffee", "rocket", "camera")


def compute_round(layout: str) -> dict:
    """One round in this process: four sessions' default maps; ``layout`` is WORKERSxTHREADS or
    "unmanaged" (each session calls camlib in its own thread, torch's default threads)."""
    import torch

    import camlib
    from appkit.inputs import working_image
    from appkit.service import ComputeService
    from camlib.images import to_tensor01
    from camlib.samples import load_sample

    model = camlib.load_model("efficientnet_lite0")
    model.split(model.default_layer)
    images = {k: to_tensor01(working_image(load_sample(k)[0]), model.input_size) for k in COMPUTE_SAMPLES}
    methods = camlib.default_methods()
    x0 = images["chelsea"]
    for m in methods:  # warm-up: lazy initialisations, kernels
        camlib.explain(model, x0, m)

    def session_work(x):
        model.predict(x[None])
        for m in methods:
            camlib.explain(model, x, m)
        with torch.inference_mode():
            model.split(model.default_layer).head(model.normalize(x[None]))

    times = {}
    barrier = threading.Barrier(len(images))
    if layout == "unmanaged":
        def run(key):
            barrier.wait()
            start = time.perf_counter()
            session_work(images[key])
            times[key] = time.perf_counter() - start
        threads = [threading.Thread(target=run, args=(k,)) for k in images]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return {"layout": layout, "sessions": times, "torch_threads": torch.get_num_threads()}
    workers, per_job = (int(v) for v in layout.split("x"))
    service = ComputeService(workers, per_job, min(cores(), workers * per_job))

    def run(key):
        barrier.wait()
        start = time.perf_counter()
        x = images[key]
        jobs = [service.submit((key, "predict"), lambda p: model.predict(x[None]))]
        jobs += [service.submit((key, m), lambda p, m=m: camlib.explain(model, x, m)) for m in methods]
        service.wait(jobs)
        times[key] = time.perf_counter() - start

    threads = [threading.Thread(target=run, args=(k,)) for k in images]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = service.stats()
    service.close()
    return {"layout": layout, "sessions": times, "peak_threads": stats["peak_threads"], "peak_jobs": stats["peak_jobs"]}


def compute_main(args) -> int:
    import subprocess

    layouts = args.compare or ["2x1", "1x2", "unmanaged"]
    results = {}
    print(f"compute side: 4 sessions × (predictions + {len(default_keys())} single-pass maps), {cores()} cores, "
          f"load before {load()}")
    for r in range(args.rounds):
        for policy in args.policies:
            for layout in layouts:
                env = {**os.environ, "OMP_WAIT_POLICY": policy}
                out = subprocess.run([sys.executable, "-m", "appkit.bench", "--compute-round", layout],
                                     env=env, capture_output=True, text=True, cwd=browser.ROOT)
                line = [x for x in out.stdout.splitlines() if x.startswith("{")]
                if not line:
                    print(out.stderr[-2000:])
                    continue
                got = json.loads(line[-1])
                results.setdefault((policy, layout), []).append(max(got["sessions"].values()))
                print(f"round {r + 1} {policy:8s} {layout:10s} slowest session {max(got['sessions'].values()):.2f} s "
                      f"(all: {', '.join(f'{v:.2f}' for v in got['sessions'].values())})"
                      + (f", peak torch threads {got['peak_threads']}, peak jobs {got['peak_jobs']}"
                         if "peak_threads" in got else f", torch threads per session {got.get('torch_threads')}"),
                      flush=True)
    base = results.get((args.policies[0], layouts[0]))
    print(f"\nmedian slowest session over {args.rounds} round(s), and its ratio to {args.policies[0]} {layouts[0]}:")
    for (policy, layout), values in results.items():
        median = statistics.median(values)
        ratio = median / statistics.median(base) if base else float("nan")
        print(f"  {policy:8s} {layout:10s} {median:.2f} s  ×{ratio:.2f}")
    print(f"load after {load()}")
    return 0


def gil_main(args) -> int:
    """A single-pass map in a worker thread beside busy Python threads (what the script threads of
    several sessions are while they draw pages), per GIL switch interval: the map's time and the
    Python threads' throughput, side by side with ratios. In this process, 1 torch thread."""
    import torch

    import camlib
    from appkit.inputs import working_image
    from camlib.images import to_tensor01
    from camlib.samples import load_sample

    torch.set_num_threads(1)
    model = camlib.load_model("efficientnet_lite0")
    x = to_tensor01(working_image(load_sample("coffee")[0]), model.input_size)
    for _ in range(3):
        camlib.explain(model, x, "gradcam")
    stop, count = threading.Event(), [0]

    def busy():
        while not stop.is_set():
            sum(i * i for i in range(1000))
            count[0] += 1

    def timed(n=args.repeats):
        start = time.perf_counter()
        for _ in range(n):
            camlib.explain(model, x, "gradcam")
        return (time.perf_counter() - start) / n

    default = sys.getswitchinterval()
    quiet = timed()
    print(f"Grad-CAM (EfficientNet-Lite0, bn2, 1 torch thread) alone: {quiet:.3f} s; {cores()} cores; "
          f"load {load()}")
    try:
        for threads in args.busy_threads:
            for interval in args.intervals:
                sys.setswitchinterval(interval)
                stop.clear()
                count[0] = 0
                pool = [threading.Thread(target=busy) for _ in range(threads)]
                for t in pool:
                    t.start()
                start = time.perf_counter()
                seconds = timed()
                rate = count[0] / (time.perf_counter() - start)
                stop.set()
                for t in pool:
                    t.join()
                print(f"  {threads} busy Python thread(s), switch interval {interval * 1e3:g} ms: Grad-CAM "
                      f"{seconds:.3f} s (×{seconds / quiet:.1f} of alone), Python threads {rate:.0f} loops/s")
    finally:
        sys.setswitchinterval(default)
    return 0


#: The trivial page of ``--first-load``: Streamlit's frontend and two images, nothing of the app.
TRIVIAL_PAGE = """import numpy as np
import streamlit as st
st.set_page_config(layout="wide")
st.title("A trivial page")
for i, column in enumerate(st.columns(2)):
    column.image(np.full((224, 224, 3), 60 * i, dtype=np.uint8), caption=f"image {i}")
"""
#: Chrome's counters kept by ``--first-load`` (seconds, except Nodes).
PAGE_METRICS = ("ScriptDuration", "LayoutDuration", "RecalcStyleDuration", "TaskDuration", "Nodes")


def first_load(url: str, ready) -> dict:
    """One first page load of ``url`` in a fresh headless Chromium, until ``ready(driver)``: the wall
    seconds, the CPU seconds per Chromium process kind and Chrome's :data:`PAGE_METRICS`."""
    driver = browser.chrome()
    try:
        driver.get("about:blank")
        driver.execute_cdp_cmd("Performance.enable", {})
        before, start = browsers_cpu([driver]), time.monotonic()
        driver.get(url)
        ready(driver)
        wall = time.monotonic() - start
        used = browsers_cpu_since(before, browsers_cpu([driver]))
        metrics = {m["name"]: m["value"] for m in driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]}
    finally:
        driver.quit()
    return {"wall": wall, "cpu": used, **{k: metrics.get(k) for k in PAGE_METRICS}}


def medians(loads: list[dict]) -> dict:
    """The median of every number of several :func:`first_load` results (CPU per process kind too)."""
    kinds = sorted({k for load in loads for k in load["cpu"]})
    out = {k: statistics.median(load[k] for load in loads) for k in ("wall", *PAGE_METRICS)
           if all(load.get(k) is not None for load in loads)}
    out["cpu"] = {k: statistics.median(load["cpu"].get(k, 0.0) for load in loads) for k in kinds}
    return out


def first_load_main(args) -> int:
    keys = default_keys()
    with tempfile.TemporaryDirectory(prefix="camlib-trivial-") as folder:
        with open(os.path.join(folder, "app.py"), "w") as f:
            f.write(TRIVIAL_PAGE)
        with browser.Server(cwd=pathlib.Path(folder)) as trivial, browser.Server() as app:
            def maps_drawn(d):
                return browser.wait_rendered(d, keys, args.timeout)

            first_load(app.url("/"), maps_drawn)  # warm the server
            pages = {"trivial Streamlit page": (trivial.url("/"), lambda d: browser.wait_for(
                         lambda: len(d.find_elements("css selector", "[data-testid='stImage'] img")) >= 2, args.timeout)),
                     "landing page, to all default maps": (app.url("/"), maps_drawn)}
            loads = {name: [] for name in pages}
            for _ in range(args.warm):
                for name, (url, ready) in pages.items():
                    loads[name].append(first_load(url, ready))
    print(f"first page loads in a fresh headless Chromium, median of {args.warm} · load after {load()}")
    result = {name: medians(values) for name, values in loads.items()}
    for name, m in result.items():
        print(f"  {name}: {m['wall']:.2f} s; CPU s " + ", ".join(f"{k} {v:.2f}" for k, v in m["cpu"].items() if v >= 0.01)
              + "; " + ", ".join(f"{k} {m[k]:.0f}" if k == "Nodes" else f"{k} {m[k]:.2f} s" for k in PAGE_METRICS if k in m))
    (_, a), (_, b) = result.items()
    print("  ratio landing / trivial: renderer CPU "
          f"{b['cpu'].get('renderer', 0) / max(a['cpu'].get('renderer', 0), 1e-9):.2f}, all Chromium CPU "
          f"{sum(b['cpu'].values()) / max(sum(a['cpu'].values()), 1e-9):.2f}, script time "
          f"{b.get('ScriptDuration', 0) / max(a.get('ScriptDuration') or 0, 1e-9):.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"loads": loads, "medians": result}, f, indent=1)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compute", action="store_true", help="the compute side alone (no browsers)")
    parser.add_argument("--compare", nargs="*", help="--compute: layouts WORKERSxTHREADS or 'unmanaged'")
    parser.add_argument("--policies", nargs="*", default=["PASSIVE"], help="--compute: OMP_WAIT_POLICY values")
    parser.add_argument("--rounds", type=int, default=3, help="--compute: interleaved rounds")
    parser.add_argument("--compute-round", help=argparse.SUPPRESS)
    parser.add_argument("--first-load", action="store_true",
                        help="a first page load: a trivial Streamlit page against the landing page (CPU, script time)")
    parser.add_argument("--gil", action="store_true", help="a map beside busy Python threads, per GIL switch interval")
    parser.add_argument("--intervals", nargs="*", type=float, default=[0.005, 0.001, 0.0001],
                        help="--gil: switch intervals in seconds (Python's default: 0.005)")
    parser.add_argument("--busy-threads", nargs="*", type=int, default=[1, 2], help="--gil: busy Python threads")
    parser.add_argument("--repeats", type=int, default=8, help="--gil: maps timed per case")
    parser.add_argument("--layouts", nargs="*", default=[], help="more service layouts to compare, as WORKERSxTHREADS")
    parser.add_argument("--warm", type=int, default=5, help="warm sessions to time (median reported)")
    parser.add_argument("--repeat", type=int, default=1, help="fresh servers per layout (medians reported)")
    parser.add_argument("--timeout", type=float, default=180, help="seconds to wait for a page's maps")
    parser.add_argument("--browser-nice", type=int, default=0,
                        help="CPU niceness of the Chromium processes (0: same priority as the server; 19: the "
                             "server first, as when the browsers run on the students' own machines)")
    parser.add_argument("--json", help="write every number to this file")
    args = parser.parse_args(argv)
    if args.compute_round:
        print(json.dumps(compute_round(args.compute_round)))
        return 0
    if args.compute:
        return compute_main(args)
    if args.gil:
        return gil_main(args)
    reason = browser.missing()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    if args.first_load:
        return first_load_main(args)
    n = cores()
    layouts = [default_layout(n)] + [tuple(int(v) for v in layout.split("x")) for layout in args.layouts]
    import torch

    print(f"app timings · {n} cores · torch {torch.__version__} · OMP_WAIT_POLICY "
          f"{os.environ.get('OMP_WAIT_POLICY', 'PASSIVE (app.py default)')} · browsers at niceness "
          f"{args.browser_nice} · load before {load()}")
    runs = []
    layouts = [layout for layout in layouts for _ in range(args.repeat)]
    for workers, threads in layouts:
        print(f"\n== compute service: {workers} worker(s) × {threads} torch thread(s) per job ==", flush=True)
        r = run_layout(workers, threads, args.warm, args.timeout, args.browser_nice)
        runs.append(r)
        print(f"load {r['load_before']} -> {r['load_after']}; CPU stolen by the hypervisor during the run: "
              f"{r['steal_per_wall']:.2f} of {n} cores on average")
        print(f"cold server: health {fmt(r['health'])} s, first heatmap {fmt(r['cold_first'])} s, "
              f"all default maps {fmt(r['cold_all'])} s")
        print(f"warm, new session: all default maps {fmt(r['warm_median'])} s (median of "
              f"{', '.join(fmt(w) for w in r['warm'])})")
        for label, title in PHASES:
            times = [s["all"] for s in r[label]]
            print(f"{title}: all default maps per session {', '.join(fmt(t) for t in times)} s "
                  f"(max {fmt(max(times) if all(t is not None for t in times) else None)}); "
                  f"the server had computed them after {fmt(r[label + '_computed'])} s; "
                  f"server CPU {r[label + '_server_cpu_per_wall']:.2f} cores busy, browsers at least "
                  f"{r[label + '_browsers_cpu_per_wall']:.2f} (CPU seconds by process: "
                  + ", ".join(f"{kind} {sec:.1f}" for kind, sec in sorted(r[label + "_browsers_cpu_by_kind"].items(),
                                                                         key=lambda item: -item[1]) if sec >= 0.05)
                  + f"); exceptions {r[label + '_exceptions']}")
        print("each of the 4 sessions shows its own sample: "
              + "; ".join(f"{title}: {r[key + '_own_sample']}" for key, title in PHASES if key in OWN_SAMPLE_PHASES))
        t = r["trace"]
        print(f"service: {t['jobs']} jobs; most torch threads in use at once {t['peak_threads']} of {t['cores']} cores; "
              f"most concurrent jobs {t['peak_running']}; torch threads of a job at its start {t.get('threads_per_running_job')}")
    if args.repeat > 1:
        print(f"\nover {args.repeat} fresh servers per layout (median, and the range):")
        for workers, threads in dict.fromkeys(layouts):
            mine = [r for r in runs if (r["workers"], r["threads"]) == (workers, threads)]
            rows = [("cold, all default maps", [r["cold_all"] for r in mine]),
                    ("warm new session (median of its runs)", [r["warm_median"] for r in mine])]
            for key, title in PHASES:
                rows.append((f"{title} (slowest session)",
                             [max(x["all"] for x in r[key]) if all(x["all"] for x in r[key]) else None for r in mine]))
                rows.append((f"{title} (computed by the server)", [r[key + "_computed"] for r in mine]))
            for title, values in rows:
                known = [v for v in values if v is not None]
                print(f"  {workers}x{threads} {title}: " + (f"{statistics.median(known):.2f} s "
                      f"({min(known):.2f}–{max(known):.2f}; {', '.join(fmt(v) for v in values)})" if known else "—"))
    if len(dict.fromkeys(layouts)) > 1:
        base = runs[0]
        print("\nratios to the first layout (lower is faster):")
        for r in [r for r in runs if (r["workers"], r["threads"]) != (base["workers"], base["threads"])]:
            def ratio(key, pick=lambda v: v):
                a, b = pick(r[key]), pick(base[key])
                return "—" if a is None or b is None or b == 0 else f"{a / b:.2f}"
            worst = lambda v: max(s["all"] for s in v) if all(s["all"] for s in v) else None  # noqa: E731
            print(f"{r['workers']}x{r['threads']}: cold {ratio('cold_all')}, warm {ratio('warm_median')}, "
                  + ", ".join(f"{title} {ratio(key, worst)}" for key, title in PHASES))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cores": n, "runs": runs}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
