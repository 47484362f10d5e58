#!/bin/sh
# curl for the conformance images' agnhost, on busybox wget: upstream's agnhost image has curl, and
# the specs run it as `curl [-g] [-q] [-s] [-i] [-k] [-o FILE] [-w '%{http_code}'] [--max-time N]
# [--connect-timeout N] URL`. Only those options; the body goes to stdout (or -o), -w prints the
# status code after it, -i the status line and headers before it; exits non-zero when no response.
# busybox timeout bounds it (wget -T crashes in Debian's busybox-static 1.35).
out=- write= head= time=30 url=
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out=$2; shift ;;
    -w) write=$2; shift ;;
    --max-time|-m) time=$2; shift ;;
    --connect-timeout|--header|-H|-X) shift ;;
    -i|-I) head=1 ;;
    -XGET) ;;
    -*) ;;
    *) url=$1 ;;
  esac
  shift
done
[ -n "$url" ] || { echo "curl: no URL" >&2; exit 2; }
hdr=$(mktemp) body=$(mktemp)
timeout "$time" wget -S -q -O "$body" "$url" 2>"$hdr"
code=$(sed -n 's/^ *HTTP\/[0-9.]* \([0-9][0-9][0-9]\).*/\1/p' "$hdr" | tail -n 1)
if [ -z "$code" ]; then cat "$hdr" >&2; rm -f "$hdr" "$body"; exit 7; fi
[ -n "$head" ] && sed -n 's/^  //p' "$hdr" && echo
if [ "$out" = "-" ]; then cat "$body"; else cat "$body" >"$out"; fi
[ -n "$write" ] && printf '%s' "$write" | sed "s/%{http_code}/$code/g"
rm -f "$hdr" "$body"
exit 0
