package sidecar

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
	"strings"
)

// MinAuthTokenLen is the shortest token accepted from an existing token file: shorter ones
// are guessable. Generated tokens are 64 hex characters (256 random bits).
const MinAuthTokenLen = 16

// maxTokenFileBytes bounds what is read from a token file.
const maxTokenFileBytes = 4096

// LoadOrCreateTokenFile returns the bearer token kept in path (for WithBearerToken),
// creating the file if it does not exist: mode 0600, one line of 64 random hex characters.
// An existing file must be a regular file (not a symlink) that no other user may read or
// write (on Windows the mode is not checked), holding one token of at least
// MinAuthTokenLen characters without blanks. created says whether the file was made now.
// Errors name the path, never the token.
//
// Clients on the same host read the file (they run as the same user, or as a user the
// administrator let read it) and send "Authorization: Bearer <token>". Keep it next to the
// socket or in the user's runtime directory.
func LoadOrCreateTokenFile(path string) (token string, created bool, err error) {
	if strings.TrimSpace(path) == "" {
		return "", false, errors.New("token file path is empty")
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case err == nil:
		tok, werr := writeNewToken(f)
		if werr != nil {
			_ = os.Remove(path)
			return "", false, fmt.Errorf("writing token file %s: %w", path, werr)
		}
		return tok, true, nil
	case !errors.Is(err, fs.ErrExist):
		return "", false, fmt.Errorf("creating token file %s: %w", path, err)
	}
	tok, err := readTokenFile(path)
	return tok, false, err
}

func writeNewToken(f *os.File) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		_ = f.Close()
		return "", err
	}
	tok := hex.EncodeToString(b)
	if _, err := f.WriteString(tok + "\n"); err != nil {
		_ = f.Close()
		return "", err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return "", err
	}
	return tok, f.Close()
}

func readTokenFile(path string) (string, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return "", fmt.Errorf("token file %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("token file %s is not a regular file (%v): refusing to use it", path, fi.Mode().Type())
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("token file %s has mode %04o: other users may read or change it; chmod 600 it", path, fi.Mode().Perm())
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("token file %s: %w", path, err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxTokenFileBytes+1))
	if err != nil {
		return "", fmt.Errorf("reading token file %s: %w", path, err)
	}
	if len(raw) > maxTokenFileBytes {
		return "", fmt.Errorf("token file %s is larger than %d bytes: not a token file", path, maxTokenFileBytes)
	}
	tok := strings.TrimSpace(string(raw))
	switch {
	case tok == "":
		return "", fmt.Errorf("token file %s is empty: delete it to have a token generated", path)
	case strings.ContainsAny(tok, " \t\r\n"):
		return "", fmt.Errorf("token file %s must hold one token without blanks", path)
	case len(tok) < MinAuthTokenLen:
		return "", fmt.Errorf("the token in %s is shorter than %d characters: too easy to guess", path, MinAuthTokenLen)
	}
	return tok, nil
}
