"""`python -m xkern info`: version, backends and threads of this install."""
import json

from ..info import collect


def register(sub):
    p = sub.add_parser("info", help="print the version and which backends are usable")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=run)


def run(args):
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"xkern {info['xkern']}  ({info['location']})")
    print(f"numpy {info['numpy']}, torch {info['torch'] or 'not installed'}, "
          f"numba {info['numba'] or 'not installed'}")
    for name, status in info["backends"].items():
        if not status["usable"]:
            print(f"  {name:9s} unavailable: {status['reason']}")
        elif name == "cpu":
            print(f"  {name:9s} usable: compiled kernels, {status['isa']}, OpenMP "
                  f"{'on' if status['openmp'] else 'off'}, {status['threads']} threads")
        elif name == "cuda":
            print(f"  {name:9s} usable: {status['device']}")
        else:
            print(f"  {name:9s} usable: numpy")
    if info["OMP_NUM_THREADS"]:
        print(f"OMP_NUM_THREADS={info['OMP_NUM_THREADS']}")
    return 0
