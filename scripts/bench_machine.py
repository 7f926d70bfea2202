"""The machine line every benchmark table's header carries: figures only compare between machines
when the CPU, its bf16 support, the precision and the thread count are named beside them.

    from bench_machine import describe
    describe("bf16", "2 intra-op threads")  # 'AMD EPYC, 2 usable CPUs, native bf16; precision bf16; 2 intra-op threads'
"""

from __future__ import annotations

import platform


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the architecture where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bf16_kind() -> str:
    """'native bf16' or 'fp32-only (bf16 emulated)': the same recipe picks different precisions on each."""
    from tuneforge.runner.device import cpu_supports_bf16

    return "native bf16" if cpu_supports_bf16() else "fp32-only (bf16 emulated)"


def describe(precision: str, threads: str) -> str:
    from tuneforge.runner.threads import usable_cpus

    n = usable_cpus()
    return f"{cpu_model()}, {n} usable CPU{'s' if n != 1 else ''}, {bf16_kind()}; precision {precision}; {threads}"


def child_result(proc, what: str) -> dict:
    """The `RESULT {json}` line a benchmark's measuring child printed; its output and exit otherwise."""
    import json
    import sys

    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"{what} failed (exit {proc.returncode})")
    return json.loads(line[7:])


def replace_section(path, section: str, text: str) -> None:
    """Write `text` (which starts with its `section` heading) into the markdown file at `path`, in
    place of that section's earlier text (up to the next '## ' heading), else at the end."""
    from pathlib import Path

    path = Path(path)
    old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n\n"
    if section in old:
        head, rest = old.split(section, 1)
        nxt = rest.find("\n## ")
        old = head + (rest[nxt + 1:] if nxt >= 0 else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(old.rstrip("\n") + "\n\n" + text if old.strip() else text, encoding="utf-8")
