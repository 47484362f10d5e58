// Command aranya-standin is the entrypoint of the stand-in for aranya's container image
// (e2e/in_cluster/standin_image.ts). The shipped image's /usr/local/bin/aranya is aranya compiled
// with `deno compile`, which needs the denort runtime from the network; the stand-in ships the
// pinned deno and aranya's bundle instead, and this program, at the same path, runs them with the
// arguments it was given: the Deployment's args reach aranya unchanged. It has no shell to rely
// on (the image has none, like the distroless one): it replaces itself with deno (execve).
package main

import (
	"fmt"
	"os"
	"strings"
	"syscall"
)

// lib is where the image builder puts deno, the bundle, its permission set and its V8 flags.
const lib = "/usr/local/lib/aranya"

func main() {
	flags, err := os.ReadFile(lib + "/v8-flags")
	if err != nil {
		fmt.Fprintf(os.Stderr, "aranya stand-in: cannot read %q: %v\n", lib+"/v8-flags", err)
		os.Exit(1)
	}
	args := []string{lib + "/deno", "run", "--config=" + lib + "/deno.json", "-P=aranya", "--no-prompt"}
	if v := strings.TrimSpace(string(flags)); v != "" {
		args = append(args, "--v8-flags="+v)
	}
	args = append(args, lib+"/aranya.js")
	args = append(args, os.Args[1:]...)
	if err := syscall.Exec(args[0], args, os.Environ()); err != nil {
		fmt.Fprintf(os.Stderr, "aranya stand-in: cannot start %q: %v\n", args[0], err)
		os.Exit(1)
	}
}
