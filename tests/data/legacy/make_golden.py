"""Golden CLI outputs of pdsweep at commit afaab7b.

Run from /tmp/legacy with PYTHONPATH=/tmp/legacy and PDSWEEP_CACHE=/tmp/legacy-cache:
    /work/main/.venv/bin/python /tmp/legacy-fixtures/make_golden.py
"""
import json
import os
import subprocess
import sys

CASES = [
    "plan --budget-gflops 17.6 --json",
    "plan --budget-gflops 1.3,4.6,17.6 --budget-memory-gb 16 --json",
    "plan --space quickstart --budget-gflops 0.02 --json",
    "plan --space quickstart --budget-gflops 0.01,0.02 --keep-policy search --json",
    "plan --space quickstart --budget-gflops 0.02",
    "plan --budget-gflops 4.6 --keep-policy search",
    "flops --model deit_base --resolution 224 --patch-size 16 --keep-rate 0.5 --json",
    "flops --model deit_small --resolution 448 --patch-size 16 --keep-rate 0.25 --ensemble-size 2 --depth 6 --batch-size 32 --precision fp32 --optimizer sgd --json",
    "flops --model vit_micro --resolution 64 --patch-size 8 --keep-rate 0.3 --num-classes 4 --json",
    "flops --model deit_tiny --resolution 112 --patch-size 16 --keep-rate 0.5",
    "plan --budget-gflops 0.0001",
    "flops --model nope --resolution 224 --patch-size 16",
    "plan --budget-gflops 1 --space does-not-exist",
    "flops --model deit_base --resolution 224 --patch-size 15",
]

out = []
for case in CASES:
    args = case.split()
    p = subprocess.run([sys.executable, "-m", "pdsweep", *args],
                       capture_output=True, text=True, env=os.environ)
    out.append({"args": args, "stdout": p.stdout, "stderr": p.stderr, "exit_code": p.returncode})
    print(p.returncode, case, file=sys.stderr)

with open("/tmp/legacy-fixtures/golden.json", "w") as f:
    json.dump(out, f, indent=2)
    f.write("\n")
