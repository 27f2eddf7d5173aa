// Command gen writes Mutex_Package.zip from the package sources (run by go generate in
// mutexpkg/). The output is byte-for-byte reproducible.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/csmutex/csmutex/mutexpkg"
)

func main() {
	out := flag.String("o", "Mutex_Package.zip", "output file")
	flag.Parse()
	data, err := mutexpkg.Zip()
	if err == nil {
		err = os.WriteFile(*out, data, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}
