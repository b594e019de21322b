"""Summarise ``ncu --csv --page details`` output: one Markdown row per kernel launch with its
duration, registers per thread, grid/block size and achieved occupancy."""
import csv
import sys
from collections import defaultdict

WANTED = {"Duration": "duration", "Registers Per Thread": "regs", "Grid Size": "grid",
          "Block Size": "block", "Achieved Occupancy": "occupancy",
          "Compute (SM) Throughput": "sm %", "Memory Throughput": "mem %"}


def main(path):
    rows = defaultdict(dict)
    with open(path, newline="") as f:
        lines = [line for line in f if line.startswith('"')]  # skip ncu's own log lines
    for r in csv.DictReader(lines):
        key = (int(r["ID"]), r["Kernel Name"].split("(")[0])
        if r["Metric Name"] in WANTED:
            rows[key][WANTED[r["Metric Name"]]] = f'{r["Metric Value"]} {r["Metric Unit"]}'
    cols = list(WANTED.values())
    print("| id | kernel | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 2) + "|")
    for (i, name), m in sorted(rows.items()):
        print(f"| {i} | {name} | " + " | ".join(m.get(c, "") for c in cols) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
