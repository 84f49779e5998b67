package images

import (
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// A recipe describes a lab image as data: what mmdebstrap installs, shell
// hooks it runs (with the rootfs as "$1"), and files pi adds to the rootfs
// afterwards. Everything in it goes into the recipe hash.
type recipe struct {
	Name     string
	Variant  string   // mmdebstrap --variant
	Packages []string // mmdebstrap --include
	HookDirs []string // mmdebstrap --hook-dir
	Hooks    []hook
	Files    []file
	Drop     []string // extra paths (and everything below) left out of the image
	// WithExecutable adds the running pi binary as /usr/local/bin/podinfo
	// (and libc6 if that binary is dynamically linked).
	WithExecutable bool
	Config         ocispec.ImageConfig
}

type hook struct {
	Stage string // setup, extract, essential, customize
	Cmd   string
}

type file struct {
	Path string // absolute path in the image
	Mode int64  // permission bits (plus setuid/sticky)
	Data string // regular file content
	Link string // symlink target, if set
	Dir  bool
}

// commonFiles go into every lab image. The pod runtime normally mounts its
// own /etc/hosts; this default keeps "localhost" resolvable without it.
var commonFiles = []file{
	{Path: "/etc/hosts", Mode: 0o644, Data: "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"},
}

const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// busyboxBase is the skeleton of the busybox-based images (extract variant:
// no dpkg, no maintainer scripts, a couple of MB).
var busyboxBase = struct {
	hooks []hook
	files []file
	drop  []string
}{
	// iconv charset modules: 8 MB of libc6 that busybox never loads.
	drop: []string{"/usr/lib/x86_64-linux-gnu/gconv"},
	hooks: []hook{
		// busybox --install needs the directories its applets live in.
		{"setup", `mkdir -p "$1/bin" "$1/sbin" "$1/usr/bin" "$1/usr/sbin"`},
		{"extract", `chroot "$1" /bin/busybox --install -s`},
	},
	files: []file{
		{Path: "/etc/passwd", Mode: 0o644, Data: "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"},
		{Path: "/etc/group", Mode: 0o644, Data: "root:x:0:\nnobody:x:65534:\n"},
		// Without it glibc asks DNS before /etc/hosts and stops at DNS's
		// NXDOMAIN, so "localhost" and the pod's own name would not resolve.
		{Path: "/etc/nsswitch.conf", Mode: 0o644, Data: "passwd: files\ngroup: files\nhosts: files dns\nnetworks: files\n"},
		// Debian's busybox wget segfaults on -T; this wrapper replaces the applet's link (see wgetWrapper).
		{Path: "/usr/bin/wget", Mode: 0o755, Data: wgetWrapper},
		{Path: "/root", Mode: 0o700, Dir: true},
		{Path: "/tmp", Mode: 0o1777, Dir: true},
		{Path: "/var/tmp", Mode: 0o1777, Dir: true},
	},
}

func recipes() []recipe {
	return []recipe{
		{
			Name:    "busybox",
			Variant: "extract",
			// Debian's dynamic busybox, not busybox-static: static glibc cannot load NSS modules, and its
			// wget and nslookup crash on every lookup. busybox's nc has no UDP: OpenBSD's netcat (as nc.openbsd)
			// is the toolbox's UDP client for UDP Services and FIPs.
			Packages: []string{"busybox", "libc6", "netcat-openbsd", "libbsd0", "libmd0"},
			Hooks:    busyboxBase.hooks,
			Files:    busyboxBase.files,
			Drop:     busyboxBase.drop,
			Config:   ocispec.ImageConfig{Env: []string{defaultPath}, Cmd: []string{"sh"}},
		},
		{
			Name:     "httpd",
			Variant:  "essential",
			HookDirs: []string{mergedUsrHooks},
			Packages: []string{"apache2", "curl"},
			Files: []file{
				{Path: "/var/www/html/index.html", Mode: 0o644, Data: "<html><body><h1>It works!</h1></body></html>\n"},
				// Like the official image: logs go to the container's stdout/stderr.
				{Path: "/var/log/apache2/access.log", Link: "/dev/stdout"},
				{Path: "/var/log/apache2/other_vhosts_access.log", Link: "/dev/stdout"},
				{Path: "/var/log/apache2/error.log", Link: "/dev/stderr"},
				{Path: "/usr/local/bin/httpd-foreground", Mode: 0o755, Data: httpdForeground},
			},
			Config: ocispec.ImageConfig{
				Env:          []string{defaultPath},
				Cmd:          []string{"httpd-foreground"},
				ExposedPorts: map[string]struct{}{"80/tcp": {}},
				// apache2's graceful stop, as in the official httpd image.
				StopSignal: "SIGWINCH",
			},
		},
		{
			Name:     "nginx",
			Variant:  "essential",
			HookDirs: []string{mergedUsrHooks},
			Packages: []string{"nginx-light", "curl"},
			Files: []file{
				{Path: "/var/log/nginx/access.log", Link: "/dev/stdout"},
				{Path: "/var/log/nginx/error.log", Link: "/dev/stderr"},
			},
			Config: ocispec.ImageConfig{
				Env:          []string{defaultPath},
				Cmd:          []string{"nginx", "-g", "daemon off;"},
				ExposedPorts: map[string]struct{}{"80/tcp": {}},
				// nginx's graceful shutdown, as in the official image.
				StopSignal: "SIGQUIT",
			},
		},
		{
			Name:    "podinfo",
			Variant: "extract",
			// The same base as busybox, so wget and nslookup work for
			// learners who exec into it.
			Packages:       []string{"busybox", "libc6"},
			Hooks:          busyboxBase.hooks,
			Files:          busyboxBase.files,
			Drop:           busyboxBase.drop,
			WithExecutable: true,
			Config: ocispec.ImageConfig{
				Env:          []string{defaultPath},
				Entrypoint:   []string{"/usr/local/bin/podinfo"},
				ExposedPorts: map[string]struct{}{"9898/tcp": {}},
			},
		},
	}
}

// wgetWrapper is busybox's wget with a working -T SEC (network timeout), which learners type and scripts use.
// Debian bookworm builds busybox without FEATURE_WGET_TIMEOUT (busybox and busybox-static alike), yet its wget
// still parses -T as a number ("T:+" in getopt32) and stores it through the NULL pointer left in place of the
// timeout variable: every "wget -T N ..." dies with SIGSEGV (exit 139) before it opens a socket. Later Debian
// busyboxes enable the feature; bookworm's is the one the lab builds from. So the wrapper takes -T SEC (also
// clustered as -qT2, and --timeout=SEC, the long form busybox has when the feature is on) out of the
// arguments and bounds the download by SEC seconds with busybox's timeout, failing as busybox's -T does:
// "wget: download timed out", exit 1. Busybox's -T bounds each network wait; this bounds the whole download,
// the same for the small pages of the lab. Options that take a value are skipped with it, so a value that looks
// like -T is not mistaken for one. "busybox wget -T" typed in full still reaches the applet and crashes.
const wgetWrapper = `#!/bin/sh
# busybox wget with a working -T SEC: Debian's busybox is built without FEATURE_WGET_TIMEOUT and its wget
# segfaults on -T. -T SEC is taken out here and bounds the whole download instead.
have= secs=
n=$#
while [ "$n" -gt 0 ]; do
	a=$1
	shift
	n=$((n - 1))
	case $a in
	--)
		set -- "$@" --
		while [ "$n" -gt 0 ]; do
			set -- "$@" "$1"
			shift
			n=$((n - 1))
		done
		;;
	--timeout=*) have=1 secs=${a#--timeout=} ;;
	--timeout)
		[ "$n" -gt 0 ] || { echo "wget: option '--timeout' requires an argument" >&2; exit 1; }
		have=1 secs=$1
		shift
		n=$((n - 1))
		;;
	--output-document | --output-file | --directory-prefix | --proxy | --user-agent | --tries | --header | --post-data | --post-file)
		set -- "$@" "$a"
		if [ "$n" -gt 0 ]; then
			set -- "$@" "$1"
			shift
			n=$((n - 1))
		fi
		;;
	'' | - | --* | [!-]*) set -- "$@" "$a" ;;
	*)
		# A cluster of short options: c q S take no value; O o P Y U T t take the rest of the cluster or
		# the next argument; n takes only the rest of the cluster.
		rest=${a#-} keep=-
		while [ -n "$rest" ]; do
			c=${rest%"${rest#?}"}
			rest=${rest#?}
			case $c in
			T)
				if [ -z "$rest" ]; then
					[ "$n" -gt 0 ] || { echo "wget: option requires an argument -- 'T'" >&2; exit 1; }
					rest=$1
					shift
					n=$((n - 1))
				fi
				have=1 secs=$rest rest=
				;;
			[OoPYUt])
				if [ -n "$rest" ]; then
					keep=$keep$c$rest rest=
				elif [ "$n" -gt 0 ]; then
					set -- "$@" "$keep$c" "$1"
					shift
					n=$((n - 1))
					keep=-
				else
					keep=$keep$c
				fi
				;;
			n) keep=$keep$c$rest rest= ;;
			*) keep=$keep$c ;;
			esac
		done
		[ "$keep" = - ] || set -- "$@" "$keep"
		;;
	esac
done
if [ -z "$have" ]; then
	exec /bin/busybox wget "$@"
fi
case $secs in
'' | *[!0-9]*) echo "wget: invalid number '$secs'" >&2; exit 1 ;;
esac
# -T 0 is no timeout, as in busybox.
if [ "$secs" -eq 0 ]; then
	exec /bin/busybox wget "$@"
fi
/bin/busybox timeout -s ALRM "$secs" /bin/busybox wget "$@"
rc=$?
if [ "$rc" -eq 142 ]; then
	echo "wget: download timed out" >&2
	exit 1
fi
exit "$rc"
`

// httpdForeground runs apache2 in the foreground the Debian way: envvars
// define the run/lock/log dirs that apache2's config refers to.
const httpdForeground = `#!/bin/sh
set -e
. /etc/apache2/envvars
# /var/lock points into /run, which starts empty in a container.
mkdir -p /run/lock "$APACHE_RUN_DIR" "$APACHE_LOCK_DIR" "$APACHE_LOG_DIR"
# A pid file left by a killed container would make apache2 refuse to start.
rm -f "$APACHE_PID_FILE"
exec /usr/sbin/apache2 -D FOREGROUND "$@"
`

// LabImages returns the names of the images Build knows.
func LabImages() []string {
	var names []string
	for _, r := range recipes() {
		names = append(names, r.Name)
	}
	return names
}
