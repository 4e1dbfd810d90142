#!/usr/bin/env python3
"""The console following many external runs: idle CPU, and how soon a new point is on screen.

    pip install tensorboard
    cargo build --release
    python bench/watch_bench.py --vigil target/release/vigil --runs 50 --points 10000 --seconds 30

Writes RUNS TensorBoard run folders of POINTS scalar points each (train/loss, with TensorBoard's
own record writer) under a temporary folder, opens `vigil --watch` on them in a detached tmux
session (120x40, the Runs view), waits until every run is listed, then:
  * idle CPU: the console's user+system CPU time from /proc/PID/stat over SECONDS seconds with
    nothing written, as a percentage of one core;
  * latency: 5 times, appends one point with a recognisable value to the newest run and polls
    `tmux capture-pane` every 10 ms until the value is on screen; prints each and the median.
The runs' files are fresh, so they count as live (looked at every 250 ms, their writers
searched for every 3 s): the costlier case. Prints medians; the coordinator reruns it quietly.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def write_runs(root, runs, points):
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    files = []
    for r in range(runs):
        d = os.path.join(root, f"run{r:03d}")
        os.makedirs(d)
        path = os.path.join(d, f"events.out.tfevents.{1700000000 + r}.bench")
        f = open(path, "wb")
        w = RecordWriter(f)
        w.write(event_pb2.Event(wall_time=1.7e9, file_version="brain.Event:2").SerializeToString())
        t0 = 1.7e9 + r * 1000  # the last run has the newest start: the top row of the table
        for step in range(points):
            s = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="train/loss", simple_value=1.0 / (1 + step))])
            w.write(event_pb2.Event(wall_time=t0 + step * 0.01, step=step, summary=s).SerializeToString())
        f.flush()
        files.append((f, w, t0, points))
    return files


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def pane(session):
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vigil", default="target/release/vigil")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--points", type=int, default=10000)
    p.add_argument("--seconds", type=float, default=30)
    a = p.parse_args()
    from tensorboard.compat.proto import event_pb2, summary_pb2

    tmp = tempfile.mkdtemp(prefix="vigil-watch-bench-")
    logs = os.path.join(tmp, "logs")
    store = os.path.join(tmp, "store")
    os.makedirs(logs)
    t = time.perf_counter()
    files = write_runs(logs, a.runs, a.points)
    print(f"wrote {a.runs} runs x {a.points} points in {time.perf_counter() - t:.1f} s")
    session = f"vigil-watch-bench-{os.getpid()}"
    vigil = os.path.abspath(a.vigil)
    subprocess.run(["tmux", "new", "-d", "-s", session, "-x", "120", "-y", "40",
                    f"{vigil} --runs-dir {store} --watch {logs}"], check=True)
    try:
        pid = int(subprocess.run(["tmux", "list-panes", "-t", session, "-F", "#{pane_pid}"],
                                 capture_output=True, text=True, check=True).stdout.split()[0])
        subprocess.run(["tmux", "send-keys", "-t", session, "2"], check=True)
        t = time.perf_counter()
        while f"Runs ({a.runs})" not in pane(session):
            if time.perf_counter() - t > 60:
                sys.exit("the runs did not all show within 60 s:\n" + pane(session))
            time.sleep(0.05)
        print(f"all {a.runs} runs listed {time.perf_counter() - t:.2f} s after start")
        time.sleep(2)
        hz = os.sysconf("SC_CLK_TCK")
        c0, t0 = cpu_ticks(pid), time.perf_counter()
        time.sleep(a.seconds)
        c1, t1 = cpu_ticks(pid), time.perf_counter()
        idle = 100.0 * (c1 - c0) / hz / (t1 - t0)
        print(f"idle CPU over {t1 - t0:.0f} s: {idle:.2f}% of one core (target < 1%)")
        f, w, start, step = files[-1]
        lat = []
        for i in range(5):
            value = 7.0 + 0.1111 * (i + 1)  # shown as e.g. 7.1111 in the train loss column
            s = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="train/loss", simple_value=value)])
            shown = f"{value:.4f}"
            t = time.perf_counter()
            w.write(event_pb2.Event(wall_time=start + step * 0.01, step=step, summary=s).SerializeToString())
            f.flush()
            step += 1
            while shown not in pane(session):
                if time.perf_counter() - t > 10:
                    sys.exit(f"{shown} not on screen after 10 s:\n" + pane(session))
                time.sleep(0.01)
            lat.append(time.perf_counter() - t)
            time.sleep(0.5)
        print("new point on screen after: " + ", ".join(f"{x * 1000:.0f} ms" for x in lat)
              + f"; median {statistics.median(lat) * 1000:.0f} ms (target < 1000 ms)")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session])
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
