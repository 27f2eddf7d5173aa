package mutexpkg

import (
	"archive/zip"
	"bytes"
	"time"
)

//go:generate go run ./gen -o Mutex_Package.zip

// buildTime is stamped on every zip entry. A fixed time (rather than the build time) is what
// makes the zip reproducible: the same sources always give the same bytes, so a test can
// tell a stale committed zip from a fresh one.
var buildTime = time.Date(2026, time.November, 23, 0, 0, 0, 0, time.UTC)

// Zip builds Mutex_Package.zip from the embedded sources. The layout is the one CloudShell's
// importer expects and the public package uses: metadata.xml and DataModel/datamodel.xml at
// the root, with a DataModel/ directory entry, no top-level folder.
func Zip() ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	entries := []struct {
		name string
		data []byte
	}{
		{"DataModel/", nil},
		{"DataModel/datamodel.xml", DataModel},
		{"metadata.xml", Metadata},
	}
	for _, e := range entries {
		// Stored, not deflated: the files are tiny, and compress/flate's output may change
		// between Go releases, which would make the committed zip look stale for no reason.
		hdr := &zip.FileHeader{Name: e.name, Method: zip.Store, Modified: buildTime}
		if e.data == nil {
			hdr.SetMode(0o755 | 1<<31) // a directory: os.ModeDir
		} else {
			hdr.SetMode(0o644)
		}
		w, err := zw.CreateHeader(hdr)
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
