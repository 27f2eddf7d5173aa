package sidecar

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// DefaultAddr is where `csmutex serve` listens unless told otherwise, and where the Python
// helper looks by default. A fixed, documented address lets drivers find the sidecar with
// no configuration. Loopback only: the API takes and releases locks for whoever connects.
// Port 7369 sits below every common ephemeral range (Linux 32768+, Windows 49152+), so an
// outgoing connection never occupies it, and it is clear of CloudShell's own ports (8029
// API, 9000 quali server, 80/443 portal) and of the usual developer defaults (3000, 5000,
// 8000, 8080, 9090).
const DefaultAddr = "127.0.0.1:7369"

// unixPrefix marks a unix socket address: "unix:/run/csmutex.sock".
const unixPrefix = "unix:"

// Listen opens the sidecar's listener. addr is "host:port" (TCP) or "unix:/path".
//
// TCP: the host must be a loopback address (127.0.0.0/8, ::1) or "localhost" unless
// allowRemote is set: the API has no authentication beyond locality.
//
// Unix: the socket is created with mode 0600 (only the sidecar's user may connect). A
// stale socket left by a dead sidecar is removed first; a live one (something accepts
// connections on it) or a path that is not a socket is refused. The socket file is
// removed when the listener is closed.
func Listen(addr string, allowRemote bool) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, unixPrefix); ok {
		return listenUnix(path)
	}
	if err := CheckLoopback(addr, allowRemote); err != nil {
		return nil, err
	}
	return net.Listen("tcp", addr)
}

// CheckLoopback refuses a TCP address that is not on loopback, unless allowRemote.
func CheckLoopback(addr string, allowRemote bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("listen address %q: %w (want host:port or unix:/path)", addr, err)
	}
	if allowRemote {
		return nil
	}
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	ip := net.ParseIP(strings.Split(host, "%")[0])
	if ip == nil || !ip.IsLoopback() {
		if host == "" {
			host = "all interfaces"
		}
		return fmt.Errorf("refusing to listen on %s (%s): not a loopback address; the sidecar takes and releases locks for anyone who can connect, with no authentication. Use 127.0.0.1, ::1, localhost or unix:/path, or pass --allow-remote if the network is trusted", addr, host)
	}
	return nil
}

// ListenerAddr renders a listener's address the way --listen accepts it.
func ListenerAddr(ln net.Listener) string {
	if u, ok := ln.(*unixListener); ok {
		return unixPrefix + u.path
	}
	if a := ln.Addr(); a.Network() == "unix" {
		return unixPrefix + a.String()
	}
	return ln.Addr().String()
}

func listenUnix(path string) (net.Listener, error) {
	if path == "" {
		return nil, errors.New("unix socket path is empty (want unix:/path/to/socket)")
	}
	path = filepath.Clean(path)
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket: refusing to replace it", path)
		}
		if c, err := net.DialTimeout("unix", path, 500*time.Millisecond); err == nil {
			_ = c.Close()
			return nil, fmt.Errorf("%s is in use by another process (a running sidecar?)", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing stale socket %s: %w", path, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}

	// Create the socket in a private directory, make it 0600, then move it into place, so
	// that it is never reachable with the umask's looser mode, without touching the
	// process-wide umask.
	ln, err := listenUnixPrivate(path)
	if err != nil {
		return nil, err
	}
	fi, err := os.Lstat(path)
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	return &unixListener{Listener: ln, path: path, fi: fi}, nil
}

func listenUnixPrivate(path string) (net.Listener, error) {
	dir, err := os.MkdirTemp(filepath.Dir(path), ".csm")
	if err != nil {
		return nil, fmt.Errorf("creating the socket: %w", err)
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "s")
	ln, err := net.Listen("unix", tmp)
	if err != nil {
		// The private path may be too long for a socket address where the final one is
		// not. Fall back to creating it in place and tightening the mode at once.
		return listenUnixInPlace(path)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		_ = ln.Close()
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("moving the socket into place: %w", err)
	}
	return ln, nil
}

func listenUnixInPlace(path string) (net.Listener, error) {
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(path, 0o600); err != nil {
		_ = ln.Close()
		_ = os.Remove(path)
		return nil, err
	}
	return ln, nil
}

// unixListener removes its socket file on Close, if the file is still the one it created.
type unixListener struct {
	net.Listener
	path string
	fi   os.FileInfo
	once sync.Once
}

func (u *unixListener) Close() error {
	err := u.Listener.Close()
	u.once.Do(func() {
		if fi, serr := os.Lstat(u.path); serr == nil && os.SameFile(fi, u.fi) {
			_ = os.Remove(u.path)
		}
	})
	return err
}
