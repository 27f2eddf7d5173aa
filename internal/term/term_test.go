package term

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/csmutex/csmutex/internal/testenv"
)

func TestNotTerminals(t *testing.T) {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	plain, err := os.Create(filepath.Join(testenv.TempDir(t), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	var nilFile *os.File
	// The null device is a character device too, but no one is watching it.
	for name, f := range map[string]any{"null device": null, "file": plain, "pipe": w, "buffer": &bytes.Buffer{}, "nil file": nilFile, "nil": nil} {
		if IsTerminal(f) {
			t.Errorf("%s taken for a terminal", name)
		}
	}
}
