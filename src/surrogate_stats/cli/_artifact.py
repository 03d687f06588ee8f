"""``surrogate-stats artifact``: verify, compare and recover artifacts of any kind."""

from __future__ import annotations

import json

__all__ = ["register"]


def register(subparsers) -> None:
    art = subparsers.add_parser("artifact", help="verify, compare and recover artifacts")
    sub = art.add_subparsers(dest="action", required=True)
    ve = sub.add_parser("verify", help="check hashes and structure, then load the artifact")
    ve.add_argument("artifact", help="artifact directory")
    ve.set_defaults(func=_verify)
    di = sub.add_parser("diff", help="which files and metadata fields differ, and why")
    di.add_argument("a")
    di.add_argument("b")
    di.set_defaults(func=_diff)
    re = sub.add_parser("recover", help="restore an artifact after a killed write, clean up")
    re.add_argument("artifact")
    re.set_defaults(func=_recover)


def _verify(args) -> int:
    from surrogate_stats.artifact import load_surrogate, read_artifact

    meta, graphs, arrays = read_artifact(args.artifact)
    load_surrogate(args.artifact)  # the kind's own checks (self-check pairs, ...)
    print(json.dumps({"artifact": args.artifact, "kind": meta["kind"], "ok": True,
                      "content_sha256": meta["content_sha256"],
                      "files": {e["file"]: e["sha256"] for s in ("graphs", "arrays")
                                for e in meta.get(s, {}).values()}}))
    return 0


def _diff(args) -> int:
    from surrogate_stats.artifact._diff import diff_artifacts

    result = diff_artifacts(args.a, args.b)
    for cause, fields in sorted(result["causes"].items()):
        print(f"{cause}: {', '.join(fields[:8])}{' ...' if len(fields) > 8 else ''}")
    print(json.dumps(result, default=str))
    return 0 if result["identical"] else 1


def _recover(args) -> int:
    from surrogate_stats.artifact import recover_artifact

    restored = recover_artifact(args.artifact)
    print(json.dumps({"artifact": args.artifact, "restored": restored is not None}))
    return 0
