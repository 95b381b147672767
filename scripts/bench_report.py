#!/usr/bin/env python3
"""Assembles BENCHMARKS.md from one scripts/bench run: the machine and tool versions, a table
of every target the issues name (met or not, with the measured figure), one section per bench
(its own Markdown tables), and SVG bar charts drawn here with the standard library only.

Inputs, all in the run's work directory (scripts/bench writes them):
  meta.tsv      key<TAB>value: date, command, machine, tool versions
  sections.tsv  name<TAB>title<TAB>ok|failed|missing<TAB>seconds<TAB>command
  metrics.tsv   name<TAB>value, appended by the benches (testkit::bench::metric)
  <name>.md     a bench's stdout; <name>.log its stderr

Usage: bench_report.py --work DIR --out FILE  (plots go to <dir of FILE>/bench-plots/)
"""

import argparse
import html
import math
import os
import re
import sys


def read_tsv(path, columns):
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 2:
                rows.append(parts + [""] * (columns - len(parts)))
    return rows


def read_metrics(path):
    metrics = {}
    for name, value, *_ in read_tsv(path, 2):
        try:
            metrics[name] = float(value)
        except ValueError:
            print(f"bench_report: ignoring metric {name}={value!r}", file=sys.stderr)
    return metrics


def unit_of(name):
    """The unit a metric's name ends in (testkit::bench::metric's naming rule)."""
    for marker, unit in (("_ms", "ms"), ("_us", "µs"), ("_mb", "MB"), ("per_s", "/s"),
                         ("ratio", "×"), ("gbps", "Gbit/s")):
        if marker in name:
            return unit
    return ""


def fmt(value, unit=""):
    if value is None:
        return "not measured"
    if value == int(value) and abs(value) < 1e6:
        text = f"{int(value):,}"
    elif abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


# Every target the issues name: (issue, target text, metric, comparison, bound, unit, extra).
# `extra` names further metrics shown beside the judged one.
TARGETS = [
    ("#3 IPAM", "fast-path etcd round trips per allocation ≤ 3 (Calico ~14 per ADD)",
     "ipam.fast_alloc_round_trips", "<=", 3, "", ["ipam.calico_alloc_round_trips"]),
    ("#3 IPAM", "≥ 500 allocations/s with 4 hosts on one etcd",
     "ipam.allocs_per_s.4", ">=", 500, "/s", ["ipam.allocs_per_s.1", "ipam.allocs_per_s.16"]),
    ("#3 IPAM", "zero duplicate addresses with 1, 4 and 16 hosts",
     "ipam.duplicates.4", "<=", 0, "", ["ipam.duplicates.1", "ipam.duplicates.16"]),
    ("#3 IPAM", "first allocation on a /8 with 10,000 blocks claimed by others < 50 ms (max)",
     "ipam.crowded_max_ms.realistic", "<", 50, "ms",
     ["ipam.crowded_p50_ms.realistic", "ipam.crowded_max_ms.adversarial"]),
    ("#4 CNI", "ADD p50 ≤ 0.5 × ptp + host-local", "cni.add_p50_ratio", "<=", 0.5, "×",
     ["cni.add_p50_ms.tabby", "cni.add_p50_ms.reference"]),
    ("#4 CNI", "DEL p50 ≤ 0.5 × ptp + host-local", "cni.del_p50_ratio", "<=", 0.5, "×",
     ["cni.del_p50_ms.tabby", "cni.del_p50_ms.reference"]),
    ("#5 agent", "cold start to programmed, 10,000 endpoints ≤ 2 s",
     "agent.cold_start_ms.10000", "<=", 2000, "ms", ["agent.cold_start_ms.1000"]),
    ("#5 agent", "agent RSS at 10,000 endpoints ≤ 150 MB", "agent.rss_mb.10000", "<=", 150,
     "MB", ["agent.rss_mb.1000"]),
    ("#5 agent", "one profile rule change → nftables updated, p99 ≤ 50 ms",
     "agent.change_p99_ms.10000", "<=", 50, "ms", ["agent.change_p50_ms.10000"]),
    ("#5 agent", "new endpoint via CNI ADD → its traffic allowed ≤ 100 ms (p99, end to end)",
     "e2e.total_p99_ms", "<=", 100, "ms", ["e2e.total_p50_ms", "e2e.agent_p50_ms"]),
    ("#5 agent", "iperf3 throughput through the ruleset ≥ 90 % of no rules",
     "datapath.gbps_ratio.tabby", ">=", 0.9, "×", ["datapath.gbps_ratio.iptables"]),
]

LABELS = {
    "ipam.calico_alloc_round_trips": "modelled Calico",
    "ipam.allocs_per_s.1": "1 host",
    "ipam.allocs_per_s.16": "16 hosts",
    "ipam.duplicates.1": "1 host",
    "ipam.duplicates.16": "16 hosts",
    "ipam.crowded_p50_ms.realistic": "p50",
    "ipam.crowded_max_ms.adversarial": "adversarial max",
    "cni.add_p50_ms.tabby": "tabby",
    "cni.add_p50_ms.reference": "ptp",
    "cni.del_p50_ms.tabby": "tabby",
    "cni.del_p50_ms.reference": "ptp",
    "agent.cold_start_ms.1000": "1k endpoints",
    "agent.rss_mb.1000": "1k endpoints",
    "agent.change_p50_ms.10000": "p50",
    "e2e.total_p50_ms": "p50",
    "e2e.agent_p50_ms": "agent part p50",
    "datapath.gbps_ratio.iptables": "linear iptables",
}

UNITS = {"ms": "ms", "/s": "/s", "MB": "MB", "×": "×"}


def judge(value, op, bound):
    if value is None:
        return "**not measured**"
    ok = {"<=": value <= bound, ">=": value >= bound, "<": value < bound}[op]
    return "yes" if ok else "**no**"


def targets_table(metrics):
    lines = ["| issue | target | measured | met |", "| --- | --- | --- | --- |"]
    for issue, text, name, op, bound, unit, extra in TARGETS:
        value = metrics.get(name)
        shown = fmt(value, unit)
        others = [f"{LABELS.get(e, e)} {fmt(metrics[e], unit_of(e))}" for e in extra if e in metrics]
        if others and value is not None:
            shown += f" ({'; '.join(others)})"
        lines.append(f"| {issue} | {text} | {shown} | {judge(value, op, bound)} |")
    docker = sorted(k for k in metrics if k.startswith("docker."))
    if docker:
        shown = "; ".join(f"{k[len('docker.'):]} {fmt(metrics[k], unit_of(k))}" for k in docker)
        if "docker.tabbynet_p50_ms" in metrics and metrics.get("docker.bridge_p50_ms"):
            shown += f"; ratio {metrics['docker.tabbynet_p50_ms'] / metrics['docker.bridge_p50_ms']:.2f} ×"
        lines.append(f"| #7 docker | `docker run` on tabby vs bridge, p50 of 20: recorded | {shown} | recorded |")
    else:
        lines.append("| #7 docker | `docker run` on tabby vs bridge, p50 of 20: recorded | not measured | **no** |")
    cpu = [k for k in ("agent.change_cpu_ms.1000", "agent.change_cpu_ms.10000") if k in metrics]
    scale_ok = "agent.cold_start_ms.1000" in metrics and "agent.cold_start_ms.10000" in metrics
    lines.append(
        "| #9 proof | agent cold start, update latency, RSS and CPU at 1k and 10k endpoints | "
        + ("; ".join(f"{k.split('.')[-1]} endpoints: CPU per change {fmt(metrics[k], 'ms')}" for k in cpu)
           or "not measured")
        + f" | {'yes' if scale_ok else '**no**'} |"
    )
    lines.append("| #9 proof | BENCHMARKS.md regenerated by one command, with machine and versions | this file | yes |")
    return "\n".join(lines)


# ---------------------------------------------------------------- SVG bar charts

PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1"]


def nice_max(value):
    if value <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exp:
            return step * exp
    return 10 * exp


def bar_chart(title, categories, series, unit, target=None, width=640, height=360):
    """Grouped bars: `series` is [(name, [value or None per category])]. `target` is
    (value, label) drawn as a dashed line."""
    left, right, top, bottom = 70, 20, 40, 70
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for _, vs in series for v in vs if v is not None]
    if target:
        values.append(target[0])
    ymax = nice_max(max(values) * 1.1 if values else 1)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15">{html.escape(title)}</text>',
    ]
    for i in range(6):
        v = ymax * i / 5
        y = top + plot_h - plot_h * i / 5
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt(v)}</text>')
    out.append(
        f'<text x="16" y="{top + plot_h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {top + plot_h / 2})">{html.escape(unit)}</text>'
    )
    group_w = plot_w / max(len(categories), 1)
    bar_w = group_w * 0.8 / max(len(series), 1)
    for c, category in enumerate(categories):
        gx = left + c * group_w + group_w * 0.1
        for s, (_, vs) in enumerate(series):
            v = vs[c] if c < len(vs) else None
            if v is None:
                continue
            h = plot_h * v / ymax
            x = gx + s * bar_w
            y = top + plot_h - h
            out.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w * 0.92:.1f}" height="{h:.1f}" '
                f'fill="{PALETTE[s % len(PALETTE)]}"><title>{fmt(v)} {html.escape(unit)}</title></rect>'
            )
            out.append(
                f'<text x="{x + bar_w * 0.46:.1f}" y="{y - 4:.1f}" text-anchor="middle" '
                f'font-size="10">{fmt(v)}</text>'
            )
        out.append(
            f'<text x="{left + c * group_w + group_w / 2:.1f}" y="{top + plot_h + 18}" '
            f'text-anchor="middle">{html.escape(category)}</text>'
        )
    out.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="black"/>'
    )
    if target:
        ty = top + plot_h - plot_h * target[0] / ymax
        out.append(
            f'<line x1="{left}" y1="{ty:.1f}" x2="{left + plot_w}" y2="{ty:.1f}" '
            f'stroke="#c00" stroke-dasharray="6 4"/>'
        )
        out.append(
            f'<text x="{left + plot_w - 4}" y="{ty - 5:.1f}" text-anchor="end" fill="#c00">'
            f"{html.escape(target[1])}</text>"
        )
    lx = left
    for s, (name, _) in enumerate(series):
        out.append(
            f'<rect x="{lx}" y="{height - 24}" width="12" height="12" fill="{PALETTE[s % len(PALETTE)]}"/>'
        )
        out.append(f'<text x="{lx + 16}" y="{height - 14}">{html.escape(name)}</text>')
        lx += 24 + 7 * len(name)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def plots(metrics, plot_dir, rel_dir):
    """Writes the charts it has data for; returns Markdown image lines."""
    charts = []
    scales = [("1,000 endpoints", "1000"), ("10,000 endpoints", "10000")]
    if any(f"agent.cold_start_ms.{n}" in metrics for _, n in scales):
        m = lambda key: [metrics.get(f"{key}.{n}") for _, n in scales]  # noqa: E731
        charts.append((
            "agent-scale.svg", "Agent latency vs scale",
            bar_chart("Agent: latency vs scale", [c for c, _ in scales], [
                ("cold start", m("agent.cold_start_ms")),
                ("rule change p50", m("agent.change_p50_ms")),
                ("rule change p99", m("agent.change_p99_ms")),
                ("new endpoint p50", m("agent.new_endpoint_p50_ms")),
                ("plan only", m("agent.plan_ms")),
            ], "ms"),
        ))
    hosts = ["1", "4", "16"]
    if any(f"ipam.allocs_per_s.{h}" in metrics for h in hosts):
        charts.append((
            "ipam-hosts.svg", "IPAM throughput vs hosts",
            bar_chart("IPAM: allocations/s with hosts contending on one etcd",
                      [f"{h} host{'s' if h != '1' else ''}" for h in hosts],
                      [("allocations/s", [metrics.get(f"ipam.allocs_per_s.{h}") for h in hosts])],
                      "allocations/s", target=(500, "target at 4 hosts: 500/s")),
        ))
    configs = [("none", "no rules"), ("tabby", "tabby"), ("iptables", "iptables linear"),
               ("iptables_ct", "iptables linear + ct")]
    if "datapath.gbps.none" in metrics:
        charts.append((
            "datapath.svg", "Data path throughput and latency",
            bar_chart("Data path: TCP throughput", [label for _, label in configs],
                      [("Gbit/s (iperf3)", [metrics.get(f"datapath.gbps.{k}") for k, _ in configs])],
                      "Gbit/s",
                      target=(0.9 * metrics["datapath.gbps.none"], "90 % of no rules")),
        ))
        charts.append((
            "datapath-rr.svg", "Data path request/response latency",
            bar_chart("Data path: 64-byte request/response latency", [label for _, label in configs],
                      [("p50", [metrics.get(f"datapath.rr_p50_us.{k}") for k, _ in configs]),
                       ("p99", [metrics.get(f"datapath.rr_p99_us.{k}") for k, _ in configs])],
                      "µs"),
        ))
    lines = []
    if charts:
        os.makedirs(plot_dir, exist_ok=True)
    for file, alt, svg in charts:
        with open(os.path.join(plot_dir, file), "w", encoding="utf-8") as f:
            f.write(svg)
        lines.append(f"![{alt}]({rel_dir}/{file})")
    return lines


def demote(markdown):
    """A bench's own headings, one level down, under the section heading."""
    return re.sub(r"^(#{1,5}) ", lambda m: "#" + m.group(1) + " ", markdown, flags=re.M)


def docker_fallback(work, metrics):
    """The docker bench's p50s read from its table when it records no metrics of its own."""
    if any(k.startswith("docker.") for k in metrics):
        return
    path = os.path.join(work, "docker.md")
    if not os.path.exists(path):
        return
    row = re.compile(r"^\|\s*`docker run --net (\S+?)`\s*\|\s*\d+\s*\|\s*([\d.]+) ms\s*\|")
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = row.match(line)
            if m:
                metrics[f"docker.{m.group(1)}_p50_ms"] = float(m.group(2))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    meta = {k: v for k, v, *_ in read_tsv(os.path.join(args.work, "meta.tsv"), 2)}
    sections = read_tsv(os.path.join(args.work, "sections.tsv"), 5)
    metrics = read_metrics(os.path.join(args.work, "metrics.tsv"))
    docker_fallback(args.work, metrics)
    out_dir = os.path.dirname(os.path.abspath(args.out))
    plot_lines = plots(metrics, os.path.join(out_dir, "bench-plots"), "bench-plots")

    doc = ["# tabby benchmarks", ""]
    doc.append(
        f"Generated by `{meta.get('command', 'scripts/bench')}` on {meta.get('date', '?')} "
        f"at commit {meta.get('commit', '?')}. Rerun that command (as root) to regenerate this "
        "file. Timings on a 2-core machine are noisy: compare ratios within one table (each bench "
        "runs its peers side by side, alternating), not absolute numbers across runs."
    )
    doc += ["", "## Machine and tools", "", "| what | value |", "| --- | --- |"]
    for key, label in [("cpus", "CPUs"), ("cpu", "CPU model"), ("memory", "memory"),
                       ("kernel", "kernel"), ("os", "OS"), ("rustc", "rustc"), ("etcd", "etcd"),
                       ("nft", "nft"), ("iptables", "iptables"), ("iperf3", "iperf3"),
                       ("podman", "podman"), ("dockerd", "dockerd"), ("bird", "bird")]:
        doc.append(f"| {label} | {meta.get(key) or 'not installed'} |")
    doc += ["", "## Targets", "", targets_table(metrics), ""]
    if plot_lines:
        doc += ["## Plots", ""] + [line + "\n" for line in plot_lines]
    for name, title, status, seconds, command in sections:
        doc += [f"## {title}", ""]
        if status == "missing":
            doc += [f"Not run: {command}.", ""]
            continue
        doc.append(f"`{command}` ({seconds} s{', **failed**' if status == 'failed' else ''})")
        doc.append("")
        md_path = os.path.join(args.work, f"{name}.md")
        body = open(md_path, encoding="utf-8").read().strip() if os.path.exists(md_path) else ""
        if body:
            doc += [demote(body), ""]
        if status == "failed":
            log_path = os.path.join(args.work, f"{name}.log")
            tail = open(log_path, encoding="utf-8", errors="replace").read().splitlines()[-20:] \
                if os.path.exists(log_path) else []
            doc += ["Log tail:", "", "```text", *tail, "```", ""]
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(doc).rstrip() + "\n")


if __name__ == "__main__":
    main()
