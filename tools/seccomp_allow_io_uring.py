#!/usr/bin/python3
"""Writes a seccomp profile that is a container runtime's default profile plus io_uring.

Recent runtimes' default profiles leave io_uring_setup, io_uring_enter and
io_uring_register out (Docker 25+, containerd 2.0+, the containers-common profile of Podman
and CRI-O), and kafka-partition-proxy's data plane is io_uring: under those profiles it
stops at start with "io_uring: cannot create a ring". Rather than run unconfined, take the
runtime's own profile and allow these three calls (docs/deployment.md, "io_uring and
seccomp"):

  tools/seccomp_allow_io_uring.py /usr/share/containers/seccomp.json > kpp-seccomp.json
  podman run --security-opt seccomp=kpp-seccomp.json ...
  # Kubernetes: copy it to /var/lib/kubelet/seccomp/profiles/ on the nodes and use
  # seccompProfile: {type: Localhost, localhostProfile: profiles/kpp-seccomp.json}

Every other rule is kept as it is; the io_uring calls are taken out of any rule that
refuses them and allowed unconditionally.
"""
import json
import sys

IO_URING_CALLS = ["io_uring_setup", "io_uring_enter", "io_uring_register"]


def allow_io_uring(profile):
    kept = []
    for rule in profile.get("syscalls", []):
        names = rule.get("names", [])
        if rule.get("action") != "SCMP_ACT_ALLOW" and set(names) & set(IO_URING_CALLS):
            rule = dict(rule, names=[name for name in names if name not in IO_URING_CALLS])
            if not rule["names"]:
                continue
        kept.append(rule)
    if profile.get("defaultAction") != "SCMP_ACT_ALLOW":
        kept.append({"names": IO_URING_CALLS, "action": "SCMP_ACT_ALLOW",
                     "comment": "kafka-partition-proxy: the io_uring data plane"})
    return dict(profile, syscalls=kept)


def main():
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    with open(sys.argv[1]) as stream:
        profile = json.load(stream)
    if "defaultAction" not in profile:
        print(f"{sys.argv[1]}: not a seccomp profile (no defaultAction)", file=sys.stderr)
        return 1
    json.dump(allow_io_uring(profile), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
