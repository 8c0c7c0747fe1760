#!/usr/bin/env python3
"""Render examples/dashboard.sql as SVG bar charts (no plotting library needed).

    python3 scripts/render_dashboard.py [psql connection options...]

Runs each query of examples/dashboard.sql with psql (as whoever connects: the charts show what
that viewer may see) and writes examples/<name>.svg.
"""
import html
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(HERE, '..', 'examples')


def queries(path):
    text = open(path, encoding='utf-8').read()
    for block in re.split(r'\n(?=-- name: )', text):
        m = re.search(r'-- name: (\w+)\n-- title: ([^\n]*)\n(.*)', block, re.S)
        if m:
            yield m.group(1), m.group(2).strip(), m.group(3).strip()


def run(sql, args):
    out = subprocess.run(['psql', '-X', '-qAt', '-F', '\t', '-v', 'ON_ERROR_STOP=1', *args, '-c', sql],
                         check=True, capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        label, value = line.split('\t')
        rows.append((label, float(value or 0)))
    return rows


def svg(title, rows):
    w, left, bar, gap, top = 720, 260, 22, 8, 48
    h = top + max(1, len(rows)) * (bar + gap) + 24
    peak = max([v for _, v in rows] + [1])
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="Helvetica, Arial, sans-serif">',
             '<rect width="100%" height="100%" fill="white"/>',
             f'<text x="16" y="28" font-size="17" font-weight="bold">{html.escape(title)}</text>']
    if not rows:
        parts.append(f'<text x="16" y="{top + 16}" font-size="13" fill="#666">no rows for this viewer</text>')
    for i, (label, value) in enumerate(rows):
        y = top + i * (bar + gap)
        length = (w - left - 90) * value / peak
        parts.append(f'<text x="{left - 8}" y="{y + 16}" font-size="13" text-anchor="end">{html.escape(label)}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{length:.1f}" height="{bar}" fill="#3b6ea5"/>')
        parts.append(f'<text x="{left + length + 6:.1f}" y="{y + 16}" font-size="13">{value:g}</text>')
    parts.append('</svg>')
    return '\n'.join(parts)


def main():
    args = sys.argv[1:]
    for name, title, sql in queries(os.path.join(EXAMPLES, 'dashboard.sql')):
        path = os.path.join(EXAMPLES, name + '.svg')
        with open(path, 'w', encoding='utf-8') as f:
            f.write(svg(title, run(sql, args)))
        print('wrote', os.path.relpath(path))


if __name__ == '__main__':
    main()
