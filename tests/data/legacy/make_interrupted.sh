#!/bin/bash
# Interrupted sweep fixture: SIGKILL the driver's process group once results.parquet has 1 row.
cd /tmp/legacy
export PYTHONPATH=/tmp/legacy PDSWEEP_CACHE=/tmp/legacy-cache
PY=/work/main/.venv/bin/python
RUNS=/tmp/legacy-fixtures/sweep-runs
setsid $PY -m pdsweep run --space /tmp/legacy-fixtures/legacy-space.yaml --budget-gflops 0.01 --trials 3 --concurrency 1 --search random --scheduler none --dataset synthetic:40 --name legacy --runs-dir $RUNS --cpus-per-trial 1 > /tmp/legacy-interrupted.out 2>&1 &
PID=$!
echo "driver pid $PID"
$PY - "$PID" <<'PYEOF'
# inotify (ctypes): SIGKILL the driver's process group on the first rename into results.parquet.
# results.write() replaces the file atomically once per finished trial, so its first version has
# exactly 1 row; trials 2 and 3 end milliseconds later, too soon for a 0.5 s (or even 10 ms) poll.
import ctypes, os, signal, struct, sys, time
import pyarrow.parquet as pq
pid = int(sys.argv[1])
folder = "/tmp/legacy-fixtures/sweep-runs/legacy"; path = folder + "/results.parquet"
libc = ctypes.CDLL("libc.so.6", use_errno=True)
IN_MOVED_TO, IN_CLOSE_WRITE = 0x80, 0x08
t0 = time.time()
while not os.path.isdir(folder):
    time.sleep(0.01)
fd = libc.inotify_init()
libc.inotify_add_watch(fd, folder.encode(), IN_MOVED_TO | IN_CLOSE_WRITE)
def rows():
    return pq.read_table(path).num_rows
if not os.path.exists(path):
    done = False
    while not done:
        buf = os.read(fd, 65536)
        i = 0
        while i < len(buf):
            wd, mask, cookie, ln = struct.unpack_from("iIII", buf, i)
            name = buf[i + 16:i + 16 + ln].rstrip(b"\0")
            i += 16 + ln
            if name == b"results.parquet":
                os.killpg(pid, signal.SIGKILL); done = True; break
print(f"killed pgid {pid} at {time.time()-t0:.2f}s; results.parquet has {rows()} rows", flush=True)
PYEOF
wait $PID 2>/dev/null; echo "driver wait rc=$?"
/work/main/.venv/bin/ray stop --force
