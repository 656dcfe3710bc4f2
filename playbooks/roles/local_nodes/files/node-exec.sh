#!/bin/sh
# Run a command as part of one emulated node: join its cgroups, then exec inside its
# network namespace. Children inherit both, so the node's cgroups hold all its processes.
# usage: node-exec.sh <netns|-> [cgroup-dir ...] -- command [args ...]
set -eu
ns="$1"; shift
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
  echo $$ > "$1/cgroup.procs"
  shift
done
shift
if [ "$ns" = "-" ]; then exec "$@"; fi
exec ip netns exec "$ns" "$@"
