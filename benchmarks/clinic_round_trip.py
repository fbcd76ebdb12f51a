"""The clinic's loop on this machine: dcmtk storescu -> `nnunet-breast serve` -> dcmtk storescp, per CT size.

For each synthetic CT (``--sizes``, default small and full; breast phantoms, seed 300):

* ``predict``: ``nnunet-breast predict -i CT -o OUT`` with the same model options, as a subprocess (the
  baseline, measured in the same run: reading, model loading, prediction, RTSTRUCT, preview);
* ``round trip``: a node already listening (``serve --series-timeout T``); from the start of ``storescu`` to
  storescp's confirmation of the RTSTRUCT (the job moves to ``done``). It includes the series timeout T by design (the node cannot know a series
  is complete before), the send (``send``: storescu's own time) and the node's job (``job``: from job.json).

Prints Markdown and one JSON line; ratio = round trip / predict. Needs dcmtk (storescu, storescp).

    python benchmarks/clinic_round_trip.py --work /tmp/rt [--series-timeout 2] [model options of predict, e.g.
        --model breast -d 811 -tr nnUNetTrainerEffNetB0LongCPU -c 3d_cpu_effnetb0]   (default: clips, threshold)
"""
from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

SEED = 300


def dcmtk(name: str) -> str:
    for d in ("/usr/bin", "/usr/local/bin"):
        exe = Path(d) / name
        if exe.is_file() and "dcmtk" in subprocess.run([exe, "--version"], capture_output=True, text=True).stdout:
            return str(exe)
    raise SystemExit(f"dcmtk's {name} is needed (apt-get install dcmtk)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(name: str) -> str:
    return shutil.which(name, path=str(Path(sys.executable).parent)) or name


def wait_for(condition, timeout_s: float = 3600.0, what: str = ""):
    end = time.time() + timeout_s
    while time.time() < end:
        if value := condition():
            return value
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--sizes", nargs="+", default=["small", "full"])
    ap.add_argument("--series-timeout", type=float, default=2.0)
    args, model = ap.parse_known_args()
    model = model or ["--model", "clips", "--clips-method", "threshold"]
    storescu, storescp = dcmtk("storescu"), dcmtk("storescp")
    work = args.work.resolve()
    rows = []
    for size in args.sizes:
        export = work / f"ct_{size}"
        if not export.exists():
            subprocess.run([cli("nnunet-breast"), "synth", "--cohort", "breast", "--size", size, "--n", "1",
                            "--seed", str(SEED), "--out", export], check=True, capture_output=True)
        (case,) = [p for p in export.iterdir() if p.is_dir()]
        cts = sorted(case.glob("CT.*.dcm"))
        ct_only = work / f"ct_only_{size}"
        if not ct_only.exists():
            ct_only.mkdir()
            for f in cts:
                shutil.copy(f, ct_only / f.name)

        shutil.rmtree(work / f"predict_{size}", ignore_errors=True)
        t0 = time.perf_counter()
        subprocess.run([cli("nnunet-breast"), "predict", "-i", ct_only, "-o", work / f"predict_{size}", *model],
                       check=True, capture_output=True)
        t_predict = time.perf_counter() - t0

        node_dir, tps_dir = work / f"node_{size}", work / f"tps_{size}"
        for d in (node_dir, tps_dir):
            shutil.rmtree(d, ignore_errors=True)
        tps_dir.mkdir(parents=True)
        tps_port, node_port = free_port(), free_port()
        scp = subprocess.Popen([storescp, "-aet", "TPS", "-od", tps_dir, str(tps_port)])
        log = open(work / f"node_{size}.log", "w")
        node = subprocess.Popen([cli("nnunet-breast"), "serve", "--out", node_dir, "--port", str(node_port),
                                 "--ae-title", "NNUNET", "--dest", f"TPS@127.0.0.1:{tps_port}",
                                 "--series-timeout", str(args.series_timeout), *model], stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: "listening on" in (work / f"node_{size}.log").read_text() or node.poll() is not None,
                     120, "the node")
            if node.poll() is not None:
                raise SystemExit((work / f"node_{size}.log").read_text()[-2000:])
            t0 = time.perf_counter()
            subprocess.run([storescu, "-aet", "CT_SIM", "-aec", "NNUNET", "127.0.0.1", str(node_port), *cts],
                           check=True, capture_output=True)
            t_send = time.perf_counter() - t0
            # done = storescp answered the C-STORE: the file is whole (its first bytes appear earlier)
            wait_for(lambda: list(node_dir.glob("jobs/done/*/job.json")), what="the RTSTRUCT confirmed by storescp")
            t_round = time.perf_counter() - t0
        finally:
            node.terminate()
            scp.terminate()
            node.wait(60), scp.wait(60)
        (job,) = node_dir.glob("jobs/done/*/job.json")
        (received,) = tps_dir.iterdir()
        if received.stat().st_size != sum(f.stat().st_size for f in job.parent.glob("result/*/RS.*.dcm")):
            print(f"  note: {received.name} differs in size from the node's RTSTRUCT (re-encoded by storescp)")
        info = json.loads(job.read_text())
        rows.append({"size": size, "slices": len(cts), "predict_s": round(t_predict, 1),
                     "round_trip_s": round(t_round, 1), "send_s": round(t_send, 1),
                     "series_timeout_s": args.series_timeout, "job_s": info.get("runtime_s"),
                     "ratio_round_trip_vs_predict": round(t_round / t_predict, 2)})
        print(f"  {size}: predict {t_predict:.1f} s, round trip {t_round:.1f} s", flush=True)
    print("\n| CT | slices | predict s | round trip s | of which send s | series timeout s | node job s | "
          "round trip / predict |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['slices']} | {r['predict_s']} | {r['round_trip_s']} | {r['send_s']} | "
              f"{r['series_timeout_s']} | {r['job_s']} | {r['ratio_round_trip_vs_predict']} |")
    print(json.dumps({"benchmark": "clinic_round_trip", "model": " ".join(model), "rows": rows}))


if __name__ == "__main__":
    main()
